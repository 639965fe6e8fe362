"""Autotuning per device: every ADNTN layer's candidates are compiled, run on this machine and checked, and the
fastest correct one is kept as a record of this device.

For each layer (one generator at one row count) the tuner times
- the plans: schedule (materialize, factored, stream) x contraction objective x the first `TREES` ranked
  contraction trees (`passes.order.search_path`), where they fit the memory budget, deduplicated by program;
- then the kernel policy of the fastest plan: each of its GEMMs' tiles (`policy.tile_candidates`: register tile,
  panel width, k unroll, k-blocking; on GPUs threads and shared-memory k tiles), one GEMM at a time, nearest the
  default first.
Every candidate is a real TVM build run on the device and compared with the reference interpreter (float64)
before it may win. At the end the fastest few and the default are timed again, interleaved; the default is kept
unless the fastest is faster beyond noise (`GAIN_MIN`).

Records are keyed by (the workload's structural hash, the device fingerprint `targets.fingerprint`): one JSON
file per fingerprint in the user's cache (`records_dir()`), and a copy in every artifact compiled with
them. `compile()` uses the records of this device automatically; records of another fingerprint are never
used. The measured flop and byte rates calibrate the plan cost model of this device, so untuned layers are
planned with them too.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import ConfigError, MemoryEstimateError, SerializationError
from .generators.base import Generator
from .plan import Plan, Rates, plan, plan_choice, rates_for
from .targets import Target, check_runs_here, fingerprint, resolve

VERSION = 1
TREES = 3  # ranked contraction trees timed per (schedule, objective)
PLANS = (("materialize", "total"), ("factored", "call"), ("factored", "total"), ("stream", "total"))
GAIN_MIN = 1.03  # a winner must beat the default by this much in the final interleaved timing
FINALISTS = 3  # candidates timed again, interleaved with the default, at the end
TOLERANCE = 1e-4  # relative (Frobenius) error against the float64 reference that a candidate may have
SCHEMA = {
    "type": "object", "required": ["format", "version", "fingerprint", "layers"],
    "properties": {
        "format": {"const": "adntn-tuning"}, "version": {"const": VERSION}, "fingerprint": {"type": "object"},
        "rates": {"type": ["object", "null"], "required": ["flop_rate", "byte_rate"], "properties": {
            "flop_rate": {"type": "number", "minimum": 1}, "byte_rate": {"type": "number", "minimum": 1}}},
        "layers": {"type": "object", "additionalProperties": {
            "type": "object", "required": ["generator", "rows", "choice", "tiles", "default_s", "tuned_s"],
            "properties": {
                "generator": {"type": "string"}, "rows": {"type": "integer", "minimum": 1},
                "choice": {"type": "object", "required": ["schedule", "objective", "tree"], "properties": {
                    "schedule": {"enum": ["materialize", "factored", "stream", "recompute"]},
                    "objective": {"enum": ["call", "total"]}, "tree": {"type": "integer", "minimum": 0,
                                                                       "maximum": 64}}},
                # [I, J, K, rows, jt, vec, kt, kblock (-1: the policy's)] (+ [ty, tx] on GPUs)
                "tiles": {"type": "array", "items": {"type": "array", "items": {"type": "integer", "minimum": -1},
                                                     "minItems": 8, "maxItems": 10}},
                "default_s": {"type": "number", "minimum": 1e-9},  # (1e-320 s made infinite gains)
                "tuned_s": {"type": "number", "minimum": 1e-9}}}},
    },
}


RECORDS_MAX = 32 << 20  # bytes of a records file (a few KB per tuned layer)


def _finite(x, where: str, at: str = "") -> None:
    """NaN and infinite numbers pass JSON Schema's bounds (NaN > 0 is False, not an error): refuse them."""
    if isinstance(x, float) and not math.isfinite(x):
        raise SerializationError(f"{where} are malformed at {at or 'top level'}: {x} is not a finite number")
    items = x.items() if isinstance(x, dict) else enumerate(x) if isinstance(x, list) else ()
    for k, v in items:
        _finite(v, where, f"{at}/{k}" if at else str(k))


def records_dir() -> Path:
    """$ADNTN_TUNING, else $ADNTN_CACHE/tuning, else ~/.cache/adntn/tuning."""
    if os.environ.get("ADNTN_TUNING"):
        return Path(os.environ["ADNTN_TUNING"])
    return Path(os.environ.get("ADNTN_CACHE", Path.home() / ".cache" / "adntn")) / "tuning"


def device_id(fp: dict) -> str:
    return hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:16]


def workload_key(gen: Generator, rows: int) -> str:
    """The structural hash of one layer's workload: its traced program (ops, shapes, equations; not the core
    values, which do not change the time) at `rows` rows."""
    from .frontends.trace import trace
    from .ir.serialize import to_dict

    d = to_dict(trace(gen, "layer", batch_size=rows, structure_only=True))
    for n in d["nodes"]:
        n.pop("path", None)
    d["tensors"] = {k: v["shape"] for k, v in d["tensors"].items()}  # shapes, not values
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _tiles_to_list(shape: tuple[int, int, int], t) -> list[int]:
    out = [*shape, t.rows, t.jt, t.vec, t.kt, -1 if t.kblock is None else t.kblock]
    return out + [t.ty, t.tx] if hasattr(t, "ty") else out


# What any policy's tile_candidates can produce (rows x jt/vec <= 32 accumulators, vectors of <= 64 lanes, k unroll
# <= 32, k blocks <= 1024, GPU blocks <= 1024 threads): a record outside them is damaged or hostile (a register tile
# of 10^7 rows made one compile take 7.5 GB).
TILE_LIMITS = {"rows": 64, "jt": 2048, "vec": 64, "kt": 64, "kblock": 4096, "ty": 1024, "tx": 1024}


def _tiles_from_list(v: list[int]):
    from .backends.tvm.policy import GemmTiles, GPUTiles

    I, J, K, rows, jt, vec, kt, kb, *gpu = v
    kw = dict(rows=rows, jt=jt, vec=vec, kt=kt, kblock=None if kb < 0 else kb)
    named = dict(kw, **dict(zip(("ty", "tx"), gpu)))
    for k, x in named.items():
        if x is not None and not (1 if k != "kblock" else 0) <= x <= TILE_LIMITS[k]:
            raise SerializationError(f"tuning record tiles {v}: {k} = {x} is outside "
                                     f"{1 if k != 'kblock' else 0}..{TILE_LIMITS[k]}")
    if jt % vec or J % jt or K % kt or rows > I or (kb > 0 and K % kb) or vec & (vec - 1):
        raise SerializationError(f"tuning record tiles {v} do not fit the GEMM {I}x{J}x{K}")
    return (I, J, K), GPUTiles(**kw, ty=gpu[0], tx=gpu[1]) if gpu else GemmTiles(**kw)


@dataclass
class Records:
    """The tuning records of one device (fingerprint): per layer workload, the chosen plan and GEMM tiles with
    the times measured for the default and the winner; the calibrated cost-model rates."""
    fingerprint: dict
    layers: dict[str, dict] = field(default_factory=dict)
    rates: dict | None = None

    @property
    def device_id(self) -> str:
        return device_id(self.fingerprint)

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dict(format="adntn-tuning", version=VERSION, fingerprint=self.fingerprint,
                                          rates=self.rates, layers=self.layers)))  # a copy: edits stay in it

    @classmethod
    def from_dict(cls, d: Any, where: str = "tuning records") -> "Records":
        import jsonschema

        try:
            jsonschema.validate(d, SCHEMA)
        except jsonschema.ValidationError as e:
            at = "/".join(str(p) for p in e.absolute_path) or "top level"
            raise SerializationError(f"{where} are malformed at {at}: {e.message}") from None
        _finite(d, where)
        for rec in d["layers"].values():
            for t in rec["tiles"]:
                _tiles_from_list(t)
        return cls(d["fingerprint"], dict(d["layers"]), d.get("rates"))

    @classmethod
    def load(cls, path: "str | os.PathLike") -> "Records":
        from . import jsonio

        data = jsonio.read_regular(path, f"tuning records {path}", RECORDS_MAX)
        return cls.from_dict(jsonio.loads(data, f"tuning records {path}", RECORDS_MAX), f"tuning records {path}")

    @classmethod
    def for_device(cls, target: "str | Target") -> "Records":
        """This machine's records for `target` from the user cache (empty when it was never tuned)."""
        fp = fingerprint(target)
        f = records_dir() / f"{device_id(fp)}.json"
        return cls.load(f) if f.exists() else cls(fp)

    def save(self, path: "str | os.PathLike | None" = None) -> Path:
        from .artifact import write_atomic

        path = Path(path) if path else records_dir() / f"{self.device_id}.json"
        text = json.dumps(self.to_dict(), indent=1, sort_keys=True)
        return write_atomic(path, lambda tmp: Path(tmp).write_text(text))

    def merge(self, other: "Records") -> "Records":
        return Records(self.fingerprint, {**self.layers, **other.layers}, other.rates or self.rates)

    def mismatch(self, target: "str | Target") -> str | None:
        """None when these records are this machine's for `target`; else what differs, in words."""
        here = fingerprint(target)
        diff = [k for k in sorted(set(here) | set(self.fingerprint)) if here.get(k) != self.fingerprint.get(k)]
        if not diff:
            return None
        show = lambda v: json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else repr(v)  # noqa: E731
        return "; ".join(f"{k}: recorded {show(self.fingerprint.get(k))}, here {show(here.get(k))}"
                         for k in diff if k != "target") or "the target differs"

    def calibrated(self) -> Rates | None:
        return Rates(self.rates["flop_rate"], self.rates["byte_rate"]) if self.rates else None


# ---------------------------------------------------------------- using records (compile)


@dataclass
class Applied:
    """What compile() took from the records: the planner for _ModelBuilder, then the policy with their tiles."""
    records: Records
    schedule: str
    memory_budget: Any
    target: Target
    used: dict[str, dict] = field(default_factory=dict)  # workload key -> record, for the layers it planned
    notes: list[str] = field(default_factory=list)

    def planner(self, gen: Generator, rows: int) -> tuple[Plan, dict]:
        rates = self.records.calibrated()
        key = workload_key(gen, rows) if self.schedule == "auto" else None  # a forced schedule ignores records
        rec = self.records.layers.get(key)
        if rec is not None:
            try:
                p = plan_choice(gen, rows, rec["choice"], self.memory_budget, rates=rates)
            except MemoryEstimateError as e:
                self.notes.append(f"tuning record not used: {e}")
            else:
                self.used[key] = rec
                return p, {"tuned": dict(device=self.records.device_id, default_s=rec["default_s"],
                                         tuned_s=rec["tuned_s"], gain=rec["default_s"] / rec["tuned_s"],
                                         tiles=len(rec["tiles"]))}
        return plan(gen, rows, self.schedule, self.memory_budget, target=self.target, rates=rates), {}

    def policy(self, base):
        """`base` with the records' tiles, each only when this policy could have proposed it (its lanes, its
        register budget): others are noted and left out."""
        tiles = dict(base.tiles)
        for rec in self.used.values():
            for v in rec["tiles"]:
                shape, t = _tiles_from_list(v)
                if t not in base.tile_candidates(*shape):
                    self.notes.append(f"tuning record tiles {v} are not among what this target's policy proposes "
                                      f"for a {'x'.join(map(str, shape))} GEMM; not used")
                    continue
                tiles.setdefault(shape, t)
        return replace(base, tiles=tiles)

    def manifest(self) -> dict:
        return dict(device=self.records.device_id, fingerprint=self.records.fingerprint, rates=self.records.rates,
                    layers=len(self.used))


def applied(records, target: Target, schedule: str, memory_budget) -> Applied | None:
    """The records compile() uses: "auto" (this device's, from the cache), a Records or a records file, or None.
    Records of another device are not used (a warning says what differs)."""
    if records is None or records is False:
        return None
    if records == "auto":
        if target.runtime != "tvm":
            return None
        try:
            check_runs_here(target)
        except ConfigError:  # a cross-compile: nothing here measured that device
            return None
        try:
            recs = Records.for_device(target)
        except (ConfigError, SerializationError) as e:  # a damaged cache must not stop every compile
            warnings.warn(f"{e}; compiling with the defaults", stacklevel=3)
            return None
        if not (recs.layers or recs.rates):
            return None
    else:
        recs = records if isinstance(records, Records) else Records.load(records)
    why = recs.mismatch(target)  # also for the cache's file: its name is no proof of what it holds
    if why:
        warnings.warn(f"tuning records of device {recs.device_id} are for another device ({why}); not used, the "
                      f"defaults are", stacklevel=3)
        return None
    return Applied(recs, schedule, memory_budget, target)


# ---------------------------------------------------------------- measuring


@dataclass
class Candidate:
    plan: Plan
    tiles: dict  # (I, J, K) -> tiles
    seconds: float = math.inf
    error: float = math.nan

    def label(self) -> str:
        c = self.plan.choice
        return f"{c['schedule']}/{c['objective']}/tree{c['tree']}" + (f" +{len(self.tiles)} tiles" if self.tiles else "")


class _Bench:
    """Compiles and times one layer's candidates on the device, checking each against the reference."""

    def __init__(self, gen: Generator, rows: int, target: Target, seed: int = 0):
        from .backends.tvm.policy import default_policy

        self.gen, self.rows, self.target = gen, rows, target
        self.base = default_policy(target)
        self.x = np.random.default_rng(seed).standard_normal((rows, gen.I)).astype(np.float32)
        self.ref: np.ndarray | None = None
        self.samples: list[tuple[int, int, float]] = []  # (flops, bytes, seconds) per timed plan (calibration)
        self._runs: dict[int, Callable] = {}

    def build(self, c: Candidate) -> Callable:
        from .backends import get_backend
        from .frontends.torch_modules import model_graphs

        mg = model_graphs(self.gen, self.rows, target=self.target, planner=lambda g, r: (c.plan, {}))
        lib = get_backend(self.target.runtime).build({"load": mg.load, "call": mg.call}, self.target,
                                                     replace(self.base, tiles=dict(c.tiles)))
        loaded = lib.runner("load", mg.tensors)()
        call = lib.runner("call", {**mg.tensors, **loaded})
        return lambda: call(self.x)["y"]

    def measure(self, c: Candidate, min_seconds: float = 0.2, check: bool = True) -> Candidate:
        run = self.build(c)
        y = run()
        if not check:  # the default program, timed only (its correctness is the compiler's tests')
            c.error = 0.0
        elif self.ref is None:  # y = x W^T with W generated by the reference interpreter (float64)
            from .frontends.trace import materialize

            self.ref = self.x.astype(np.float64) @ materialize(self.gen).reshape(self.gen.O, self.gen.I).T
        if check:
            c.error = float(np.linalg.norm(y - self.ref) / max(np.linalg.norm(self.ref), 1e-30))
        if not c.error <= TOLERANCE:
            return c  # wrong (or NaN): never a winner
        t = time.perf_counter()
        run()
        first = time.perf_counter() - t
        c.seconds = _median(run, max(3, min(50, int(min_seconds / max(first, 1e-6)))))
        self.samples.append((c.plan.flops_per_call, c.plan.bytes_per_call, c.seconds))
        self._runs[id(c)] = run
        return c

    def interleaved(self, cs: list[Candidate], rounds: int = 5) -> list[float]:
        """Medians of the candidates timed alternately, round by round (this VM drifts up to 1.5x in minutes)."""
        runs = [self._runs[id(c)] for c in cs]
        n = max(1, min(20, int(0.05 / max(min(c.seconds for c in cs), 1e-6))))
        ts = [[_median(r, n) for r in runs] for _ in range(rounds)]
        return [float(np.median([t[k] for t in ts])) for k in range(len(cs))]


def _median(fn: Callable, repeats: int) -> float:
    from .timing import median_time

    return median_time(fn, repeats, warmup=0)


def _plan_candidates(gen: Generator, rows: int, memory_budget, rates: Rates) -> list[Plan]:
    from .ir.serialize import to_dict

    out, seen = [], set()
    for schedule, objective in PLANS:
        for tree in range(TREES):
            try:
                p = plan_choice(gen, rows, dict(schedule=schedule, objective=objective, tree=tree), memory_budget,
                                rates=rates)
            except MemoryEstimateError:
                break
            d = to_dict(p.program.call)
            sig = (schedule, json.dumps([(n["op"], n["out"]["shape"], n["attrs"]) for n in d["nodes"]], default=str))
            if sig not in seen:  # another tree that gives the same per-call program: nothing new to time
                seen.add(sig)
                out.append(p)
    return out


def tune_layer(gen: Generator, rows: int, target: Target, budget_s: float, memory_budget=None,
               bar=None) -> dict:
    """Tune one layer within `budget_s` seconds; returns its record (see SCHEMA) plus the timing samples."""
    from .backends.tvm.lower import gemm_shapes
    from .frontends.torch_modules import model_graphs

    start = time.perf_counter()
    left = lambda: budget_s - (time.perf_counter() - start)  # noqa: E731
    bench = _Bench(gen, rows, target)
    rates = rates_for(target)
    default = bench.measure(Candidate(plan(gen, rows, "auto", memory_budget, target=target), {}))
    if not default.seconds < math.inf:
        raise ConfigError(f"the default program of {gen!r} at {rows} rows differs from the reference by "
                          f"{default.error:.2e} (relative); not tuning a wrong program")
    best, tried, timed = default, 1, [default]

    trials = [(default.label(), default.seconds)]

    def step(c: Candidate) -> None:
        nonlocal best, tried
        bench.measure(c)
        tried += 1
        trials.append((c.label() + ("" if c.seconds < math.inf else f" (wrong: {c.error:.1e})"), c.seconds))
        if c.seconds < math.inf:
            timed.append(c)
        if c.seconds < best.seconds:
            best = c
        if bar is not None:
            bar.update()
            bar.set_postfix_str(f"{gen.arch}@{rows}: best {1e3 * best.seconds:.3f} ms, "
                                f"{default.seconds / best.seconds:.2f}x ({best.label()})")

    for p in _plan_candidates(gen, rows, memory_budget, rates):
        if left() <= 0:
            break
        if p.choice != default.plan.choice:
            step(Candidate(p, {}))
    mg = model_graphs(gen, rows, target=target, planner=lambda g, r: (best.plan, {}))
    shapes = gemm_shapes(mg.call, target, bench.base)
    for shape in shapes:
        for t in bench.base.tile_candidates(*shape):
            if left() <= 0:
                break
            if t != best.tiles.get(shape, bench.base.gemm_tiles(*shape)):
                step(Candidate(best.plan, {**best.tiles, shape: t}))
    # the default and the FINALISTS fastest others, timed again interleaved: one pass of the search drifts
    finalists = [default] + sorted((c for c in timed if c is not default), key=lambda c: c.seconds)[:FINALISTS]
    if len(finalists) > 1:
        for c, t in zip(finalists, bench.interleaved(finalists)):
            c.seconds = t
        best = min(finalists, key=lambda c: c.seconds)
        if default.seconds / best.seconds < GAIN_MIN:  # not faster beyond noise: the default stays
            best = default
    return dict(generator=repr(gen), rows=rows, choice=best.plan.choice,
                tiles=[_tiles_to_list(s, t) for s, t in sorted(best.tiles.items())], default_s=default.seconds,
                tuned_s=best.seconds, candidates=tried, tuning_s=round(time.perf_counter() - start, 2),
                trials=[[label, s if s < math.inf else None] for label, s in trials], _samples=bench.samples)


def calibrate(samples: list[tuple[int, int, float]], base: Rates) -> dict | None:
    """Per-device flop and byte rates fitted to measured (flops, bytes, seconds): t = t0 + flops / F + bytes / B
    (non-negative least squares, relative error weighting; t0, the per-call overhead of launching the kernels,
    is the same for every plan of a layer, so the cost model needs only F and B). A rate the samples do not
    explain (a zero coefficient: no sample moved enough bytes to show, say) keeps `base`'s; None with fewer
    than 4 samples."""
    from scipy.optimize import nnls

    if len(samples) < 4:
        return None
    a = np.array([[1.0, f, b] for f, b, _ in samples], dtype=np.float64)
    t = np.array([s for *_, s in samples], dtype=np.float64)
    scale = np.abs(a).max(axis=0) + 1e-30  # columns of similar size, for a well-conditioned fit
    coef, _ = nnls(a / t[:, None] / scale, np.ones_like(t))  # minimise the relative error of each sample
    t0, cf, cb = coef / scale
    if not (cf > 0 or cb > 0):
        return None
    return dict(flop_rate=float(1 / cf) if cf > 0 else base.flop_rate,
                byte_rate=float(1 / cb) if cb > 0 else base.byte_rate, overhead_s=float(t0), samples=len(samples))


def tune(obj, target: "str | Target" = "cpu", batch_size: int = 1, budget_s: float = 60.0, example_inputs=None,
         input_shape=None, memory_budget=None, progress: bool = True, save: bool = True) -> Records:
    """Tune every ADNTN layer of `obj` (a generator or a model, as for `compile`) on this machine for `target`
    within `budget_s` seconds (shared equally by the distinct layer workloads). Returns this device's records
    (the cache's, updated with these layers; written back when `save`). `compile()` then uses them."""
    from tqdm import tqdm

    from .frontends.torch_modules import model_graphs

    target = resolve(target)
    if target.runtime != "tvm":
        raise ConfigError(f"tune measures on the device: target {target.name!r} deploys as a C bundle, which does "
                          f"not run here (tune on the board; its records are keyed by that device)")
    try:
        check_runs_here(target)
    except ConfigError as e:
        raise ConfigError(f"tune measures on the device, and target {target.name!r} does not run on this machine "
                          f"({e})") from None
    if not budget_s > 0:
        raise ConfigError(f"budget_s must be a positive number of seconds, got {budget_s!r}")
    layers: dict[str, tuple[Generator, int]] = {}

    def collect(gen, rows):
        layers.setdefault(workload_key(gen, rows), (gen, rows))
        return plan(gen, rows, "auto", memory_budget, target=target), {}

    model_graphs(obj, batch_size, "auto", memory_budget, input_shape, target, example_inputs, planner=collect)
    if not layers:
        raise ConfigError(f"{type(obj).__name__} has no ADNTN layer to tune")
    recs = Records.for_device(target)
    new, samples = {}, []
    start = time.perf_counter()
    with tqdm(desc="adntn tune", unit="candidate", disable=not progress, leave=False) as bar:
        for k, (key, (gen, rows)) in enumerate(layers.items()):
            share = (budget_s - (time.perf_counter() - start)) / (len(layers) - k)
            rec = tune_layer(gen, rows, target, max(share, 0.0), memory_budget, bar)
            samples += rec.pop("_samples")
            new[key] = rec
    out = recs.merge(Records(recs.fingerprint, new, calibrate(samples, rates_for(target)) or recs.rates))
    if save:
        out.save()
    return out


# ---------------------------------------------------------------- choosing a configuration by speed (compress)

MEASURED = 6  # configurations timed on the device (the fastest by the calibrated cost model)
BAND = 2.0  # configurations up to this many times the ratio keep at least 1/BAND of the parameter budget


def fastest_config(shape, arch: str, ratio: float, batch_size: int = 1, target: "str | Target" = "cpu",
                   measured: int = MEASURED, progress: bool = True, **fixed) -> tuple[dict, dict]:
    """The configuration of `arch` for a linear layer of `shape` that reaches `ratio` (and no more than
    BAND x ratio: one that throws most of the parameter budget away is not a candidate; rank 1 only if nothing
    else reaches it) without a rank bottleneck (its structure allows the full rank of W, or else the highest any candidate allows), with the
    lowest time per call at `batch_size` on this device: the `measured` fastest by the cost model (calibrated
    by tuning, when this device was tuned) are compiled and timed (or their tuned time taken from the records);
    for a target that does not run here, the estimate decides. Returns (make() keywords, timing facts)."""
    from tqdm import tqdm

    from .generators.search import candidates

    target = resolve(target)
    pool = [(g, cfg) for g, cfg in candidates(shape, arch, **dict(fixed)) if ratio <= g.compression_ratio <= BAND * ratio]
    if not pool:
        raise ConfigError(f"{arch}: no configuration of shape {tuple(shape)} reaches a compression ratio between "
                          f"{ratio:g}x and {BAND * ratio:g}x")
    if any(cfg.get("rank") != 1 for _, cfg in pool):  # rank 1 (a product) only as a last resort, as by ratio
        pool = [(g, cfg) for g, cfg in pool if cfg.get("rank") != 1]
    full = min(shape[0], math.prod(shape[1:]))
    need = min(full, max(g.rank_bound() for g, _ in pool))
    pool = [(g, cfg) for g, cfg in pool if g.rank_bound() >= need]
    try:
        check_runs_here(target)
        runs = target.runtime == "tvm"
    except ConfigError:
        runs = False
    recs = Records.for_device(target) if runs else Records(fingerprint(target))
    rates = recs.calibrated() or rates_for(target)
    est = sorted(((plan(g, batch_size, target=target, rates=rates).seconds_per_call, k, g, cfg)
                  for k, (g, cfg) in enumerate(pool)), key=lambda e: e[:2])
    rows = [dict(config=cfg, ratio=g.compression_ratio, estimated_s=e) for e, _, g, cfg in est]
    if runs:
        for row, (_, _, g, _) in zip(tqdm(rows[:measured], desc=f"timing {arch} configurations", disable=not progress,
                                          leave=False), est):
            rec = recs.layers.get(workload_key(g, batch_size))
            if rec is not None:
                row.update(seconds=rec["tuned_s"], how="tuned")
            else:
                c = _Bench(g, batch_size, target).measure(Candidate(plan(g, batch_size, target=target, rates=rates),
                                                                    {}), min_seconds=0.1, check=False)
                row.update(seconds=c.seconds, how="measured")
    for row in rows:
        row.setdefault("how", "estimated")
    best = min(rows[:measured] if runs else rows, key=lambda r: r.get("seconds", r["estimated_s"]))
    facts = dict(batch_size=batch_size, device=recs.device_id, seconds=best.get("seconds", best["estimated_s"]),
                 how=best["how"], candidates=rows)
    return {**fixed, **best["config"]}, facts
