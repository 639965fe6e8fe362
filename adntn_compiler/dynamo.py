"""`torch.compile(model, backend="adntn", options={...})`: the ops our frontend supports run as compiled adntn
programs, everything else goes to a fallback compiler (Inductor by default, or eager).

Registered through the `torch_dynamo_backends` entry point, so no import is needed. Per graph Dynamo hands us:

- inference (grad disabled or nothing requires grad): the graph is captured again with torch.export at concrete
  shapes, partitioned with `CapabilityBasedPartitioner` (the ops of `frontends/export.py`, ADNTN layers among
  them), each partition compiled by our TVM backend (parameters frozen into it, rebuilt if one changes) and run
  through the custom op `adntn::partition`; the rest of the graph goes to the fallback. A dynamic batch is served
  by power-of-two buckets (inputs padded, outputs cropped), one compile per bucket. Compiled libraries are
  cached on disk, keyed by graph, shapes, settings, versions and the device fingerprint, and signed.
- training (grad enabled and a parameter requires grad): AOTAutograd (forward, backward and inference compilers,
  boxed) with every ADNTN layer on its compiled forward and backward programs (`CompiledTraining`, its cores
  passed as inputs every step) as the custom ops `adntn::linear_tvm` / `adntn::linear_tvm_backward`; the other
  ops go to the fallback.

`last_report()` says what happened to the last graph: partitions, ops compiled by us, ops left to the fallback
(and why), compile seconds, cache hits.
"""
from __future__ import annotations

import collections
import hashlib
import itertools
import json
import logging
import operator
import os
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from .errors import ConfigError

log = logging.getLogger("adntn_compiler.dynamo")

FALLBACKS = ("inductor", "eager")


@dataclass(frozen=True)
class Options:
    target: str = "cpu"
    fallback: str = "inductor"  # what runs the ops we do not compile: "inductor" or "eager"
    strict: bool = False  # raise instead of falling back (an unsupported op, a failed partition compile)
    cache: bool = True  # the on-disk cache of compiled libraries
    dynamic_batch: bool = True  # serve a symbolic batch by power-of-two buckets
    min_ops: int = 1  # partitions with fewer compute ops (not views) stay with the fallback
    records: Any = "auto"  # tuning records, as adntn.compile takes them: "auto", a Records, a records file, None

    @classmethod
    def parse(cls, options: dict | None) -> "Options":
        options = dict(options or {})
        known = set(cls.__dataclass_fields__)
        bad = sorted(set(options) - known)
        if bad:
            raise ConfigError(f"unknown torch.compile option(s) {bad} for backend 'adntn'; known: {sorted(known)}")
        records = options.get("records", "auto")
        if records not in ("auto", None, False):  # a file is read once, here, and refused here (not per partition)
            from .errors import AdntnError
            from .tuning import Records

            try:
                options["records"] = records if isinstance(records, Records) else Records.load(records)
            except AdntnError as e:
                raise ConfigError(f"options['records']: {e}") from None
        o = cls(**options)
        if o.fallback not in FALLBACKS:
            raise ConfigError(f"options['fallback'] must be one of {FALLBACKS}, got {o.fallback!r}")
        from .targets import resolve

        if resolve(o.target).device == "gpu":  # (an unknown target fails here)
            raise ConfigError(f"options['target']={o.target!r}: torch.compile(backend='adntn') runs its partitions "
                              f"on this CPU; build a GPU artifact with adntn.compile(model, target={o.target!r})")
        return o


@dataclass
class Report:
    mode: str = "inference"  # inference | training
    partitions: int = 0
    compiled_ops: dict[str, int] = field(default_factory=dict)  # ATen op -> count, run by our programs
    fallback_ops: dict[str, int] = field(default_factory=dict)  # ATen op -> count, run by the fallback
    fallback_reasons: list[str] = field(default_factory=list)
    compile_s: float = 0.0
    cache_hits: int = 0
    buckets: list[int] = field(default_factory=list)  # batch sizes compiled (dynamic batch)
    tuned_layers: int = 0  # ADNTN layers planned from tuning records (options['records'])


_REPORTS: collections.deque[Report] = collections.deque(maxlen=256)  # the latest graphs' (bounded: a long process)


def last_report() -> Report | None:
    """What the last graph compiled by backend="adntn" became (None before the first)."""
    return _REPORTS[-1] if _REPORTS else None


def reports() -> list[Report]:
    return list(_REPORTS)


def backend(gm: torch.fx.GraphModule, example_inputs, options: dict | None = None):
    """The Dynamo backend (`torch.compile(m, backend="adntn", options=...)`)."""
    opts = Options.parse(options)
    report = Report()
    _REPORTS.append(report)
    tensors = [t for t in example_inputs if isinstance(t, torch.Tensor)]
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        report.mode = "training"
        return _training(gm, example_inputs, opts, report)
    symbolic = [t for t in example_inputs if _symbolic(t)]
    if symbolic:
        if not opts.dynamic_batch:
            raise ConfigError("this graph has symbolic shapes and options['dynamic_batch'] is False; compile with "
                              "dynamic=False or allow the batch buckets")
        return _Bucketed(gm, example_inputs, opts, report)
    return _Inference(gm, list(example_inputs), opts, report)


# ---------------------------------------------------------------- inference


def _frozen(gm: torch.fx.GraphModule, example_inputs) -> list[bool]:
    """Per graph input: a parameter or buffer (frozen into our programs) or an activation."""
    names = [n.name for n in gm.graph.nodes if n.op == "placeholder"]
    return [isinstance(t, torch.nn.Parameter) or "_parameters_" in n or "_buffers_" in n
            for n, t in zip(names, example_inputs)]


class _Wrapped(torch.nn.Module):
    """The Dynamo graph as a module of its tensor inputs only (int inputs fixed), for torch.export."""

    def __init__(self, gm, ints: dict[int, int], n: int):
        super().__init__()
        self.gm, self.ints, self.n = gm, ints, n

    def forward(self, *tensors):
        it = iter(tensors)
        return self.gm(*[self.ints[k] if k in self.ints else next(it) for k in range(self.n)])


class _Inference:
    """One graph at concrete shapes: partitions on our programs, the rest on the fallback."""

    def __init__(self, gm, args: list, opts: Options, report: Report):
        self.gm, self.opts, self.report = gm, opts, report
        self.frozen = _frozen(gm, args)
        self._build(args)

    def _build(self, args: list) -> None:
        t0 = time.perf_counter()
        ints = {k: int(a) for k, a in enumerate(args) if not isinstance(a, torch.Tensor)}
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        frozen = [f for f, a in zip(self.frozen, args) if isinstance(a, torch.Tensor)]
        self.params = [(t, t._version) for t, f in zip(tensors, frozen) if f]
        try:
            with torch.no_grad():
                ep = torch.export.export(_Wrapped(self.gm, ints, len(args)), tuple(tensors))
        except Exception as e:  # never fail the graph: all of it goes to the fallback
            if self.opts.strict:
                raise
            msg = f"torch.export could not capture the graph ({type(e).__name__}: {str(e).splitlines()[0][:200]}); " \
                  f"all of it runs on {self.opts.fallback}"
            log.warning("adntn: %s", msg)
            self.report.fallback_reasons.append(msg)
            whole = _fallback_compile(self.gm, list(args), self.opts)
            self.run = lambda *a: whole(*a)
        else:
            parent = _partition(ep.graph_module, tensors, frozen, self.opts, self.report)
            run = _fallback_compile(parent, tensors, self.opts)
            self.run = lambda *a: run(*[x for x in a if isinstance(x, torch.Tensor)])
        self.report.compile_s += time.perf_counter() - t0

    def __call__(self, *args):
        if any(t._version != v for t, v in self.params):  # a parameter changed in place: rebuild with its value
            log.info("adntn: a parameter changed; recompiling the graph's partitions")
            self._build(list(args))
        out = self.run(*args)
        return tuple(out) if isinstance(out, (list, tuple)) else (out,)


class _Bucketed:
    """A graph with a symbolic batch: compiled per power-of-two bucket; inputs padded with zeros, outputs
    cropped. Only valid when rows are independent, so a graph whose values lose the batch (a reduction over it)
    is refused, naming the node."""

    def __init__(self, gm, example_inputs, opts: Options, report: Report):
        self.gm, self.opts, self.report = gm, opts, report
        # Dynamo passes real example tensors; their symbolic shapes are in the placeholders' example values
        metas = [n.meta.get("example_value") for n in gm.graph.nodes if n.op == "placeholder"]
        syms = {str(t.node.expr) for t in example_inputs if _symbolic(t)}
        for v in metas:
            if isinstance(v, torch.Tensor):
                syms |= {str(s.node.expr) for s in v.shape if _symbolic(s)}
        if len(syms) != 1:
            raise ConfigError(f"only the batch dimension may be dynamic; this graph has symbols {sorted(syms)} "
                              f"(mark the others static with torch._dynamo.mark_static)")
        self.sym = syms.pop()
        self.batched_in = [isinstance(v, torch.Tensor) and v.dim() > 0 and _is_sym(v.shape[0], self.sym)
                           for v in metas]
        self.sym_in = [isinstance(t, torch.SymInt) and str(t.node.expr) == self.sym for t in example_inputs]
        self.batched_out = _check_rows_independent(gm, self.sym)
        self.compiled: dict[int, _Inference] = {}

    def __call__(self, *args):
        n = next(int(a.shape[0]) for a, b in zip(args, self.batched_in) if b)
        bucket = 1 << max(0, (n - 1).bit_length())
        padded = []
        for a, b, s in zip(args, self.batched_in, self.sym_in):
            if b and a.shape[0] != bucket:
                a = torch.cat([a, a.new_zeros((bucket - a.shape[0], *a.shape[1:]))])
            padded.append(bucket if s else a)
        if bucket not in self.compiled:
            self.report.buckets.append(bucket)
            self.compiled[bucket] = _Inference(self.gm, padded, self.opts, self.report)
        out = self.compiled[bucket](*padded)
        return tuple(o[:n] if b else o for o, b in zip(out, self.batched_out))


def _symbolic(s) -> bool:
    """A SymInt that is still a symbol (Dynamo specialises some to numbers)."""
    return isinstance(s, torch.SymInt) and not s.node.expr.is_number


def _is_sym(s, sym: str) -> bool:
    return isinstance(s, torch.SymInt) and str(s.node.expr) == sym


def _check_rows_independent(gm, sym: str) -> list[bool]:
    """Which outputs carry the batch in dim 0; raises if a value computed from batched ones has lost it."""
    batched: set[str] = set()
    outs: list[bool] = []
    for node in gm.graph.nodes:
        v = node.meta.get("example_value")
        has = isinstance(v, torch.Tensor) and any(
            isinstance(s, torch.SymInt) and sym in {str(f) for f in s.node.expr.free_symbols} for s in v.shape)
        if node.op == "placeholder" and has:
            batched.add(node.name)
        elif node.op in ("call_function", "call_method", "call_module"):
            ins = [a.name for a in node.all_input_nodes]
            if has:
                batched.add(node.name)
            elif isinstance(v, torch.Tensor) and any(i in batched for i in ins):
                raise ConfigError(f"the batch cannot be padded: {node.format_node()} reduces over the batch "
                                  f"dimension {sym} (shape {tuple(v.shape)}); compile with dynamic=False")
        elif node.op == "output":
            vals = node.args[0] if isinstance(node.args[0], (list, tuple)) else [node.args[0]]
            for a in vals:
                ev = a.meta.get("example_value") if isinstance(a, torch.fx.Node) else None
                outs.append(isinstance(ev, torch.Tensor) and len(ev.shape) > 0 and _is_sym(ev.shape[0], sym))
    return outs


# ---------------------------------------------------------------- partitions


_PARTITIONS: dict[int, "_Partition"] = {}
_KEYS = itertools.count()
_SHAPE_OPS = {"aten.view", "aten.reshape", "aten._unsafe_view", "aten.flatten", "aten.permute", "aten.transpose",
              "aten.t", "aten.unsqueeze", "aten.squeeze", "aten.slice", "aten.select", "aten.dropout",
              "aten.dropout_", "aten.contiguous", "aten.clone", "aten.alias", "aten.detach", "aten.lift_fresh_copy"}


@torch.library.custom_op("adntn::partition", mutates_args=())
def partition_op(args: list[torch.Tensor], key: int) -> list[torch.Tensor]:
    """Run compiled partition `key` on its inputs (float32, CPU)."""
    return _PARTITIONS[key](args)


@partition_op.register_fake
def _(args, key):
    return [args[0].new_empty(s) for s in _PARTITIONS[key].out_shapes]


class _Partition:
    """A fused subgraph compiled to a Library: its load program ran once (frozen parameters), its call program
    runs per call."""

    def __init__(self, lib, tensors, out_shapes: list[tuple[int, ...]]):
        loaded = lib.runner("load", tensors)()
        self.call = lib.runner("call", {**tensors, **loaded})
        self.names = [n for n, _, _ in lib.programs["call"].outputs]
        self.out_shapes = out_shapes

    def __call__(self, args: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = [a.detach().contiguous().numpy() for a in args]
        out = self.call(*xs)
        return [torch.from_numpy(out[n]) for n in self.names]


def _supported(node) -> bool:
    from .frontends.export import CONVERTERS, _key

    if node.op != "call_function" or _key(node.target) not in CONVERTERS:
        return False
    vals = [node.meta.get("val")] + [a.meta.get("val") for a in node.all_input_nodes]
    return all(isinstance(v, torch.Tensor) and v.dtype == torch.float32 and v.device.type == "cpu" for v in vals)


def _partition(parent: torch.fx.GraphModule, tensors: list, frozen: list[bool], opts: Options,
               report: Report) -> torch.fx.GraphModule:
    """Fuse the supported nodes of `parent` into partitions, compile each and put `adntn::partition` calls in
    their place; returns the graph module left for the fallback."""
    from torch.fx.passes.infra.partitioner import CapabilityBasedPartitioner
    from torch.fx.passes.operator_support import OperatorSupportBase

    from .frontends.export import _key, where

    class Support(OperatorSupportBase):
        def is_node_supported(self, submodules, node) -> bool:
            return _supported(node)

    placeholders = [n for n in parent.graph.nodes if n.op == "placeholder"]
    value_of = {n.name: (t, f) for n, t, f in zip(placeholders, tensors, frozen)}
    for node in parent.graph.nodes:
        if node.op == "call_function" and not _supported(node) and _key(node.target) != "getitem":
            op = _key(node.target)
            report.fallback_ops[op] = report.fallback_ops.get(op, 0) + 1
            report.fallback_reasons.append(f"{where(node)}: not supported by our frontend")
    if report.fallback_ops and opts.strict:
        raise ConfigError(f"strict: {report.fallback_reasons[0]}; supported ops: see adntn_compiler.frontends."
                          f"export.CONVERTERS")
    parts = CapabilityBasedPartitioner(parent, Support(), allows_single_node_partition=True).propose_partitions()
    parts = [p for p in parts if sum(_key(n.target) not in _SHAPE_OPS for n in p.nodes) >= opts.min_ops]
    if not parts:
        return parent
    from torch.fx.passes.utils.fuser_utils import fuse_by_partitions

    fused = fuse_by_partitions(parent, [list(p.nodes) for p in parts], prefix="adntn_part_")
    keys = []
    for node in list(fused.graph.nodes):
        if node.op != "call_module" or not node.target.startswith("adntn_part_"):
            continue
        sub = getattr(fused, node.target)
        ops = [_key(n.target) for n in sub.graph.nodes if n.op == "call_function"]
        try:
            key = _compile_partition(sub, node, value_of, opts, report)
            keys.append(key)
        except Exception as e:  # never fail the whole graph over one partition: it runs on the fallback
            if opts.strict:
                raise
            msg = f"partition {node.target} ({len(ops)} ops) left to {opts.fallback}: {type(e).__name__}: {e}"
            log.warning("adntn: %s", msg)
            report.fallback_reasons.append(msg)
            for op in ops:
                report.fallback_ops[op] = report.fallback_ops.get(op, 0) + 1
            continue
        report.partitions += 1
        for op in ops:
            report.compiled_ops[op] = report.compiled_ops.get(op, 0) + 1
        dyn = [a for a in node.args if not (isinstance(a, torch.fx.Node) and value_of.get(a.name, (0, False))[1])]
        multi = isinstance(sub.graph.output_node().args[0], (list, tuple))
        with fused.graph.inserting_before(node):
            call = fused.graph.call_function(torch.ops.adntn.partition.default, (list(dyn), key))
            if not multi:
                call = fused.graph.call_function(operator.getitem, (call, 0))
        node.replace_all_uses_with(call)  # (several outputs: the parent's getitem nodes now index our list)
        fused.graph.erase_node(node)
        delattr(fused, node.target)
    fused.graph.eliminate_dead_code()
    fused.recompile()
    for k in keys:  # a partition lives as long as the graph that calls it (a rebuild or a reset frees it)
        weakref.finalize(fused, _PARTITIONS.pop, k, None)
    return fused


def _compile_partition(sub, node, value_of: dict, opts: Options, report: Report) -> int:
    """Our programs for one partition: frozen inputs become constants, the others program inputs."""
    from .backends.tvm.policy import default_policy
    from .frontends.export import _Converter, _Param
    from .frontends.torch_modules import _f32, _ModelBuilder
    from .targets import resolve
    from .tuning import applied

    target = resolve(opts.target)
    binds = []
    for a in node.args:
        t, frozen = value_of.get(a.name, (None, False)) if isinstance(a, torch.fx.Node) else (None, False)
        if frozen:
            binds.append(_Param(f"param.{a.name}", _f32(t)))
        else:
            binds.append(tuple(int(s) for s in a.meta["val"].shape))
    tuned = applied(opts.records, target, "auto", None)
    mb = _ModelBuilder(1, "auto", None, target, tuned.planner if tuned else None)
    conv = _Converter(None, mb)
    outs = conv.run_graph(sub.graph, binds)
    mg = mb.finish_many(outs)
    policy = tuned.policy(default_policy(target)) if tuned else None
    key_text = _cache_key(sub, binds, opts, target, tuned.records.to_dict() if tuned else None)
    lib, hit = _cached_build(key_text, mg, target, policy)
    report.cache_hits += hit
    report.tuned_layers += len(tuned.used) if tuned else 0
    k = next(_KEYS)
    _PARTITIONS[k] = _Partition(lib, mg.tensors, [v.shape for v in mg.call.outputs])
    return k


# ---------------------------------------------------------------- the cache


def fingerprint(target) -> dict:
    """What a compiled library depends on besides its graph: the device's fingerprint and torch's version."""
    from .targets import fingerprint as device_fingerprint

    return dict(device_fingerprint(target), torch=torch.__version__)


def _cache_key(sub, binds, opts: Options, target, records: dict | None = None) -> str:
    from .frontends.export import _key
    from .nn.layers import layer_of

    spec = [("param", b.name, list(b.shape)) if not isinstance(b, tuple) else ("input", list(b)) for b in binds]
    # the graph names ADNTN layers by a per-process key: their generators (activation, layout, ...) go in as text
    layers = [repr(layer_of(n.args[-1]).gen) for n in sub.graph.nodes
              if n.op == "call_function" and _key(n.target).startswith("adntn.")]
    text = json.dumps(dict(graph=sub.code, binds=spec, layers=layers, dtype="float32", fingerprint=fingerprint(target),
                           settings=dict(target=opts.target, records=records)), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def cache_dir():
    from .settings import torch_compile_cache_dir

    return torch_compile_cache_dir()


ENTRY_MEMBERS = ("entry.json", "programs.json", "lib.so", "signature.json")
ENTRY_SMALL = 8 << 20  # bytes of entry.json, programs.json (a few hundred KB for a whole VGG head) and the signature


def _read_entry(path, key: str, target, mg):
    """The Library of a cache entry, checked before its library is read whole: a regular file, exactly its four
    members, the signature (by a trusted key) over entry.json + programs.json, entry.json naming this `key` (an
    entry copied under another key's name is refused) and the library's size and sha256."""
    from .backends.tvm import load_library
    from .runtime import jsonio, signing
    from .runtime.container import Container

    with Container(path, "cache entry") as c:
        c.expect(ENTRY_MEMBERS, ENTRY_MEMBERS)
        small = {n: c.read(n, ENTRY_SMALL) for n in ("entry.json", "programs.json", "signature.json")}
        signing.verify(small["entry.json"] + small["programs.json"], jsonio.loads(small["signature.json"],
                                                                                  "signature.json"), signing.trusted())
        entry = jsonio.loads(small["entry.json"], "entry.json")
        if entry.get("key") != key:
            raise ValueError(f"the entry was built for key {str(entry.get('key'))[:16]}..., not this graph's "
                             f"{key[:16]}... (copied under another name)")
        if c.sizes["lib.so"] != entry.get("lib_bytes"):
            raise ValueError(f"lib.so holds {c.sizes['lib.so']:,} bytes; the entry says {entry.get('lib_bytes')}")
        lib_bytes = c.read("lib.so")
        c.check_digest("lib.so", lib_bytes, entry.get("lib_sha256"))
    return load_library(lib_bytes, jsonio.loads(small["programs.json"], "programs.json"), target, mg.tensors)


def _cached_build(key: str, mg, target, policy=None) -> tuple[Any, int]:
    """The Library for these graphs: from the signed on-disk cache when an entry for `key` exists and checks,
    else built (and stored). A damaged, foreign, unsigned or misplaced entry is rebuilt with a warning, never
    loaded; a path that cannot hold an entry (a folder, a FIFO) only stops caching, never compiling."""
    from .backends import get_backend
    from .errors import AdntnError
    from .runtime import signing
    from .runtime.container import sha256, write_zip

    path = cache_dir() / f"{key}.zip"
    if os.path.lexists(path):
        try:
            return _read_entry(path, key, target, mg), 1
        except Exception as e:  # a damaged, foreign or unsigned entry is rebuilt, never loaded
            log.warning("adntn: ignoring cache entry %s (%s)", path.name, str(e).splitlines()[0] if str(e) else e)
    lib = get_backend(target.runtime).build({"load": mg.load, "call": mg.call}, target, policy)
    lib_bytes, progs = lib.to_bytes(), json.dumps(lib.program_dicts()).encode()
    entry = json.dumps(dict(key=key, lib_sha256=sha256(lib_bytes), lib_bytes=len(lib_bytes))).encode()
    sig = json.dumps(signing.sign(entry + progs)).encode()
    try:
        if path.is_dir() or (os.path.lexists(path) and not path.is_file()):
            raise ConfigError(f"{path} is not a regular file")
        write_zip(path, dict(zip(ENTRY_MEMBERS, (entry, progs, lib_bytes, sig))))
    except (OSError, AdntnError) as e:
        log.warning("adntn: could not write the cache entry %s (%s)", path, e)
    return lib, 0


# ---------------------------------------------------------------- the fallback


def _fallback_compile(gm: torch.fx.GraphModule, args: list, opts: Options) -> Callable:
    if opts.fallback == "eager":
        return gm.forward
    from torch._inductor.compile_fx import compile_fx

    try:
        return compile_fx(gm, args)
    except Exception as e:
        if opts.strict:
            raise
        log.warning("adntn: inductor failed on the fallback graph (%s: %s); running it eagerly", type(e).__name__, e)
        return gm.forward


# ---------------------------------------------------------------- training


@torch.library.custom_op("adntn::linear_tvm", mutates_args=())
def linear_tvm(x: torch.Tensor, cores: list[torch.Tensor], layer: int) -> torch.Tensor:
    """adntn::linear on the layer's compiled forward program (float32)."""
    from .nn.layers import layer_of

    m = layer_of(layer)
    prog = m._compiled_program("layer", x.shape[0], True)
    y, _ = prog.forward(x.detach().contiguous().numpy(), _core_arrays(m, cores))
    return torch.from_numpy(np.array(y))


@linear_tvm.register_fake
def _(x, cores, layer):
    from .nn.layers import layer_of

    return x.new_empty((x.shape[0], layer_of(layer).out_features))


@torch.library.custom_op("adntn::linear_tvm_backward", mutates_args=())
def linear_tvm_backward(gy: torch.Tensor, x: torch.Tensor, cores: list[torch.Tensor], layer: int) -> list[torch.Tensor]:
    """[grad x, grad of every core] from the layer's compiled backward program (its forward recomputed)."""
    from .nn.layers import layer_of

    m = layer_of(layer)
    prog = m._compiled_program("layer", x.shape[0], True)
    vals = _core_arrays(m, cores)
    _, saved = prog.forward(x.detach().contiguous().numpy(), vals)
    g = prog.backward(np.ascontiguousarray(gy.detach().numpy(), dtype=np.float32), saved, vals)
    return [torch.from_numpy(np.array(g["grad.x"]))] + [
        torch.from_numpy(np.array(g[f"grad.{k}"])).reshape(c.shape) for k, c in zip(m.core_names, cores)]


@linear_tvm_backward.register_fake
def _(gy, x, cores, layer):
    return [x.new_empty(x.shape)] + [c.new_empty(c.shape) for c in cores]


def _core_arrays(m, cores) -> dict[str, np.ndarray]:
    return {k: c.detach().contiguous().numpy() for k, c in zip(m.core_names, cores)}


def _setup(ctx, inputs, output):
    x, cores, layer = inputs
    ctx.layer, ctx.n = layer, len(cores)
    ctx.save_for_backward(x, *cores)


def _backward(ctx, gy):
    x, *cores = ctx.saved_tensors
    g = linear_tvm_backward(gy, x, list(cores), ctx.layer)
    return g[0], g[1:], None


linear_tvm.register_autograd(_backward, setup_context=_setup)


def _training(gm, example_inputs, opts: Options, report: Report):
    """ADNTN layers swapped for their compiled-program ops; AOTAutograd and the fallback do the rest."""
    from .frontends.export import _key

    for node in gm.graph.nodes:
        if node.op == "call_function" and _key(node.target) == "adntn.linear":
            node.target = torch.ops.adntn.linear_tvm.default
            report.compiled_ops["adntn.linear"] = report.compiled_ops.get("adntn.linear", 0) + 1
            report.partitions += 1
        elif node.op == "call_function":
            op = _key(node.target)
            report.fallback_ops[op] = report.fallback_ops.get(op, 0) + 1
    report.fallback_reasons.append(f"training: only ADNTN layers run on our programs; the rest on {opts.fallback}")
    gm.recompile()
    t0 = time.perf_counter()
    if opts.fallback == "inductor":
        from torch._inductor.compile_fx import compile_fx

        fn = compile_fx(gm, example_inputs)
    else:
        from functorch.compile import make_boxed_func
        from torch._dynamo.backends.common import aot_autograd

        boxed = lambda g, _: make_boxed_func(g.forward)  # noqa: E731
        fn = aot_autograd(fw_compiler=boxed, bw_compiler=boxed, inference_compiler=boxed)(gm, example_inputs)
    report.compile_s += time.perf_counter() - t0
    return fn


__all__ = ["Options", "Report", "backend", "last_report", "reports", "fingerprint", "cache_dir"]
