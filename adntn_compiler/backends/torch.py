"""Runs any graph with torch ops; autograd flows to the tensors passed as params."""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F

from .. import activations
from ..ir.graph import Graph, Node, Op
from .reference import last_uses


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
    inputs = iter(args)
    env: dict[int, torch.Tensor] = {}
    drop = last_uses(g)
    like = next(iter(tensors.values()), None)
    for i, n in enumerate(g.nodes):
        if n.op is Op.INPUT:
            env[n.out.id] = next(inputs)
        elif n.op is Op.CONST and n.attrs.name not in tensors:
            env[n.out.id] = torch.as_tensor(g.tensors[n.attrs.name], dtype=like.dtype if like is not None else None,
                                            device=like.device if like is not None else None)
        elif n.op in (Op.PARAM, Op.CONST):
            env[n.out.id] = tensors[n.attrs.name]
        else:
            env[n.out.id] = IMPL_TORCH[n.op](n, *(env[v.id] for v in n.inputs))
        for vid in drop.get(i, ()):
            del env[vid]
    return [env[v.id] for v in g.outputs]


class TorchBackend:
    name = "torch"

    def unsupported(self, g: Graph) -> list[Node]:
        return [n for n in g.nodes if n.op not in IMPL_TORCH and n.op not in (Op.INPUT, Op.PARAM, Op.CONST)]

    def compile(self, g: Graph, target: str = "cpu", dtype: torch.dtype = torch.float32):
        tensors = {k: torch.as_tensor(v, dtype=dtype) for k, v in g.tensors.items()}
        return lambda *args: tuple(run(g, [torch.as_tensor(a, dtype=dtype) for a in args], tensors))
