"""Execution plans: a schedule per layer and batch size, chosen by a cost model of flops and memory.

- materialize: W is generated once at load time; each call is one dense contraction x . W.
- factored:    x joins the last linear segment; the contraction order decides whether W is ever formed.
- stream:      only the activation outputs (and cores) stay resident; the last linear segment is recomputed
               per call, sliced into tiles so that its peak fits the memory budget.
- recompute:   only the cores stay resident: the whole generator is recomputed per call, tile by tile (each
               tile computes only its slice of the generated tensors), so neither W nor any level of the
               network exists whole. The most flops and the least memory: what microcontrollers need (their
               flash holds the cores, their RAM one tile). Tried by `auto` only when nothing else fits.
- auto:        the one with the lowest estimated time per call (flops and bytes moved, roofline-style, at the
               rates of the target's policy) whose memory (resident + peak per call) fits the budget.

Bytes are counted in the dtype that will run (float32 for compiled programs, the default).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from .errors import ConfigError, MemoryEstimateError
from .generators.base import Generator
from .generators.trace import trace
from .ir.graph import Graph, Op
from .ir.ops import einsum_sizes
from .memory import available_bytes, fmt_bytes, parse_bytes, peak_bytes
from .passes import Folded, fold
from .passes.order import step_flops
from .passes.pipelines import TRAINING_COSTS, plan_pipeline

SCHEDULES = ("materialize", "factored", "stream", "recompute")
Schedule = Literal["auto", "materialize", "factored", "stream", "recompute"]
RESIDENT = {"stream": "nonlinear", "recompute": "cores"}  # what `fold` keeps (default: everything it can)
DTYPES = {"float32": 4, "float64": 8}


@dataclass(frozen=True)
class Rates:
    """Nominal one-core rates of the cost model (only their ratio matters when comparing schedules); a
    target's policy supplies its own (`rates_for`)."""
    flop_rate: float = 50e9  # flop/s
    byte_rate: float = 10e9  # bytes/s from memory

    def seconds(self, flops: float, nbytes: float) -> float:
        return flops / self.flop_rate + nbytes / self.byte_rate


def rates_for(target) -> Rates:
    """The cost rates of `target`'s default policy (None: the nominal rates, no TVM needed)."""
    if target is None:
        return Rates()
    from .backends.tvm.policy import default_policy
    from .targets import resolve

    p = default_policy(resolve(target))
    return Rates(p.flop_rate, p.byte_rate)


@dataclass(frozen=True)
class Step:
    where: str  # "load" or "call"
    op: str
    equation: str
    flops: int
    shape: tuple[int, ...]
    path: str
    bytes: int  # read + written, in the plan's dtype


def graph_steps(g: Graph, where: str, itemsize: int = 4) -> list[Step]:
    out = []
    for n in g.nodes:
        if n.op is Op.EINSUM:
            sizes = einsum_sizes(n.attrs, [v.shape for v in n.inputs])
            out.append(Step(where, "einsum", n.attrs.equation, step_flops(n.attrs.terms, n.attrs.out, sizes),
                            n.out.shape, n.path, itemsize * (sum(v.size for v in n.inputs) + n.out.size)))
        elif n.op is Op.MAP:
            out.append(Step(where, "map", n.attrs.fn, n.out.size, n.out.shape, n.path, 2 * itemsize * n.out.size))
    return out


@dataclass
class Plan:
    gen: Generator = field(repr=False)
    batch_size: int
    schedule: str
    program: Folded = field(repr=False)
    dtype: str = "float32"  # what memory and bytes moved are counted in
    rates: Rates = field(default_factory=Rates, repr=False)
    objective: str = "total"  # of the contraction order
    tree: int = 0  # which of the ranked contraction trees (0: the best by flops)
    tile_size: int | None = None  # stream / recompute: the elements a tile may hold (None: untiled)
    share: bool = True  # recompute: tiles share the slices they have in common (False: each makes its own)
    _consts: dict | None = field(default=None, repr=False)

    @property
    def itemsize(self) -> int:
        return DTYPES[self.dtype]

    @property
    def steps(self) -> list[Step]:
        return graph_steps(self.program.load, "load", self.itemsize) + graph_steps(self.program.call, "call",
                                                                                   self.itemsize)

    @property
    def flops_per_call(self) -> int:
        return sum(s.flops for s in self.steps if s.where == "call")

    @property
    def load_flops(self) -> int:
        return sum(s.flops for s in self.steps if s.where == "load")

    @property
    def bytes_per_call(self) -> int:
        return sum(s.bytes for s in self.steps if s.where == "call")

    @property
    def seconds_per_call(self) -> float:
        """Cost-model estimate (roofline: flops and bytes moved each at the target's nominal rate)."""
        return self.rates.seconds(self.flops_per_call, self.bytes_per_call)

    @property
    def peak_bytes(self) -> int:
        """Peak live bytes of the per-call part (in `dtype`), input and output included, resident values not."""
        return peak_bytes(self.program.call, self.itemsize, resident=False)[0]

    @property
    def resident_bytes(self) -> int:
        """Bytes of load-time results kept between calls (in `dtype`)."""
        return self.program.resident_elements * self.itemsize

    def consts(self) -> dict[str, np.ndarray]:
        if self._consts is None:
            from .backends.reference import run

            load = self.program.load
            vals = run(load, [], self.gen.cores)
            self._consts = {n.attrs.name: v for n, v in zip([n for n in load.nodes if n.op is Op.OUTPUT], vals)}
        return self._consts

    def run(self, x: np.ndarray) -> np.ndarray:
        """y = x @ W.T for x of shape (batch_size, I), numpy in and out (reference interpreter)."""
        from .backends.reference import run

        x = np.asarray(x)
        if x.shape != (self.batch_size, self.gen.I):
            raise ConfigError(f"plan for batch {self.batch_size} of {self.gen.I} features got input shape {x.shape}")
        return run(self.program.call, [x], self.consts())[0]

    def torch_callable(self, dtype=None):
        """The optimised per-call program on the torch backend (load-time results computed once)."""
        import torch

        from .backends import get_backend

        dtype = dtype or torch.get_default_dtype()
        consts = {k: torch.as_tensor(v, dtype=dtype) for k, v in self.consts().items()}
        fn = get_backend("torch").compile(self.program.call, tensors=consts, dtype=dtype)
        return lambda x: fn(x)[0]

    @property
    def choice(self) -> dict:
        """What a tuning record stores to rebuild this plan (`plan_choice`)."""
        tiling = dict(tile_size=self.tile_size, share=self.share) if self.tile_size is not None else {}
        return dict(schedule=self.schedule, objective=self.objective, tree=self.tree, **tiling)

    def summary(self) -> dict:
        return dict(schedule=self.schedule, batch_size=self.batch_size, flops_per_call=self.flops_per_call,
                    bytes_per_call=self.bytes_per_call, load_flops=self.load_flops,
                    resident_bytes=self.resident_bytes, peak_bytes=self.peak_bytes)


def _build(gen: Generator, batch_size: int, schedule: str, objective: str, dtype: str, rates: Rates,
           target_size: int | None = None, share: bool = True, tree: int = 0) -> Plan:
    g = plan_pipeline(schedule, objective, target_size, share, tree)(trace(gen, "layer", batch_size=batch_size,
                                                                           structure_only=True))
    return Plan(gen, batch_size, schedule, fold(g, resident=RESIDENT.get(schedule, "all")), dtype, rates,
                objective, tree, target_size, share)


def _stream(gen: Generator, batch_size: int, budget: int, dtype: str, rates: Rates,
            schedule: str = "stream", tree: int = 0) -> Plan:
    """Tile until resident + per-call peak fits `budget` (or the tiles cannot get smaller). Recompute first
    shares slices between tiles (fewer flops); if that cannot fit, every tile makes its own (least memory)."""
    best = p = _build(gen, batch_size, schedule, "total", dtype, rates, tree=tree)
    room = (budget - p.resident_bytes) // p.itemsize
    for share in (True, False) if schedule == "recompute" else (True,):
        target = max(1, room if room > 0 else p.peak_bytes // (4 * p.itemsize))
        while not _fits(p, budget):
            p = _build(gen, batch_size, schedule, "total", dtype, rates, target, share, tree)
            if p.resident_bytes + p.peak_bytes < best.resident_bytes + best.peak_bytes:
                best = p
            if target == 1:
                break
            target = max(1, target // 4)
    return p if _fits(p, budget) else best


# (schedule, contraction objective): `factored` first minimises per-call flops; its total-flops variant
# caches less at load time and is the fallback under a tight memory budget.
CANDIDATES = {"materialize": (("materialize", "total"),), "factored": (("factored", "call"), ("factored", "total")),
              "stream": (), "recompute": ()}  # built by _stream


def _fits(p: Plan, budget: int) -> bool:
    return p.resident_bytes + p.peak_bytes <= budget


def plan_choice(gen: Generator, batch_size: int, choice: dict, memory_budget: int | None = None,
                dtype: str = "float32", rates: Rates | None = None) -> Plan:
    """The plan a tuning record chose ({schedule, objective, tree}, and a tiled schedule's tile_size and share);
    MemoryEstimateError if it does not fit."""
    budget = available_bytes() if memory_budget is None else parse_bytes(memory_budget)
    s, rates = choice["schedule"], rates or Rates()
    if s in ("stream", "recompute") and choice.get("tile_size") is not None:
        p = _build(gen, batch_size, s, "total", dtype, rates, int(choice["tile_size"]), bool(choice.get("share", True)),
                   choice.get("tree", 0))
    elif s in ("stream", "recompute"):
        p = _stream(gen, batch_size, budget, dtype, rates, s, choice.get("tree", 0))
    else:
        p = _build(gen, batch_size, s, choice.get("objective", "total"), dtype, rates, tree=choice.get("tree", 0))
    if not _fits(p, budget):
        raise MemoryEstimateError(f"the tuned {s} plan of {gen!r} at batch {batch_size} needs "
                                  f"{fmt_bytes(p.resident_bytes + p.peak_bytes)}, over the budget of "
                                  f"{fmt_bytes(budget)}")
    return p


def plan(gen: Generator, batch_size: int = 1, schedule: Schedule = "auto", memory_budget: int | None = None,
         dtype: str = "float32", target=None, rates: Rates | None = None) -> Plan:
    """The execution plan of one layer. Memory is counted in `dtype` (float32: what compiled programs run in);
    `target` (a name or Target) supplies the cost model's rates (None: nominal rates), unless `rates` are given
    (a device's calibrated ones, from tuning)."""
    if schedule not in ("auto", *SCHEDULES):
        raise ConfigError(f"unknown schedule {schedule!r}; known: auto, {', '.join(SCHEDULES)}")
    if dtype not in DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r} for plan; known: {', '.join(DTYPES)}")
    budget = available_bytes() if memory_budget is None else parse_bytes(memory_budget)
    rates = rates or rates_for(target)
    names = SCHEDULES if schedule == "auto" else (schedule,)
    plans = [_build(gen, batch_size, s, obj, dtype, rates) for name in names for s, obj in CANDIDATES[name]]
    for tiled in ("stream", "recompute"):  # recompute only when nothing else fits (it costs the most flops)
        if tiled in names and (schedule == tiled or not any(_fits(p, budget) for p in plans)):
            plans.append(_stream(gen, batch_size, budget, dtype, rates, tiled))
    fits = [p for p in plans if _fits(p, budget)]
    if not fits:
        best = min(plans, key=lambda p: p.resident_bytes + p.peak_bytes)
        what = "no schedule" if schedule == "auto" else f"the {schedule} schedule"
        verb = "fits" if schedule == "auto" else "does not fit"
        hint = ""
        if schedule != "auto":  # say when another schedule would fit
            try:
                auto = plan(gen, batch_size, "auto", budget, dtype, target, rates)
                hint = f"; schedule='auto' fits with {auto.schedule}"
            except MemoryEstimateError:
                pass
        raise MemoryEstimateError(
            f"{what} of {gen!r} at batch {batch_size} {verb} a memory budget of {fmt_bytes(budget)} ({dtype}); the "
            f"smallest achievable is {fmt_bytes(best.resident_bytes + best.peak_bytes)} ({best.schedule}: "
            f"{fmt_bytes(best.resident_bytes)} resident + {fmt_bytes(best.peak_bytes)} peak per call){hint}")
    return min(fits, key=lambda p: (p.seconds_per_call, p.resident_bytes + p.peak_bytes))


def training_costs(gen: Generator, batch_size: int = 32, dtype: str = "float32") -> dict[str, dict]:
    """Flops and peak memory (in `dtype`) of one forward + backward pass (the autodiff graph, optimised), keeping
    every forward intermediate ("keep") or recomputing them in the backward pass ("recompute")."""
    from .passes.autodiff import autodiff

    g = trace(gen, "layer", batch_size=batch_size, structure_only=True)
    out = {}
    for name, rc in (("keep", False), ("recompute", True)):
        bg = TRAINING_COSTS(autodiff(g, recompute=rc))
        out[name] = dict(flops=sum(s.flops for s in graph_steps(bg, "call")),
                         peak_bytes=peak_bytes(bg, DTYPES[dtype])[0], nodes=len(bg.nodes))
    return out
