"""Model graphs: a generator or a torch model becomes two graphs: `load` (cores -> the tensors kept resident,
run once when the executable is created) and `call` (x -> y: ADNTN layers by their optimised plan, everything
else as the IR ops of `frontends/export.py`, which captures torch models with torch.export)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ConfigError, ShapeError
from ..generators.base import Generator
from ..ir.builder import Builder
from ..ir.graph import Graph, NameAttrs, Op, Value
from ..plan import plan


@dataclass
class ModelGraphs:
    load: Graph  # params: named tensors; outputs: the resident tensors (named)
    call: Graph  # input "x", consts (named: load outputs or raw tensors), output "y"
    tensors: dict[str, np.ndarray]  # float32: cores, dense weights, biases
    layers: list[dict] = field(default_factory=list)  # what each layer is (manifest, `adntn info`)
    plans: list = field(default_factory=list, repr=False)  # each ADNTN linear layer's Plan, in order (the tuner's)
    # per call-graph input: {"name", "shape", "dtype": "float32" | "int64"; "rows": the table size its integer ids
    # index (a take), which every run checks them against}
    inputs: list[dict] = field(default_factory=list)

    @property
    def outputs(self) -> list[dict]:
        return [{"name": n.name, "shape": list(n.out.shape)} for n in self.call.nodes if n.op is Op.OUTPUT]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.call.inputs[0].shape

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.call.outputs[0].shape


def _inline(b: Builder, g: Graph, bind: dict[str, Value], prefix: str) -> dict[str, Value]:
    """Copy graph g into builder b: inputs bound by name, params/consts renamed with `prefix`."""
    env: dict[int, Value] = {}
    outs: dict[str, Value] = {}
    for n in g.nodes:
        if n.op is Op.INPUT:
            env[n.out.id] = bind[n.attrs.name]
        elif n.op in (Op.PARAM, Op.CONST):
            env[n.out.id] = b.node(n.op, (), NameAttrs(prefix + n.attrs.name), n.path, n.out.shape)
        elif n.op is Op.OUTPUT:
            outs[n.attrs.name] = env[n.inputs[0].id]
        else:
            env[n.out.id] = b.node(n.op, tuple(env[v.id] for v in n.inputs), n.attrs, n.path)
    return outs


def input_specs(call: Graph, integer: set[str]) -> list[dict]:
    """ModelGraphs.inputs of `call`, whose inputs named in `integer` hold integers. The ids of every take must be
    such an input (seen through reshapes): the place where a run checks them against the table."""
    producer = call.producer()
    rows: dict[str, int] = {}
    for n in call.nodes:
        if n.op is not Op.TAKE:
            continue
        src = producer[n.inputs[1].id]
        while src.op is Op.RESHAPE:
            src = producer[src.inputs[0].id]
        if src.op is Op.CONST:  # indices the frontend computed (checked when it did)
            continue
        if src.op is not Op.INPUT or src.name not in integer:
            raise ConfigError(f"embedding at {n.path or 'the model'}: its indices are computed at run time; only an "
                              f"integer input of the model (token ids) can index a table")
        rows[src.name] = min(rows.get(src.name, n.inputs[0].shape[0]), n.inputs[0].shape[0])
    return [{"name": n.name, "shape": list(n.out.shape), "dtype": "int64" if n.name in integer else "float32",
             **({"rows": rows[n.name]} if n.name in rows else {})} for n in call.nodes if n.op is Op.INPUT]


def _f32(t) -> np.ndarray:
    if hasattr(t, "detach"):
        t = t.detach().cpu().numpy()
    return np.array(t, dtype=np.float32, order="C")  # (ascontiguousarray would make a 0-d scale 1-d)


class _ModelBuilder:
    def __init__(self, batch_size: int, schedule: str, memory_budget: int | None, target, planner=None):
        """`planner(gen, rows) -> (Plan, facts for the layer list)` chooses each ADNTN layer's plan (the tuning
        records'); default: `plan` by the cost model."""
        self.batch_size, self.schedule, self.memory_budget, self.target = batch_size, schedule, memory_budget, target
        self.planner = planner or (lambda gen, rows: (plan(gen, rows, schedule, memory_budget, target=target), {}))
        self.load, self.call = Builder(), Builder()
        self.tensors: dict[str, np.ndarray] = {}
        self.layers: list[dict] = []
        self.plans: list = []
        self.x: Value | None = None
        self.integer: set[str] = set()  # inputs that hold integers
        self.outputs: list[Value] | None = None  # the model's outputs, when a frontend sets them (else x)
        self._paths: dict[str, int] = {}  # layer path -> how many layers were emitted under it

    def unique_prefix(self, path: str) -> str:
        """`path`, or `path#2`, ... when a layer at that path was already emitted (a module called twice)."""
        n = self._paths[path] = self._paths.get(path, 0) + 1
        return path if n == 1 else f"{path}#{n}"

    def _const(self, name: str, value: np.ndarray, path: str) -> Value:
        if name in self.tensors:  # two constants under one name would silently share the second's values
            raise ConfigError(f"constant name {name!r} is used twice (at {path or 'the model'})")
        self.tensors[name] = _f32(value)
        return self.call.node(Op.CONST, (), NameAttrs(name), path, value.shape)

    def _resident(self, outs: dict[str, Value], prefix: str) -> None:
        for k, v in outs.items():
            self.load.output(v, prefix + k)

    def start(self, shape: tuple[int, ...]) -> None:
        self.x = self.call.input("x", (self.batch_size, *shape), "model.x")

    def input(self, name: str, shape: tuple[int, ...], integer: bool = False) -> Value:
        """A call-graph input of this whole shape (the batch included); `integer`: it holds integers."""
        v = self.call.input(name, shape, f"model.{name}")
        if integer:
            self.integer.add(name)
        if self.x is None:
            self.x = v
        return v

    def _features(self, what: str, n: int) -> Value:
        if self.x is None:
            self.start((n,))
        if self.x.shape[1:] != (n,):
            raise ShapeError(f"{what} expects {n} input features, but the previous layer gives shape {self.x.shape}")
        return self.x

    def _layer_tensors(self, graphs, cores: dict[str, Any], prefix: str) -> None:
        """The tensors a generator's graphs read: its cores, and constants the graphs carry (activation centres)."""
        for g in graphs:
            for n in g.nodes:
                if n.op is Op.PARAM:
                    self.tensors[prefix + n.attrs.name] = _f32(cores[n.attrs.name])
                elif n.op is Op.CONST and n.attrs.name in g.tensors:
                    self.tensors[prefix + n.attrs.name] = _f32(g.tensors[n.attrs.name])

    def generator(self, gen: Generator, cores: dict[str, Any], bias, path: str) -> None:
        x = self._features(f"{path} ({gen!r})", gen.I)
        p, facts = self.planner(gen, x.shape[0])  # rows: batch (x tokens)
        self.plans.append(p)
        prefix = f"{path}."
        self._layer_tensors((p.program.load, p.program.call), cores, prefix)
        self._resident(_inline(self.load, p.program.load, {}, prefix), prefix)
        y = _inline(self.call, p.program.call, {"x": x}, prefix)["y"]
        if bias is not None:
            y = self.call.add(y, self._const(prefix + "bias", bias, path), f"{path}.bias")
        self.x = y
        self.layers.append(dict(path=path, kind="adntn", generator=repr(gen), schedule=p.schedule,
                                ratio=gen.compression_ratio, params=gen.num_params, shape=list(gen.shape),
                                flops_per_call=p.flops_per_call, bias=bias is not None, **facts))

    def resident_weight(self, gen: Generator, cores: dict[str, Any], path: str) -> Value:
        """A generated weight (a conv's): made once by the load graph, a constant of the call graph."""
        from ..generators.trace import trace

        wg = trace(gen, "weight", structure_only=True)
        prefix = f"{path}."
        self._layer_tensors((wg,), cores, prefix)
        self._resident(_inline(self.load, wg, {}, prefix), prefix)
        wname = prefix + wg.nodes[-1].attrs.name
        self.layers.append(dict(path=path, kind="adntn-weight", generator=repr(gen), schedule="materialize",
                                ratio=gen.compression_ratio, params=gen.num_params, shape=list(gen.shape)))
        return self.call.node(Op.CONST, (), NameAttrs(wname), path, wg.outputs[0].shape)

    def finish_many(self, outs: list[Value]) -> ModelGraphs:
        """Graphs with several outputs ("y0", "y1", ...; "y" when there is one)."""
        for k, v in enumerate(outs):
            self.call.output(v, "y" if len(outs) == 1 else f"y{k}")
        call = self.call.build()
        return ModelGraphs(self.load.build(), call, self.tensors, self.layers, self.plans,
                           input_specs(call, self.integer))

    def finish(self) -> ModelGraphs:
        if self.outputs is not None:
            return self.finish_many(self.outputs)
        if self.x is None:
            raise ConfigError("the model has no layers to compile")
        return self.finish_many([self.x])
