"""`verify(graph)`: SSA, topological order, arity and every node's shape rule."""
from __future__ import annotations

from ..errors import VerifyError
from .graph import (
    AdaptivePoolAttrs,
    AddAttrs,
    AxisAttrs,
    BinaryAttrs,
    ConvAttrs,
    EinsumAttrs,
    Graph,
    MapAttrs,
    NameAttrs,
    NormAttrs,
    Op,
    PadAttrs,
    PermAttrs,
    PoolAttrs,
    ShapeAttrs,
    SliceAttrs,
)
from .ops import ARITY, SHAPE, ShapeRuleError
from .printer import format_graph, format_node


def _fail(g: Graph, i: int, msg: str) -> VerifyError:
    n = g.nodes[i]
    where = f"  at {n.path}" if n.path else ""
    return VerifyError(f"{format_node(n)}{where}\n  {msg}\nnearby:\n{format_graph(g, around=i)}")


ATTRS = {Op.INPUT: NameAttrs, Op.PARAM: NameAttrs, Op.CONST: NameAttrs, Op.OUTPUT: NameAttrs,
         Op.EINSUM: EinsumAttrs, Op.MAP: MapAttrs, Op.RESHAPE: ShapeAttrs, Op.TRANSPOSE: PermAttrs, Op.PAD: PadAttrs,
         Op.SLICE: SliceAttrs, Op.CONCAT: AxisAttrs, Op.ADD: AddAttrs,
         Op.BINARY: BinaryAttrs, Op.IM2COL: ConvAttrs, Op.POOL: PoolAttrs, Op.ADAPTIVE_POOL: AdaptivePoolAttrs,
         Op.LAYER_NORM: NormAttrs, Op.SOFTMAX: AxisAttrs}


def verify(g: Graph) -> Graph:
    defined: dict[int, tuple] = {}
    names: set[tuple[Op, str]] = set()
    for i, n in enumerate(g.nodes):
        if n.out.id in defined:
            raise _fail(g, i, f"value %{n.out.id} is defined twice (SSA)")
        arity = ARITY[n.op]
        if arity is not None and len(n.inputs) != arity:
            raise _fail(g, i, f"op {n.op.value} takes {arity} inputs, got {len(n.inputs)}")
        for v in n.inputs:
            if v.id not in defined:
                raise _fail(g, i, f"input %{v.id} is used before it is defined (order or SSA)")
            if defined[v.id] != v.shape:
                raise _fail(g, i, f"input %{v.id} has shape {v.shape} here but {defined[v.id]} where defined")
        if not isinstance(n.attrs, ATTRS[n.op]):
            raise _fail(g, i, f"op {n.op.value} needs {ATTRS[n.op].__name__}, got {type(n.attrs).__name__}")
        if n.op in (Op.INPUT, Op.PARAM, Op.CONST, Op.OUTPUT):
            key = (Op.PARAM if n.op is Op.CONST else n.op, n.attrs.name)
            if key in names:
                raise _fail(g, i, f"{n.op.value} name '{n.attrs.name}' is used twice")
            names.add(key)
        if n.op in (Op.PARAM, Op.CONST):
            t = g.tensors.get(n.attrs.name)  # type: ignore[union-attr]
            if t is None:
                raise _fail(g, i, f"no tensor named '{n.attrs.name}' in the graph")  # type: ignore[union-attr]
            if tuple(t.shape) != n.out.shape:
                raise _fail(g, i, f"tensor '{n.attrs.name}' has shape {t.shape}, node says {n.out.shape}")  # type: ignore[union-attr]
        if n.op in SHAPE:
            try:
                shape = SHAPE[n.op](n.attrs, *(v.shape for v in n.inputs))
            except ShapeRuleError as e:
                raise _fail(g, i, str(e)) from None
            if shape != n.out.shape:
                raise _fail(g, i, f"shape rule gives {shape}, node says {n.out.shape}")
        defined[n.out.id] = n.out.shape
    if not g.outputs:
        raise VerifyError("graph has no output node")
    return g
