import numpy as np
from hypothesis import given, strategies as st

import adntn_compiler as adntn
from adntn_compiler.backends.reference import run
from tests.corpus import generators


@given(generators(), st.integers(1, 4), st.integers(0, 2**16))
def test_layer_program_is_x_times_w_transposed(gen, batch, seed):
    W = adntn.materialize(gen).reshape(gen.O, gen.I)
    x = np.random.default_rng(seed).standard_normal((batch, gen.I))
    y = run(adntn.trace(gen, "layer", batch_size=batch), [x])[0]
    np.testing.assert_allclose(y, x @ W.T, rtol=1e-10, atol=1e-12)


def test_einsum_with_unicode_labels_beyond_52():
    # binary legs of a 64x64 weight plus bonds: the builder must go past 'Z' only when needed
    gen = adntn.ttn((64, 64), rank=2, layout="binary", arity=12)
    W = adntn.materialize(gen)
    assert W.shape == (64, 64) and np.isfinite(W).all()
