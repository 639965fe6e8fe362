"""The tuning records of a device: their format (one JSON file per device fingerprint, `records_dir()`), how they
are read and checked (`Records`), and how compile() plans with them (`applied`, `Applied`). What the tuner times
and how is in `measure.py`."""
from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import ConfigError, MemoryEstimateError, SerializationError
from ..generators.base import Generator
from ..plan import Plan, Rates, plan, plan_choice
from ..runtime.host import check_runs_here
from ..targets import Target, fingerprint, resolve

VERSION = 1
SCHEMA = {
    "type": "object", "required": ["format", "version", "fingerprint", "layers"],
    "properties": {
        "format": {"const": "adntn-tuning"}, "version": {"const": VERSION}, "fingerprint": {"type": "object"},
        "unit": {"enum": ["s", "instructions"]},  # of default_s and tuned_s: seconds, or emulated instructions
        # whole-program choices of a C bundle's device (a qemu runner's): straight-line calls or a call table
        "program": {"type": ["object", "null"], "properties": {"call_table": {"type": "boolean"}}},
        "rates": {"type": ["object", "null"], "required": ["flop_rate", "byte_rate"], "properties": {
            "flop_rate": {"type": "number", "minimum": 1}, "byte_rate": {"type": "number", "minimum": 1}}},
        "layers": {"type": "object", "additionalProperties": {
            "type": "object", "required": ["generator", "rows", "choice", "tiles", "default_s", "tuned_s"],
            "properties": {
                "generator": {"type": "string"}, "rows": {"type": "integer", "minimum": 1},
                "choice": {"type": "object", "required": ["schedule", "objective", "tree"], "properties": {
                    "schedule": {"enum": ["materialize", "factored", "stream", "recompute"]},
                    "objective": {"enum": ["call", "total"]}, "tree": {"type": "integer", "minimum": 0,
                                                                       "maximum": 64},
                    "tile_size": {"type": "integer", "minimum": 1, "maximum": 1 << 40}, "share": {"type": "boolean"}}},
                # [I, J, K, rows, jt, vec, kt, kblock (-1: the policy's)] (+ [ty, tx] on GPUs)
                "tiles": {"type": "array", "items": {"type": "array", "items": {"type": "integer", "minimum": -1},
                                                     "minItems": 8, "maxItems": 10}},
                "default_s": {"type": "number", "minimum": 1e-9},  # (1e-320 s made infinite gains)
                "tuned_s": {"type": "number", "minimum": 1e-9}}}},
        # the model's convs (tuning/convs.py), by conv key: Winograd or not (null: the cost model's), GEMM tiles
        "convs": {"type": "object", "additionalProperties": {
            "type": "object", "required": ["winograd", "tiles", "default_s", "tuned_s"],
            "properties": {
                "winograd": {"type": ["boolean", "null"]},
                "tiles": {"type": "array", "items": {"type": "array", "items": {"type": "integer", "minimum": -1},
                                                     "minItems": 8, "maxItems": 10}},
                "default_s": {"type": "number", "minimum": 1e-9}, "tuned_s": {"type": "number", "minimum": 1e-9}}}},
    },
}


# What decides the code a target's compile generates; the rest of a fingerprint says what measured it.
COMPILER_FACTS = ("target", "tvm", "llvm", "cuda", "adntn")
RECORDS_MAX = 32 << 20  # bytes of a records file (a few KB per tuned layer)


def _finite(x, where: str, at: str = "") -> None:
    """NaN and infinite numbers pass JSON Schema's bounds (NaN > 0 is False, not an error): refuse them."""
    if isinstance(x, float) and not math.isfinite(x):
        raise SerializationError(f"{where} are malformed at {at or 'top level'}: {x} is not a finite number")
    items = x.items() if isinstance(x, dict) else enumerate(x) if isinstance(x, list) else ()
    for k, v in items:
        _finite(v, where, f"{at}/{k}" if at else str(k))


def records_dir() -> Path:
    """$ADNTN_TUNING, else $ADNTN_CACHE/tuning, else ~/.cache/adntn/tuning (settings)."""
    from ..settings import records_dir as where

    return where()


def device_id(fp: dict) -> str:
    return hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:16]


def workload_key(gen: Generator, rows: int) -> str:
    """The structural hash of one layer's workload: its traced program (ops, shapes, equations; not the core
    values, which do not change the time) at `rows` rows."""
    from ..generators.trace import trace
    from ..ir.serialize import to_dict

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
    from ..backends.tvm.policy import GemmTiles, GPUTiles

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
    unit: str = "s"  # of each layer's default_s and tuned_s: seconds, or instructions (a qemu runner's count)
    program: dict | None = None  # whole-program choices (a C bundle's call table) and what decided them
    convs: dict[str, dict] = field(default_factory=dict)  # conv key -> Winograd choice and GEMM tiles

    @property
    def device_id(self) -> str:
        return device_id(self.fingerprint)

    def to_dict(self) -> dict:
        d = dict(format="adntn-tuning", version=VERSION, fingerprint=self.fingerprint, unit=self.unit,
                 rates=self.rates, layers=self.layers, program=self.program, convs=self.convs)
        return json.loads(json.dumps(d))  # a copy: edits stay in it

    @classmethod
    def from_dict(cls, d: Any, where: str = "tuning records") -> "Records":
        import jsonschema

        try:
            jsonschema.validate(d, SCHEMA)
        except jsonschema.ValidationError as e:
            at = "/".join(str(p) for p in e.absolute_path) or "top level"
            raise SerializationError(f"{where} are malformed at {at}: {e.message}") from None
        _finite(d, where)
        for rec in [*d["layers"].values(), *d.get("convs", {}).values()]:
            for t in rec["tiles"]:
                _tiles_from_list(t)
        return cls(d["fingerprint"], dict(d["layers"]), d.get("rates"), d.get("unit", "s"), d.get("program"),
                   dict(d.get("convs", {})))

    @classmethod
    def load(cls, path: "str | os.PathLike") -> "Records":
        from ..runtime import jsonio
        from ..runtime.container import read_regular

        data = read_regular(path, f"tuning records {path}", RECORDS_MAX)
        return cls.from_dict(jsonio.loads(data, f"tuning records {path}", RECORDS_MAX), f"tuning records {path}")

    @classmethod
    def for_device(cls, target: "str | Target") -> "Records":
        """The records of the device that measures `target` from the user cache (empty when it was never tuned):
        this machine's, or for an embedded target its emulator's (`emulated.fingerprint`)."""
        t = resolve(target)
        if t.runtime == "c-bundle":
            from .emulated import fingerprint as emulated

            return cls.for_fingerprint(emulated(t), "instructions")
        return cls.for_fingerprint(fingerprint(t))

    @classmethod
    def for_fingerprint(cls, fp: dict, unit: str = "s") -> "Records":
        f = records_dir() / f"{device_id(fp)}.json"
        return cls.load(f) if f.exists() else cls(fp, unit=unit)

    def save(self, path: "str | os.PathLike | None" = None) -> Path:
        from ..runtime.container import write_atomic

        path = Path(path) if path else records_dir() / f"{self.device_id}.json"
        text = json.dumps(self.to_dict(), indent=1, sort_keys=True)
        return write_atomic(path, lambda tmp: Path(tmp).write_text(text))

    def merge(self, other: "Records") -> "Records":
        return Records(self.fingerprint, {**self.layers, **other.layers}, other.rates or self.rates, self.unit,
                       other.program or self.program, {**self.convs, **other.convs})

    def mismatch(self, target: "str | Target") -> str | None:
        """None when these records are this machine's for `target`, or another device's (measured over RPC or
        under qemu) for this same target with this same compiler; else what differs, in words."""
        here = fingerprint(target)
        keys = set(here) | set(self.fingerprint)
        if self.fingerprint.get("measured") in ("rpc", "qemu"):  # the device's facts are its own: not comparable
            keys = set(COMPILER_FACTS)
        diff = [k for k in sorted(keys) if here.get(k) != self.fingerprint.get(k)]
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
        register budget): others are noted and left out; and the records' call-table choice."""
        if self.records.program and "call_table" in self.records.program:
            base = replace(base, call_table=bool(self.records.program["call_table"]))
        tiles = dict(base.tiles)
        if self.records.convs and self.schedule == "auto":  # each conv's Winograd choice (its tiles below)
            base = replace(base, conv_winograd={**{k: r["winograd"] for k, r in self.records.convs.items()
                                                  if r["winograd"] is not None}, **base.conv_winograd})
        for rec in [*self.used.values(), *(self.records.convs.values() if self.schedule == "auto" else ())]:
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
        if target.runtime == "tvm":
            try:
                check_runs_here(target)
            except ConfigError:  # a cross-compile: nothing here measured that device
                return None
        try:
            recs = Records.for_device(target)  # (an embedded target: its emulator's, from a qemu runner)
        except (ConfigError, SerializationError) as e:  # a damaged cache must not stop every compile
            warnings.warn(f"{e}; compiling with the defaults", stacklevel=3)
            return None
        if not (recs.layers or recs.rates or recs.convs):
            return None
    else:
        recs = records if isinstance(records, Records) else Records.load(records)
    why = recs.mismatch(target)  # also for the cache's file: its name is no proof of what it holds
    if why:
        warnings.warn(f"tuning records of device {recs.device_id} are for another device ({why}); not used, the "
                      f"defaults are", stacklevel=3)
        return None
    return Applied(recs, schedule, memory_budget, target)
