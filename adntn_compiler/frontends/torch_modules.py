"""The torch-module frontend: a generator, an ADNTN layer or a (nested) nn.Sequential of ADNTN layers, Linear,
stride-1 Conv2d, activations, Flatten and Dropout becomes two graphs: `load` (cores -> the tensors kept
resident, run once when the executable is created) and `call` (x -> y, every layer: ADNTN layers by their
optimised plan, dense layers as contractions with a bias add, activations as maps)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ConfigError, ShapeError
from ..generators.base import Generator
from ..ir.builder import Builder
from ..ir.graph import Graph, NameAttrs, Op, Value

ACT_MODULES = {"ReLU": "relu", "Tanh": "tanh", "GELU": "gelu", "Sigmoid": "sigmoid", "SiLU": "silu",
               "LeakyReLU": "leaky_relu"}
SKIP_MODULES = ("Identity", "Dropout")


@dataclass
class ModelGraphs:
    load: Graph  # params: named tensors; outputs: the resident tensors (named)
    call: Graph  # input "x", consts (named: load outputs or raw tensors), output "y"
    tensors: dict[str, np.ndarray]  # float32: cores, dense weights, biases
    layers: list[dict] = field(default_factory=list)  # what each layer is (manifest, `adntn info`)

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


def _f32(t) -> np.ndarray:
    if hasattr(t, "detach"):
        t = t.detach().cpu().numpy()
    return np.array(t, dtype=np.float32, order="C")  # (ascontiguousarray would make a 0-d scale 1-d)


class _ModelBuilder:
    def __init__(self, batch_size: int, schedule: str, memory_budget: int | None, target):
        self.batch_size, self.schedule, self.memory_budget, self.target = batch_size, schedule, memory_budget, target
        self.load, self.call = Builder(), Builder()
        self.tensors: dict[str, np.ndarray] = {}
        self.layers: list[dict] = []
        self.x: Value | None = None

    def _const(self, name: str, value: np.ndarray, path: str) -> Value:
        self.tensors[name] = _f32(value)
        return self.call.node(Op.CONST, (), NameAttrs(name), path, value.shape)

    def _resident(self, outs: dict[str, Value], prefix: str) -> None:
        for k, v in outs.items():
            self.load.output(v, prefix + k)

    def start(self, shape: tuple[int, ...]) -> None:
        self.x = self.call.input("x", (self.batch_size, *shape), "model.x")

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
        from ..plan import plan

        if gen.kind == "conv2d":
            return self.conv_generator(gen, cores, bias, path, stride=1, padding=0)
        x = self._features(f"{path} ({gen!r})", gen.I)
        p = plan(gen, self.batch_size, self.schedule, self.memory_budget, target=self.target)
        prefix = f"{path}."
        self._layer_tensors((p.program.load, p.program.call), cores, prefix)
        self._resident(_inline(self.load, p.program.load, {}, prefix), prefix)
        y = _inline(self.call, p.program.call, {"x": x}, prefix)["y"]
        if bias is not None:
            y = self.call.add(y, self._const(prefix + "bias", bias, path), f"{path}.bias")
        self.x = y
        self.layers.append(dict(path=path, kind="adntn", generator=repr(gen), schedule=p.schedule,
                                ratio=gen.compression_ratio, params=gen.num_params, shape=list(gen.shape),
                                flops_per_call=p.flops_per_call, bias=bias is not None))

    def conv_generator(self, gen: Generator, cores: dict[str, Any], bias, path: str, stride, padding,
                       dilation=1, groups=1) -> None:
        """A conv layer: W generated once at load time; per call an im2col (pad, slices, concat) contraction."""
        from .trace import trace

        wg = trace(gen, "weight", structure_only=True)
        prefix = f"{path}."
        self._layer_tensors((wg,), cores, prefix)
        self._resident(_inline(self.load, wg, {}, prefix), prefix)
        wname = prefix + wg.nodes[-1].attrs.name
        W = self.call.node(Op.CONST, (), NameAttrs(wname), path, wg.outputs[0].shape)
        self._conv(W, bias, path, stride, padding, dilation, groups)
        self.layers.append(dict(path=path, kind="adntn-conv2d", generator=repr(gen), schedule="materialize",
                                ratio=gen.compression_ratio, params=gen.num_params, shape=list(gen.shape),
                                bias=bias is not None))

    def _conv(self, W: Value, bias, path: str, stride, padding, dilation, groups) -> None:
        pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)  # noqa: E731
        stride, padding, dilation = pair(stride), pair(padding), pair(dilation)
        if stride != (1, 1) or dilation != (1, 1) or groups != 1 or isinstance(padding[0], str):
            raise ConfigError(f"{path}: compile supports conv2d with stride 1, dilation 1, groups 1 and integer "
                              f"padding; got stride={stride}, dilation={dilation}, groups={groups}, padding={padding}")
        O, C, kh, kw = W.shape
        x = self.x
        if x is None or len(x.shape) != 4 or x.shape[1] != C:
            raise ShapeError(f"{path}: conv2d expects input (N, {C}, H, W), the previous layer gives "
                             f"{None if x is None else x.shape}")
        b = self.call
        xp = b.pad(x, [(0, 0), (0, 0), (padding[0], padding[0]), (padding[1], padding[1])], f"{path}.pad")
        N, _, Hp, Wp = xp.shape
        Ho, Wo = Hp - kh + 1, Wp - kw + 1
        if Ho < 1 or Wo < 1:
            raise ShapeError(f"{path}: kernel {kh}x{kw} is larger than the padded input {Hp}x{Wp}")
        cols = [b.reshape(b.slice(xp, (0, 0, u, v), (N, C, u + Ho, v + Wo), f"{path}.im2col"), (N, C, 1, Ho, Wo))
                for u in range(kh) for v in range(kw)]
        patches = b.concat(cols, 2, f"{path}.im2col")
        Wr = b.reshape(W, (O, C, kh * kw), path)
        y = b.contract([(patches, "ncpxy"), (Wr, "ocp")], "noxy", f"{path}.conv")
        if bias is not None:
            y = b.add(y, b.reshape(self._const(f"{path}.bias", bias, path), (O, 1, 1)), f"{path}.bias")
        self.x = y

    def linear(self, weight, bias, path: str) -> None:
        weight = _f32(weight)
        x = self._features(f"{path} (Linear)", weight.shape[1])
        W = self._const(f"{path}.weight", weight, path)
        y = self.call.contract([(x, "bi"), (W, "oi")], "bo", path)
        if bias is not None:
            y = self.call.add(y, self._const(f"{path}.bias", bias, path), f"{path}.bias")
        self.x = y
        self.layers.append(dict(path=path, kind="dense", shape=list(weight.shape), params=int(weight.size),
                                bias=bias is not None))

    def activation(self, fn: str, path: str) -> None:
        if self.x is None:
            raise ConfigError(f"{path}: a model cannot start with an activation (the input shape is unknown)")
        self.x = self.call.map(fn, self.x, path)
        self.layers.append(dict(path=path, kind="activation", fn=fn))

    def flatten(self, path: str) -> None:
        if self.x is not None:
            self.x = self.call.reshape(self.x, (self.x.shape[0], int(np.prod(self.x.shape[1:]))), path)
            self.layers.append(dict(path=path, kind="flatten"))

    def finish(self) -> ModelGraphs:
        if self.x is None:
            raise ConfigError("the model has no layers to compile")
        self.call.output(self.x, "y")
        return ModelGraphs(self.load.build(), self.call.build(), self.tensors, self.layers)


def model_graphs(obj, batch_size: int = 1, schedule: str = "auto", memory_budget: int | None = None,
                 input_shape: tuple[int, ...] | None = None, target=None) -> ModelGraphs:
    """The load and call graphs of a generator, an ADNTN layer or a (nested) nn.Sequential model. `target`
    (a Target) gives the plans their cost model and dtype; None: the plan's defaults."""
    mb = _ModelBuilder(batch_size, schedule, memory_budget, target)
    if input_shape is not None:
        mb.start(tuple(input_shape))
    if isinstance(obj, Generator):
        mb.generator(obj, obj.cores, None, "layer")
        return mb.finish()
    try:
        from torch import nn
    except ImportError:  # without torch, only generators exist
        raise ConfigError(f"cannot compile a {type(obj).__name__}: expected a generator or a torch model") from None
    from ..nn import ADNTNConv2d, ADNTNLinear

    def walk(m, path: str) -> None:
        name = type(m).__name__
        if isinstance(m, ADNTNLinear):
            mb.generator(m.gen, dict(m.cores.items()), m.bias, path)
        elif isinstance(m, ADNTNConv2d):
            if mb.x is None:
                raise ConfigError(f"{path}: a model starting with a conv layer needs input_shape=(C, H, W)")
            mb.conv_generator(m.gen, dict(m.cores.items()), m.bias, path, m.stride, m.padding, m.dilation, m.groups)
        elif isinstance(m, nn.Linear):
            mb.linear(m.weight, m.bias, path)
        elif isinstance(m, nn.Conv2d):
            if mb.x is None:
                raise ConfigError(f"{path}: a model starting with a conv layer needs input_shape=(C, H, W)")
            W = mb._const(f"{path}.weight", m.weight, path)
            mb._conv(W, m.bias, path, m.stride, m.padding, m.dilation, m.groups)
            mb.layers.append(dict(path=path, kind="dense-conv2d", shape=list(m.weight.shape)))
        elif isinstance(m, nn.Sequential):
            for k, child in m.named_children():
                walk(child, f"{path}.{k}" if path else k)
        elif name in ACT_MODULES:
            if name == "GELU" and getattr(m, "approximate", "none") != "none":
                raise ConfigError(f"{path}: only exact GELU is supported, got approximate={m.approximate!r}")
            if name == "LeakyReLU":
                from ..activations import LEAKY_SLOPE

                if m.negative_slope != LEAKY_SLOPE:
                    raise ConfigError(f"{path}: LeakyReLU slope {m.negative_slope} is not supported "
                                      f"(only {LEAKY_SLOPE})")
            mb.activation(ACT_MODULES[name], path)
        elif isinstance(m, nn.Flatten):
            mb.flatten(path)
        elif name in SKIP_MODULES:
            pass  # inference: identity
        else:
            raise ConfigError(f"cannot compile module {path or '<root>'} of type {name}; supported: ADNTNLinear, "
                              f"ADNTNConv2d, Linear, Conv2d, Sequential, Flatten, Dropout, Identity, "
                              f"{', '.join(ACT_MODULES)}")

    walk(obj, "" if isinstance(obj, nn.Sequential) else "layer")
    return mb.finish()


