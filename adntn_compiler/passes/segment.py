"""segment: merge each chain of linear einsums (between activations) into one multi-operand einsum.

An einsum whose result feeds exactly one other einsum (and is not an output) is inlined into it; its
summed labels are renamed so they cannot collide. With `keep_constant=True`, a constant-only einsum is
never inlined into one that depends on an input: W stays formed (the `materialize` schedule).
"""
from __future__ import annotations

from collections import Counter
from itertools import count

from ..ir.graph import EinsumAttrs, Graph, Node, Op, Value
from .rebuild import Rebuilder, depends_on_input


def segment(g: Graph, keep_constant: bool = False) -> Graph:
    uses = Counter(v.id for n in g.nodes for v in n.inputs)
    outputs = {v.id for v in g.outputs}
    varying = depends_on_input(g)
    producer = g.producer()
    fresh = count()

    def inlinable(consumer: Node, v: Value) -> bool:
        return (producer[v.id].op is Op.EINSUM and uses[v.id] == 1 and v.id not in outputs
                and not (keep_constant and v.id not in varying and consumer.out.id in varying))

    inlined = {v.id for n in g.nodes if n.op is Op.EINSUM for v in n.inputs if inlinable(n, v)}
    # value id -> operands [(old Value, labels)] and output labels of the merged einsum defining it
    merged: dict[int, tuple[list[tuple[Value, list]], list]] = {}
    for n in g.nodes:
        if n.op is not Op.EINSUM:
            continue
        a = n.attrs_as(EinsumAttrs)
        ops: list[tuple[Value, list]] = []
        for v, term in zip(n.inputs, a.terms):
            if v.id not in inlined:
                ops.append((v, list(term)))
                continue
            sub_ops, sub_out = merged[v.id]
            rename = dict(zip(sub_out, term))
            for sv, sl in sub_ops:
                ops.append((sv, [rename.setdefault(l, ("t", next(fresh))) for l in sl]))
        merged[n.out.id] = (ops, list(a.out))

    def emit(r: Rebuilder, n: Node) -> Value | None:
        if n.op is not Op.EINSUM:
            return r.copy(n)
        if n.out.id in inlined:
            return None
        ops, out = merged[n.out.id]
        return r.b.contract([(r[v], ls) for v, ls in ops], out, n.path)

    return Rebuilder(g).run(emit)
