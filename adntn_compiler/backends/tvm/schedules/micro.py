"""Microcontroller schedules (Cortex-M: a scalar FPU, no threads, kilobytes of RAM).

The CPU templates at scalar width: with `MicroPolicy` (one lane, 4 x 4 accumulator tiles, no k-blocking) the
GEMM is a fully unrolled register tile whose scale and activation are fused into the write-back, and the
memory-bound kernels are plain loops (no vector split). Nothing here runs in parallel, whatever the caller
asks: a bare-metal bundle has no thread pool.
"""
from __future__ import annotations

import tvm

from ..policy import CPUPolicy, GemmTiles
from . import cpu


def gemm(func: tvm.tirx.PrimFunc, tiles: GemmTiles, policy: CPUPolicy, parallel: bool) -> tvm.tirx.PrimFunc:
    return cpu.gemm(func, tiles, policy, False)


def flat(func: tvm.tirx.PrimFunc, policy: CPUPolicy, parallel: bool) -> tvm.tirx.PrimFunc:
    return cpu.flat(func, policy, False)


def copy(func: tvm.tirx.PrimFunc, policy: CPUPolicy, parallel: bool, order=None) -> tvm.tirx.PrimFunc:
    return cpu.copy(func, policy, False, order)


def transpose(func: tvm.tirx.PrimFunc, perm: tuple[int, ...], policy: CPUPolicy, parallel: bool) -> tvm.tirx.PrimFunc:
    return cpu.transpose(func, perm, policy, False)


def depthwise(func: tvm.tirx.PrimFunc, policy: CPUPolicy, parallel: bool) -> tvm.tirx.PrimFunc:
    return cpu.depthwise(func, policy, False)
