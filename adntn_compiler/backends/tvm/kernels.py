"""TensorIR kernels for the steps of a lowered program, each with a real CPU schedule.

Every kernel is built in TE, turned into a PrimFunc and scheduled with `tvm.s_tir.Schedule`:
- `gemm`: C[b, i, j] = act(s * sum_k A[b, i, k] * B[b, k, j]), B usually packed into column panels
  (b, j // jt, k, jt) (by the lowering: at load time for a constant, by a copy kernel otherwise); the
  (rows x jt) accumulator tile is a cache_write block, the inner jt loop is vectorised, the scale and
  activation are fused into the tile write-back, and the outer loops run in parallel. A long k uses a
  k-blocked order instead (`_schedule_gemm_kblocked`).
- `elementwise`/`add`, `transpose`/`pad`/`slice_`/`concat`, and `einsum` (anything that is not a GEMM: a
  plain reduction): memory-bound kernels with simple vectorised, parallel schedules.

Schedules are templates over `GemmTiles`, so a tuner can search them; `gemm_tiles` picks the defaults.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import tvm
from tvm import s_tir, te, topi

from ...activations import DERIV_PREFIX, LEAKY_SLOPE

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
        DERIV_PREFIX + "identity": lambda: _ew(x, lambda v: one, "d_identity"),
        DERIV_PREFIX + "tanh": lambda: _ew(topi.fast_tanh(x), lambda t: 1 - t * t, "d_tanh"),
        DERIV_PREFIX + "relu": lambda: _where_pos(x, lambda v: one, lambda v: zero, "d_relu"),
        DERIV_PREFIX + "leaky_relu": lambda: _where_pos(x, lambda v: one, lambda v: slope, "d_leaky_relu"),
        DERIV_PREFIX + "sigmoid": lambda: _ew(_sigmoid(x), lambda s: s * (1 - s), "d_sigmoid"),
        DERIV_PREFIX + "silu": lambda: _d_silu(x),
        DERIV_PREFIX + "gelu": lambda: _gelu_d(x),
    }
    if name not in table:
        raise KeyError(name)
    return table[name]()


def _d_silu(x: te.Tensor) -> te.Tensor:
    s = _sigmoid(x)
    return te.compute(x.shape, lambda *i: s(*i) * (1 + x(*i) * (1 - s(*i))), name="d_silu")


# ---------------------------------------------------------------- GEMM


@dataclass(frozen=True)
class GemmTiles:
    rows: int  # rows of the register tile (divides I)
    jt: int  # columns of a packed B panel (divides J)
    vec: int  # vector lanes (divides jt)
    kt: int  # inner k unroll (divides K)


def _largest_divisor(n: int, limit: int, multiple_of: int = 1) -> int:
    for d in range(min(n, limit), 0, -1):
        if n % d == 0 and d % multiple_of == 0:
            return d
    return 1


def gemm_tiles(I: int, J: int, K: int, lanes: int = 16) -> GemmTiles:
    """Default tiles: a rows x jt accumulator of at most 8 x 32 floats (16 AVX-512 registers)."""
    vec = _largest_divisor(J, lanes, 1) if J % lanes else lanes
    vec = 1 << (vec.bit_length() - 1) if vec & (vec - 1) else vec  # power-of-two lanes vectorise cleanly
    while J % vec:
        vec //= 2
    jt = _largest_divisor(J, 2 * lanes if vec == lanes else 8 * vec, vec)  # narrow vectors: wider panels
    max_rows = max(1, min(8, 24 // (jt // vec)))  # at most ~24 vector accumulators (32 registers)
    rows = _largest_divisor(I, max_rows)
    if rows < max_rows // 2 and I > max_rows:  # an awkward I: keep the tile tall anyway, the tail is guarded
        rows = max_rows
    if K <= 64 and J % (4 * lanes) == 0:  # a short k: the output write dominates; wide panels, short tiles
        jt, rows = 4 * lanes, _largest_divisor(I, 2)
    kt = _largest_divisor(K, 4)
    return GemmTiles(rows, jt, vec, kt)


def _digit(index, divisor: int, size: int, total: int):
    """Digit (index // divisor) % size of a fused index of extent `total`, without needless div/mod."""
    if size == 1:
        return 0
    v = index if divisor == 1 else index // divisor
    return v if divisor * size == total else v % size


AxisMap = tuple[tuple[str, int, int], ...]  # per axis of A: ("b"/"i", divisor, size) or ("k", position, size)


def gemm(name: str, BT: int, I: int, J: int, K: int, *, packed_b: bool, tiles: GemmTiles, n_scales: int = 0,
         act: str = "", parallel: bool = True, a_axes: AxisMap | None = None,
         k_sizes: tuple[int, ...] | None = None) -> tvm.tirx.PrimFunc:
    """C = act(prod(scales) * A @ B) over a batch; B packed (BT, J/jt, K, jt) or plain (BT, K, J).

    A is (BT, I, K), or any layout described by `a_axes`: an axis is a digit of the fused b or i index
    ((index // divisor) % size) or one of the reduction axes `k_sizes` (whose row-major fusion is B's k).
    A is only read as broadcast scalars, so a dynamic A in another layout is read in place, not copied."""
    jt = tiles.jt
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

    B = te.placeholder((BT, J // jt, K, jt) if packed_b else (BT, K, J), DTYPE, name="B")
    S = [te.placeholder((1,), DTYPE, name=f"s{i}") for i in range(n_scales)]
    if packed_b:
        C = te.compute((BT, I, J), lambda b, i, j: te.sum(a_at(b, i) * B[b, j // jt, kf, j % jt], axis=ks), name="C")
    else:
        C = te.compute((BT, I, J), lambda b, i, j: te.sum(a_at(b, i) * B[b, kf, j], axis=ks), name="C")
    Y = C
    if S:
        Y = te.compute(C.shape, lambda *i: C(*i) * math.prod([s[0] for s in S]), name="scaled")
    if act and act != "identity":
        Y = activation(act, Y)
    f = te.create_prim_func([A, B, *S, Y]).with_attr("global_symbol", name)
    return _schedule_gemm(tvm.IRModule({name: f}), name, tiles, parallel)


def _schedule_gemm(mod: tvm.IRModule, name: str, t: GemmTiles, parallel: bool) -> tvm.tirx.PrimFunc:
    sch = s_tir.Schedule(mod)
    sch.work_on(name)
    blocks = [sch.get(b).name_hint for b in sch.get_child_blocks(sch.get_sblock("root"))]
    tail = blocks[blocks.index("C") + 1:]
    for n in tail[:-1]:  # elementwise stages between the contraction and the result: inline
        sch.compute_inline(sch.get_sblock(n))
    blk = sch.get_sblock("C")
    b, i, j, *ks = sch.get_loops(blk)
    kc = k_block(int(sch.get(j).extent))
    if len(ks) == 1 and int(sch.get(ks[0]).extent) >= LONG_K and int(sch.get(ks[0]).extent) % kc == 0:
        return _schedule_gemm_kblocked(sch, name, blk, tail, t, kc, parallel)
    io, ii = sch.split(i, [None, t.rows])
    jo, ji = sch.split(j, [None, t.jt])
    ji0, ji1 = sch.split(ji, [None, t.vec])
    kt = math.gcd(t.kt, int(sch.get(ks[-1]).extent))
    ko, ki = sch.split(ks[-1], [None, kt])
    sch.reorder(b, jo, io, *ks[:-1], ko, ki, ii, ji0, ji1)
    cw = sch.cache_write(blk, 0, "global")  # the accumulator tile
    sch.reverse_compute_at(cw, io)
    if tail:
        sch.reverse_compute_inline(sch.get_sblock(tail[-1]))  # scale + activation in the write-back
    sch.vectorize(ji1)
    sch.unroll(ji0)
    sch.unroll(ii)
    sch.unroll(ki)
    outer = sch.fuse(b, jo, io)
    if parallel:
        sch.parallel(outer)
    init = sch.decompose_reduction(blk, ks[0] if len(ks) > 1 else ko)
    sch.vectorize(sch.get_loops(init)[-1])
    wl = sch.get_loops(cw)[1:]  # the write-back's own loops (unit loops may be gone)
    if wl:
        inner = sch.fuse(*wl) if len(wl) > 1 else wl[0]
        if t.vec > 1 and int(sch.get(inner).extent) % t.vec == 0:
            _, v = sch.split(inner, [None, t.vec])
            sch.vectorize(v)
    return sch.mod[name]


LONG_K = 2048  # from this k on, the GEMM is k-blocked (k = 512 measured faster without: 108 against 68 GF/s)


def k_block(J: int) -> int:
    """k block of the long-k GEMM: the (kc x J) slice of B that every row tile re-reads stays in half of L2
    (512 KB). Measured best of 128..1024: 512 for J = 256 (FC6 inference, 4096x256x3584) and 256 for
    J = 512 (FC6 training forward, 256x512x3584: 106-111 GF/s against 90 with 512)."""
    kc = 1 << max(0, (131072 // max(J, 1)).bit_length() - 1)
    return min(1024, max(256, kc))


def _schedule_gemm_kblocked(sch, name: str, blk, tail: list[str], t: GemmTiles, KC: int, parallel: bool):
    """Long k (GotoBLAS order): for each k block, every row tile meets every B panel while that block of B
    is in cache; C accumulates in memory (its 8x32 tile stays in L1 across the inner k loop). The
    scale/activation then run as one vectorised pass over C. 8x32 tiles, KC=512: 116 GF/s on FC6's
    4096x256x3584 step against 80-100 for the register-accumulator schedule."""
    b, i, j, k = sch.get_loops(blk)
    kb, kr = sch.split(k, [None, KC])
    kro, kri = sch.split(kr, [None, math.gcd(t.kt, KC)])
    io, ii = sch.split(i, [None, t.rows])
    jo, ji = sch.split(j, [None, t.jt])
    ji0, ji1 = sch.split(ji, [None, t.vec])
    sch.reorder(b, kb, io, jo, kro, kri, ii, ji0, ji1)
    sch.vectorize(ji1)
    sch.unroll(ji0)
    sch.unroll(ii)
    sch.unroll(kri)
    if parallel:
        sch.parallel(io)
    init = sch.decompose_reduction(blk, kb)
    il = sch.get_loops(init)
    if int(sch.get(il[-1]).extent) % t.vec == 0:
        _, v = sch.split(il[-1], [None, t.vec])
        sch.vectorize(v)
    if tail:
        ep = sch.get_sblock(tail[-1])
        loops = sch.get_loops(ep)
        inner = sch.fuse(*loops) if len(loops) > 1 else loops[0]
        if int(sch.get(inner).extent) % t.vec == 0:
            outer, v = sch.split(inner, [None, t.vec])
            sch.vectorize(v)
            if parallel:
                sch.parallel(outer)
    return sch.mod[name]


# ---------------------------------------------------------------- memory-bound kernels


def _schedule_flat(mod: tvm.IRModule, name: str, parallel: bool, lanes: int = 16) -> tvm.tirx.PrimFunc:
    """Inline elementwise stages into their consumers; for each block left, fuse its spatial loops, vectorise
    the inner `lanes` (when they divide and nothing is reduced) and run the outer loop in parallel."""
    sch = s_tir.Schedule(mod)
    sch.work_on(name)
    blocks = [sch.get(b).name_hint for b in sch.get_child_blocks(sch.get_sblock("root"))]
    for n in blocks[:-1]:
        try:
            sch.compute_inline(sch.get_sblock(n))
        except s_tir.ScheduleError:
            pass  # a reduction stays a block of its own
    for blk in sch.get_child_blocks(sch.get_sblock("root")):
        loops = sch.get_loops(blk)
        n_red = sum(1 for iv in sch.get(blk).iter_vars if iv.iter_type == 2)
        sp = loops[: len(loops) - n_red]
        if not sp:
            continue
        fused = sch.fuse(*sp) if len(sp) > 1 else sp[0]
        extent = int(sch.get(fused).extent)
        if not n_red and extent % lanes == 0:
            fused, v = sch.split(fused, [None, lanes])
            sch.vectorize(v)
        if parallel and extent >= 2 * lanes:
            sch.parallel(fused)
    return sch.mod[name]


def elementwise(name: str, shape: tuple[int, ...], fn: str, parallel: bool = True) -> tvm.tirx.PrimFunc:
    X = te.placeholder(shape, DTYPE, name="X")
    Y = activation(fn, X)
    if Y is X:
        Y = te.compute(shape, lambda *i: X(*i), name="copy")
    f = te.create_prim_func([X, Y]).with_attr("global_symbol", name)
    return _schedule_flat(tvm.IRModule({name: f}), name, parallel)


def add(name: str, shape: tuple[int, ...], bshape: tuple[int, ...], parallel: bool = True) -> tvm.tirx.PrimFunc:
    """y = a + b, b broadcast against a's trailing axes (numpy rules)."""
    A = te.placeholder(shape, DTYPE, name="A")
    B = te.placeholder(bshape, DTYPE, name="B")
    off = len(shape) - len(bshape)

    def f(*i):
        return A(*i) + B(*[0 if d == 1 else i[off + k] for k, d in enumerate(bshape)])

    Y = te.compute(shape, f, name="add")
    return _schedule_flat(tvm.IRModule({name: te.create_prim_func([A, B, Y]).with_attr("global_symbol", name)}),
                          name, parallel)


def _schedule_nest(mod: tvm.IRModule, name: str, parallel: bool, lanes: int = 16,
                   order: tuple[int, ...] | None = None) -> tvm.tirx.PrimFunc:
    """A copy kernel: keep the loop nest (no index division), visit the loops in `order` (the source's axis
    order for a transpose, so reads stream and each written line fills within a few iterations), vectorise
    the innermost loop, run the outermost in parallel."""
    sch = s_tir.Schedule(mod)
    sch.work_on(name)
    blk = sch.get_child_blocks(sch.get_sblock("root"))[-1]
    loops = sch.get_loops(blk)
    if not loops:
        return sch.mod[name]
    if order is not None and len(loops) == len(order) and list(order) != sorted(order):
        loops = [loops[k] for k in order]
        sch.reorder(*loops)
    inner = loops[-1]
    n = int(sch.get(inner).extent)
    if n % lanes == 0:
        _, v = sch.split(inner, [None, lanes])
        sch.vectorize(v)
    elif n in (2, 4, 8):
        sch.vectorize(inner)
    if parallel and len(loops) > 1:
        sch.parallel(loops[0])
    return sch.mod[name]


def transpose(name: str, shape: tuple[int, ...], perm: tuple[int, ...], parallel: bool = True) -> tvm.tirx.PrimFunc:
    X = te.placeholder(shape, DTYPE, name="X")
    out = tuple(shape[p] for p in perm)

    def f(*i):
        src = [None] * len(shape)
        for k, p in enumerate(perm):
            src[p] = i[k]
        return X(*src)

    Y = te.compute(out, f, name="transpose")
    mod = tvm.IRModule({name: te.create_prim_func([X, Y]).with_attr("global_symbol", name)})
    n = len(shape)
    if n >= 2 and perm[-1] != n - 1:
        return _schedule_tiled_transpose(mod, name, perm, parallel)
    # the innermost axis is contiguous on both sides: visit the other axes in source order
    src_order = tuple(perm.index(d) for d in range(n)) if n else None
    return _schedule_nest(mod, name, parallel, order=src_order)


def _tile(n: int) -> int:
    return next((t for t in (16, 8, 4) if n % t == 0), 1)


def _schedule_tiled_transpose(mod: tvm.IRModule, name: str, perm: tuple[int, ...], parallel: bool):
    """A transpose that moves the innermost axis: T x T tiles of (the source's innermost axis, the output's
    innermost axis), so reads and writes both stay within a few cache lines per tile; writes vectorised."""
    sch = s_tir.Schedule(mod)
    sch.work_on(name)
    blk = sch.get_child_blocks(sch.get_sblock("root"))[-1]
    loops = sch.get_loops(blk)
    n = len(loops)
    s_pos = perm.index(n - 1)  # the output loop that walks the source's contiguous axis
    ts, to = _tile(int(sch.get(loops[s_pos]).extent)), _tile(int(sch.get(loops[-1]).extent))
    if ts == 1 or to == 1:
        return _schedule_nest(mod, name, parallel)
    so, si = sch.split(loops[s_pos], [None, ts])
    oo, oi = sch.split(loops[-1], [None, to])
    rest = [lp for k, lp in enumerate(loops[:-1]) if k != s_pos]
    sch.reorder(*rest, so, oo, si, oi)
    sch.vectorize(oi)
    if parallel:
        sch.parallel(rest[0] if rest else so)
    return sch.mod[name]


def pack_b(name: str, shape: tuple[int, ...], axes: AxisMap, BT: int, K: int, J: int, jt: int,
           parallel: bool = True) -> tvm.tirx.PrimFunc:
    """Gather a GEMM's B operand from its own layout straight into column panels (BT, J/jt, K, jt): one copy
    instead of a transpose to (BT, K, J) followed by a packing transpose. `axes`: per source axis, the fused
    b, k or j index it is a digit of, as (group, divisor, size)."""
    X = te.placeholder(shape, DTYPE, name="X")
    total = {"b": BT, "k": K, "j": J}

    def f(b, jo, k, ji):
        src = {"b": b, "k": k, "j": jo * jt + ji}
        return X[tuple(_digit(src[g], d, n, total[g]) for g, d, n in axes)]

    Y = te.compute((BT, J // jt, K, jt), f, name="pack")
    return _schedule_nest(tvm.IRModule({name: te.create_prim_func([X, Y]).with_attr("global_symbol", name)}),
                          name, parallel)


def pad(name: str, shape: tuple[int, ...], pads: tuple[tuple[int, int], ...], parallel: bool = True):
    X = te.placeholder(shape, DTYPE, name="X")
    out = tuple(d + a + b for d, (a, b) in zip(shape, pads))

    def f(*i):
        inside = tvm.tirx.all(*[tvm.tirx.all(v >= a, v < a + d) for v, d, (a, _) in zip(i, shape, pads)]) \
            if i else tvm.tirx.const(True)
        src = [tvm.tirx.min(tvm.tirx.max(v - a, 0), d - 1) for v, d, (a, _) in zip(i, shape, pads)]
        return tvm.tirx.Select(inside, X(*src), tvm.tirx.const(0, DTYPE))

    Y = te.compute(out, f, name="pad")
    return _schedule_flat(tvm.IRModule({name: te.create_prim_func([X, Y]).with_attr("global_symbol", name)}),
                          name, parallel)


def slice_(name: str, shape: tuple[int, ...], starts: tuple[int, ...], stops: tuple[int, ...], parallel: bool = True):
    X = te.placeholder(shape, DTYPE, name="X")
    out = tuple(b - a for a, b in zip(starts, stops))
    Y = te.compute(out, lambda *i: X(*[v + a for v, a in zip(i, starts)]), name="slice")
    return _schedule_flat(tvm.IRModule({name: te.create_prim_func([X, Y]).with_attr("global_symbol", name)}),
                          name, parallel)


def concat(name: str, shapes: list[tuple[int, ...]], axis: int, parallel: bool = True):
    Xs = [te.placeholder(s, DTYPE, name=f"X{k}") for k, s in enumerate(shapes)]
    offs = [0]
    for s in shapes:
        offs.append(offs[-1] + s[axis])
    out = list(shapes[0])
    out[axis] = offs[-1]

    def f(*i):
        v = i[axis]
        expr = None
        for k in reversed(range(len(Xs))):
            src = list(i)
            src[axis] = tvm.tirx.min(tvm.tirx.max(v - offs[k], 0), shapes[k][axis] - 1)
            val = Xs[k](*src)
            expr = val if expr is None else tvm.tirx.Select(v < offs[k + 1], val, expr)
        return expr

    Y = te.compute(tuple(out), f, name="concat")
    return _schedule_flat(tvm.IRModule({name: te.create_prim_func([*Xs, Y]).with_attr("global_symbol", name)}),
                          name, parallel)


def einsum(name: str, terms: tuple[str, ...], out: str, shapes: list[tuple[int, ...]], act: str = "",
           parallel: bool = True) -> tvm.tirx.PrimFunc:
    """Any einsum (repeated labels, one or many operands): a plain reduction. Scalars are (1,)-shaped."""
    sizes: dict[str, int] = {}
    for t, s in zip(terms, shapes):
        sizes.update(zip(t, s))
    Xs = [te.placeholder(s if t else (1,), DTYPE, name=f"X{k}") for k, (t, s) in enumerate(zip(terms, shapes))]
    summed = sorted({c for t in terms for c in t} - set(out))
    raxes = {c: te.reduce_axis((0, sizes[c]), name=f"r{c}") for c in summed}
    oshape = tuple(sizes[c] for c in out)

    def f(*i):
        env = {**dict(zip(out, i)), **raxes}
        prod = None
        for t, X in zip(terms, Xs):
            v = X(*[env[c] for c in t]) if t else X[0]
            prod = v if prod is None else prod * v
        return te.sum(prod, axis=[raxes[c] for c in summed]) if summed else prod

    Y = te.compute(oshape, f, name="einsum")
    if act and act != "identity":
        Y = activation(act, Y)
    mod = tvm.IRModule({name: te.create_prim_func([*Xs, Y]).with_attr("global_symbol", name)})
    return _schedule_flat(mod, name, parallel)
