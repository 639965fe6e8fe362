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
    TakeAttrs,
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
         Op.LAYER_NORM: NormAttrs, Op.SOFTMAX: AxisAttrs, Op.TAKE: TakeAttrs}


def _check_inputs(g: Graph, i: int, defined: dict[int, tuple[int, ...]]) -> None:
    """SSA, arity, and that every input is defined earlier with the shape it has here."""
    n = g.nodes[i]
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


def _check_name(g: Graph, i: int, names: set[tuple[Op, str]]) -> None:
    """Names are unique per kind (params and consts share one namespace); params and consts have a tensor."""
    n = g.nodes[i]
    if n.op in (Op.INPUT, Op.PARAM, Op.CONST, Op.OUTPUT):
        key = (Op.PARAM if n.op is Op.CONST else n.op, n.name)
        if key in names:
            raise _fail(g, i, f"{n.op.value} name '{n.name}' is used twice")
        names.add(key)
    if n.op in (Op.PARAM, Op.CONST):
        t = g.tensors.get(n.name)
        if t is None:
            raise _fail(g, i, f"no tensor named '{n.name}' in the graph")
        if tuple(t.shape) != n.out.shape:
            raise _fail(g, i, f"tensor '{n.name}' has shape {t.shape}, node says {n.out.shape}")


def _check_shape(g: Graph, i: int) -> None:
    n = g.nodes[i]
    if n.op in SHAPE:
        try:
            shape = SHAPE[n.op](n.attrs, *(v.shape for v in n.inputs))
        except ShapeRuleError as e:
            raise _fail(g, i, str(e)) from None
        if shape != n.out.shape:
            raise _fail(g, i, f"shape rule gives {shape}, node says {n.out.shape}")


def verify(g: Graph) -> Graph:
    defined: dict[int, tuple[int, ...]] = {}
    names: set[tuple[Op, str]] = set()
    for i, n in enumerate(g.nodes):
        _check_inputs(g, i, defined)
        if not isinstance(n.attrs, ATTRS[n.op]):
            raise _fail(g, i, f"op {n.op.value} needs {ATTRS[n.op].__name__}, got {type(n.attrs).__name__}")
        _check_name(g, i, names)
        _check_shape(g, i)
        defined[n.out.id] = n.out.shape
    if not g.outputs:
        raise VerifyError("graph has no output node")
    return g
