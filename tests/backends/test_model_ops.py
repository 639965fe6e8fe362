"""The whole-model ops (conv as im2col + einsum, pooling, layer norm, softmax, broadcasting binaries): the
reference interpreter against torch.nn.functional, and the TVM backend against the reference, over random
strides, paddings, dilations, groups and shapes."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adntn_compiler.backends import get_backend
from adntn_compiler.backends.reference import run
from adntn_compiler.errors import ShapeError
from adntn_compiler.ir.builder import Builder
from adntn_compiler.ir.graph import AdaptivePoolAttrs, AxisAttrs, BinaryAttrs, ConvAttrs, NormAttrs, Op, PoolAttrs
from adntn_compiler.ir.ops import conv_out
from tests.corpus import library_examples  # noqa: E402

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


def _graph(op, attrs, *shapes, rng):
    b = Builder()
    xs = [b.input(f"x{k}", s) for k, s in enumerate(shapes)]
    b.output(b.node(op, xs, attrs, "test.op"))
    return b.build(), [rng.standard_normal(s) for s in shapes]


def _conv_ref(x, w, a):
    """Conv through the IR: im2col, then the einsum the frontend emits."""
    b = Builder()
    xi, wi = b.input("x", x.shape), b.input("w", w.shape)
    p = b.node(Op.IM2COL, (xi,), a, "conv")
    G, K, N, P = p.shape
    wr = b.reshape(wi, (G, w.shape[0] // G, K))
    y = b.contract([(wr, "gok"), (p, "gknp")], "ngop")
    b.output(b.reshape(y, (N, w.shape[0], *conv_out(a, x.shape))))
    return b.build()


conv_cases = st.fixed_dictionaries(dict(
    n=st.integers(1, 2), g=st.sampled_from([1, 2, 3]), cg=st.integers(1, 3), og=st.integers(1, 3),
    h=st.integers(5, 12), w=st.integers(5, 12), kh=st.integers(1, 3), kw=st.integers(1, 3),
    sh=st.integers(1, 3), sw=st.integers(1, 3), ph=st.integers(0, 2), pw=st.integers(0, 2),
    dh=st.integers(1, 2), dw=st.integers(1, 2)))


def _conv_case(c: dict, seed: int):
    """The conv attributes, input and weight of a drawn case."""
    rng = np.random.default_rng(seed)
    a = ConvAttrs((c["kh"], c["kw"]), (c["sh"], c["sw"]), (c["ph"], c["pw"]), (c["dh"], c["dw"]), c["g"])
    x = rng.standard_normal((c["n"], c["g"] * c["cg"], c["h"], c["w"]))
    w = rng.standard_normal((c["g"] * c["og"], c["cg"], c["kh"], c["kw"]))
    return a, x, w


@settings(max_examples=library_examples(40), **SETTINGS)
@given(conv_cases)
def test_conv_reference_matches_torch(c):
    a, x, w = _conv_case(c, seed=0)
    want = F.conv2d(torch.tensor(x), torch.tensor(w), None, a.stride, a.padding, a.dilation, a.groups).numpy()
    got = run(_conv_ref(x, w, a), [x, w])[0]
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


@settings(max_examples=library_examples(12), **SETTINGS)
@given(conv_cases)
def test_conv_tvm_matches_reference(c):
    a, x, w = _conv_case(c, seed=1)
    g = _conv_ref(x, w, a)
    got = get_backend("tvm").compile(g)(x.astype(np.float32), w.astype(np.float32))[0]
    np.testing.assert_allclose(got, run(g, [x, w])[0], rtol=1e-4, atol=1e-4)


pool_cases = st.fixed_dictionaries(dict(
    kind=st.sampled_from(["max", "avg"]), h=st.integers(4, 11), w=st.integers(4, 11), kh=st.integers(1, 4),
    kw=st.integers(1, 4), sh=st.integers(1, 3), sw=st.integers(1, 3), ph=st.integers(0, 2), pw=st.integers(0, 2),
    ceil=st.booleans(), cip=st.booleans(), dil=st.sampled_from([1, 2])))


def _pool_attrs(c):
    ph, pw = min(c["ph"], c["kh"] // 2), min(c["pw"], c["kw"] // 2)
    dil = (c["dil"], c["dil"]) if c["kind"] == "max" else (1, 1)  # torch's avg pooling has no dilation
    return PoolAttrs(c["kind"], (c["kh"], c["kw"]), (c["sh"], c["sw"]), (ph, pw), dil, c["ceil"], c["cip"])


def _pool_torch(x, a):
    t = torch.tensor(x)
    if a.mode == "max":
        return F.max_pool2d(t, a.kernel, a.stride, a.padding, a.dilation, a.ceil_mode).numpy()
    return F.avg_pool2d(t, a.kernel, a.stride, a.padding, a.ceil_mode, a.count_include_pad).numpy()


@settings(max_examples=library_examples(60), **SETTINGS)
@given(pool_cases)
def test_pool_reference_matches_torch(c):
    a = _pool_attrs(c)
    x = np.random.default_rng(0).standard_normal((2, 3, c["h"], c["w"]))
    try:
        want = _pool_torch(x, a)
    except RuntimeError:  # torch refuses the window (larger than the input): so must we
        with pytest.raises(ShapeError):
            _graph(Op.POOL, a, x.shape, rng=np.random.default_rng(0))
        return
    g, _ = _graph(Op.POOL, a, x.shape, rng=np.random.default_rng(0))
    np.testing.assert_allclose(run(g, [x])[0], want, rtol=1e-12, atol=1e-12)


@settings(max_examples=library_examples(12), **SETTINGS)
@given(pool_cases)
def test_pool_tvm_matches_reference(c):
    a = _pool_attrs(c)
    x = np.random.default_rng(0).standard_normal((2, 3, c["h"], c["w"]))
    try:
        _pool_torch(x, a)
    except RuntimeError:
        return
    g, _ = _graph(Op.POOL, a, x.shape, rng=np.random.default_rng(0))
    got = get_backend("tvm").compile(g)(x.astype(np.float32))[0]
    np.testing.assert_allclose(got, run(g, [x])[0], rtol=1e-5, atol=1e-5)


@settings(max_examples=library_examples(10), **SETTINGS)
@given(st.sampled_from(["max", "avg"]), st.integers(1, 9), st.integers(1, 9), st.integers(1, 8), st.integers(1, 8))
def test_adaptive_pool(kind, h, w, oh, ow):
    a = AdaptivePoolAttrs(kind, (oh, ow))
    rng = np.random.default_rng(0)
    g, (x,) = _graph(Op.ADAPTIVE_POOL, a, (2, 3, h, w), rng=rng)
    f = F.adaptive_max_pool2d if kind == "max" else F.adaptive_avg_pool2d
    want = f(torch.tensor(x), (oh, ow)).numpy()
    ref = run(g, [x])[0]
    np.testing.assert_allclose(ref, want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(get_backend("tvm").compile(g)(x.astype(np.float32))[0], ref, rtol=1e-5, atol=1e-5)


@settings(max_examples=library_examples(8), **SETTINGS)
@given(st.lists(st.integers(1, 7), min_size=1, max_size=3), st.integers(1, 2))
def test_layer_norm_and_softmax(shape, axes):
    shape = [2, *shape]
    axes = min(axes, len(shape) - 1)
    rng = np.random.default_rng(0)
    norm = tuple(shape[len(shape) - axes:])
    g, (x, gamma, beta) = _graph(Op.LAYER_NORM, NormAttrs(axes, 1e-5), tuple(shape), norm, norm, rng=rng)
    want = F.layer_norm(torch.tensor(x), norm, torch.tensor(gamma), torch.tensor(beta), 1e-5).numpy()
    ref = run(g, [x, gamma, beta])[0]
    np.testing.assert_allclose(ref, want, rtol=1e-9, atol=1e-9)
    got = get_backend("tvm").compile(g)(*(v.astype(np.float32) for v in (x, gamma, beta)))[0]
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
    axis = len(shape) - 1
    g, (x,) = _graph(Op.SOFTMAX, AxisAttrs(axis), tuple(shape), rng=rng)
    ref = run(g, [x])[0]
    np.testing.assert_allclose(ref, torch.softmax(torch.tensor(x), axis).numpy(), rtol=1e-12)
    np.testing.assert_allclose(get_backend("tvm").compile(g)(x.astype(np.float32))[0], ref, rtol=1e-4, atol=1e-6)


@settings(max_examples=library_examples(8), **SETTINGS)
@given(st.integers(1, 3), st.sampled_from([1, 5, 8, 13, 16, 64]), st.sampled_from([8, 13, 16, 40]), st.booleans(),
       st.integers(0, 9))
def test_row_softmax_schedule(heads, q, k, causal, seed):
    """The CPU's row-by-row softmax (last axis; vectorised when the row divides the lanes), causal or not."""
    g, (x,) = _graph(Op.SOFTMAX, AxisAttrs(2, causal and q <= k), (heads, q, k), rng=np.random.default_rng(seed))
    x = x * 4
    ref = run(g, [x])[0]
    np.testing.assert_allclose(get_backend("tvm").compile(g)(x.astype(np.float32))[0], ref, rtol=1e-4, atol=1e-6)


@settings(max_examples=library_examples(8), **SETTINGS)
@given(st.sampled_from(["add", "sub", "mul", "div", "max", "min"]),
       st.lists(st.sampled_from([1, 3]), min_size=1, max_size=3), st.lists(st.sampled_from([1, 3]), min_size=1,
                                                                             max_size=3))
def test_binary_broadcasts_both_ways(fn, a, b):
    rng = np.random.default_rng(0)
    g, (x, y) = _graph(Op.BINARY, BinaryAttrs(fn), tuple(a), tuple(b), rng=rng)
    if fn == "div":
        y = np.abs(y) + 0.5
    ref = run(g, [x, y])[0]
    want = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide, "max": np.maximum,
            "min": np.minimum}[fn](x, y)
    np.testing.assert_allclose(ref, want)
    got = get_backend("tvm").compile(g)(x.astype(np.float32), y.astype(np.float32))[0]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


def test_bad_attrs_name_the_node():
    b = Builder()
    x = b.input("x", (1, 3, 4, 4))
    with pytest.raises(ShapeError, match="groups=2"):
        b.node(Op.IM2COL, (x,), ConvAttrs((3, 3), groups=2), "features.0")
    with pytest.raises(ShapeError, match="features.3.*half the kernel"):
        b.node(Op.POOL, (x,), PoolAttrs("max", (2, 2), (2, 2), (2, 2)), "features.3")
