import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import adntn_compiler as adntn
from adntn_compiler.backends import get_backend
from adntn_compiler.backends import torch as tb
from adntn_compiler.backends.reference import run
from tests.corpus import assert_close64, generators


@given(generators(), st.integers(1, 3), st.integers(0, 2**16))
def test_torch_backend_equals_reference_float64(gen, batch, seed):
    x = np.random.default_rng(seed).standard_normal((batch, gen.I))
    for g, args in ((adntn.trace(gen, "layer", batch_size=batch), [x]), (adntn.trace(gen, "weight"), [])):
        ref = run(g, args)[0]
        out = get_backend("torch").compile(g, dtype=torch.float64)(*args)[0]
        assert_close64(out.numpy(), ref, rtol=1e-10)


@given(generators())
def test_gradients_reach_every_core(gen):
    g = adntn.trace(gen, "weight")
    params = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in g.tensors.items()}
    W = tb.run(g, [], params)[0]
    (W * torch.linspace(-1, 1, W.numel(), dtype=torch.float64).reshape(W.shape)).sum().backward()
    for k, p in params.items():
        assert p.grad is not None, k
        assert torch.isfinite(p.grad).all(), k
    assert not get_backend("torch").unsupported(g)


@pytest.mark.parametrize("activation", ["gelu", "silu", "tanh", "gelu_tanh"])
def test_activation_on_more_than_16_axes(activation):
    # binary legs of 1024x1024: the fused level-4 contraction + activation has 17 axes, and torch's gelu
    # float32 kernel refuses more than 16 dims
    gen = adntn.ttn((1024, 1024), rank=3, layout="binary", activation=activation, seed=0)
    layer = adntn.ADNTNLinear(gen)
    g = layer._graph(2)
    assert any(n.attrs.epilogue and len(n.out.shape) > 16 for n in g.nodes if hasattr(n.attrs, "epilogue"))
    x = np.random.default_rng(0).standard_normal((2, 1024))
    y = layer(torch.tensor(x, dtype=torch.float32)).detach().numpy()
    ref = run(adntn.trace(gen, "layer", batch_size=2), [x])[0]
    np.testing.assert_allclose(y - layer.bias.detach().numpy(), ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())


def test_tanh_gelu_and_its_derivative_agree_with_torch():
    """The numpy definition (the reference's) against torch's F.gelu(approximate="tanh") and its autograd."""
    import torch

    from adntn_compiler import activations

    z = np.linspace(-8, 8, 401)
    zt = torch.tensor(z, requires_grad=True)
    y = torch.nn.functional.gelu(zt, approximate="tanh")
    y.sum().backward()
    act = activations.get("gelu_tanh")
    np.testing.assert_allclose(act.numpy(z), y.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(act.derivative(z), zt.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(activations.torch_fn("d:gelu_tanh")(zt.detach()).numpy(), zt.grad.numpy(),
                               rtol=1e-10, atol=1e-12)
