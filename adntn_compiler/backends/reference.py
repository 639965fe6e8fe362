"""The numpy interpreter: the definition of what every graph means."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import opt_einsum

from .. import activations
from ..ir.graph import Graph, Node, Op
from ..memory import check_fits

def _einsum(n: Node, *xs: np.ndarray) -> np.ndarray:
    y = opt_einsum.contract(n.attrs.equation, *xs)
    return activations.get(n.attrs.epilogue).numpy(y) if n.attrs.epilogue else y


IMPL_NUMPY = {
    Op.INPUT: None,  # bound from the arguments
    Op.PARAM: None,  # bound from the tensors
    Op.CONST: None,
    Op.EINSUM: _einsum,
    Op.MAP: lambda n, x: activations.get(n.attrs.fn).numpy(x),
    Op.RESHAPE: lambda n, x: x.reshape(n.attrs.shape),
    Op.TRANSPOSE: lambda n, x: x.transpose(n.attrs.perm),
    Op.PAD: lambda n, x: np.pad(x, n.attrs.pads),
    Op.SLICE: lambda n, x: x[tuple(slice(a, b) for a, b in zip(n.attrs.starts, n.attrs.stops))],
    Op.CONCAT: lambda n, *xs: np.concatenate(xs, axis=n.attrs.axis),
    Op.ADD: lambda n, a, b: a + b,
    Op.OUTPUT: lambda n, x: x,
}


def last_uses(g: Graph) -> dict[int, list[int]]:
    """node index -> value ids whose last use is that node (outputs are never freed)."""
    last: dict[int, int] = {}
    for i, n in enumerate(g.nodes):
        for v in n.inputs:
            last[v.id] = i
    keep = {v.id for v in g.outputs}
    out: dict[int, list[int]] = {}
    for vid, i in last.items():
        if vid not in keep:
            out.setdefault(i, []).append(vid)
    return out


def run(g: Graph, args: Sequence[np.ndarray] = (), tensors: Mapping[str, np.ndarray] | None = None,
        dtype=np.float64) -> list[np.ndarray]:
    """Execute `g` on `args` (one per input node, in order); params default to the graph's tensors, and a
    constant missing from `tensors` comes from the graph's."""
    tensors = g.tensors if tensors is None else {**g.tensors, **tensors}
    check_fits(g, np.dtype(dtype).itemsize)
    inputs = iter(args)
    env: dict[int, np.ndarray] = {}
    drop = last_uses(g)
    for i, n in enumerate(g.nodes):
        if n.op is Op.INPUT:
            env[n.out.id] = np.asarray(next(inputs), dtype=dtype)
        elif n.op in (Op.PARAM, Op.CONST):
            env[n.out.id] = np.asarray(tensors[n.attrs.name], dtype=dtype)
        else:
            env[n.out.id] = IMPL_NUMPY[n.op](n, *(env[v.id] for v in n.inputs))
        for vid in drop.get(i, ()):
            del env[vid]
    return [env[v.id] for v in g.outputs]


class ReferenceBackend:
    name = "reference"

    def unsupported(self, g: Graph) -> list[Node]:
        return [n for n in g.nodes if n.op not in IMPL_NUMPY]

    def compile(self, g: Graph, target: str = "cpu"):
        return lambda *args: tuple(run(g, args))
