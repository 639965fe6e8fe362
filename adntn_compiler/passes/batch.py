"""batch: same-shaped sibling contractions become one batched contraction.

Einsums with the same equation, epilogue and operand shapes at the same depth of the graph cannot depend
on each other (a dependency would make one deeper). Their differing operands are stacked along a new
leading axis, one einsum runs with that axis as a batch label, and each original result is a slice of
it. Operands they share are not stacked. The rebuilt graph is emitted in dependency order.
Only load-time (constant) contractions are batched: per-call ones may be tiles that must stay apart.
"""
from __future__ import annotations

from collections import defaultdict

from ..ir.graph import EinsumAttrs, Graph, Node, Op, Value
from .rebuild import Rebuilder, depends_on_input

BATCH = ("batch-axis",)  # a label no einsum uses


def _groups(g: Graph) -> list[list[Node]]:
    dynamic = depends_on_input(g)  # per-call tiles stay separate: batching them would undo `tile`
    depth: dict[int, int] = {}
    groups: dict[tuple, list[Node]] = defaultdict(list)
    for n in g.nodes:
        depth[n.out.id] = 1 + max((depth[v.id] for v in n.inputs), default=-1)
        if n.op is Op.EINSUM and n.out.id not in dynamic:
            key = (depth[n.out.id], n.attrs, tuple(v.shape for v in n.inputs))
            groups[key].append(n)
    return [grp for grp in groups.values() if len(grp) > 1]


def _emit_group(r: Rebuilder, grp: list[Node]) -> None:
    first = grp[0]
    a = first.attrs_as(EinsumAttrs)
    ops: list[tuple[Value, list]] = []
    for i, term in enumerate(a.terms):
        vals = [n.inputs[i] for n in grp]
        if all(v.id == vals[0].id for v in vals):
            ops.append((r[vals[0]], list(term)))
        else:
            stacked = r.b.concat([r.b.reshape(r[v], (1,) + v.shape, f"{first.path}.batch") for v in vals], 0,
                                 f"{first.path}.batch")
            ops.append((stacked, [BATCH] + list(term)))
    if not any(BATCH in ls for _, ls in ops):  # identical computations: compute once
        v = r.copy(first)
        for n in grp:
            r.map[n.out.id] = v
        return
    y = r.b.contract(ops, [BATCH] + list(a.out), f"{first.path}.batched", a.epilogue)
    shape = first.out.shape
    for j, n in enumerate(grp):
        part = r.b.slice(y, (j,) + (0,) * len(shape), (j + 1,) + shape, n.path)
        r.map[n.out.id] = r.b.reshape(part, shape, n.path)


def batch(g: Graph) -> Graph:
    groups = _groups(g)
    group_of = {n.out.id: k for k, grp in enumerate(groups) for n in grp}
    r = Rebuilder(g)
    pending = list(g.nodes)
    while pending:
        rest: list[Node] = []
        for n in pending:
            if n.out.id in r.map:
                continue  # emitted with its group
            k = group_of.get(n.out.id)
            members = groups[k] if k is not None else [n]
            if all(v.id in r.map for m in members for v in m.inputs):
                if k is None:
                    r.map[n.out.id] = r.copy(n)
                else:
                    _emit_group(r, members)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise AssertionError("batch: no progress (cyclic dependency)")
        pending = rest
    return r.b.build()


__all__ = ["batch"]
