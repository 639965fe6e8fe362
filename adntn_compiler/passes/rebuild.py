"""Helpers for passes: re-emit a graph node by node through a Builder, mapping old values to new."""
from __future__ import annotations

from typing import Callable

from ..ir.builder import Builder
from ..ir.graph import Graph, Node, Op, Value


def depends_on_input(g: Graph) -> set[int]:
    """Ids of the values that depend on an INPUT (the per-call part); the rest are constant."""
    out: set[int] = set()
    for n in g.nodes:
        if n.op is Op.INPUT or any(v.id in out for v in n.inputs):
            out.add(n.out.id)
    return out


class Rebuilder:
    def __init__(self, g: Graph):
        self.g = g
        self.b = Builder()
        self.b.tensors = dict(g.tensors)
        self.map: dict[int, Value] = {}

    def __getitem__(self, v: Value) -> Value:
        return self.map[v.id]

    def copy(self, n: Node) -> Value:
        """Re-emit `n` unchanged (with remapped inputs)."""
        from ..ir.ops import SHAPE

        inputs = tuple(self[v] for v in n.inputs)
        shape = n.out.shape if n.op not in SHAPE else None
        return self.b.node(n.op, inputs, n.attrs, n.path, shape)

    def run(self, emit: Callable[["Rebuilder", Node], Value | None]) -> Graph:
        for n in self.g.nodes:
            v = emit(self, n)
            if v is not None:
                self.map[n.out.id] = v
        return self.b.build()


def prune(g: Graph) -> Graph:
    """`g` without the nodes no output depends on (inputs stay: they are the graph's signature)."""
    producer = g.producer()
    keep: set[int] = set()
    stack = [v.id for v in g.outputs]
    while stack:
        vid = stack.pop()
        if vid not in keep:
            keep.add(vid)
            stack.extend(v.id for v in producer[vid].inputs)
    if all(n.out.id in keep or n.op is Op.INPUT for n in g.nodes):
        return g
    return Rebuilder(g).run(lambda r, n: r.copy(n) if n.out.id in keep or n.op is Op.INPUT else None)
