"""CPU schedules (x86 and NEON: the vector width comes from the policy, i.e. from the Target).

- `gemm`: the (rows x jt) accumulator tile is a cache_write block, the inner jt loop is vectorised, the scale
  and activation are fused into the tile write-back, the outer loops run in parallel. A long k uses a k-blocked
  (GotoBLAS) order instead.
- `flat`, `copy`, `transpose`: memory-bound kernels with simple vectorised, parallel schedules.

Every function takes an unscheduled PrimFunc from `compute.py` and returns the scheduled one.
"""
from __future__ import annotations

import math

import tvm
from tvm import s_tir

from ..policy import CPUPolicy, GemmTiles


def _schedule(func: tvm.tirx.PrimFunc) -> tuple[s_tir.Schedule, str]:
    name = str(func.attrs["global_symbol"])
    sch = s_tir.Schedule(tvm.IRModule({name: func}))
    sch.work_on(name)
    return sch, name


def gemm_blocks(func: tvm.tirx.PrimFunc):
    """(schedule, name, the contraction block "C", the epilogue's block names) of a GEMM from `compute.gemm`, with
    the epilogue's elementwise stages but its last inlined (the last is fused into the write-back)."""
    sch, name = _schedule(func)
    blocks = [sch.get(b).name_hint for b in sch.get_child_blocks(sch.get_sblock("root"))]
    tail = blocks[blocks.index("C") + 1:]
    for n in tail[:-1]:
        sch.compute_inline(sch.get_sblock(n))
    return sch, name, sch.get_sblock("C"), tail


def inline_elementwise(sch: s_tir.Schedule) -> None:
    """Inline every block but the last into its consumers (a reduction stays a block of its own)."""
    for blk in sch.get_child_blocks(sch.get_sblock("root"))[:-1]:
        try:
            sch.compute_inline(blk)
        except s_tir.ScheduleError:
            pass


def gemm(func: tvm.tirx.PrimFunc, tiles: GemmTiles, policy: CPUPolicy, parallel: bool) -> tvm.tirx.PrimFunc:
    sch, name, blk, tail = gemm_blocks(func)
    t = tiles
    b, i, j, *ks = sch.get_loops(blk)
    K = int(sch.get(ks[0]).extent) if len(ks) == 1 else 0
    kc = policy.k_block(int(sch.get(j).extent)) if t.kblock is None else t.kblock  # tiles may say (tuned)
    if kc and K % kc == 0 and K > kc and (t.kblock is not None or K >= policy.long_k):
        return _gemm_kblocked(sch, name, blk, tail, t, kc, parallel)
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


def _gemm_kblocked(sch, name: str, blk, tail: list[str], t: GemmTiles, KC: int, parallel: bool):
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
    if parallel:  # row tiles x B panels: a batch-1 FC layer (one row tile) still splits over its panels
        sch.parallel(sch.fuse(io, jo))
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


def depthwise(func: tvm.tirx.PrimFunc, policy: CPUPolicy, parallel: bool) -> tvm.tirx.PrimFunc:
    """An NHWC depthwise conv (`compute.depthwise`): a register tile of up to 8 output pixels x one vector of
    channels accumulates over the window (unrolled), its bias / residual / activation fused into the write-back;
    output rows in parallel."""
    sch, name = _schedule(func)
    blocks = [sch.get(b).name_hint for b in sch.get_child_blocks(sch.get_sblock("root"))]
    tail = blocks[blocks.index("D") + 1:]
    for n in tail[:-1]:
        sch.compute_inline(sch.get_sblock(n))
    blk = sch.get_sblock("D")
    n, oh, ow, c, *ks = sch.get_loops(blk)
    vec = _lanes(int(sch.get(c).extent), policy.lanes)
    r = next(d for d in range(min(8, int(sch.get(ow).extent)), 0, -1) if int(sch.get(ow).extent) % d == 0)
    owo, owi = sch.split(ow, [None, r])
    co, ci = sch.split(c, [None, vec])
    sch.reorder(n, oh, co, owo, *ks, owi, ci)
    cw = sch.cache_write(blk, 0, "global")  # the accumulator tile
    sch.reverse_compute_at(cw, owo)
    if tail:
        sch.reverse_compute_inline(sch.get_sblock(tail[-1]))
    sch.vectorize(ci)
    sch.unroll(owi)
    for k in ks:
        sch.unroll(k)
    outer = sch.fuse(n, oh)
    if parallel:
        sch.parallel(outer)
    init = sch.decompose_reduction(blk, ks[0])
    sch.vectorize(sch.get_loops(init)[-1])
    wl = sch.get_loops(cw)[3:]  # the write-back's own loops
    if wl:
        sch.vectorize(wl[-1])
    return sch.mod[name]


def _lanes(n: int, lanes: int) -> int:
    while n % lanes:
        lanes //= 2
    return lanes


def winograd_input(func: tvm.tirx.PrimFunc, policy: CPUPolicy, parallel: bool) -> tvm.tirx.PrimFunc:
    """Winograd's input transform (`compute.winograd_input`): for each tile and vector of channels, the 16 outputs
    unrolled (each folds to its adds; the 16 loads of the tile are shared), tiles in parallel."""
    sch, name = _schedule(func)
    blk = sch.get_sblock("V")
    e, p, c = sch.get_loops(blk)
    co, ci = sch.split(c, [None, _lanes(int(sch.get(c).extent), policy.lanes)])
    sch.reorder(p, co, e, ci)
    sch.unroll(e)
    sch.vectorize(ci)
    if parallel:
        sch.parallel(p)
    return sch.mod[name]


def winograd_output(func: tvm.tirx.PrimFunc, policy: CPUPolicy, parallel: bool) -> tvm.tirx.PrimFunc:
    """Winograd's output transform and the conv's epilogue (`compute.winograd_output`), inlined into one block: for
    each 2 x 2 output tile and vector of channels, its 4 outputs unrolled; tile rows in parallel."""
    sch, name = _schedule(func)
    inline_elementwise(sch)
    blk = sch.get_child_blocks(sch.get_sblock("root"))[-1]
    n, oh, ow, o = sch.get_loops(blk)
    oh0, oh1 = sch.split(oh, [None, 2])
    ow0, ow1 = sch.split(ow, [None, 2])
    o0, o1 = sch.split(o, [None, _lanes(int(sch.get(o).extent), policy.lanes)])
    sch.reorder(n, oh0, ow0, o0, oh1, ow1, o1)
    sch.unroll(oh1)
    sch.unroll(ow1)
    sch.vectorize(o1)
    outer = sch.fuse(n, oh0)
    if parallel:
        sch.parallel(outer)
    return sch.mod[name]


def flat(func: tvm.tirx.PrimFunc, policy: CPUPolicy, parallel: bool) -> tvm.tirx.PrimFunc:
    """Inline elementwise stages into their consumers; for each block left, fuse its spatial loops, vectorise
    the inner `lanes` (when they divide and nothing is reduced) and run the outer loop in parallel."""
    sch, name = _schedule(func)
    lanes = policy.lanes
    inline_elementwise(sch)
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


def softmax(func: tvm.tirx.PrimFunc, policy: CPUPolicy, parallel: bool) -> tvm.tirx.PrimFunc:
    """topi's fast_softmax over the last axis, row by row: the max, the exponentials (kept, vectorised: `flat`
    inlines them into both the sum and the output, computing each twice, scalar) and their sum at each row of the
    output, rows in parallel (2.3x faster than `flat` on GPT-2's 12x128x128 scores, 4.2x with the causal mask)."""
    sch, name = _schedule(func)
    blocks = {sch.get(b).name_hint: b for b in sch.get_child_blocks(sch.get_sblock("root"))}
    for n in ("causal", "T_softmax_delta"):
        if n in blocks:
            sch.compute_inline(blocks[n])
    loops = sch.get_loops(sch.get_sblock("T_softmax_norm"))
    row = sch.fuse(*loops[:-1]) if len(loops) > 2 else loops[0]
    n = int(sch.get(loops[-1]).extent)
    for b in ("T_softmax_expsum", "T_fast_exp", "T_softmax_maxelem"):  # consumers first
        sch.compute_at(sch.get_sblock(b), row)
    if n % policy.lanes == 0:
        for b in ("T_fast_exp", "T_softmax_norm"):
            _, v = sch.split(sch.get_loops(sch.get_sblock(b))[-1], [None, policy.lanes])
            sch.vectorize(v)
    if parallel:
        sch.parallel(row)
    return sch.mod[name]


def copy(func: tvm.tirx.PrimFunc, policy: CPUPolicy, parallel: bool,
         order: tuple[int, ...] | None = None) -> tvm.tirx.PrimFunc:
    """A copy kernel: keep the loop nest (no index division), visit the loops in `order` (the source's axis
    order for a transpose, so reads stream and each written line fills within a few iterations), vectorise
    the innermost loop, run the outermost in parallel."""
    sch, name = _schedule(func)
    lanes = policy.lanes
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
    elif n in (2, 4, 8) and n <= lanes:
        sch.vectorize(inner)
    if parallel and len(loops) > 1:
        # a batch of one is no parallel loop: fuse the outer two loops then
        outer = sch.fuse(loops[0], loops[1]) if len(loops) > 2 and int(sch.get(loops[0]).extent) < 8 else loops[0]
        sch.parallel(outer)
    return sch.mod[name]


def _tile(n: int, limit: int = 16) -> int:
    return next((t for t in (16, 8, 4) if n % t == 0 and t <= limit), 1)


def transpose(func: tvm.tirx.PrimFunc, perm: tuple[int, ...], policy: CPUPolicy,
              parallel: bool) -> tvm.tirx.PrimFunc:
    n = len(perm)
    if n < 2 or perm[-1] == n - 1:  # the innermost axis is contiguous on both sides: visit in source order
        return copy(func, policy, parallel, order=tuple(perm.index(d) for d in range(n)) if n else None)
    # the innermost axis moves: T x T tiles of (the source's innermost axis, the output's innermost axis), so
    # reads and writes both stay within a few cache lines per tile; writes vectorised.
    sch, name = _schedule(func)
    blk = sch.get_child_blocks(sch.get_sblock("root"))[-1]
    loops = sch.get_loops(blk)
    s_pos = perm.index(n - 1)  # the output loop that walks the source's contiguous axis
    # the written (vectorised) side is at most the target's vector width
    ts, to = _tile(int(sch.get(loops[s_pos]).extent)), _tile(int(sch.get(loops[-1]).extent), policy.lanes)
    if ts == 1 or to == 1:
        return copy(func, policy, parallel)
    so, si = sch.split(loops[s_pos], [None, ts])
    oo, oi = sch.split(loops[-1], [None, to])
    rest = [lp for k, lp in enumerate(loops[:-1]) if k != s_pos]
    sch.reorder(*rest, so, oo, si, oi)
    sch.vectorize(oi)
    if parallel:
        sch.parallel(rest[0] if rest else so)
    return sch.mod[name]
