import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import adntn_compiler as adntn
from adntn_compiler.backends.reference import run
from adntn_compiler.ir.builder import Builder
from tests.corpus import generators


@given(generators(), st.integers(1, 4), st.integers(0, 2**16))
def test_layer_program_is_x_times_w_transposed(gen, batch, seed):
    W = adntn.materialize(gen).reshape(gen.O, gen.I)
    x = np.random.default_rng(seed).standard_normal((batch, gen.I))
    y = run(adntn.trace(gen, "layer", batch_size=batch), [x])[0]
    np.testing.assert_allclose(y, x @ W.T, rtol=1e-10, atol=1e-12)


def test_einsum_with_unicode_labels_beyond_52():
    # a 60-operand chain has 61 labels: the builder goes past 'Z' into unicode labels, and the interpreter's
    # result equals the chain of matrix products
    rng = np.random.default_rng(0)
    mats = [rng.standard_normal((2, 2)) for _ in range(60)]
    b = Builder()
    vals = [b.param(f"m{k}", m) for k, m in enumerate(mats)]
    y = b.contract([(v, [k, k + 1]) for k, v in enumerate(vals)], [0, 60])
    b.output(y)
    g = b.build()
    n = g.producer()[y.id]
    assert len({c for t in n.attrs.terms for c in t}) == 61 > 52
    np.testing.assert_allclose(run(g)[0], np.linalg.multi_dot(mats), rtol=1e-10)
