"""Random small generators of every architecture, layout and activation (hypothesis strategies)."""
from __future__ import annotations

from hypothesis import strategies as st

import adntn_compiler as adntn
from adntn_compiler.activations import ACTIVATIONS
from adntn_compiler.errors import AdntnError

# hardsigmoid saturates (flat outside [-3, 3]); inside a generator its centred output is then a small difference
# of near-equal values that the calibrated scale blows up, so float32 kernels differ from float64 by conditioning
# (measured 1e-3 relative on a rank-1 attn), not by error. Its kernels are checked on their own (test_tvm).
GENERATOR_ACTIVATIONS = sorted({n for n, a in ACTIVATIONS.items() if not a.model_only} - {"hardsigmoid"})

TREE_ARCHS = ("ttn", "attn", "mera", "brickwall")
LINEAR_ARCHS = ("tt", "tucker", "cp", "lowrank", "dense")
LAYOUTS = ("separated", "interleaved", "binary")


@st.composite
def generators(draw, archs=TREE_ARCHS + LINEAR_ARCHS, conv: bool | None = None):
    arch = draw(st.sampled_from(archs))
    if conv if conv is not None else draw(st.booleans().map(lambda b: b and draw(st.integers(0, 3)) == 0)):
        shape = (draw(st.integers(2, 6)), draw(st.integers(1, 3)), draw(st.sampled_from([1, 2, 3])),
                 draw(st.sampled_from([1, 2, 3])))
    else:
        shape = (draw(st.integers(2, 20)), draw(st.integers(2, 20)))
    kw: dict = {"seed": draw(st.integers(0, 2**16))}
    if arch in ("ttn", "attn", "mera", "tt", "tucker", "cp", "brickwall"):
        kw["layout"] = draw(st.sampled_from(LAYOUTS))
    if arch in ("ttn", "attn", "mera", "brickwall"):
        kw["activation"] = draw(st.sampled_from(GENERATOR_ACTIVATIONS))
    if arch == "brickwall":
        kw["depth"] = draw(st.integers(1, 3))
    elif arch != "dense":
        kw["rank"] = draw(st.integers(1, 3))
    if arch == "ttn":
        kw["arity"] = draw(st.sampled_from([2, 2, 3]))
        kw["leaf_activation"] = draw(st.booleans())
    try:
        return adntn.make(arch, shape, **kw)
    except AdntnError as e:  # e.g. too few legs for this shape; hypothesis tries another
        from hypothesis import assume

        assume(False)
        raise AssertionError(e)


def assert_close64(actual, desired, rtol: float = 1e-9, err_msg: str = "", floor: float = 0.0) -> None:
    """float64 agreement up to rounding: relative, with an absolute floor scaled to the array's magnitude (a
    centred activation cancels, so some entries are tiny next to the rest and carry the others' rounding; at rank 1
    a whole output can cancel to exactly 0, so the floor never drops below rtol * 1e-3 of the O(1) terms)."""
    import numpy as np

    desired = np.asarray(desired)
    scale = float(np.abs(desired).max()) if desired.size else 0.0
    np.testing.assert_allclose(actual, desired, rtol=rtol, atol=max(rtol * max(scale, 1e-3), floor), err_msg=err_msg)


def largest_intermediate(g, args) -> float:
    """The largest magnitude any value reaches when the reference runs `g`: float32 results can be trusted to
    about eps32 times it (an output that cancels to O(1) from O(1e4) terms carries their rounding)."""
    import numpy as np

    from adntn_compiler.backends.reference import IMPL_NUMPY
    from adntn_compiler.ir.interpret import interpret

    big = [0.0]

    def watch(f):
        def g_(n, *xs):
            r = f(n, *xs)
            big[0] = max(big[0], float(np.abs(r).max()) if np.size(r) else 0.0)
            return r
        return g_

    interpret(g, args, {k: watch(f) for k, f in IMPL_NUMPY.items()}, lambda n, x: np.asarray(x, np.float64),
              lambda n: np.asarray(g.tensors[n.attrs.name], np.float64), "reference")
    return big[0]


def cancellation(g, args=()) -> float:
    """The most any ADD of `g` cancels on the reference (largest input magnitude / largest output magnitude; 1 if
    none): float64 results that went through it carry about eps64 times that, relative (a centred activation of a
    rank-1 generator gives 0.5 - 0.4999999 and a large calibration scale then brings it back to O(1))."""
    import numpy as np

    from adntn_compiler.backends.reference import IMPL_NUMPY
    from adntn_compiler.ir.graph import Op
    from adntn_compiler.ir.interpret import interpret

    worst = [1.0]

    def add(n, *xs):
        r = IMPL_NUMPY[Op.ADD](n, *xs)
        out = float(np.abs(r).max()) if np.size(r) else 0.0
        worst[0] = max(worst[0], max(float(np.abs(x).max()) for x in xs) / max(out, 1e-300))
        return r

    interpret(g, args, {**IMPL_NUMPY, Op.ADD: add}, lambda n, x: np.asarray(x, np.float64),
              lambda n: np.asarray(g.tensors[n.attrs.name], np.float64), "reference")
    return worst[0]


def library_examples(n: int) -> int:
    """Examples for a property test that builds a library (or plans a whole program) per example: 0.4 n under the
    ci profile (100 examples by default), proportionally fewer under dev and more under fuzz, at least 3."""
    from hypothesis import settings

    return max(3, round(n * settings.default.max_examples / 250))
