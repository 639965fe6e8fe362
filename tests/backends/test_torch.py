import numpy as np
import torch
from hypothesis import given, strategies as st

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
