"""GPU schedules (CUDA and OpenCL share them: the same scheduled PrimFunc goes to either code generator).

- `gemm`: our template. A block of (ty x tx) threads owns a (rows x jt) tile of C, one panel of the packed B;
  each thread keeps a register tile of (rows / ty) x (jt / tx) accumulators over contiguous columns; for each
  k tile the block stages B's (kt x jt) slab in shared memory with a cooperative, coalesced load (float4 where
  the slab allows: the policy's `vector`); the scale
  and activation are fused into the register tile's write-back. A is read straight from global memory (every
  thread of a row reads the same element: a broadcast), in its own layout when the lowering reads it in place.
- `depthwise`: one thread per NHWC output element, its window summed at that thread (no patch matrix).
- `flat`, `copy`, `transpose`: elementwise stages are inlined, then dlight's default GPU rules (under one GPU
  description for CUDA and OpenCL: 256 threads a block, reductions through shared memory) schedule what is
  left (Reduction / GeneralReduction keep a softmax or a norm in one kernel with shared memory; Fallback binds
  the fused spatial loops to blocks of threads, consecutive threads on consecutive outputs).

Every scheduled function must lower to device kernels with no host-side intermediate buffer (the CUDA host
code cannot allocate workspace, and it would mean a host round trip): `gpu_build.launch_table` checks it.
"""
from __future__ import annotations

import tvm
from tvm import s_tir

from ..policy import GPUPolicy, GPUTiles
from .cpu import _schedule, gemm_blocks, inline_elementwise


def gemm(func: tvm.tirx.PrimFunc, tiles: GPUTiles, policy: GPUPolicy, parallel: bool) -> tvm.tirx.PrimFunc:
    t = tiles
    sch, name, blk, tail = gemm_blocks(func)
    b, i, j, *ks = sch.get_loops(blk)
    k = sch.fuse(*ks) if len(ks) > 1 else ks[0]  # one reduction loop per label of a layout-free A: one k
    bi, ti, ri = sch.split(i, [None, t.ty, t.rows // t.ty])
    bj, tj, rj = sch.split(j, [None, t.tx, t.jt // t.tx])  # a thread's columns are contiguous: one write-back box
    ko, ki = sch.split(k, [None, t.kt])
    sch.reorder(b, bi, bj, ti, tj, ko, ki, ri, rj)
    sch.bind(sch.fuse(b, bi), "blockIdx.y")
    sch.bind(bj, "blockIdx.x")
    sch.bind(ti, "threadIdx.y")
    sch.bind(tj, "threadIdx.x")
    reads = [r.source.name for r in sch.get(blk).reads]
    bs = sch.cache_read(blk, reads.index("B"), "shared")
    sch.compute_at(bs, ko)
    loops = sch.get_loops(bs)
    at = next(n for n, lp in enumerate(loops) if sch.get(lp).same_as(sch.get(ko)))
    inner = loops[at + 1:]  # the copy's own loops (none when the slab is one element)
    if inner:  # cooperative: every thread loads `vec` consecutive floats per step (a packed panel row is contiguous)
        _, fy, fx, fv = sch.split(sch.fuse(*inner) if len(inner) > 1 else inner[0], [None, t.ty, t.tx, t.vec])
        sch.bind(fy, "threadIdx.y")
        sch.bind(fx, "threadIdx.x")
        if t.vec > 1:
            sch.vectorize(fv)
    cw = sch.cache_write(blk, 0, "local")  # the register tile
    sch.reverse_compute_at(cw, tj)
    if tail:
        sch.reverse_compute_inline(sch.get_sblock(tail[-1]))  # scale + activation in the write-back
    sch.decompose_reduction(blk, ko)
    for lp in (ki, ri, rj):
        sch.unroll(lp)
    return sch.mod[name]


def _dlight(sch: s_tir.Schedule, name: str, policy: GPUPolicy) -> tvm.tirx.PrimFunc:
    """dlight's rules, under one GPU description for every API (the policy's threads per block, no warp
    shuffles): its rules read the target in scope, and CUDA's would differ from OpenCL's in block size, unrolling
    and warp-shuffle reductions, so pocl would no longer check what CUDA runs."""
    from tvm.s_tir import dlight as dl

    with tvm.target.Target({"kind": "opencl", "max_num_threads": policy.max_threads}):
        mod = dl.ApplyDefaultSchedule(dl.gpu.Reduction(), dl.gpu.GeneralReduction(), dl.gpu.Fallback())(sch.mod)
    return mod[name]


def _global_intermediates(func: tvm.tirx.PrimFunc) -> bool:
    """Whether a scheduled function keeps a global buffer between two of its kernels (a host-side allocation)."""
    sch = s_tir.Schedule(tvm.IRModule({"f": func}))
    sch.work_on("f")
    return any(b.scope() == "global" for b in sch.get(sch.get_sblock("root")).alloc_buffers)


def _per_thread(sch: s_tir.Schedule, name: str, policy: GPUPolicy) -> tvm.tirx.PrimFunc:
    """One thread per output element, every producer computed at that thread (its own reduction, serially): for
    a reduction with a consumer that dlight splits into two kernels (topi's adaptive pooling: sum, then divide)."""
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    last = blocks[-1]
    loops = sch.get_loops(last)
    fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
    bx, tx = sch.split(fused, [None, min(policy.max_threads, int(sch.get(fused).extent))])
    sch.bind(bx, "blockIdx.x")
    sch.bind(tx, "threadIdx.x")
    for blk in reversed(blocks[:-1]):
        sch.compute_at(blk, tx)
        sch.set_scope(blk, 0, "local")
    return sch.mod[name]


def flat(func: tvm.tirx.PrimFunc, policy: GPUPolicy, parallel: bool) -> tvm.tirx.PrimFunc:
    sch, name = _schedule(func)
    inline_elementwise(sch)
    several = len(sch.get_child_blocks(sch.get_sblock("root"))) > 1
    out = _dlight(sch, name, policy)
    if several and _global_intermediates(out):
        sch, name = _schedule(func)
        inline_elementwise(sch)
        out = _per_thread(sch, name, policy)
    return out


def depthwise(func: tvm.tirx.PrimFunc, policy: GPUPolicy, parallel: bool) -> tvm.tirx.PrimFunc:
    """An NHWC depthwise conv (`compute.depthwise`) with no patch matrix: one thread per output element, consecutive
    threads on consecutive channels (coalesced reads and writes), its window summed in a register at that thread,
    the bias / residual / activation in the write-back."""
    sch, name = _schedule(func)
    inline_elementwise(sch)
    return _per_thread(sch, name, policy)


def copy(func: tvm.tirx.PrimFunc, policy: GPUPolicy, parallel: bool, order=None) -> tvm.tirx.PrimFunc:
    """A copy (im2col, packing): one thread per output element, consecutive threads on consecutive outputs
    (coalesced writes; the reads of a copy kernel are gathers either way)."""
    return flat(func, policy, parallel)


def transpose(func: tvm.tirx.PrimFunc, perm: tuple[int, ...], policy: GPUPolicy, parallel: bool) -> tvm.tirx.PrimFunc:
    return flat(func, policy, parallel)
