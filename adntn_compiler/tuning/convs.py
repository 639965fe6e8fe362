"""Tuning a model's convolutions, beside its ADNTN layers: for each distinct conv of the call graph (one the lowering
runs without im2col), Winograd on or off where it applies, then the register tile of the chosen GEMM
(`policy.tile_candidates`). Each candidate is a one-conv program (the conv with a random weight) built here, run by
the tuning's runner (this machine, a device over RPC, or for an embedded target a one-conv C bundle under qemu,
counted in instructions) and checked there against the float64 reference first; the winner must beat the default
by GAIN_MIN (timed: in a final interleaved timing). Records: `Records.convs`, conv key ->
{winograd, tiles, default_s, tuned_s, where}."""
from __future__ import annotations

import math
import time
from dataclasses import replace

import numpy as np

from ..ir.builder import Builder
from ..ir.graph import Graph, Op
from ..targets import Target
from .records import _tiles_to_list

GAIN_MIN = 1.03
TILES = 8  # register tiles timed per conv at most, nearest the default first
TOLERANCE = 1e-4


def conv_graph(chain, seed: int = 0) -> tuple[Graph, np.ndarray]:
    """The chain's convolution alone (im2col + the conv einsum, a random weight) and an input for it."""
    from ..ir.ops import conv_out

    rng = np.random.default_rng(seed)
    x, a = chain.x, chain.attrs
    w = chain.weight.shape
    b = Builder()
    xi = b.input("x", x.shape)
    wi = b.param("w", rng.standard_normal(w) / math.sqrt(math.prod(w[1:])), const=True)
    p = b.node(Op.IM2COL, (xi,), a, "conv")
    G, K, N, _ = p.shape
    y = b.contract([(b.reshape(wi, (G, w[0] // G, K)), "gok"), (p, "gknp")], "ngop")
    b.output(b.reshape(y, (N, w[0], *conv_out(a, x.shape))))
    return b.build(), rng.standard_normal(x.shape).astype(np.float32)


def conv_module(chain, seed: int = 0):
    """The chain's convolution alone as a torch Conv2d (a random weight, no bias), captured once, and an input:
    what a C bundle's candidates are planned from (a bundle is built from a model)."""
    import torch

    from ..frontends.capture import capture

    a, (N, C, H, W), O = chain.attrs, chain.x.shape, chain.weight.shape[0]
    torch.manual_seed(seed)
    m = torch.nn.Conv2d(C, O, a.kernel, a.stride, a.padding, a.dilation, a.groups, bias=False).eval()
    x = np.random.default_rng(seed).standard_normal((N, C, H, W)).astype(np.float32)
    return capture(m, N, example_inputs=(torch.from_numpy(x),)), x


class _Conv:
    """One conv's candidates (policies), each built here once, loaded where the runner measures (this machine, an
    RPC server, or qemu for a C bundle) and checked against the reference there."""

    def __init__(self, chain, target: Target, base, runner):
        from ..backends.reference import run

        self.chain, self.target, self.base, self.runner = chain, target, base, runner
        if target.runtime == "c-bundle":  # a one-conv bundle per candidate, its reference the bundle's own
            self.source, self.x = conv_module(chain)
            self.ref = None
        else:
            self.g, self.x = conv_graph(chain)
            self.ref = run(self.g, [self.x.astype(np.float64)])[0]
        self.loaded: dict = {}  # policy -> its Loaded program, None when it was wrong
        self.counts: dict = {}  # policy -> its instruction count (qemu)

    def _build(self, policy):
        """(what the runner loads, the float64 reference output) of the candidate."""
        if self.ref is None:
            from ..runtime.bundle import plan_bundle

            b = plan_bundle(self.source, self.target, self.x.shape[0], policy=policy).build()
            return b, b.reference(self.x)
        from ..backends.tvm import build

        return (build({"call": self.g}, self.target, policy), dict(self.g.tensors)), self.ref

    def time(self, policy, n: int = 0) -> float:
        """Median seconds of the candidate, or its instruction count under qemu (exact: counted once); inf when
        it is wrong."""
        if policy not in self.loaded:
            built, ref = self._build(policy)
            loaded = self.runner.load(built, self.x)
            try:
                ok = np.linalg.norm(loaded.run() - ref) <= TOLERANCE * np.linalg.norm(ref)
            finally:
                loaded.release()
            self.loaded[policy] = loaded if ok else None
        loaded = self.loaded[policy]
        if loaded is None:
            return math.inf
        if self.runner.unit == "instructions":
            if policy not in self.counts:
                self.counts[policy] = loaded.cost(1)
            return self.counts[policy]
        first = loaded.cost(1)
        return loaded.cost(n or max(3, min(30, int(0.1 / max(first, 1e-6)))))


def tune_conv(chain, target: Target, base, budget_s: float, bar=None, runner=None) -> dict:
    """The record of one conv: Winograd on / off where it applies (else the lowering's choice), then its GEMM's
    register tiles, nearest the default first, while `budget_s` lasts; measured by `runner` (default: here)."""
    from ..backends.tvm import winograd
    from .runners import LocalRunner

    start = time.perf_counter()
    c = _Conv(chain, target, base, runner or LocalRunner())
    default = base
    best, best_s = default, c.time(default)
    default_s = best_s
    tried = 1
    choice = winograd(chain, target, base)  # None where it cannot apply
    if choice is not None:
        for on in (False, True):
            p = replace(base, conv_winograd={**base.conv_winograd, chain.key: on})
            s = c.time(p)
            tried += 1
            if s < best_s:
                best, best_s = p, s
    wino = best.conv_winograd.get(chain.key, choice)
    shape = chain.gemm_shape(base, bool(wino))
    now = base.gemm_tiles(*shape)
    for t in [t for t in base.tile_candidates(*shape) if t != now][:TILES]:
        if time.perf_counter() - start > budget_s and tried > 1:  # (at least one candidate besides the default)
            break
        p = replace(best, tiles={**best.tiles, shape: t})
        s = c.time(p)
        tried += 1
        if s < best_s:
            best, best_s = p, s
        if bar is not None:
            bar.update()
            bar.set_postfix_str(f"conv {chain.key}: {default_s / best_s:.2f}x")
    if best is not default and c.runner.unit == "s":  # interleaved, against the VM's drift (counts are exact)
        ts = [(c.time(default, 5), c.time(best, 5)) for _ in range(3)]
        default_s, best_s = (float(np.median([t[k] for t in ts])) for k in (0, 1))
        if best_s * GAIN_MIN > default_s:
            best, best_s = default, default_s
    tiles = [_tiles_to_list(k, t) for k, t in best.tiles.items() if k not in base.tiles]
    wino = best.conv_winograd.get(chain.key, choice)  # (the default's: the cost model's choice, where it applies)
    return dict(winograd=wino, tiles=tiles, default_s=default_s, tuned_s=best_s, candidates=tried,
                where=sorted({lo.where for lo in c.loaded.values() if lo}),
                tuning_s=round(time.perf_counter() - start, 2))


def tune_convs(g: Graph, target: Target, budget_s: float, bar=None, runner=None) -> dict:
    """Records of every distinct conv of call graph `g`, sharing `budget_s` equally, measured by `runner`."""
    from ..backends.tvm import conv_workloads
    from ..backends.tvm.policy import default_policy

    base = default_policy(target)
    chains = {ch.key: ch for ch in conv_workloads(g, target, base)}
    out, start = {}, time.perf_counter()
    for k, (key, ch) in enumerate(chains.items()):
        share = (budget_s - (time.perf_counter() - start)) / (len(chains) - k)
        out[key] = tune_conv(ch, target, base, max(share, 0.0), bar, runner)
    return out
