"""fold: split a program into a load-time part (depends only on cores) and a per-call part.

The load graph computes every constant value that the per-call part uses (its outputs are named
`fold0`, `fold1`, ...); the call graph reads them as CONST nodes. Keeping them resident costs memory:
`resident_elements` reports it, and `plan` weighs it against the memory budget.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir.builder import Builder
from ..ir.graph import EinsumAttrs, Graph, Node, Op, Value
from .rebuild import depends_on_input


@dataclass(frozen=True)
class Folded:
    load: Graph  # params -> fold0, fold1, ...
    call: Graph  # inputs + CONST fold0.. -> outputs

    @property
    def resident_elements(self) -> int:
        return sum(v.size for v in self.load.outputs)


def _linear_tail(g: Graph, varying: set[int]) -> set[int]:
    """Constant einsums without an activation that feed the per-call part, transitively: the linear
    tail that the `stream` schedule recomputes per call instead of keeping resident."""
    consumers: dict[int, list[Node]] = {}
    for n in g.nodes:
        for v in n.inputs:
            consumers.setdefault(v.id, []).append(n)
    tail: set[int] = set()
    for n in reversed(g.nodes):
        if (n.op is Op.EINSUM and not n.attrs_as(EinsumAttrs).epilogue and n.out.id not in varying
                and all(c.out.id in varying or c.out.id in tail for c in consumers.get(n.out.id, []))
                and any(c.out.id in varying or c.out.id in tail for c in consumers.get(n.out.id, []))):
            tail.add(n.out.id)
    return tail


def _per_call(g: Graph, resident: str) -> set[int]:
    """Ids of the values the per-call part computes (see `fold`'s `resident`)."""
    varying = depends_on_input(g)
    if resident == "cores":
        varying = {n.out.id for n in g.nodes if n.op not in (Op.PARAM, Op.CONST, Op.OUTPUT)}
    elif resident == "nonlinear":
        tail = _linear_tail(g, varying)
        varying = varying | tail
        for n in g.nodes:  # whatever depends on the tail is per-call too
            if any(v.id in varying for v in n.inputs):
                varying.add(n.out.id)
    return varying


def _boundary(g: Graph, varying: set[int]) -> dict[int, Value]:
    """The boundary values: constant, used by a per-call node (or an output), in order of first use."""
    consts: dict[int, Value] = {}
    for n in g.nodes:
        if n.out.id in varying or n.op is Op.OUTPUT:
            for v in n.inputs:
                if v.id not in varying:
                    consts.setdefault(v.id, v)
    return consts


def _load_graph(g: Graph, varying: set[int], names: dict[int, str]) -> Graph:
    """The constant nodes, with the boundary values as outputs named `names`."""
    lb = Builder()
    lmap: dict[int, Value] = {}
    for n in g.nodes:
        if n.out.id in varying or n.op is Op.OUTPUT:
            continue
        if n.op in (Op.PARAM, Op.CONST):
            lmap[n.out.id] = lb.param(n.name, g.tensors[n.name], n.path, const=n.op is Op.CONST)
        else:
            lmap[n.out.id] = lb.node(n.op, tuple(lmap[v.id] for v in n.inputs), n.attrs, n.path)
    for vid, name in names.items():
        lb.output(lmap[vid], name)
    return lb.build()


def _call_graph(g: Graph, varying: set[int], consts: dict[int, Value], names: dict[int, str]) -> Graph:
    """The per-call nodes and the outputs, reading the boundary values as CONST nodes named `names`."""
    cb = Builder()
    cmap: dict[int, Value] = {}
    placeholder = {vid: np.broadcast_to(np.zeros((), np.float64), v.shape) for vid, v in consts.items()}
    for vid, name in names.items():
        cmap[vid] = cb.param(name, placeholder[vid], "fold", const=True)
    for n in g.nodes:
        if n.out.id not in varying and n.op is not Op.OUTPUT:
            continue
        cmap[n.out.id] = cb.node(n.op, tuple(cmap[v.id] for v in n.inputs), n.attrs, n.path,
                                 n.out.shape if n.op is Op.INPUT else None)
    return cb.build()


def fold(g: Graph, resident: str = "all") -> Folded:
    """resident="all": every constant result the per-call part needs is computed at load time.
    resident="nonlinear": the linear tail is recomputed per call (only activation outputs and cores stay).
    resident="cores": everything is recomputed per call; only the cores (params and constants) stay."""
    varying = _per_call(g, resident)
    consts = _boundary(g, varying)
    names = {vid: f"fold{k}" for k, vid in enumerate(consts)}
    return Folded(_load_graph(g, varying, names), _call_graph(g, varying, consts, names))
