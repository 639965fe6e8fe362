"""The numpy interpreter: the definition of what every graph means."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import opt_einsum

from .. import activations
from ..errors import ConfigError
from ..ir.graph import Graph, Node, Op
from ..ir.interpret import interpret
from ..memory import check_fits


def _einsum(n: Node, *xs: np.ndarray) -> np.ndarray:
    y = opt_einsum.contract(n.attrs.equation, *xs)
    return activations.get(n.attrs.epilogue).numpy(y) if n.attrs.epilogue else y


IMPL_NUMPY = {  # INPUT, PARAM and CONST are bound by the interpreter
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


def run(g: Graph, args: Sequence[np.ndarray] = (), tensors: Mapping[str, np.ndarray] | None = None,
        dtype=np.float64) -> list[np.ndarray]:
    """Execute `g` on `args` (one per input node, in order); params default to the graph's tensors, and a
    constant missing from `tensors` comes from the graph's."""
    tensors = g.tensors if tensors is None else {**g.tensors, **tensors}
    check_fits(g, np.dtype(dtype).itemsize)

    def bind_tensor(n: Node) -> np.ndarray:
        if n.attrs.name not in tensors:
            raise ConfigError(f"no tensor named {n.attrs.name!r} was given")
        return np.asarray(tensors[n.attrs.name], dtype=dtype)

    return interpret(g, args, IMPL_NUMPY, lambda n, x: np.asarray(x, dtype=dtype), bind_tensor, "reference")


class ReferenceBackend:
    name = "reference"

    def unsupported(self, g: Graph, target="cpu") -> list[Node]:
        return [n for n in g.nodes if n.op not in IMPL_NUMPY]

    def compile(self, g: Graph, target="cpu", tensors: Mapping[str, np.ndarray] | None = None):
        return lambda *args: tuple(run(g, args, tensors))
