"""adntn.sensitivity on a tiny conv net: the table has one row per (entry, ratio, arch) plus the dense one."""
import pytest
import torch
from torch import nn

import adntn_compiler as adntn
from adntn_compiler.errors import ConfigError
from adntn_compiler.training.sensitivity import score_correlation


def tiny():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(128, 64), nn.ReLU(),
                         nn.Linear(64, 10)).eval()


def test_sensitivity_table_shape_metric_and_plot(tmp_path):
    torch.set_num_threads(1)
    model = tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    x, xt = torch.randn(64, 3, 8, 8, generator=g), torch.randn(32, 3, 8, 8, generator=g)
    with torch.no_grad():
        ref = model(xt)
    metric = lambda m: {"corr": score_correlation(m(xt), ref), "mse": (m(xt) - ref).pow(2).mean()}  # noqa: E731
    res = adntn.sensitivity(model, ["3", "7", ("3", "7")], ratios=(4, 16, 10**6), archs=("ttn", "tt"), data=x,
                            metric=metric, steps=2, fit_steps=30, batch_size=16, progress=False)
    assert len(res.rows) == 1 + 3 * 3 * 2 and res.metrics == ("corr", "mse")
    dense = res.rows[0]
    assert dense["arch"] == "dense" and dense["corr"] == pytest.approx(1.0) and dense["mse"] == 0
    assert all(r.get("unreachable") for r in res.rows[1:] if r["target"] == 10**6)
    done = [r for r in res.rows[1:] if not r.get("unreachable")]
    assert len(done) == 3 * 2 * 2
    for r in done:
        assert r["ratio"] >= 0.5 * r["target"] and r["params"] * r["ratio"] == pytest.approx(r["dense_params"])
        assert -1 <= r["corr"] <= 1 and r["seconds"] > 0
    group = next(r for r in done if r["layers"] == "3+7" and r["target"] == 4 and r["arch"] == "ttn")
    assert group["dense_params"] == 16 * 32 * 9 + 64 * 128
    assert model.state_dict().keys() == before.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())  # the model is not changed
    assert "3+7" in res.table() and "not reachable" in res.table()
    assert set(res.keep("corr", -1.0, ratio=4)) == {"3", "7", "3+7"}
    res.plot(str(tmp_path / "s.png"))
    assert (tmp_path / "s.png").stat().st_size > 1000


def test_sensitivity_refuses_what_it_cannot_replace():
    model = tiny()
    x = torch.randn(8, 3, 8, 8)
    with pytest.raises(ConfigError, match="'2' is not a Linear or Conv2d layer"):
        adntn.sensitivity(model, ["2"], ratios=(4,), data=x, metric=lambda m: 0.0)
    with pytest.raises(ConfigError, match="ratios must be"):
        adntn.sensitivity(model, ["3"], ratios=(0.5,), data=x, metric=lambda m: 0.0)
    with pytest.raises(ConfigError, match="needs data"):
        adntn.sensitivity(model, ["3"], ratios=(4,), metric=lambda m: 0.0)
