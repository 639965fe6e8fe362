"""The kernel policy of a target: every tile, threshold and cost rate the lowering and the schedules choose by.

A policy is a frozen value. `default_policy(target)` gives the heuristics measured on x86; a tuner (or a user)
hands `compile(..., policy=...)` another one (`dataclasses.replace(p, max_rows=4)`, or per-GEMM `tiles`
found by measurement) without touching the lowering.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Mapping

from ...targets import Target


@dataclass(frozen=True)
class GemmTiles:
    rows: int  # rows of the register tile (divides I, or the tail is guarded)
    jt: int  # columns of a packed B panel (divides J)
    vec: int  # vector lanes (divides jt)
    kt: int  # inner k unroll (divides K)
    kblock: int | None = None  # k-blocking: None lets the policy decide (long_k, k_block), 0 never, n blocks of n


def _largest_divisor(n: int, limit: int, multiple_of: int = 1) -> int:
    for d in range(min(n, limit), 0, -1):
        if n % d == 0 and d % multiple_of == 0:
            return d
    return 1


@dataclass(frozen=True)
class CPUPolicy:
    lanes: int  # float32 vector lanes (from the Target)
    max_rows: int = 8  # register tile: at most max_rows x (2 * lanes) accumulators
    registers: int = 24  # vector registers the accumulator tile may take (of 32 on AVX-512/NEON)
    short_k: int = 64  # up to this k the output write dominates: wide panels, short tiles
    # From this k on the GEMM is k-blocked (k = 512 measured faster without: 108 against 68 GF/s).
    long_k: int = 2048
    # The (kc x J) slice of B that every row tile re-reads stays in half of L2 (512 KB of float32). Measured
    # best of 128..1024: 512 for J = 256 (FC6 inference) and 256 for J = 512 (FC6 training forward).
    k_block_elements: int = 131072
    # A dynamic A up to this many elements (1 MiB, stays in L2) is read in its own layout by a GEMM with a
    # single B panel; larger ones are transposed first (scattered re-reads: 95 ms against 1 + 14 ms).
    strided_a_max: int = 1 << 18
    pack_b_min: int = 1 << 14  # a dynamic B of at least this many elements is packed into panels first
    # GEMM role cost: copies at ~1.3 ns per element; the GEMM at ~80 GF/s with full vectors, far less with
    # narrow ones (measured 30 GF/s for J = 28 against 56 with J = 64, same flops).
    copy_seconds: float = 1.3e-9
    gemm_rate: float = 80e9
    narrow_gemm_rate: float = 30e9
    # Plan cost model (roofline; only the ratio matters when comparing schedules).
    flop_rate: float = 50e9
    byte_rate: float = 10e9
    tiles: Mapping[tuple[int, int, int], GemmTiles] = field(default_factory=dict, hash=False)  # (I, J, K) -> tuned
    call_table: bool = False  # a C bundle calls its kernels in a loop over a const table (else straight-line code)
    implicit_conv: bool = True  # convs as implicit GEMMs in NHWC (`lower.find_convs`), else im2col + GEMM
    winograd: bool | None = None  # Winograd F(2x2, 3x3) for 3 x 3 stride-1 convs: always, never, None: by cost
    conv_winograd: Mapping[str, bool] = field(default_factory=dict, hash=False)  # per conv key (tuned)

    def gemm_tiles(self, I: int, J: int, K: int) -> GemmTiles:
        """Tuned tiles for this shape, else the default: a rows x jt accumulator of at most 8 x 2*lanes floats."""
        if (I, J, K) in self.tiles:
            return self.tiles[(I, J, K)]
        lanes = self.lanes
        vec = _largest_divisor(J, lanes, 1) if J % lanes else lanes
        vec = 1 << (vec.bit_length() - 1) if vec & (vec - 1) else vec  # power-of-two lanes vectorise cleanly
        while J % vec:
            vec //= 2
        jt = _largest_divisor(J, 2 * lanes if vec == lanes else 8 * vec, vec)  # narrow vectors: wider panels
        max_rows = max(1, min(self.max_rows, self.registers // (jt // vec)))
        rows = _largest_divisor(I, max_rows)
        if rows < max_rows // 2 and I > max_rows:  # an awkward I: keep the tile tall anyway, the tail is guarded
            rows = max_rows
        if K <= self.short_k and J % (4 * lanes) == 0:
            jt, rows = 4 * lanes, _largest_divisor(I, 2)
        return GemmTiles(rows, jt, vec, _largest_divisor(K, 4))

    def conv_rows(self, O: int) -> int:
        """Rows (output pixels) of an implicit-GEMM conv's register tile: as many as the registers allow next to
        the default panel of O output channels (the pixels are padded to a multiple)."""
        t = self.gemm_tiles(self.max_rows, O, 1 << 12)
        return max(1, min(self.max_rows, self.registers // (t.jt // t.vec)))

    def tile_candidates(self, I: int, J: int, K: int) -> list[GemmTiles]:
        """What a tuner times for one GEMM shape: the default, then register tiles of 1-12 rows x 1-8 vectors
        (at most 32 accumulator registers), the k unroll, and k-blocking (none, 256-1024) for a long k; nearest
        the default first, so a small budget tries the likeliest."""
        d = self.gemm_tiles(I, J, K)
        out = {d}
        for jt in {d.vec * m for m in (1, 2, 3, 4, 6, 8)}:
            for rows in (1, 2, 3, 4, 6, 8, 12):
                if J % jt == 0 and rows <= I and rows * (jt // d.vec) <= 32:
                    out.add(replace(d, rows=rows, jt=jt))
        out |= {replace(d, kt=kt) for kt in (1, 2, 4, 8) if K % kt == 0}
        if K >= 1024:
            out |= {replace(d, kblock=kc) for kc in (0, 256, 512, 1024) if kc == 0 or K % kc == 0}
        return sorted(out, key=lambda t: (t != d, abs(math.log2(t.rows / d.rows)) + abs(math.log2(t.jt / d.jt))
                                          + abs(math.log2(t.kt / d.kt)) + (t.kblock != d.kblock), repr(t)))

    def k_block(self, J: int) -> int:
        kc = 1 << max(0, (self.k_block_elements // max(J, 1)).bit_length() - 1)
        return min(1024, max(256, kc))

    def gemm_rate_at(self, K: int) -> float:
        """The GEMM rate at reduction length K: a short k is write-back bound (measured ~60 % at K = 64)."""
        return self.gemm_rate * min(1.0, 0.4 + K / 160)

    def gemm_seconds(self, flops: float, J: int, copies: int) -> float:
        """Estimated time of a GEMM with `copies` elements of layout copies around it (its role choice)."""
        full = self.gemm_tiles(1, J, 1).vec == self.lanes
        return copies * self.copy_seconds + flops / (self.gemm_rate if full else self.narrow_gemm_rate)

    def seconds(self, flops: float, nbytes: float) -> float:
        return flops / self.flop_rate + nbytes / self.byte_rate


@dataclass(frozen=True)
class MicroPolicy(CPUPolicy):
    """Cortex-M: scalar FPU (16 of its 32 single-precision registers for the accumulator tile), no caches worth
    blocking for, so no k-blocking, and no Winograd (its transformed input and products cost kilobytes of RAM).
    Rates of a ~200 MHz core with one FMA per cycle from zero-wait memory; only their ratio matters when the plan
    compares schedules."""
    lanes: int = 1
    winograd: bool = False
    max_rows: int = 4
    registers: int = 16
    long_k: int = 1 << 30
    flop_rate: float = 0.3e9
    byte_rate: float = 0.6e9

    def gemm_tiles(self, I: int, J: int, K: int) -> GemmTiles:
        if (I, J, K) in self.tiles:
            return self.tiles[(I, J, K)]
        jt = _largest_divisor(J, 4)
        return GemmTiles(_largest_divisor(I, max(1, min(self.max_rows, self.registers // jt))), jt, 1,
                         _largest_divisor(K, 4))


@dataclass(frozen=True)
class GPUTiles(GemmTiles):
    """A GPU GEMM tile: a block of (ty x tx) threads computes a (rows x jt) tile of C, each thread a
    (rows / ty) x (jt / tx) register tile of contiguous columns; B's (kt x jt) slab is staged in shared memory.
    `rows`, `jt`, `kt` keep their CPU meaning (jt is also the width of B's packed panels); `vec` is the width of
    the vector loads that stage the B slab (1: scalar)."""
    ty: int = 1
    tx: int = 1


@dataclass(frozen=True)
class GPUPolicy(CPUPolicy):
    """GPUs (CUDA, OpenCL): tiles of at most `max_threads` threads with register tiles of up to 4 x 4, and a k
    tile of up to 16 staged in shared memory. Cost rates are a data-centre GPU's order of magnitude (only their
    ratio matters when the plan compares schedules)."""
    lanes: int = 1
    max_threads: int = 256  # threads per block (OpenCL's portable default; CUDA allows 1024)
    thread_rows: int = 4
    thread_cols: int = 4
    k_tile: int = 16
    vector: int = 4  # float4 loads of the B slab, where the slab divides into them
    long_k: int = 1 << 30  # no CPU-style k-blocking: the shared-memory k tile plays its part
    flop_rate: float = 20e12
    byte_rate: float = 2e12
    gemm_rate: float = 20e12
    narrow_gemm_rate: float = 10e12
    copy_seconds: float = 1e-12

    def gemm_tiles(self, I: int, J: int, K: int) -> GPUTiles:
        if (I, J, K) in self.tiles:
            return self.tiles[(I, J, K)]
        rx = _largest_divisor(J, self.thread_cols)
        tx = _largest_divisor(J // rx, 32)
        ry = _largest_divisor(I, self.thread_rows)
        ty = _largest_divisor(I // ry, max(1, min(16, self.max_threads // tx)))
        kt = _largest_divisor(K, self.k_tile)
        v = self.vector
        vec = v if v > 1 and (tx * rx) % v == 0 and (kt * tx * rx) % (ty * tx * v) == 0 else 1
        return GPUTiles(rows=ty * ry, jt=tx * rx, vec=vec, kt=kt, ty=ty, tx=tx)

    def tile_candidates(self, I: int, J: int, K: int) -> list[GPUTiles]:
        """The default, then the tiles of other per-thread register tiles (1-8 x 1-8), k tiles (4-32) and block
        sizes (64-256 threads): what `gemm_tiles` makes of those knobs; nearest the default first."""
        d = self.gemm_tiles(I, J, K)
        out = {d}
        for tr in (1, 2, 4, 8):
            for tc in (1, 2, 4, 8):
                for kt in (4, 8, 16, 32):
                    for mt in (64, 128, 256):
                        if mt <= self.max_threads:
                            out.add(replace(self, thread_rows=tr, thread_cols=tc, k_tile=kt, max_threads=mt,
                                            tiles={}).gemm_tiles(I, J, K))
        return sorted(out, key=lambda t: (t != d, abs(math.log2(t.rows / d.rows)) + abs(math.log2(t.jt / d.jt))
                                          + abs(math.log2(t.kt / d.kt)), repr(t)))


def default_policy(target: Target) -> CPUPolicy:
    if target.schedules == "gpu":
        return GPUPolicy(max_threads=int(target.tvm.get("max_num_threads", 256)))
    if target.schedules == "micro":
        return MicroPolicy()
    if target.schedules != "cpu":
        raise NotImplementedError(f"no policy for schedule module {target.schedules!r}")
    if target.arch == "aarch64":  # NEON: 32 vector registers of 4 lanes; a board core's rates (ratio ~ x86's)
        return CPUPolicy(lanes=target.lanes, flop_rate=10e9, byte_rate=4e9)
    if target.lanes <= 8:  # AVX2: 16 vector registers; a 6 x 16 tile (12 accumulators) leaves the B panel's two
        return CPUPolicy(lanes=target.lanes, registers=12)  # vectors and the broadcast in registers (8 x 16 spills)
    return CPUPolicy(lanes=target.lanes)
