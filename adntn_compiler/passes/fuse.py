"""fuse: an activation, or a multiplication by a scalar, becomes part of the contraction that feeds it.

- map(f, einsum(...))            -> einsum(..., epilogue=f)
- einsum(',abc->abc', s, einsum(...)) -> einsum(..., s) (the scalar rides along as a 0-d operand)
Only when the inner einsum's result has no other use, and (for the scalar) has no epilogue yet.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import replace

from ..ir.graph import EinsumAttrs, Graph, MapAttrs, Node, Op, Value
from .rebuild import Rebuilder


def _scalar_product(n: Node) -> int | None:
    """Index of the non-scalar operand if `n` only multiplies it by a scalar, else None."""
    a = n.attrs_as(EinsumAttrs)
    if n.op is not Op.EINSUM or len(a.terms) != 2 or a.epilogue or "" not in a.terms:
        return None
    k = 1 - a.terms.index("")
    return k if a.terms[k] and sorted(a.terms[k]) == sorted(a.out) and len(set(a.out)) == len(a.out) else None


def fuse(g: Graph, scalars: bool = True) -> Graph:
    """`scalars=False` leaves scalar products alone: a training graph then keeps the unscaled result, so the
    scale's gradient is a cheap <ct, result> instead of a second full contraction."""
    uses = Counter(v.id for n in g.nodes for v in n.inputs)
    outputs = {v.id for v in g.outputs}
    producer = g.producer()

    def fusable(v: Value, allow_epilogue: bool) -> bool:
        p = producer[v.id]
        return (p.op is Op.EINSUM and uses[v.id] == 1 and v.id not in outputs
                and (allow_epilogue or not p.attrs_as(EinsumAttrs).epilogue))

    absorbed: set[int] = set()  # einsums re-emitted inside their consumer
    for n in g.nodes:
        if n.op is Op.MAP and fusable(n.inputs[0], False):
            absorbed.add(n.inputs[0].id)
        k = _scalar_product(n) if scalars else None
        if k is not None and fusable(n.inputs[k], False):
            absorbed.add(n.inputs[k].id)

    def emit(r: Rebuilder, n: Node) -> Value | None:
        if n.out.id in absorbed:
            return None
        if n.op is Op.MAP and n.inputs[0].id in absorbed:
            inner = producer[n.inputs[0].id]
            return r.b.node(Op.EINSUM, tuple(r[v] for v in inner.inputs),
                            replace(inner.attrs_as(EinsumAttrs), epilogue=n.attrs_as(MapAttrs).fn), inner.path)
        k = _scalar_product(n)
        if k is not None and n.inputs[k].id in absorbed:
            inner = producer[n.inputs[k].id]
            a, ia = n.attrs_as(EinsumAttrs), inner.attrs_as(EinsumAttrs)
            # the outer einsum may permute: express its output in the inner einsum's labels
            rename = dict(zip(a.terms[k], ia.out))
            attrs = EinsumAttrs(ia.terms + ("",), "".join(rename[c] for c in a.out))
            return r.b.node(Op.EINSUM, tuple(r[v] for v in inner.inputs) + (r[n.inputs[1 - k]],), attrs, inner.path)
        return r.copy(n)

    return Rebuilder(g).run(emit)
