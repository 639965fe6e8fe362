"""Runs any graph with torch ops; autograd flows to the tensors passed as params."""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F

from .. import activations
from ..errors import ConfigError
from ..ir.graph import Graph, Node, Op
from ..ir.interpret import interpret


def _map(fn: str, x: torch.Tensor) -> torch.Tensor:
    # On a flat view: some torch kernels (gelu) refuse tensors of more than 16 dims, which binary legs give.
    return activations.torch_fn(fn)(x.reshape(-1)).reshape(x.shape)


def _einsum(n: Node, *xs: torch.Tensor) -> torch.Tensor:
    # The builder names labels a..z, A..Z first, so torch.einsum takes up to 52 labels.
    y = torch.einsum(n.attrs.equation, *xs)
    return _map(n.attrs.epilogue, y) if n.attrs.epilogue else y


def _pad(n: Node, x: torch.Tensor) -> torch.Tensor:
    flat = [p for lo_hi in reversed(n.attrs.pads) for p in lo_hi]  # F.pad wants last axis first
    return F.pad(x, flat)


def _im2col(n: Node, x: torch.Tensor) -> torch.Tensor:
    a, (g, K, N, P) = n.attrs, n.out.shape
    cols = F.unfold(x, a.kernel, a.dilation, a.padding, a.stride)  # (N, C*kh*kw, P), (c, u, v) order
    return cols.reshape(N, g, K, P).permute(1, 2, 0, 3).contiguous()


def _pool(n: Node, x: torch.Tensor) -> torch.Tensor:
    a = n.attrs
    if a.mode == "max":
        return F.max_pool2d(x, a.kernel, a.stride, a.padding, a.dilation, a.ceil_mode)
    if a.dilation != (1, 1):
        raise ConfigError(f"avg pooling has no dilation in torch, got {a.dilation}")
    return F.avg_pool2d(x, a.kernel, a.stride, a.padding, a.ceil_mode, a.count_include_pad)


def _adaptive_pool(n: Node, x: torch.Tensor) -> torch.Tensor:
    f = F.adaptive_max_pool2d if n.attrs.mode == "max" else F.adaptive_avg_pool2d
    return f(x, n.attrs.output_size)


BINARY_TORCH = {"add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div, "max": torch.maximum,
                "min": torch.minimum}

def _causal(x: torch.Tensor) -> torch.Tensor:
    q, k = x.shape[-2:]
    later = torch.arange(k, device=x.device)[None, :] > torch.arange(q, device=x.device)[:, None]
    return x.masked_fill(later, float("-inf"))


IMPL_TORCH = {
    Op.EINSUM: _einsum,
    Op.MAP: lambda n, x: _map(n.attrs.fn, x),
    Op.RESHAPE: lambda n, x: x.reshape(n.attrs.shape),
    Op.TRANSPOSE: lambda n, x: x.permute(n.attrs.perm),
    Op.PAD: _pad,
    Op.SLICE: lambda n, x: x[tuple(slice(a, b) for a, b in zip(n.attrs.starts, n.attrs.stops))],
    Op.ADD: lambda n, a, b: a + b,
    Op.BINARY: lambda n, a, b: BINARY_TORCH[n.attrs.fn](a, b),
    Op.IM2COL: _im2col,
    Op.POOL: _pool,
    Op.ADAPTIVE_POOL: _adaptive_pool,
    Op.LAYER_NORM: lambda n, x, g, b: F.layer_norm(x, g.shape, g, b, n.attrs.eps),
    Op.SOFTMAX: lambda n, x: torch.softmax(_causal(x) if n.attrs.causal else x, n.attrs.axis),
    Op.CONCAT: lambda n, *xs: torch.cat(xs, dim=n.attrs.axis),
    Op.TAKE: lambda n, t, ids: t[ids.long().clamp(0, t.shape[0] - 1)],  # (ids are checked where they enter)
    Op.OUTPUT: lambda n, x: x,
}


def run(g: Graph, args: Sequence[torch.Tensor], tensors: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
    """Run `g`; params come from `tensors`, a constant from `tensors` or else from the graph (in the dtype and
    device of the other tensors)."""
    like = next(iter(tensors.values()), None)

    def bind_tensor(n: Node) -> torch.Tensor:
        name = n.attrs.name
        if name in tensors:
            return tensors[name]
        if n.op is Op.CONST and name in g.tensors:
            return torch.as_tensor(g.tensors[name], dtype=like.dtype if like is not None else None,
                                   device=like.device if like is not None else None)
        raise ConfigError(f"no tensor named {name!r} was given")

    return interpret(g, args, IMPL_TORCH, lambda n, x: x, bind_tensor, "torch")


class TorchBackend:
    name = "torch"

    def unsupported(self, g: Graph, target="cpu") -> list[Node]:
        return [n for n in g.nodes if n.op not in IMPL_TORCH and n.op not in (Op.INPUT, Op.PARAM, Op.CONST)]

    def compile(self, g: Graph, target="cpu", tensors: Mapping[str, torch.Tensor] | None = None,
                dtype: torch.dtype | None = None):
        """`tensors` (e.g. a module's live ParameterDict) are used as they are; without them the graph's own
        tensors are converted to `dtype` (default float32) once. Inputs are converted to `dtype` when there is
        one (or when the graph's tensors are used), else passed as they are (autograd flows through them)."""
        if tensors is None:
            dtype = dtype or torch.float32
            tensors = {k: torch.as_tensor(v, dtype=dtype) for k, v in g.tensors.items()}
        convert = (lambda a: torch.as_tensor(a, dtype=dtype)) if dtype else torch.as_tensor
        return lambda *args: tuple(run(g, [convert(a) for a in args], tensors))
