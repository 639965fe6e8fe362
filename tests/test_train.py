import numpy as np
import pytest

import adntn_compiler as adntn
from adntn_compiler.errors import ShapeError
from adntn_compiler.train import fit_outputs, fit_weight, plot_losses, same_budget


def test_fit_weight_reduces_the_error_and_updates_the_generator(tmp_path):
    gen = adntn.ttn((32, 48), rank=4, layout="separated", legs=2, seed=0)  # W = H_out G H_in^T: rank <= 4
    rng = np.random.default_rng(0)
    W = rng.standard_normal((32, 4)) @ rng.standard_normal((4, 48))
    before = np.linalg.norm(adntn.materialize(gen) - W) / np.linalg.norm(W)
    res = fit_weight(gen, W, steps=300, progress=False)
    after = np.linalg.norm(adntn.materialize(gen) - W) / np.linalg.norm(W)
    assert res.losses[-1] < 0.7 * res.losses[0] and after < 0.85 * before
    assert abs(after - res.rel_error) < 0.05  # the curve describes the generator that was written back
    res.plot(str(tmp_path / "fit.png"))
    assert (tmp_path / "fit.png").stat().st_size > 1000


def test_fit_outputs_matches_the_layer_on_calibration_data(tmp_path):
    gen = adntn.mera((16, 32), rank=3, seed=0)
    rng = np.random.default_rng(1)
    W = rng.standard_normal((16, 32)) * 0.2
    X = rng.standard_normal((200, 4)) @ rng.standard_normal((4, 32))  # low-dimensional inputs
    res = fit_outputs(gen, W, X, steps=150, progress=False)
    assert res.losses[-1] < 0.5 * res.losses[0]
    plot_losses({"mera": res}, str(tmp_path / "curves.png"))
    with pytest.raises(ShapeError, match=r"calibration inputs must have shape \(N, 32\)"):
        fit_outputs(gen, W, X[:, :5])
    with pytest.raises(ShapeError, match="target weight has shape"):
        fit_weight(gen, W.T)


def test_same_budget_stays_within_the_budget():
    ttn = adntn.make("ttn", (1024, 1024), **adntn.config_for_ratio((1024, 1024), "ttn", 500))
    tt = same_budget((1024, 1024), "tt", ttn.num_params)
    assert tt.num_params <= ttn.num_params and tt.num_params > 0.5 * ttn.num_params
