"""The torch.export frontend: a whole model (any forward: residuals, attention, reshapes) becomes the `load`
and `call` graphs. `torch.export.export` captures the model's graph of ATen ops; ADNTN layers appear whole as
the custom ops `adntn::linear` / `adntn::weight` (see `nn.py`) and become their optimised plans; every other
op maps to an IR op (conv2d = im2col + einsum, batch norm folded into the preceding conv or linear, ...).
An op outside the table is refused naming the ATen op, its source line and module path."""
from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..errors import AdntnError, ConfigError, ShapeError
from ..ir.graph import AdaptivePoolAttrs, AxisAttrs, BinaryAttrs, ConvAttrs, NormAttrs, Op, PoolAttrs, Value
from ..ir.ops import conv_out
from .torch_modules import ModelGraphs, _f32, _ModelBuilder


def where(node) -> str:
    """`aten.cumsum.default at model.py:42 (layer3.1)`: the op, the user's source line and module path."""
    target = getattr(node.target, "__name__", str(node.target))
    op = str(node.target) if str(node.target).startswith(("aten.", "adntn.")) else target
    frames = re.findall(r'File "([^"]+)", line (\d+)', node.meta.get("stack_trace") or "")
    user = [f for f in frames if "/torch/" not in f[0] and "/adntn_compiler/" not in f[0]] or frames  # the user's line
    line = f" at {user[-1][0].rsplit('/', 1)[-1]}:{user[-1][1]}" if user else ""
    path = module_path(node)
    return f"{op}{line}{f' ({path})' if path else ''}"


def module_path(node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    return list(stack.values())[-1][0] if stack else ""


def _pair(v) -> tuple[int, int]:
    v = list(v) if isinstance(v, (list, tuple)) else [v]
    if len(v) not in (1, 2):
        raise ConfigError(f"expected 1 or 2 values (height, width), got {v}")
    return int(v[0]), int(v[-1])


def _labels(n: int, tag: str) -> list[str]:
    return [f"{tag}{k}" for k in range(n)]


class _Converter:
    """Walks the exported graph once, emitting IR into a _ModelBuilder (call graph) and its load graph."""

    def __init__(self, ep, mb: _ModelBuilder):
        self.ep, self.mb, self.b = ep, mb, mb.call
        self.env: dict[str, Any] = {}  # fx node name -> Value, _Param (a parameter not yet emitted) or python value
        self.const_values: dict[str, Value] = {}
        self.users: dict[str, list] = {}
        self.fused: set[str] = set()  # batch norms folded into their producer
        self.n_scalars = 0

    # ------------------------------------------------------------ values
    def value(self, a, path: str) -> Value:
        """An argument as an IR value: a parameter becomes a constant, a number a 0-d constant."""
        if isinstance(a, Value):
            return a
        if isinstance(a, _Param):
            if a.name not in self.const_values:
                self.const_values[a.name] = self.mb._const(a.name, a.array, path)
            return self.const_values[a.name]
        if isinstance(a, (int, float)) and not isinstance(a, bool):
            self.n_scalars += 1
            return self.mb._const(f"{path or 'model'}.scalar{self.n_scalars}", np.array(a, np.float32), path)
        raise ConfigError(f"expected a tensor, got {type(a).__name__} {a!r}")

    def arg(self, a):
        import torch.fx

        if isinstance(a, torch.fx.Node):
            return self.env[a.name]
        if isinstance(a, (list, tuple)):
            return type(a)(self.arg(x) for x in a)
        return a

    # ------------------------------------------------------------ the walk
    def run(self) -> None:
        """The exported program: its tensor inputs (the batch first; integer ones: token ids, masks), parameters and
        buffers as constants; one output or several."""
        state = {**self.ep.state_dict, **getattr(self.ep, "constants", {})}
        kinds = {s.arg.name: s for s in self.ep.graph_signature.input_specs}
        binds: list = []
        for node in self.ep.graph.nodes:
            if node.op != "placeholder":
                continue
            spec = kinds[node.name]
            if spec.kind.name == "USER_INPUT":
                val = node.meta["val"]
                shape = tuple(int(s) for s in val.shape)
                if not shape or shape[0] != self.mb.batch_size:
                    raise ShapeError(f"example input {node.name!r} has shape {shape}: its first axis must be the "
                                     f"batch, {self.mb.batch_size}")
                if val.dtype.is_complex or val.dtype == torch_bool():
                    raise ConfigError(f"input {node.name!r} is {val.dtype}: inputs are float or integer tensors")
                binds.append(_Input(shape, node.name, not val.dtype.is_floating_point))
            else:
                value = state[spec.target]
                binds.append(_Param(spec.target, _f32(value), boolean=getattr(value, "dtype", None) == torch_bool()))
        if not any(isinstance(b, _Input) for b in binds):
            raise ConfigError("the model takes no tensor input")
        outs = self.run_graph(self.ep.graph, binds)
        self.mb.outputs = outs

    def run_graph(self, graph, binds: list) -> list[Value]:
        """Convert `graph`: its placeholders bound in order to `binds` (an _Input or a shape: a graph input; a
        _Param: a constant); returns the values of its outputs. One input is named "x"; several keep the names
        of the model's arguments."""
        import torch.fx

        self.users = {n.name: list(n.users) for n in graph.nodes}
        placeholders = [n for n in graph.nodes if n.op == "placeholder"]
        if len(placeholders) != len(binds):
            raise ConfigError(f"graph has {len(placeholders)} inputs, {len(binds)} bound")
        binds = [_Input(b) if isinstance(b, tuple) else b for b in binds]
        n_in, k = sum(isinstance(b, _Input) for b in binds), 0
        for node, b in zip(placeholders, binds):
            if isinstance(b, _Input):
                self.env[node.name] = self.mb.input("x" if n_in == 1 else b.name or f"x{k}", b.shape, b.integer)
                k += 1
            else:
                self.env[node.name] = b
        outs: list[Value] = []
        for node in graph.nodes:
            if node.op == "call_function":
                if node.name in self.fused:
                    continue
                folded = self.fold(node)
                if folded is not None:
                    self.env[node.name] = folded
                    continue
                fn = CONVERTERS.get(_key(node.target))
                if fn is None:
                    raise ConfigError(f"cannot compile {where(node)}: the op is not supported. Supported: "
                                      f"{', '.join(sorted(CONVERTERS))}")
                try:
                    self.env[node.name] = fn(self, node, *self.arg(node.args), **self.arg(node.kwargs))
                except (ConfigError, ShapeError) as e:
                    raise type(e)(f"{where(node)}: {e}") from None
            elif node.op == "output":
                res = node.args[0]
                res = list(res) if isinstance(res, (list, tuple)) else [res]
                outs = [self.value(self.arg(a), "output") if isinstance(a, torch.fx.Node) else None for a in res]
                if any(o is None for o in outs):
                    raise ConfigError("the graph returns a value that is not a tensor")
            elif node.op != "placeholder":
                raise ConfigError(f"unexpected node {node.op} {node.target} in the exported graph")
        return outs

    def fold(self, node) -> "_Param | None":
        """An ATen op whose tensors are all constants, or that has none (position ids, masks built from shapes, a
        buffer's views, eye) evaluated now by torch itself, in the dtypes the program gives them: a constant. None
        when any input is computed at run time, or the op makes more than one tensor."""
        import torch
        import torch.fx

        if not _key(node.target).startswith("aten."):
            return None
        leaves: list = []
        torch.fx.node.map_arg((node.args, node.kwargs), leaves.append)
        if not all(isinstance(self.env.get(a.name), _Param) for a in leaves):
            return None
        if not leaves and re.search(r"empty|rand|normal|bernoulli", _key(node.target)):
            return None  # a factory whose values are not determined (eye, arange, full, ... are)

        def real(a):
            p, val = self.env[a.name], a.meta.get("val")
            t = torch.from_numpy(np.ascontiguousarray(p.array))
            return t.to(val.dtype) if val is not None else t

        out = node.target(*torch.fx.node.map_arg(node.args, real), **torch.fx.node.map_arg(node.kwargs, real))
        if not isinstance(out, torch.Tensor):
            return None
        return _Param(f"{module_path(node) or 'model'}.{node.name}.folded", _f32(out), boolean=out.dtype == torch.bool)

    # ------------------------------------------------------------ helpers for converters
    def map(self, fn: str, x, path: str) -> Value:
        return self.b.map(fn, self.value(x, path), path)

    def binary(self, fn: str, a, b, path: str) -> Value:
        va, vb = self.value(a, path), self.value(b, path)
        if fn == "add" and len(vb.shape) <= len(va.shape) and \
                all(y in (1, x) for x, y in zip(va.shape[len(va.shape) - len(vb.shape):], vb.shape)):
            return self.b.add(va, vb, path)  # a bias (b broadcast against a's trailing axes): the add kernel
        return self.b.node(Op.BINARY, (va, vb), BinaryAttrs(fn), path)

    def bn_after(self, node):
        """The eval-mode batch norm that is `node`'s only user, if any (to fold into it)."""
        users = self.users[node.name]
        if len(users) == 1 and _key(users[0].target) in ("aten.batch_norm",
                                                          "aten._native_batch_norm_legit_no_training"):
            bn = users[0]
            training = bn.args[5] if _key(bn.target) == "aten.batch_norm" else False
            if not training and all(isinstance(self.env.get(getattr(a, "name", None)), _Param) for a in bn.args[1:5]):
                return bn
        return None

    def bn_params(self, bn) -> tuple[np.ndarray, np.ndarray]:
        """(scale, shift) of an eval-mode batch norm: y = x * scale + shift per channel."""
        w, b, mean, var = (self.env[a.name].array.astype(np.float64) if a is not None else None for a in bn.args[1:5])
        eps = bn.args[7] if _key(bn.target) == "aten.batch_norm" else bn.args[6]
        scale = (1.0 if w is None else w) / np.sqrt(var + eps)
        return scale, (0.0 if b is None else b) - mean * scale

    def fold_bn(self, node, weight, bias, path: str):
        """weight/bias with the following batch norm folded in (weight: a _Param, axis 0 = output channels)."""
        bn = self.bn_after(node)
        if bn is None or not isinstance(weight, _Param) or not (bias is None or isinstance(bias, _Param)):
            return weight, bias, None
        scale, shift = self.bn_params(bn)
        w = weight.array.astype(np.float64) * scale.reshape(-1, *[1] * (weight.array.ndim - 1))
        b = shift + (0.0 if bias is None else bias.array.astype(np.float64) * scale)
        self.fused.add(bn.name)
        return _Param(weight.name + ".bn_folded", _f32(w)), _Param(f"{weight.name}.bias_bn_folded", _f32(b)), bn


@dataclass(frozen=True)
class _Input:
    """A graph input: its whole shape (the batch first), the model's name for it, and whether it holds integers
    (token ids, masks: carried as float32, exact below 2**24, checked where they enter)."""
    shape: tuple[int, ...]
    name: str = ""
    integer: bool = False


class _Param:
    """A parameter, buffer or constant of the exported program: emitted as a constant when an op reads it."""

    def __init__(self, name: str, array: np.ndarray, boolean: bool = False):
        self.name, self.array, self.boolean = name, array, boolean  # boolean: a bool tensor (stored as 0 / 1)

    @property
    def shape(self):
        return self.array.shape


def _key(target) -> str:
    """`aten.conv2d` for torch.ops.aten.conv2d.default (overloads share a converter)."""
    s = str(target)
    if target is operator.getitem:
        return "getitem"
    parts = s.split(".")
    return ".".join(parts[:2]) if parts[0] in ("aten", "adntn") else s


# ---------------------------------------------------------------- converters: (conv, node, *args) -> value

def _conv2d(c: _Converter, node, x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    path = module_path(node)
    if isinstance(padding, str):
        if padding == "valid":
            padding = 0
        else:
            raise ConfigError(f"padding={padding!r} is not supported; give the padding as numbers")
    weight, bias, bn = c.fold_bn(node, weight, bias, path)
    x = c.value(x, path)
    W = c.value(weight, path)
    a = ConvAttrs(tuple(W.shape[2:]), _pair(stride), _pair(padding), _pair(dilation), int(groups))
    if len(x.shape) != 4 or x.shape[1] != W.shape[1] * a.groups:
        raise ShapeError(f"conv2d of weight {W.shape} (groups={groups}) expects input (N, {W.shape[1] * a.groups}, "
                         f"H, W), got {x.shape}")
    b = c.b
    p = b.node(Op.IM2COL, (x,), a, f"{path}.im2col")
    G, K, N, P = p.shape
    O = W.shape[0]
    y = b.contract([(b.reshape(W, (G, O // G, K), path), "gok"), (p, "gknp")], "ngop", f"{path}.conv")
    ho, wo = conv_out(a, x.shape)
    y = b.reshape(y, (N, O, ho, wo), path)
    if bias is not None:
        y = b.add(y, b.reshape(c.value(bias, path), (O, 1, 1), path), f"{path}.bias")
    c.mb.layers.append(dict(path=path, kind="conv2d", shape=list(W.shape), stride=list(a.stride),
                            padding=list(a.padding), groups=a.groups))
    if bn is not None:
        c.env[bn.name] = y
        c.mb.layers.append(dict(path=module_path(bn), kind="batchnorm-folded", into=path))
    return y


def _linear(c: _Converter, node, x, weight, bias=None):
    path = module_path(node)
    weight, bias, bn = c.fold_bn(node, weight, bias, path)
    x, W = c.value(x, path), c.value(weight, path)
    lead = _labels(len(x.shape) - 1, "a")
    y = c.b.contract([(x, lead + ["i"]), (W, ["o", "i"])], lead + ["o"], path)
    if bias is not None:
        y = c.b.add(y, c.value(bias, path), f"{path}.bias")
    if isinstance(weight, _Param):
        c.mb.layers.append(dict(path=path, kind="dense", shape=list(W.shape), params=int(math.prod(W.shape)),
                                bias=bias is not None))
    if bn is not None:
        c.env[bn.name] = y
        c.mb.layers.append(dict(path=module_path(bn), kind="batchnorm-folded", into=path))
    return y


def _addmm(c: _Converter, node, bias, a, b, beta=1, alpha=1):
    """beta * bias + alpha * (a @ b): Hugging Face's Conv1D (GPT-2's projections: weight (in, out)) is a dense
    layer of the transposed weight."""
    if beta != 1 or alpha != 1:
        raise ConfigError(f"addmm with beta={beta!r}, alpha={alpha!r} is not supported (1 and 1: a dense layer)")
    if isinstance(b, _Param) and b.array.ndim == 2:
        return _linear(c, node, a, _Param(f"{b.name}.T", np.ascontiguousarray(b.array.T)), bias)
    path = module_path(node)
    return c.binary("add", _matmul(c, node, a, b), bias, path)


def _matmul(c: _Converter, node, a, b):
    path = module_path(node)
    va, vb = c.value(a, path), c.value(b, path)
    if len(va.shape) < 1 or len(vb.shape) < 1:
        raise ShapeError(f"matmul of shapes {va.shape} and {vb.shape}")
    if len(vb.shape) == 1:
        la = _labels(len(va.shape) - 1, "a")
        return c.b.contract([(va, la + ["k"]), (vb, ["k"])], la, path)
    if len(va.shape) == 1:
        lb = _labels(len(vb.shape) - 2, "a")
        return c.b.contract([(va, ["k"]), (vb, lb + ["k", "n"])], lb + ["n"], path)
    ba, bb = va.shape[:-2], vb.shape[:-2]
    nb = max(len(ba), len(bb))
    if len(bb) and len(ba) and (len(ba) != len(bb) or ba != bb):
        raise ShapeError(f"matmul with broadcast batch dimensions {va.shape} @ {vb.shape} is not supported")
    batch = _labels(nb, "a")
    la = batch[nb - len(ba):] + ["m", "k"]
    lb = batch[nb - len(bb):] + ["k", "n"]
    return c.b.contract([(va, la), (vb, lb)], batch + ["m", "n"], path)


def _batch_norm(c: _Converter, node, x, weight, bias, mean, var, training=False, momentum=0.1, eps=1e-5,
                cudnn=False):
    path = module_path(node)
    if training:
        raise ConfigError("batch norm in training mode; compile the model in eval mode (model.eval())")
    if not all(isinstance(t, _Param) for t in (mean, var)):
        raise ConfigError("batch norm statistics must be buffers of the model")
    scale, shift = c.bn_params(node)
    x = c.value(x, path)
    shape = (len(scale),) + (1,) * (len(x.shape) - 2)
    name = f"{path}.{node.name}" if path else node.name  # constant names must be unique in the graph
    s = c.mb._const(f"{name}.bn_scale", _f32(scale.reshape(shape)), path)
    t = c.mb._const(f"{name}.bn_shift", _f32(shift.reshape(shape)), path)
    return c.b.add(c.b.node(Op.BINARY, (x, s), BinaryAttrs("mul"), path), t, path)


def _bn_legit(c, node, x, weight, bias, mean, var, momentum, eps):
    return _batch_norm(c, node, x, weight, bias, mean, var, False, momentum, eps)


def _pool(kind: str):
    def f(c: _Converter, node, x, kernel, stride=None, padding=0, *rest):
        path = module_path(node)
        kernel = _pair(kernel)
        stride = _pair(stride) if stride else kernel
        if kind == "max":
            dilation, ceil = _pair(rest[0]) if rest else (1, 1), bool(rest[1]) if len(rest) > 1 else False
            a = PoolAttrs("max", kernel, stride, _pair(padding), dilation, ceil)
        else:
            ceil = bool(rest[0]) if rest else False
            cip = bool(rest[1]) if len(rest) > 1 else True
            if len(rest) > 2 and rest[2] is not None:
                raise ConfigError("avg_pool2d with divisor_override is not supported")
            a = PoolAttrs("avg", kernel, stride, _pair(padding), (1, 1), ceil, cip)
        return c.b.node(Op.POOL, (c.value(x, path),), a, path)
    return f


def _adaptive(kind: str):
    def f(c: _Converter, node, x, output_size):
        path = module_path(node)
        x = c.value(x, path)
        out = tuple(x.shape[2 + k] if s is None else int(s) for k, s in enumerate(_pair(output_size)))
        if out == tuple(x.shape[2:]):
            return x
        return c.b.node(Op.ADAPTIVE_POOL, (x,), AdaptivePoolAttrs(kind, out), path)
    return f


def _reshape(c: _Converter, node, x, shape):
    path = module_path(node)
    x = c.value(x, path)
    shape = [int(s) for s in shape]
    if shape.count(-1) == 1:
        known = math.prod(s for s in shape if s != -1)
        shape[shape.index(-1)] = x.size // known if known else 0
    return c.b.reshape(x, shape, path)


def _flatten(c: _Converter, node, x, start=0, end=-1):
    x = c.value(x, module_path(node))
    n = len(x.shape)
    start, end = start % n if n else 0, end % n if n else 0
    shape = x.shape[:start] + (math.prod(x.shape[start:end + 1]),) + x.shape[end + 1:]
    return c.b.reshape(x, shape, module_path(node))


def _permute(c: _Converter, node, x, dims):
    x = c.value(x, module_path(node))
    return c.b.transpose(x, [d % len(x.shape) for d in dims], module_path(node))


def _transpose(c: _Converter, node, x, d0, d1):
    x = c.value(x, module_path(node))
    perm = list(range(len(x.shape)))
    d0, d1 = d0 % len(perm), d1 % len(perm)
    perm[d0], perm[d1] = perm[d1], perm[d0]
    return c.b.transpose(x, perm, module_path(node))


def _t(c: _Converter, node, x):
    x = c.value(x, module_path(node))
    return c.b.transpose(x, list(range(len(x.shape)))[::-1], module_path(node))


def _unsqueeze(c: _Converter, node, x, dim):
    x = c.value(x, module_path(node))
    dim = dim % (len(x.shape) + 1)
    return c.b.reshape(x, x.shape[:dim] + (1,) + x.shape[dim:], module_path(node))


def _squeeze(c: _Converter, node, x, dims=None):
    x = c.value(x, module_path(node))
    if dims is None:
        dims = [k for k, s in enumerate(x.shape) if s == 1]
    dims = {d % len(x.shape) for d in ([dims] if isinstance(dims, int) else dims)}
    return c.b.reshape(x, tuple(s for k, s in enumerate(x.shape) if not (k in dims and s == 1)), module_path(node))


def _constant(c: _Converter, node, array: np.ndarray, tag: str) -> _Param:
    """A tensor the converter makes at compile time, named uniquely after the node."""
    return _Param(f"{module_path(node) or 'model'}.{node.name}.{tag}", np.asarray(array, np.float32))


def _gather(c: _Converter, node, x: Value, dim: int, index: np.ndarray) -> Value:
    """x's entries `index` along `dim` (constants known at compile time): a contraction with a 0/1 selection
    matrix (the einsum kernels run it; a strided copy would need an op of its own)."""
    path = module_path(node)
    select = np.zeros((len(index), x.shape[dim]), np.float32)
    select[np.arange(len(index)), index] = 1
    labels = _labels(len(x.shape), "a")
    out = labels[:dim] + ["o"] + labels[dim + 1:]
    return c.b.contract([(x, labels), (c.value(_constant(c, node, select, "select"), path), ["o", labels[dim]])],
                        out, path)


def _slice(c: _Converter, node, x, dim=0, start=None, end=None, step=1):
    path = module_path(node)
    x = c.value(x, path)
    if not isinstance(step, int) or step < 1:
        raise ConfigError(f"slices with step {step!r} are not supported (a positive integer step only)")
    dim = dim % len(x.shape)
    n = x.shape[dim]
    lo, hi = slice(start, end).indices(n)[:2]
    if hi <= lo:
        raise ShapeError(f"slice [{start}:{end}] of axis {dim} (size {n}) is empty")
    if step != 1:
        return _gather(c, node, x, dim, np.arange(lo, hi, step))
    starts, stops = [0] * len(x.shape), list(x.shape)
    starts[dim], stops[dim] = lo, hi
    return c.b.slice(x, starts, stops, path)


def _select(c: _Converter, node, x, dim, index):
    path = module_path(node)
    x = c.value(x, path)
    dim = dim % len(x.shape)
    index = index % x.shape[dim]
    y = _slice(c, node, x, dim, index, index + 1)
    return c.b.reshape(y, x.shape[:dim] + x.shape[dim + 1:], path)


def _index_select(c: _Converter, node, x, dim, index):
    path = module_path(node)
    x = c.value(x, path)
    if not isinstance(index, _Param):
        raise ConfigError("index_select with an index computed at run time is not supported (a constant index: a "
                          "buffer, or arange)")
    dim = dim % len(x.shape)
    idx = index.array.reshape(-1).astype(np.int64)
    if idx.size == 0 or idx.min() < -x.shape[dim] or idx.max() >= x.shape[dim]:
        raise ShapeError(f"index_select: indices {idx.min() if idx.size else ''}..{idx.max() if idx.size else ''} "
                         f"are out of range for axis {dim} of size {x.shape[dim]}")
    return _gather(c, node, x, dim, idx % x.shape[dim])


def _embedding(c: _Converter, node, weight, indices, padding_idx=-1, *rest):
    """Rows of a table: by constant indices (position ids: arange, a buffer) folded here; by token ids given at
    run time a take kernel (the ids are checked against the table before every run)."""
    if isinstance(indices, Value):
        path = module_path(node)
        return c.b.take(c.value(weight, path), indices, path)
    if not isinstance(weight, _Param):
        raise ConfigError("embedding of a table computed at run time is not supported (a parameter table only)")
    idx = indices.array.astype(np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= weight.shape[0]):
        raise ShapeError(f"embedding: indices {idx.min()}..{idx.max()} are out of range for a table of "
                         f"{weight.shape[0]} rows")
    return _constant(c, node, weight.array[idx], "embedding")


def _to(c: _Converter, node, x, *rest, **kw):
    """A dtype cast: every value is float32 here, so a cast to a float type, or of integers to integers, changes
    nothing; a float to an integer type (truncation) or to bool is refused."""
    import torch

    out_dtype = node.meta["val"].dtype
    src = node.args[0].meta.get("val") if hasattr(node.args[0], "meta") else None
    if out_dtype.is_floating_point or (src is not None and not src.dtype.is_floating_point
                                       and (out_dtype != torch.bool or src.dtype == torch.bool)):
        return x
    if out_dtype == torch.bool and src is not None and not src.dtype.is_floating_point:  # integers: x != 0
        path = module_path(node)
        return c.binary("min", c.binary("mul", x, x, path), 1.0, path)
    raise ConfigError(f"a cast of a value computed at run time from {getattr(src, 'dtype', '?')} to {out_dtype} is "
                      f"not supported")


def _gather_op(c: _Converter, node, x, dim, index, **kw):
    """torch.gather of constants (BERT's token-type buffer by position ids): folded."""
    if not isinstance(x, _Param) or not isinstance(index, _Param):
        raise ConfigError("gather with a tensor or index computed at run time is not supported (constants fold)")
    return _constant(c, node, np.take_along_axis(x.array, index.array.astype(np.int64), int(dim)), "gather")


def _finite(v: float) -> float:
    """A fill value the float32 kernels can multiply by 0 (inf * 0 is NaN): infinities become the largest
    finite float32 of their sign, which softmax and max treat alike."""
    return float(np.clip(v, -3.0e38, 3.0e38))


def _is_bool(a) -> bool:
    """Whether fx argument `a` is a boolean tensor (its exported dtype)."""
    val = getattr(a, "meta", {}).get("val")
    return val is not None and val.dtype == torch_bool()


def _masks(c: _Converter, node, m, what: str) -> tuple:
    """(m, 1 - m) of a boolean mask as 0/1 floats: constants when m is one, else run-time values."""
    path = module_path(node)
    if isinstance(m, _Param):
        if not m.boolean:
            raise ConfigError(f"{what} takes a boolean mask")
        return m.array > 0, m.array <= 0
    if not isinstance(m, Value):
        raise ConfigError(f"{what} takes a boolean mask tensor, got {m!r}")
    return m, c.binary("sub", c.value(1.0, path), m, path)


def _times(c: _Converter, node, v, m, tag: str) -> Value:
    """v * m: m a constant 0/1 array or a run-time 0/1 value; v a tensor or a number."""
    path = module_path(node)
    if isinstance(m, np.ndarray):
        if isinstance(v, (int, float)):
            return c.value(_constant(c, node, np.where(m, _finite(float(v)), 0.0), tag), path)
        return c.binary("mul", v, _constant(c, node, m, tag), path)
    return c.binary("mul", _finite(float(v)) if isinstance(v, (int, float)) else v, m, path)


def _masked_fill(c: _Converter, node, x, mask, value):
    """x where mask is False, value where it is True: x * (1 - m) + value * m."""
    m, keep = _masks(c, node, mask, "masked_fill")
    return c.binary("add", _times(c, node, x, keep, "keep"), _times(c, node, value, m, "fill"), module_path(node))


def _where(c: _Converter, node, cond, a, b):
    m, other = _masks(c, node, cond, "where")
    return c.binary("add", _times(c, node, a, m, "then"), _times(c, node, b, other, "else"), module_path(node))


def _logical(fn: str):
    """and / or / not of boolean tensors, as 0/1 floats: a * b, max(a, b), 1 - a."""
    def f(c: _Converter, node, a, b=None):
        if not all(_is_bool(x) for x in node.args if hasattr(x, "meta")):
            raise ConfigError(f"{fn} of integer tensors computed at run time is not supported (booleans only)")
        path = module_path(node)
        if fn == "not":
            return c.binary("sub", c.value(1.0, path), a, path)
        return c.binary("mul" if fn == "and" else "max", a, b, path)
    return f


def _index(c: _Converter, node, x, indices):
    """x[i0, i1, ...] by constant integer index tensors (broadcast together) over x's leading axes: a take of
    the flat rows at indices computed now (HF builds its padding mask this way)."""
    path = module_path(node)
    x = c.value(x, path)
    if not indices or any(not isinstance(i, _Param) or i.boolean for i in indices) or len(indices) > len(x.shape):
        raise ConfigError("indexing is supported by constant integer index tensors over the leading axes only")
    k = len(indices)
    lead, rest = x.shape[:k], x.shape[k:]
    idx = np.broadcast_arrays(*(i.array.astype(np.int64) for i in indices))
    for a, (i, n) in enumerate(zip(idx, lead)):
        if i.size and (i.min() < -n or i.max() >= n):
            raise ShapeError(f"index {i.min()}..{i.max()} is out of range for axis {a} of size {n}")
    flat = np.ravel_multi_index(tuple(i % n for i, n in zip(idx, lead)), lead)
    table = c.b.reshape(x, (int(np.prod(lead)), int(np.prod(rest, dtype=np.int64))), path)
    y = c.b.take(table, c.value(_constant(c, node, flat, "index"), path), path)
    return c.b.reshape(y, (*flat.shape, *rest), path)


def _pow(c: _Converter, node, x, exponent):
    """Small whole exponents (a square; GPT-2's tanh GELU cubes) as products."""
    path = module_path(node)
    if isinstance(exponent, bool) or not isinstance(exponent, (int, float)) or exponent not in (1, 2, 3, 4):
        raise ConfigError(f"pow with exponent {exponent!r} is not supported (1, 2, 3 or 4: products)")
    v = y = c.value(x, path)
    for _ in range(int(exponent) - 1):
        y = c.b.node(Op.BINARY, (y, v), BinaryAttrs("mul"), path)
    return y


def _arange(c: _Converter, node, start, end=None, step=1, **kw):
    if end is None:
        start, end = 0, start
    return _constant(c, node, np.arange(start, end, step), "arange")


def _full(c: _Converter, node, size, value, **kw):
    return _constant(c, node, np.full(tuple(size), float(value)), "full")


def _filled(value: float):
    def f(c: _Converter, node, size, *rest, **kw):
        return _constant(c, node, np.full(tuple(size), value), "full")
    return f


def _interp_matrix(n_out: int, n_in: int, align_corners: bool, scale: float | None) -> np.ndarray:
    """(n_out, n_in) linear-interpolation weights along one axis, with torch's source-index rule
    (area_pixel_compute_source_index; `scale` is the given scale factor, else n_out / n_in)."""
    A = np.zeros((n_out, n_in))
    for i in range(n_out):
        if align_corners:
            src = i * (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
        else:
            src = max(0.0, (i + 0.5) / (scale or n_out / n_in) - 0.5)
        lo = min(int(math.floor(src)), n_in - 1)
        hi, w = min(lo + 1, n_in - 1), src - lo
        A[i, lo] += 1 - w
        A[i, hi] += w
    return A


def _upsample_bilinear(c: _Converter, node, x, output_size, align_corners, scale_factors=None):
    """Bilinear resizing is linear and separable: a contraction with a constant interpolation matrix per axis
    (dense; small next to the convolutions around it)."""
    path = module_path(node)
    x = c.value(x, path)
    if len(x.shape) != 4:
        raise ShapeError(f"upsample_bilinear2d of a {len(x.shape)}-d tensor {x.shape} (needs N, C, H, W)")
    H, W = x.shape[2:]
    sf = tuple(float(v) for v in (list(scale_factors) * 2)[:2]) if scale_factors else (None, None)
    out = _pair(output_size) if output_size else (int(math.floor(H * sf[0])), int(math.floor(W * sf[1])))
    name = f"{path}.{node.name}" if path else node.name
    ah = c.mb._const(f"{name}.interp_h", _f32(_interp_matrix(out[0], H, bool(align_corners), sf[0])), path)
    aw = c.mb._const(f"{name}.interp_w", _f32(_interp_matrix(out[1], W, bool(align_corners), sf[1])), path)
    # two pairwise contractions: as one three-operand einsum the lowering loops over h, w, H and W together
    # (C*H*W*H'*W' multiply-adds: 15 s for CRAFT's last upsampling at 192x384, against 5 ms for torch)
    y = c.b.contract([(x, ["n", "c", "h", "w"]), (aw, ["W", "w"])], ["n", "c", "h", "W"], path)
    return c.b.contract([(y, ["n", "c", "h", "W"]), (ah, ["H", "h"])], ["n", "c", "H", "W"], path)


def _cat(c: _Converter, node, xs, dim=0):
    path = module_path(node)
    vs = [c.value(x, path) for x in xs]
    return c.b.concat(vs, dim % len(vs[0].shape), path)


def _reduce(mean: bool):
    def f(c: _Converter, node, x, dims=None, keepdim=False, dtype=None):
        path = module_path(node)
        x = c.value(x, path)
        n = len(x.shape)
        dims = sorted({d % n for d in (range(n) if not dims else ([dims] if isinstance(dims, int) else dims))})
        labels = _labels(n, "a")
        out = [lab for k, lab in enumerate(labels) if k not in dims]
        count = math.prod(x.shape[d] for d in dims)
        ops = [(x, labels)] + ([(c.value(1.0 / count, path), [])] if mean else [])
        y = c.b.contract(ops, out, path)
        if keepdim:
            y = c.b.reshape(y, tuple(1 if k in dims else s for k, s in enumerate(x.shape)), path)
        return y
    return f


def _softmax(c: _Converter, node, x, dim, *rest):
    x = c.value(x, module_path(node))
    return c.b.node(Op.SOFTMAX, (x,), AxisAttrs(dim % len(x.shape)), module_path(node))


def _layer_norm(c: _Converter, node, x, shape, weight=None, bias=None, eps=1e-5, *rest):
    path = module_path(node)
    x = c.value(x, path)
    shape = tuple(int(s) for s in shape)
    g = c.value(weight if weight is not None else _constant(c, node, np.ones(shape), "ln_weight"), path)
    b = c.value(bias if bias is not None else _constant(c, node, np.zeros(shape), "ln_bias"), path)
    return c.b.node(Op.LAYER_NORM, (x, g, b), NormAttrs(len(shape), float(eps)), path)


def _rms_norm(c: _Converter, node, x, shape, weight=None, eps=None):
    """x * rsqrt(mean(x^2 over the trailing axes) + eps) * weight (eps None: float32's, as torch)."""
    path = module_path(node)
    x = c.value(x, path)
    n, k = len(x.shape), len(shape)
    labels = _labels(n, "a")
    mean_sq = c.b.contract([(c.binary("mul", x, x, path), labels), (c.value(1.0 / math.prod(x.shape[n - k:]), path),
                                                                      [])], labels[:n - k], path)
    mean_sq = c.b.reshape(mean_sq, (*x.shape[:n - k], *[1] * k), path)
    r = c.map("rsqrt", c.binary("add", mean_sq, float(np.finfo(np.float32).eps if eps is None else eps), path), path)
    y = c.binary("mul", x, r, path)
    return y if weight is None else c.binary("mul", y, weight, path)


def _sdpa(c: _Converter, node, q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, *rest, **kw):
    path = module_path(node)
    if attn_mask is not None and is_causal:
        raise ConfigError("scaled_dot_product_attention with both attn_mask and is_causal: torch refuses it too")
    if isinstance(attn_mask, _Param) and attn_mask.boolean:  # True: attend; as an additive mask of constants
        attn_mask = _Param(f"{attn_mask.name}.additive", np.where(attn_mask.array > 0, 0, -3.0e38).astype(np.float32))
    elif isinstance(attn_mask, Value) and _is_bool(node.args[3] if len(node.args) > 3 else node.kwargs["attn_mask"]):
        attn_mask = c.binary("mul", c.binary("sub", attn_mask, 1.0, path), 3.0e38, path)  # 1 -> 0, 0 -> -3e38
    q, k, v = (c.value(t, path) for t in (q, k, v))
    lead = _labels(len(q.shape) - 2, "a")
    s = c.b.contract([(q, lead + ["q", "d"]), (k, lead + ["k", "d"]),
                      (c.value(scale if scale is not None else 1 / math.sqrt(q.shape[-1]), path), [])],
                     lead + ["q", "k"], f"{path}.scores")
    if attn_mask is not None:  # additive, broadcast over the leading axes
        s = c.binary("add", s, attn_mask, f"{path}.mask")
    p = c.b.node(Op.SOFTMAX, (s,), AxisAttrs(len(s.shape) - 1, bool(is_causal)), f"{path}.softmax")
    return c.b.contract([(p, lead + ["q", "k"]), (v, lead + ["k", "e"])], lead + ["q", "e"], path)


def torch_bool():
    import torch

    return torch.bool


def _act(fn: str) -> Callable:
    def f(c: _Converter, node, x, *rest, **kw):
        if fn == "gelu":
            approximate = kw.get("approximate", rest[0] if rest else "none")
            if approximate not in ("none", "tanh"):
                raise ConfigError(f"GELU approximate={approximate!r} is not supported (only 'none' and 'tanh')")
            if approximate == "tanh":  # GPT-2's
                return c.map("gelu_tanh", x, module_path(node))
        if fn == "leaky_relu":
            from ..activations import LEAKY_SLOPE

            slope = float(rest[0] if rest else kw.get("negative_slope", 0.01))
            if slope != LEAKY_SLOPE:
                return _leaky_relu(c, node, x, slope)
        return c.map(fn, x, module_path(node))
    return f


def _leaky_relu(c: _Converter, node, x, slope: float):
    """Any slope: max(x, 0) + slope * min(x, 0) (the activation table holds torch's default slope only)."""
    if not math.isfinite(slope):
        raise ConfigError(f"leaky_relu negative_slope {slope} is not finite")
    path = module_path(node)
    x = c.value(x, path)
    pos = c.b.node(Op.BINARY, (x, c.value(0.0, path)), BinaryAttrs("max"), path)
    neg = c.b.node(Op.BINARY, (x, c.value(0.0, path)), BinaryAttrs("min"), path)
    neg = c.b.node(Op.BINARY, (neg, c.value(slope, path)), BinaryAttrs("mul"), path)
    return c.b.node(Op.BINARY, (pos, neg), BinaryAttrs("add"), path)


def _pad(c: _Converter, node, x, pad, mode="constant", value=None):
    """F.pad / constant_pad_nd with zeros (the IR's pad); pairs are given from the last axis backwards."""
    path = module_path(node)
    x = c.value(x, path)
    if mode != "constant" or (value or 0.0) != 0.0:
        what = f"mode={mode!r}" if mode != "constant" else f"value={value}"
        raise ConfigError(f"pad with {what} is not supported (only zero padding: mode='constant', value=0)")
    pad = [int(p) for p in pad]
    if len(pad) % 2 or len(pad) // 2 > len(x.shape) or min(pad, default=0) < 0:
        raise ConfigError(f"pad {pad} is not supported for shape {x.shape} (non-negative pairs, one per axis "
                          f"from the last)")
    pairs = [(0, 0)] * len(x.shape)
    for k in range(len(pad) // 2):
        pairs[len(x.shape) - 1 - k] = (pad[2 * k], pad[2 * k + 1])
    return c.b.pad(x, pairs, path)


def _constant_pad_nd(c: _Converter, node, x, pad, value=0.0):
    return _pad(c, node, x, pad, "constant", value)


def _relu6(c: _Converter, node, x):
    return _clamp(c, node, x, 0.0, 6.0)


def _bin(fn: str, swap: bool = False):
    def f(c: _Converter, node, a, b, alpha=1, **kw):
        path = module_path(node)
        if kw.get("rounding_mode") is not None:
            raise ConfigError(f"division with rounding_mode={kw['rounding_mode']!r} is not supported")
        if alpha != 1:
            b = c.b.node(Op.BINARY, (c.value(b, path), c.value(float(alpha), path)), BinaryAttrs("mul"), path)
        return c.binary(fn, b, a, path) if swap else c.binary(fn, a, b, path)
    return f


def _identity(c: _Converter, node, x, *rest, **kw):
    return x


def _clamp(c: _Converter, node, x, lo=None, hi=None):
    """clamp / hardtanh (ReLU6): max with the lower bound, then min with the upper."""
    path = module_path(node)
    y = c.value(x, path)
    if lo is not None:
        y = c.b.node(Op.BINARY, (y, c.value(float(lo), path)), BinaryAttrs("max"), path)
    if hi is not None:
        y = c.b.node(Op.BINARY, (y, c.value(float(hi), path)), BinaryAttrs("min"), path)
    return y


def _clamp_min(c, node, x, lo):
    return _clamp(c, node, x, lo, None)


def _clamp_max(c, node, x, hi):
    return _clamp(c, node, x, None, hi)


def _hardtanh(c, node, x, lo=-1.0, hi=1.0):
    return _clamp(c, node, x, lo, hi)


def _neg(c: _Converter, node, x):
    path = module_path(node)
    return c.b.node(Op.BINARY, (c.value(x, path), c.value(-1.0, path)), BinaryAttrs("mul"), path)


def _expand(c: _Converter, node, x, shape, *rest, **kw):
    """A broadcast copy: x + zeros of the target shape (-1 keeps an axis)."""
    path = module_path(node)
    x = c.value(x, path)
    lead = len(shape) - len(x.shape)
    shape = tuple(x.shape[k - lead] if s == -1 else int(s) for k, s in enumerate(shape))
    if shape == x.shape:
        return x
    c.n_scalars += 1
    zeros = c.mb._const(f"{path or node.name}.expand{c.n_scalars}", np.zeros(shape, np.float32), path)
    return c.b.node(Op.BINARY, (zeros, x), BinaryAttrs("add"), path)


def _split_sizes(c: _Converter, node, x, sizes, dim):
    x = c.value(x, module_path(node))
    dim = dim % len(x.shape)
    outs, start = [], 0
    for s in sizes:
        outs.append(_slice(c, node, x, dim, start, start + s))
        start += s
    return tuple(outs)


def _split(c: _Converter, node, x, size, dim=0):
    x = c.value(x, module_path(node))
    n = x.shape[dim % len(x.shape)]
    sizes = list(size) if isinstance(size, (list, tuple)) else [min(size, n - k) for k in range(0, n, size)]
    return _split_sizes(c, node, x, sizes, dim)


def _chunk(c: _Converter, node, x, chunks, dim=0):
    x = c.value(x, module_path(node))
    n = x.shape[dim % len(x.shape)]
    return _split(c, node, x, -(-n // chunks), dim)


def _unbind(c: _Converter, node, x, dim=0):
    x = c.value(x, module_path(node))
    return tuple(_select(c, node, x, dim, k) for k in range(x.shape[dim % len(x.shape)]))


def _getitem(c: _Converter, node, xs, k):
    if not isinstance(xs, tuple):
        raise ConfigError(f"getitem of a {type(xs).__name__}")
    return xs[k]


def _adntn_linear(c: _Converter, node, x, cores, layer):
    from ..nn.layers import layer_of

    m = layer_of(layer)
    path = c.mb.unique_prefix(module_path(node) or node.name)
    x = c.value(x, path)
    c.mb.x = x
    c.mb.generator(m.gen, {k: t.array for k, t in zip(m.core_names, cores)}, None, path)
    return c.mb.x


def _adntn_weight(c: _Converter, node, cores, layer):
    from ..nn.layers import layer_of

    m = layer_of(layer)
    path = c.mb.unique_prefix(module_path(node) or node.name)
    return c.mb.resident_weight(m.gen, {k: t.array for k, t in zip(m.core_names, cores)}, path)


CONVERTERS: dict[str, Callable] = {
    "aten.conv2d": _conv2d, "aten.linear": _linear, "aten.addmm": _addmm,
    "aten.matmul": _matmul, "aten.mm": _matmul, "aten.bmm": _matmul,
    "aten.batch_norm": _batch_norm, "aten._native_batch_norm_legit_no_training": _bn_legit,
    "aten.max_pool2d": _pool("max"), "aten.avg_pool2d": _pool("avg"), "aten.minimum": _bin("min"),
    "aten.adaptive_avg_pool2d": _adaptive("avg"),
    "aten.layer_norm": _layer_norm, "aten.softmax": _softmax, "aten._softmax": _softmax,
    "aten.scaled_dot_product_attention": _sdpa,
    "aten.add": _bin("add"), "aten.sub": _bin("sub"), "aten.mul": _bin("mul"), "aten.div": _bin("div"),
    "aten.rsub": _bin("sub", swap=True), "aten.maximum": _bin("max"),
    "aten.relu": _act("relu"), "aten.relu_": _act("relu"), "aten.gelu": _act("gelu"), "aten.silu": _act("silu"),
    "aten.sigmoid": _act("sigmoid"), "aten.tanh": _act("tanh"), "aten.sqrt": _act("sqrt"),
    "aten.rsqrt": _act("rsqrt"), "aten.rms_norm": _rms_norm, "aten.hardswish": _act("hardswish"),
    "aten.hardswish_": _act("hardswish"), "aten.hardsigmoid": _act("hardsigmoid"),
    "aten.hardsigmoid_": _act("hardsigmoid"), "aten.leaky_relu": _act("leaky_relu"), "aten.silu_": _act("silu"),
    "aten.view": _reshape, "aten.reshape": _reshape, "aten._unsafe_view": _reshape, "aten.flatten": _flatten,
    "aten.permute": _permute, "aten.transpose": _transpose, "aten.t": _t, "aten.unsqueeze": _unsqueeze,
    "aten.squeeze": _squeeze, "aten.slice": _slice, "aten.select": _select, "aten.cat": _cat,
    "aten.upsample_bilinear2d": _upsample_bilinear,
    "aten.mean": _reduce(True), "aten.sum": _reduce(False),
    "aten.dropout": _identity, "aten.dropout_": _identity, "aten.contiguous": _identity, "aten.clone": _identity,
    "aten.alias": _identity, "aten.detach": _identity, "aten.lift_fresh_copy": _identity,
    "aten.clamp": _clamp, "aten.clamp_min": _clamp_min, "aten.clamp_max": _clamp_max, "aten.hardtanh": _hardtanh,
    "aten.hardtanh_": _hardtanh, "aten.relu6": _relu6, "aten.relu6_": _relu6, "aten.pad": _pad,
    "aten.constant_pad_nd": _constant_pad_nd, "aten.leaky_relu_": _act("leaky_relu"), "aten.neg": _neg,
    "aten.expand": _expand, "aten.split": _split,
    "aten.split_with_sizes": _split_sizes, "aten.chunk": _chunk, "aten.unbind": _unbind, "getitem": _getitem,
    "adntn.linear": _adntn_linear, "adntn.weight": _adntn_weight,
    "aten.index_select": _index_select, "aten.masked_fill": _masked_fill, "aten.where": _where, "aten.pow": _pow,
    "aten._assert_tensor_metadata": lambda c, node, *a, **kw: None,  # a check torch.export leaves: nothing to run
    "aten.embedding": _embedding, "aten.gather": _gather_op,
    "aten._to_copy": _to, "aten.to": _to, "aten.type_as": _to, "aten.index": _index,
    "aten.__and__": _logical("and"), "aten.logical_and": _logical("and"), "aten.__or__": _logical("or"),
    "aten.logical_or": _logical("or"), "aten.logical_not": _logical("not"), "aten.bitwise_not": _logical("not"),
    "aten.arange": _arange, "aten.full": _full, "aten.zeros": _filled(0.0), "aten.ones": _filled(1.0),
}


@dataclass(frozen=True)
class Captured:
    """A torch model captured once by torch.export: planning it again (another schedule, memory budget or
    planner: the board-budget loop) converts the same exported program, never exports again."""
    program: Any  # torch.export.ExportedProgram
    batch_size: int

    def graphs(self, schedule: str = "auto", memory_budget: int | None = None, target=None,
               planner=None) -> ModelGraphs:
        mb = _ModelBuilder(self.batch_size, schedule, memory_budget, target, planner)
        _Converter(self.program, mb).run()
        return mb.finish()


def export_graphs(model, example_inputs, schedule: str = "auto", memory_budget: int | None = None,
                  target=None, planner=None) -> ModelGraphs:
    """The load and call graphs of a torch model, captured by torch.export on `example_inputs` (a tensor or a
    tuple of them; the first axis of each is the compiled batch)."""
    return capture_module(model, example_inputs).graphs(schedule, memory_budget, target, planner)


def capture_module(model, example_inputs) -> Captured:
    """`model` captured by torch.export on `example_inputs` (a tensor or a tuple of them), in eval mode (every
    submodule's own mode is restored afterwards: a model in eval mode inside a training-mode wrapper stays so)."""
    import torch

    xs = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            ep = torch.export.export(model, xs)
    except AdntnError:
        raise  # the model's own check (e.g. an ADNTN layer's input shape)
    except Exception as e:
        raise ConfigError(f"torch.export could not capture {type(model).__name__}: {type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''}") from None
    finally:
        for m, training in modes:
            m.training = training
    return Captured(ep, int(xs[0].shape[0]) if xs[0].dim() else 1)
