"""The initial cores of mera and attn: (near-)isometries, so the calibrated scale stays near 1 and float32 training
follows float64."""
import numpy as np
import pytest
import torch

from adntn_compiler.generators import make
from adntn_compiler.generators.base import isometry, near_identity
from adntn_compiler.nn.layers import ADNTNLinear

SHAPES = [(64, 64), (128, 256), (256, 512), (10, 784), (512, 300)]


def test_isometry_and_near_identity_are_orthogonal():
    rng = np.random.default_rng(0)
    v = isometry(rng, 3, 8)
    assert v.shape == (3, 8) and np.allclose(v @ v.T, np.eye(3), atol=1e-12)
    q = near_identity(rng, 9)
    assert np.allclose(q @ q.T, np.eye(9), atol=1e-12)
    assert 0 < np.abs(q - np.eye(9)).max() < 0.2  # a rotation, but a small one


@pytest.mark.parametrize("arch", ["mera", "attn"])
@pytest.mark.parametrize("shape", SHAPES)
def test_the_calibrated_scale_stays_near_one(arch, shape):
    # the scale maps the raw W to a dense layer's std; the old mera init needed 1.1e-3 at (256, 512), attn 0.1-0.6
    for rank in (3, 4):
        g = make(arch, shape, rank=rank, seed=rank)
        s = float(g.cores["scale"])
        assert 0.5 < s < 2.0, (arch, shape, rank, s)
        for k, c in g.cores.items():
            if k.startswith("dis"):  # disentanglers start as exact rotations
                m = c.reshape(c.shape[0] * c.shape[1], -1)
                assert np.allclose(m @ m.T, np.eye(len(m)), atol=1e-10), k


def _grads(gen, dtype, steps=2, lr=0.1):
    layer = ADNTNLinear(gen, bias=False, dtype=dtype)
    head = torch.nn.Linear(gen.O, 10).to(dtype)
    with torch.no_grad():
        head.weight.copy_(torch.linspace(-0.1, 0.1, head.weight.numel()).reshape(head.weight.shape))
        head.bias.zero_()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(32, gen.I, generator=g).to(dtype)
    y = torch.randint(0, 10, (32,), generator=g)
    opt = torch.optim.SGD([*layer.parameters(), *head.parameters()], lr=lr)
    for s in range(steps + 1):
        loss = torch.nn.functional.cross_entropy(head(torch.tanh(layer(x))), y)
        opt.zero_grad()
        loss.backward()
        if s == steps:
            return torch.cat([p.grad.flatten().double() for p in layer.parameters()])
        opt.step()


@pytest.mark.parametrize("arch", ["mera", "attn"])
def test_float32_gradients_follow_float64_after_sgd_steps(arch):
    # the old mera((256, 512), rank=3) init: 1.2 relative drift after two SGD steps at lr 0.1 (2e-3 at lr 0.01)
    gen = make(arch, (256, 512), rank=3, seed=0)
    g32, g64 = _grads(gen, torch.float32), _grads(gen, torch.float64)
    assert float((g32 - g64).norm() / g64.norm()) < 1e-3


def test_activation_usage_measures_how_far_each_activation_bends():
    from adntn_compiler.generators.trace import activation_usage

    g = make("ttn", (256, 196), rank=3, legs=4, seed=1)
    rows = activation_usage(g)
    assert [r["path"] for r in rows] == ["ttn.level1.node0", "ttn.level1.node1"]
    c = g.cores
    z = np.einsum("ar,bs,rst->abt", c["leaf0"], c["leaf1"], c["l1n0"])  # node 0's pre-activation, by hand
    assert rows[0]["elements"] == z.size and np.isclose(rows[0]["rms"], np.sqrt(np.mean(z ** 2)))
    assert np.isclose(rows[0]["saturated"], np.mean(np.abs(z) > 1))
    assert all(0.1 < r["nonlinear"] < 0.7 for r in rows), rows  # the init puts tanh in its bent range
    inner = [k for k in c if k.startswith("l1")]
    g.set_cores({k: v * 1e-3 if k in inner else v for k, v in c.items()})
    assert all(r["nonlinear"] < 1e-4 for r in activation_usage(g))  # tanh(z) ~ z: a linear tree in effect
    g.set_cores({k: v * 1e4 if k in inner else v for k, v in g.cores.items()})  # 10x the init: tanh ~ sign
    assert all(r["saturated"] > 0.7 and r["nonlinear"] > 0.6 for r in activation_usage(g))
    assert activation_usage(make("ttn", (256, 196), rank=3, legs=4, activation="identity")) == []
    assert activation_usage(make("tt", (256, 196), rank=3)) == []
    from adntn_compiler.errors import ConfigError
    from adntn_compiler.generators.trace import materialize

    for f in (activation_usage, materialize):  # a layer is not a generator: say how to get its generator
        with pytest.raises(ConfigError, match="takes a generator.*got ADNTNLinear; for a trained layer pass"):
            f(ADNTNLinear(g))
