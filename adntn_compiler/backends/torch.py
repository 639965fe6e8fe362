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


IMPL_TORCH = {
    Op.EINSUM: _einsum,
    Op.MAP: lambda n, x: _map(n.attrs.fn, x),
    Op.RESHAPE: lambda n, x: x.reshape(n.attrs.shape),
    Op.TRANSPOSE: lambda n, x: x.permute(n.attrs.perm),
    Op.PAD: _pad,
    Op.SLICE: lambda n, x: x[tuple(slice(a, b) for a, b in zip(n.attrs.starts, n.attrs.stops))],
    Op.ADD: lambda n, a, b: a + b,
    Op.CONCAT: lambda n, *xs: torch.cat(xs, dim=n.attrs.axis),
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
