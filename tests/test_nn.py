import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import adntn_compiler as adntn
from adntn_compiler.errors import ConfigError, ShapeError
from tests.corpus import assert_close64, cancellation, generators


@given(generators(conv=False), st.integers(1, 4), st.integers(0, 2**16))
def test_linear_equals_x_wt_plus_b(gen, batch, seed):
    layer = adntn.ADNTNLinear(gen, bias=True, dtype=torch.float64)
    x = torch.as_tensor(np.random.default_rng(seed).standard_normal((batch, gen.I)))
    W = torch.as_tensor(adntn.materialize(gen))
    want = (x @ W.T + layer.bias).detach().numpy()
    # two float64 evaluations of W agree to eps64 times how much it cancels on the way (1 for most generators)
    floor = 10 * np.finfo(np.float64).eps * cancellation(adntn.trace(gen, "weight")) * np.abs(want).max()
    assert_close64(layer(x).detach().numpy(), want, rtol=1e-10, floor=floor)


@given(generators(conv=True))
def test_conv_equals_conv2d_with_materialized_weight(gen):
    conv = adntn.ADNTNConv2d(gen, stride=1, padding=1, dtype=torch.float64)
    x = torch.randn(2, gen.shape[1], 5, 6, dtype=torch.float64)
    W = torch.as_tensor(adntn.materialize(gen))
    torch.testing.assert_close(conv(x), F.conv2d(x, W, conv.bias, 1, 1))


def test_linear_trains_with_autograd():
    torch.manual_seed(0)
    layer = adntn.ADNTNLinear(adntn.ttn((16, 32), rank=3, seed=0))
    x = torch.randn(64, 32)
    target = x @ torch.randn(16, 32).T * 0.1
    opt = torch.optim.Adam(layer.parameters(), lr=1e-2)
    first = None
    for _ in range(60):
        loss = F.mse_loss(layer(x), target)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        assert all(p.grad is not None for p in layer.cores.values())
        opt.step()
    assert loss.item() < 0.8 * first


def _model():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 32),
                         nn.ReLU(), nn.Linear(32, 10))


def test_compress_replaces_layers_and_keeps_bias():
    model = _model()
    bias = model[3].bias.detach().clone()
    adntn.compress(model, {"0": dict(arch="ttn", rank=2, layout="binary"), "3": dict(arch="mera", rank=2),
                           "5": dict(arch="tt", rank=2)})
    assert isinstance(model[0], adntn.ADNTNConv2d) and isinstance(model[3], adntn.ADNTNLinear)
    torch.testing.assert_close(model[3].bias, bias)
    assert model(torch.randn(2, 3, 4, 4)).shape == (2, 10)
    rep = adntn.report(model)
    assert [r["arch"] for r in rep.rows] == ["ttn", "mera", "tt"]
    text = str(rep)
    assert "ratio" in text and "total" in text and "(8, 3, 3, 3)" in text and "layout=binary rank=2" in text
    assert "max rank" in text and all(1 <= r["max_rank"] <= min(r["shape"][0], r["dense_params"] // r["shape"][0])
                                      for r in rep.rows)
    for r in rep.rows:
        assert r["ratio"] == pytest.approx(r["dense_params"] / r["params"])


def test_compress_by_ratio():
    model = nn.Sequential(nn.Linear(1024, 2048))
    adntn.compress(model, {"0": dict(arch="ttn", ratio=2000)})
    assert model[0].gen.compression_ratio >= 2000


def test_bad_specs_leave_the_model_untouched():
    model = _model()
    with pytest.raises(ShapeError, match=r"layer '0' \(Conv2d\) has weight shape \(8, 3, 3, 3\)"):
        adntn.compress(model, {"3": dict(arch="ttn"), "0": dict(arch="ttn", shape=(8, 3, 5, 5))})
    assert isinstance(model[3], nn.Linear)
    with pytest.raises(ConfigError, match="no layer named 'fc9'"):
        adntn.compress(model, {"fc9": dict(arch="ttn")})
    with pytest.raises(ConfigError, match="cannot compress a ReLU"):
        adntn.compress(model, {"1": dict(arch="ttn")})
    with pytest.raises(ShapeError, match="ADNTNConv2d needs a Conv2d-shaped generator"):
        adntn.ADNTNConv2d(adntn.ttn((8, 27)))
    with pytest.raises(ShapeError, match="ADNTNLinear needs a Linear-shaped"):
        adntn.ADNTNLinear(adntn.ttn((8, 3, 3, 3)))
    with pytest.raises(ShapeError, match="last dimension 5"):
        adntn.ADNTNLinear(adntn.ttn((8, 27)))(torch.randn(2, 5))


def test_layer_runs_the_optimised_program():
    layer = adntn.ADNTNLinear(adntn.ttn((64, 96), rank=3, layout="binary"))
    layer(torch.randn(5, 96))
    g = layer._graphs[5]
    einsums = [n for n in g.nodes if n.op.value == "einsum"]
    assert einsums and all(len(n.inputs) <= 3 for n in einsums)  # pairwise (+ a fused scalar)
    assert any(n.attrs.epilogue == "tanh" for n in einsums) and not any(n.op.value == "map" for n in g.nodes)
