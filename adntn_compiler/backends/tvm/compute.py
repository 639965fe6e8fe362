"""The compute definitions of every kernel, in TE, with no schedule: each function returns an unscheduled
PrimFunc. The target's schedule module (`schedules/<target.schedules>.py`) turns it into fast code.

- `gemm`: C[b, i, j] = act(s * sum_k A[b, i, k] * B[b, k, j]), B plain (b, k, j) or packed into column
  panels (b, j // jt, k, jt) (by the lowering: at load time for a constant, by `pack_b` otherwise); A in
  (b, i, k) order or read in place in another layout.
- `elementwise`/`add`, `transpose`/`pack_b`/`pad`/`slice_`/`concat`, and `einsum` (anything that is not a
  GEMM: a plain reduction): memory-bound kernels.
"""
from __future__ import annotations

import math

import tvm
from tvm import te, topi

from ...activations import DERIV_PREFIX, GELU_A, GELU_C, LEAKY_SLOPE

DTYPE = "float32"


# ---------------------------------------------------------------- activations as TE stages


def _ew(x: te.Tensor, f, name: str) -> te.Tensor:
    return te.compute(x.shape, lambda *i: f(x(*i)), name=name)


def _sigmoid(x: te.Tensor) -> te.Tensor:  # 0.5 (1 + tanh(x / 2)), on the fast tanh
    t = topi.fast_tanh(_ew(x, lambda v: v * 0.5, "half"))
    return _ew(t, lambda v: 0.5 + 0.5 * v, "sigmoid")


def _gelu(x: te.Tensor) -> te.Tensor:
    e = topi.fast_erf(_ew(x, lambda v: v * (1 / math.sqrt(2)), "gelu_in"))
    return te.compute(x.shape, lambda *i: 0.5 * x(*i) * (1 + e(*i)), name="gelu")


def _gelu_d(x: te.Tensor) -> te.Tensor:
    e = topi.fast_erf(_ew(x, lambda v: v * (1 / math.sqrt(2)), "gelu_in"))
    g = topi.fast_exp(_ew(x, lambda v: -0.5 * v * v, "gauss_in"))
    c = 1 / math.sqrt(2 * math.pi)
    return te.compute(x.shape, lambda *i: 0.5 * (1 + e(*i)) + x(*i) * g(*i) * c, name="d_gelu")


def _gelu_tanh_t(x: te.Tensor) -> te.Tensor:  # tanh(c (x + a x^3)), on the fast tanh
    return topi.fast_tanh(_ew(x, lambda v: GELU_C * (v + GELU_A * v * v * v), "gelu_tanh_in"))


def _gelu_tanh(x: te.Tensor) -> te.Tensor:
    t = _gelu_tanh_t(x)
    return te.compute(x.shape, lambda *i: 0.5 * x(*i) * (1 + t(*i)), name="gelu_tanh")


def _gelu_tanh_d(x: te.Tensor) -> te.Tensor:
    t = _gelu_tanh_t(x)
    return te.compute(x.shape, lambda *i: 0.5 * (1 + t(*i)) + 0.5 * x(*i) * (1 - t(*i) * t(*i)) * GELU_C *
                      (1 + 3 * GELU_A * x(*i) * x(*i)), name="d_gelu_tanh")


def _mul(a: te.Tensor, b: te.Tensor, name: str) -> te.Tensor:
    return te.compute(a.shape, lambda *i: a(*i) * b(*i), name=name)


def _where_pos(x: te.Tensor, pos, neg, name: str) -> te.Tensor:
    return te.compute(x.shape, lambda *i: tvm.tirx.Select(x(*i) > 0, pos(x(*i)), neg(x(*i))), name=name)


def activation(name: str, x: te.Tensor) -> te.Tensor:
    """The TE stages of activation `name` (or its derivative "d:<name>") applied to x; fast polynomial
    tanh/erf/exp, since TVM's exact ones are scalarised libm calls (8-20x slower)."""
    zero, one = tvm.tirx.const(0, DTYPE), tvm.tirx.const(1, DTYPE)
    slope = tvm.tirx.const(LEAKY_SLOPE, DTYPE)
    table = {
        "identity": lambda: x,
        "tanh": lambda: topi.fast_tanh(x),
        "relu": lambda: _ew(x, lambda v: tvm.tirx.max(v, zero), "relu"),
        "leaky_relu": lambda: _where_pos(x, lambda v: v, lambda v: v * slope, "leaky_relu"),
        "sigmoid": lambda: _sigmoid(x),
        "silu": lambda: _mul(x, _sigmoid(x), "silu"),
        "gelu": lambda: _gelu(x),
        "gelu_tanh": lambda: _gelu_tanh(x),
        "hardswish": lambda: _ew(x, lambda v: v * tvm.tirx.min(tvm.tirx.max(v + 3, zero), 6 * one) / 6, "hardswish"),
        "hardsigmoid": lambda: _ew(x, lambda v: tvm.tirx.min(tvm.tirx.max(v / 6 + 0.5, zero), one), "hardsigmoid"),
        "sqrt": lambda: topi.sqrt(x),
        "rsqrt": lambda: topi.rsqrt(x),
        DERIV_PREFIX + "sqrt": lambda: _ew(topi.rsqrt(x), lambda r: r * 0.5, "d_sqrt"),
        DERIV_PREFIX + "rsqrt": lambda: _ew(topi.rsqrt(x), lambda r: r * r * r * -0.5, "d_rsqrt"),
        DERIV_PREFIX + "identity": lambda: _ew(x, lambda v: one, "d_identity"),
        DERIV_PREFIX + "tanh": lambda: _ew(topi.fast_tanh(x), lambda t: 1 - t * t, "d_tanh"),
        DERIV_PREFIX + "relu": lambda: _where_pos(x, lambda v: one, lambda v: zero, "d_relu"),
        DERIV_PREFIX + "leaky_relu": lambda: _where_pos(x, lambda v: one, lambda v: slope, "d_leaky_relu"),
        DERIV_PREFIX + "sigmoid": lambda: _ew(_sigmoid(x), lambda s: s * (1 - s), "d_sigmoid"),
        DERIV_PREFIX + "silu": lambda: _d_silu(x),
        DERIV_PREFIX + "gelu": lambda: _gelu_d(x),
        DERIV_PREFIX + "gelu_tanh": lambda: _gelu_tanh_d(x),
        DERIV_PREFIX + "hardsigmoid": lambda: _ew(x, lambda v: tvm.tirx.Select(
            tvm.tirx.all(v > -3, v < 3), one / 6, zero), "d_hardsigmoid"),
        DERIV_PREFIX + "hardswish": lambda: _ew(x, lambda v: tvm.tirx.Select(
            v < -3, zero, tvm.tirx.Select(v > 3, one, (2 * v + 3) / 6)), "d_hardswish"),
    }
    if name not in table:
        raise KeyError(name)
    return table[name]()


def _d_silu(x: te.Tensor) -> te.Tensor:
    s = _sigmoid(x)
    return te.compute(x.shape, lambda *i: s(*i) * (1 + x(*i) * (1 - s(*i))), name="d_silu")


# ---------------------------------------------------------------- GEMM


def _digit(index, divisor: int, size: int, total: int):
    """Digit (index // divisor) % size of a fused index of extent `total`, without needless div/mod."""
    if size == 1:
        return 0
    v = index if divisor == 1 else index // divisor
    return v if divisor * size == total else v % size


AxisMap = tuple[tuple[str, int, int], ...]  # per axis of A: ("b"/"i", divisor, size) or ("k", position, size)


def _func(args: list[te.Tensor], name: str) -> tvm.tirx.PrimFunc:
    return te.create_prim_func(args).with_attr("global_symbol", name)


def gemm(name: str, BT: int, I: int, J: int, K: int, *, jt: int | None, n_scales: int = 0, act: str = "",
         a_axes: AxisMap | None = None, k_sizes: tuple[int, ...] | None = None) -> tvm.tirx.PrimFunc:
    """C = act(prod(scales) * A @ B) over a batch; B packed (BT, J/jt, K, jt) when `jt` is given, else (BT, K, J).

    A is (BT, I, K), or any layout described by `a_axes`: an axis is a digit of the fused b or i index
    ((index // divisor) % size) or one of the reduction axes `k_sizes` (whose row-major fusion is B's k).
    A is only read as broadcast scalars, so a dynamic A in another layout is read in place, not copied.
    The contraction is the block named "C"; the stages after it are the epilogue."""
    k_sizes = tuple(k_sizes or (K,))
    assert math.prod(k_sizes) == K
    ks = [te.reduce_axis((0, n), name=f"k{p}") for p, n in enumerate(k_sizes)]
    kf = 0  # the fused k index (linear in the reduction axes: no division in the inner loop)
    for r, n in zip(ks, k_sizes):
        kf = kf * n + r if not isinstance(kf, int) or kf else r
    if a_axes is None:
        A = te.placeholder((BT, I, K), DTYPE, name="A")
        a_at = lambda b, i: A[b, i, kf]  # noqa: E731
    else:
        A = te.placeholder(tuple(s for _, _, s in a_axes), DTYPE, name="A")
        total = {"b": BT, "i": I}

        def a_at(b, i):
            src = {"b": b, "i": i}
            return A[tuple(ks[d] if g == "k" else _digit(src[g], d, n, total[g]) for g, d, n in a_axes)]

    if jt:
        B = te.placeholder((BT, J // jt, K, jt), DTYPE, name="B")
        C = te.compute((BT, I, J), lambda b, i, j: te.sum(a_at(b, i) * B[b, j // jt, kf, j % jt], axis=ks), name="C")
    else:
        B = te.placeholder((BT, K, J), DTYPE, name="B")
        C = te.compute((BT, I, J), lambda b, i, j: te.sum(a_at(b, i) * B[b, kf, j], axis=ks), name="C")
    S = [te.placeholder((1,), DTYPE, name=f"s{i}") for i in range(n_scales)]
    Y = C
    if S:
        Y = te.compute(C.shape, lambda *i: C(*i) * math.prod([s[0] for s in S]), name="scaled")
    if act and act != "identity":
        Y = activation(act, Y)
    return _func([A, B, *S, Y], name)


_BINARY = {"add": topi.add, "sub": topi.subtract, "mul": topi.multiply, "div": topi.divide, "max": topi.maximum,
           "min": topi.minimum}


def _epilogue(Y: te.Tensor, bias: bool, residual: bool, steps: tuple[str, ...],
              rows: int = 0) -> tuple[te.Tensor, list[te.Tensor]]:
    """Y + bias[last index] + R[index], then each step: an activation, or a binary op with a scalar (1,) argument:
    a conv's write-back (the schedules fuse it). `rows`: R has only so many rows on axis 1 (Y's extra rows read
    its last)."""
    extra = []
    if bias:
        Bv = te.placeholder((Y.shape[-1],), DTYPE, name="bias")
        extra.append(Bv)
        Y0 = Y
        Y = te.compute(Y.shape, lambda *i: Y0(*i) + Bv[i[-1]], name="add_bias")
    if residual:
        rshape = (Y.shape[0], rows, *Y.shape[2:]) if rows and rows != int(Y.shape[1]) else Y.shape
        R = te.placeholder(rshape, DTYPE, name="R")
        extra.append(R)
        Y1 = Y
        last = rshape[1] - 1
        Y = te.compute(Y.shape, lambda *i: Y1(*i) + (R(i[0], tvm.tirx.min(i[1], last), *i[2:]) if rshape != Y.shape
                                                     else R(*i)), name="add_residual")
    for k, fn in enumerate(steps):
        if fn in _BINARY:
            S = te.placeholder((1,), DTYPE, name=f"s{k}")
            extra.append(S)
            Yk = Y
            Y = te.compute(Y.shape, lambda *i: _BINARY[fn](Yk(*i), S[0]), name=f"step{k}")  # noqa: B023
        elif fn != "identity":
            Y = activation(fn, Y)
    return Y, extra


def _windows(kernel, stride, dilation, reduce: tuple[tuple[str, int], ...]):
    """The reduction axes of a conv window (unit ones left out) and its input offsets oh*s + u*d."""
    ks = {nm: te.reduce_axis((0, n), name=nm) for nm, n in reduce if n > 1}
    (sh, sw), (dh, dw) = stride, dilation
    u, v = ks.get("u", 0), ks.get("v", 0)
    return ks, (lambda oh: oh * sh + u * dh), (lambda ow: ow * sw + v * dw)


def _out_hw(padded, kernel, stride, dilation) -> tuple[int, int]:
    """A conv's output height and width from its padded input's (`ir.ops.conv_out` with the padding done)."""
    return tuple((n - d * (k - 1) - 1) // s + 1 for n, k, s, d in zip(padded, kernel, stride, dilation))


def conv(name: str, xshape: tuple[int, ...], O: int, kernel, stride, dilation, jt: int, *, rows: int = 0,
         bias: bool = False, residual: bool = False, steps: tuple[str, ...] = ()) -> tvm.tirx.PrimFunc:
    """A convolution as an implicit GEMM in NHWC, with no patch matrix written:
    C[0, (n, oh, ow), o] = sum_{u, v, c} X[n, oh*sh + u*dh, ow*sw + v*dw, c] * B[0, o // jt, (u, v, c), o % jt].

    X is the padded input (N, Hp, Wp, C); B the weight packed at load time (OIHW -> (u, v, c) x o panels of jt
    output channels). Block "C" has a GEMM's loops (b, i, j, reductions), so every schedule module's `gemm`
    schedules it: rows of output pixels x a vector of output channels, the pixel's inputs read as broadcast
    scalars. The bias, a residual (NHWC, (1, I, O)) and elementwise steps are the epilogue. `rows` > I pads the
    pixels to whole register tiles: the extra rows repeat the last pixel (C has `rows` rows, R only I)."""
    N, Hp, Wp, Cin = xshape
    kh, kw = kernel
    Ho, Wo = _out_hw((Hp, Wp), kernel, stride, dilation)
    I, K = N * Ho * Wo, kh * kw * Cin
    ks, row, col = _windows(kernel, stride, dilation, (("u", kh), ("v", kw), ("c", Cin)))
    u, v, c = ks.get("u", 0), ks.get("v", 0), ks.get("c", 0)
    kf = (u * kw + v) * Cin + c
    X = te.placeholder(xshape, DTYPE, name="X")
    B = te.placeholder((1, O // jt, K, jt), DTYPE, name="B")

    Ip = max(rows, I)

    def f(b, i, j):
        i = tvm.tirx.min(i, I - 1) if Ip > I else i
        n, oh, ow = _digit(i, Ho * Wo, N, I), _digit(i, Wo, Ho, I), _digit(i, 1, Wo, I)
        return te.sum(X[n, row(oh), col(ow), c] * B[b, j // jt, kf, j % jt], axis=list(ks.values()))

    Y, extra = _epilogue(te.compute((1, Ip, O), f, name="C"), bias, residual, steps, rows=I)
    return _func([X, B, *extra, Y], name)


def depthwise(name: str, xshape: tuple[int, ...], kernel, stride, dilation, *, bias: bool = False,
              residual: bool = False, steps: tuple[str, ...] = ()) -> tvm.tirx.PrimFunc:
    """A depthwise convolution in NHWC: D[n, oh, ow, c] = sum_{u, v} X[n, oh*sh + u*dh, ow*sw + v*dw, c] * W[u, v, c]
    (X padded, W (kh, kw, C) laid out at load time): channels are contiguous, so they are the vector lanes.
    Block "D", then the epilogue (bias, residual (N, Ho, Wo, C), elementwise steps)."""
    N, Hp, Wp, Cc = xshape
    kh, kw = kernel
    Ho, Wo = _out_hw((Hp, Wp), kernel, stride, dilation)
    ks, row, col = _windows(kernel, stride, dilation, (("u", kh), ("v", kw)))
    u, v = ks.get("u", 0), ks.get("v", 0)
    X = te.placeholder(xshape, DTYPE, name="X")
    W = te.placeholder((kh, kw, Cc), DTYPE, name="W")
    D = te.compute((N, Ho, Wo, Cc), lambda n, oh, ow, c: te.sum(X[n, row(oh), col(ow), c] * W[u, v, c],
                                                                axis=list(ks.values())), name="D")
    Y, extra = _epilogue(D, bias, residual, steps)
    return _func([X, W, *extra, Y], name)


def _lincomb(coefs, terms):
    """sum_k coefs[k] * terms[k] with the zero coefficients left out and +-1 as an add or a subtract."""
    out = None
    for c, t in zip(coefs, terms):
        if c == 0:
            continue
        v = t if abs(c) == 1 else t * tvm.tirx.const(float(abs(c)), DTYPE)
        if out is None:
            out = -v if c < 0 else v
        else:
            out = out + v if c > 0 else out - v
    return out if out is not None else tvm.tirx.const(0, DTYPE)


def _select(index, exprs: list):
    """exprs[index] for a loop index the schedule unrolls (each unrolled copy folds to one expression)."""
    out = exprs[-1]
    for k in reversed(range(len(exprs) - 1)):
        out = tvm.tirx.Select(index == k, exprs[k], out)
    return out


def winograd_input(name: str, xshape: tuple[int, ...], tiles: tuple[int, int]) -> tvm.tirx.PrimFunc:
    """Winograd F(2x2, 3x3), input side: V[(eps, nu), p, c] = (B^T d_p B)[eps, nu] for each 4 x 4 tile d_p (stride
    2) of the padded NHWC input, p = (n, tile row, tile column): the A operand (16, P, C) of 16 GEMMs. Axis 0 is
    unrolled by the schedule, so each copy is its few adds."""
    from .program import WINOGRAD_B as Bm

    N, Hp, Wp, Cc = xshape
    th, tw = tiles
    X = te.placeholder(xshape, DTYPE, name="X")

    def f(e, p, c):
        n, h, w = _digit(p, th * tw, N, N * th * tw), _digit(p, tw, th, N * th * tw), _digit(p, 1, tw, N * th * tw)
        d = [[X[n, 2 * h + a, 2 * w + b, c] for b in range(4)] for a in range(4)]
        rows = [[_lincomb(Bm[:, eps], [d[a][b] for a in range(4)]) for b in range(4)] for eps in range(4)]
        return _select(e, [_lincomb(Bm[:, nu], rows[eps]) for eps in range(4) for nu in range(4)])

    return _func([X, te.compute((16, N * th * tw, Cc), f, name="V")], name)


def winograd_output(name: str, mshape: tuple[int, ...], out: tuple[int, ...], *, bias: bool = False,
                    residual: bool = False, steps: tuple[str, ...] = ()) -> tvm.tirx.PrimFunc:
    """Winograd F(2x2, 3x3), output side: Y[n, oh, ow, o] = (A^T M_p A)[oh % 2, ow % 2] from the 16 GEMMs' results
    M (16, P, O), then the conv's epilogue (bias, residual (N, Ho, Wo, O), elementwise steps); NHWC out.
    Block "Y"; the schedule unrolls oh % 2 and ow % 2."""
    from .program import WINOGRAD_A as Am

    N, Ho, Wo, O = out
    th, tw = -(-Ho // 2), -(-Wo // 2)
    M = te.placeholder(mshape, DTYPE, name="M")

    def f(n, oh, ow, o):
        p = (n * th + oh // 2) * tw + ow // 2
        m = [[M[eps * 4 + nu, p, o] for nu in range(4)] for eps in range(4)]
        cols = [[_lincomb(Am[:, s], m[eps]) for s in range(2)] for eps in range(4)]
        return _select((oh % 2) * 2 + ow % 2, [_lincomb(Am[:, r], [cols[eps][s] for eps in range(4)])
                                                for r in range(2) for s in range(2)])

    Y, extra = _epilogue(te.compute(out, f, name="Y"), bias, residual, steps)
    return _func([M, *extra, Y], name)


def conv_input(name: str, shape: tuple[int, ...], nhwc: bool, padding: tuple[int, int],
               extra: tuple[int, int] = (0, 0)) -> tvm.tirx.PrimFunc:
    """A conv's input, zero-padded (and `extra` zero rows / columns at the bottom / right), in NHWC, from NCHW or
    NHWC `shape` (the layout change rides on the copy)."""
    X = te.placeholder(shape, DTYPE, name="X")
    N, H, W, Cc = shape if nhwc else (shape[0], shape[2], shape[3], shape[1])
    ph, pw = padding

    def f(n, h, w, c):
        hh, ww = h - ph, w - pw
        val = X[n, hh, ww, c] if nhwc else X[n, c, hh, ww]
        if not (ph or pw or any(extra)):
            return val
        return tvm.tirx.if_then_else(  # (not Select: see `pad`)
            tvm.tirx.all(hh >= 0, hh < H, ww >= 0, ww < W), val, tvm.tirx.const(0, DTYPE))

    out = (N, H + 2 * ph + extra[0], W + 2 * pw + extra[1], Cc)
    return _func([X, te.compute(out, f, name="conv_input")], name)


# ---------------------------------------------------------------- memory-bound kernels


def elementwise(name: str, shape: tuple[int, ...], fn: str) -> tvm.tirx.PrimFunc:
    X = te.placeholder(shape, DTYPE, name="X")
    Y = activation(fn, X)
    if Y is X:
        Y = te.compute(shape, lambda *i: X(*i), name="copy")
    return _func([X, Y], name)


def add(name: str, shape: tuple[int, ...], bshape: tuple[int, ...]) -> tvm.tirx.PrimFunc:
    """y = a + b, b broadcast against a's trailing axes (numpy rules)."""
    A = te.placeholder(shape, DTYPE, name="A")
    B = te.placeholder(bshape, DTYPE, name="B")
    off = len(shape) - len(bshape)

    def f(*i):
        return A(*i) + B(*[0 if d == 1 else i[off + k] for k, d in enumerate(bshape)])

    return _func([A, B, te.compute(shape, f, name="add")], name)


def transpose(name: str, shape: tuple[int, ...], perm: tuple[int, ...]) -> tvm.tirx.PrimFunc:
    X = te.placeholder(shape, DTYPE, name="X")

    def f(*i):
        src = [None] * len(shape)
        for k, p in enumerate(perm):
            src[p] = i[k]
        return X(*src)

    return _func([X, te.compute(tuple(shape[p] for p in perm), f, name="transpose")], name)


def pack_b(name: str, shape: tuple[int, ...], axes: AxisMap, BT: int, K: int, J: int, jt: int) -> tvm.tirx.PrimFunc:
    """Gather a GEMM's B operand from its own layout straight into column panels (BT, J/jt, K, jt): one copy
    instead of a transpose to (BT, K, J) followed by a packing transpose. `axes`: per source axis, the fused
    b, k or j index it is a digit of, as (group, divisor, size)."""
    X = te.placeholder(shape, DTYPE, name="X")
    total = {"b": BT, "k": K, "j": J}

    def f(b, jo, k, ji):
        src = {"b": b, "k": k, "j": jo * jt + ji}
        return X[tuple(_digit(src[g], d, n, total[g]) for g, d, n in axes)]

    return _func([X, te.compute((BT, J // jt, K, jt), f, name="pack")], name)


def pad(name: str, shape: tuple[int, ...], pads: tuple[tuple[int, int], ...]) -> tvm.tirx.PrimFunc:
    X = te.placeholder(shape, DTYPE, name="X")
    out = tuple(d + a + b for d, (a, b) in zip(shape, pads))

    def f(*i):
        inside = tvm.tirx.all(*[tvm.tirx.all(v >= a, v < a + d) for v, d, (a, _) in zip(i, shape, pads)]) \
            if i else tvm.tirx.const(True)
        # if_then_else, not Select: a Select reads both sides, and the simplifier drops a clamp of the index
        # under its condition (the read before or past the buffer that a clamp was meant to prevent)
        return tvm.tirx.if_then_else(inside, X(*[v - a for v, (a, _) in zip(i, pads)]), tvm.tirx.const(0, DTYPE))

    return _func([X, te.compute(out, f, name="pad")], name)


def slice_(name: str, shape: tuple[int, ...], starts: tuple[int, ...], stops: tuple[int, ...]) -> tvm.tirx.PrimFunc:
    X = te.placeholder(shape, DTYPE, name="X")
    out = tuple(b - a for a, b in zip(starts, stops))
    return _func([X, te.compute(out, lambda *i: X(*[v + a for v, a in zip(i, starts)]), name="slice")], name)


def concat(name: str, shapes: list[tuple[int, ...]], axis: int) -> tvm.tirx.PrimFunc:
    Xs = [te.placeholder(s, DTYPE, name=f"X{k}") for k, s in enumerate(shapes)]
    offs = [0]
    for s in shapes:
        offs.append(offs[-1] + s[axis])
    out = list(shapes[0])
    out[axis] = offs[-1]

    def f(*i):
        v = i[axis]
        expr = None
        for k in reversed(range(len(Xs))):  # (if_then_else: see `pad`)
            src = list(i)
            src[axis] = v - offs[k]
            val = Xs[k](*src)
            expr = val if expr is None else tvm.tirx.if_then_else(v < offs[k + 1], val, expr)
        return expr

    return _func([*Xs, te.compute(tuple(out), f, name="concat")], name)


def einsum(name: str, terms: tuple[str, ...], out: str, shapes: list[tuple[int, ...]],
           act: str = "") -> tvm.tirx.PrimFunc:
    """Any einsum (repeated labels, one or many operands): a plain reduction. Scalars are (1,)-shaped."""
    sizes: dict[str, int] = {}
    for t, s in zip(terms, shapes):
        sizes.update(zip(t, s))
    Xs = [te.placeholder(s if t else (1,), DTYPE, name=f"X{k}") for k, (t, s) in enumerate(zip(terms, shapes))]
    summed = sorted({c for t in terms for c in t} - set(out))
    raxes = {c: te.reduce_axis((0, sizes[c]), name=f"r{c}") for c in summed}

    def f(*i):
        env = {**dict(zip(out, i)), **raxes}
        prod = None
        for t, X in zip(terms, Xs):
            v = X(*[env[c] for c in t]) if t else X[0]
            prod = v if prod is None else prod * v
        return te.sum(prod, axis=[raxes[c] for c in summed]) if summed else prod

    Y = te.compute(tuple(sizes[c] for c in out), f, name="einsum")
    if act and act != "identity":
        Y = activation(act, Y)
    return _func([*Xs, Y], name)


# ---------------------------------------------------------------- whole-model ops: topi's compute where it has one


def binary(name: str, fn: str, ashape: tuple[int, ...], bshape: tuple[int, ...]) -> tvm.tirx.PrimFunc:
    """a (fn) b with numpy broadcasting (topi's broadcast ops)."""
    A, B = te.placeholder(ashape, DTYPE, name="A"), te.placeholder(bshape, DTYPE, name="B")
    return _func([A, B, _BINARY[fn](A, B)], name)


def im2col(name: str, xshape: tuple[int, ...], kernel, stride, padding, dilation, groups: int) -> tvm.tirx.PrimFunc:
    """patches[g, c, u, v, n, i, j] = x[n, g*Cg + c, i*sh - ph + u*dh, j*sw - pw + v*dw] (0 outside): the
    (G, Cg*kh*kw, N, Ho*Wo) operand of a conv's GEMM, written with one loop per axis (no index division)."""
    from ...ir.graph import ConvAttrs
    from ...ir.ops import conv_out

    N, C, H, W = xshape
    ho, wo = conv_out(ConvAttrs(tuple(kernel), tuple(stride), tuple(padding), tuple(dilation), groups), xshape)
    (kh, kw), (sh, sw), (ph, pw), (dh, dw), cg = kernel, stride, padding, dilation, C // groups
    X = te.placeholder(xshape, DTYPE, name="X")

    def f(g, c, u, v, n, i, j):
        h, w = i * sh - ph + u * dh, j * sw - pw + v * dw
        inside = tvm.tirx.all(h >= 0, h < H, w >= 0, w < W)
        return tvm.tirx.if_then_else(inside, X[n, g * cg + c, h, w], tvm.tirx.const(0, DTYPE))

    return _func([X, te.compute((groups, cg, kh, kw, N, ho, wo), f, name="im2col")], name)


def pool(name: str, xshape: tuple[int, ...], kind: str, kernel, stride, padding, dilation, ceil_mode: bool,
         count_include_pad: bool, layout: str = "NCHW") -> tvm.tirx.PrimFunc:
    X = te.placeholder(xshape, DTYPE, name="X")
    pads = (padding[0], padding[1], padding[0], padding[1])
    Y = topi.nn.pool2d(X, kernel, stride, dilation, pads, kind, ceil_mode, layout, count_include_pad)
    return _func([X, Y], name)


def adaptive_pool(name: str, xshape: tuple[int, ...], kind: str, output_size,
                  layout: str = "NCHW") -> tvm.tirx.PrimFunc:
    X = te.placeholder(xshape, DTYPE, name="X")
    return _func([X, topi.nn.adaptive_pool(X, tuple(output_size), kind, layout)], name)


def layer_norm(name: str, xshape: tuple[int, ...], axes: int, eps: float) -> tvm.tirx.PrimFunc:
    X = te.placeholder(xshape, DTYPE, name="X")
    G = te.placeholder(xshape[len(xshape) - axes:], DTYPE, name="gamma")
    B = te.placeholder(xshape[len(xshape) - axes:], DTYPE, name="beta")
    Y = topi.nn.layer_norm(X, G, B, list(range(len(xshape) - axes, len(xshape))), eps)
    return _func([X, G, B, Y], name)


def softmax(name: str, xshape: tuple[int, ...], axis: int, causal: bool = False) -> tvm.tirx.PrimFunc:
    """topi's fast_softmax: its exp is the polynomial fast_exp (te.exp is a scalar libm call). Causal: the entries
    after the row's own index are replaced, from the indices, by the lowest float (exp gives 0 to float32)."""
    X = te.placeholder(xshape, DTYPE, name="X")
    lowest = tvm.tirx.const(-3.0e38, DTYPE)
    S = te.compute(xshape, lambda *i: tvm.tirx.Select(i[-1] > i[-2], lowest, X(*i)), name="causal") if causal else X
    return _func([X, topi.nn.fast_softmax(S, axis)], name)


def take(name: str, table: tuple[int, int], ids: tuple[int, ...]) -> tvm.tirx.PrimFunc:
    """Y[..., d] = T[ids[...], d]. The ids arrive as float32 (every buffer is; exact below 2**24) and are clamped
    into the table: a bad id can never read outside it (callers check the ids before a run and refuse them)."""
    T = te.placeholder(table, DTYPE, name="T")
    ids_ = te.placeholder(ids, DTYPE, name="ids")

    def f(*i):
        r = tvm.tirx.max(tvm.tirx.min(ids_(*i[:-1]).astype("int32"), table[0] - 1), 0)
        return T[r, i[-1]]

    return _func([T, ids_, te.compute((*ids, table[1]), f, name="take")], name)
