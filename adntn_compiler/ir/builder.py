"""Builder: appends nodes in order, computing each output shape from the op's shape rule."""
from __future__ import annotations

from typing import Hashable, Sequence

import numpy as np
from opt_einsum import get_symbol

from ..errors import ShapeError
from .graph import (
    AddAttrs,
    AxisAttrs,
    EinsumAttrs,
    Graph,
    MapAttrs,
    NameAttrs,
    Node,
    Op,
    PadAttrs,
    PermAttrs,
    ShapeAttrs,
    SliceAttrs,
    TakeAttrs,
    Value,
)
from .ops import SHAPE, ShapeRuleError
from .printer import format_attrs


class Builder:
    def __init__(self, dtype: str = "float64"):
        self.nodes: list[Node] = []
        self.tensors: dict[str, np.ndarray] = {}
        self.dtype = dtype

    def node(self, op: Op, inputs: Sequence[Value], attrs, path: str, shape=None) -> Value:
        """Append one node; its shape comes from the op's shape rule unless given (INPUT/PARAM/CONST)."""
        if shape is None:
            try:
                shape = SHAPE[op](attrs, *(v.shape for v in inputs))
            except ShapeRuleError as e:
                where = f" at {path}" if path else ""
                raise ShapeError(f"{op.value}{format_attrs_of(op, attrs)}{where}: {e}") from None
        out = Value(len(self.nodes), tuple(int(s) for s in shape), self.dtype)
        self.nodes.append(Node(op, tuple(inputs), out, attrs, path))
        return out

    def input(self, name: str, shape: Sequence[int], path: str = "") -> Value:
        return self.node(Op.INPUT, (), NameAttrs(name), path, tuple(shape))

    def param(self, name: str, value: np.ndarray, path: str = "", const: bool = False) -> Value:
        self.tensors[name] = value
        return self.node(Op.CONST if const else Op.PARAM, (), NameAttrs(name), path, value.shape)

    def contract(self, operands: Sequence[tuple[Value, Sequence[Hashable]]], out: Sequence[Hashable],
                 path: str = "", epilogue: str = "") -> Value:
        """Einsum over arbitrary hashable labels; labels become a, b, c... in order of appearance."""
        symbols: dict[Hashable, str] = {}

        def sym(label: Hashable) -> str:
            if label not in symbols:
                symbols[label] = get_symbol(len(symbols))
            return symbols[label]

        terms = tuple("".join(sym(l) for l in labels) for _, labels in operands)
        unknown = [l for l in out if l not in symbols]
        if unknown:
            raise ShapeError(f"einsum at {path}: output labels {unknown} appear in no operand")
        attrs = EinsumAttrs(terms, "".join(symbols[l] for l in out), epilogue)
        return self.node(Op.EINSUM, [v for v, _ in operands], attrs, path)

    def map(self, fn: str, x: Value, path: str = "") -> Value:
        if fn == "identity":
            return x
        return self.node(Op.MAP, (x,), MapAttrs(fn), path)

    def reshape(self, x: Value, shape: Sequence[int], path: str = "") -> Value:
        shape = tuple(int(s) for s in shape)
        return x if shape == x.shape else self.node(Op.RESHAPE, (x,), ShapeAttrs(shape), path)

    def transpose(self, x: Value, perm: Sequence[int], path: str = "") -> Value:
        perm = tuple(perm)
        return x if perm == tuple(range(len(perm))) else self.node(Op.TRANSPOSE, (x,), PermAttrs(perm), path)

    def pad(self, x: Value, pads: Sequence[tuple[int, int]], path: str = "") -> Value:
        pads = tuple((int(a), int(b)) for a, b in pads)
        return x if not any(a or b for a, b in pads) else self.node(Op.PAD, (x,), PadAttrs(pads), path)

    def slice(self, x: Value, starts: Sequence[int], stops: Sequence[int], path: str = "") -> Value:
        starts, stops = tuple(map(int, starts)), tuple(map(int, stops))
        if starts == (0,) * len(x.shape) and stops == x.shape:
            return x
        return self.node(Op.SLICE, (x,), SliceAttrs(starts, stops), path)

    def concat(self, xs: Sequence[Value], axis: int = 0, path: str = "") -> Value:
        return xs[0] if len(xs) == 1 else self.node(Op.CONCAT, tuple(xs), AxisAttrs(axis), path)

    def add(self, x: Value, b: Value, path: str = "") -> Value:
        return self.node(Op.ADD, (x, b), AddAttrs(), path)

    def take(self, table: Value, ids: Value, path: str = "") -> Value:
        return self.node(Op.TAKE, (table, ids), TakeAttrs(), path)

    def output(self, x: Value, name: str = "y", path: str = "") -> Value:
        return self.node(Op.OUTPUT, (x,), NameAttrs(name), path)

    def build(self) -> Graph:
        return Graph(tuple(self.nodes), dict(self.tensors))


def format_attrs_of(op: Op, attrs) -> str:
    return format_attrs(Node(op, (), Value(-1, ()), attrs))
