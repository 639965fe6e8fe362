"""The IR: a topologically ordered tuple of immutable SSA nodes.

A `Value` is defined exactly once, by one node. Param and const values live in `Graph.tensors`
(keyed by name), so nodes stay small, hashable data.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Mapping, Union

import numpy as np


class Op(str, Enum):
    INPUT = "input"
    PARAM = "param"
    CONST = "const"
    EINSUM = "einsum"
    MAP = "map"
    RESHAPE = "reshape"
    TRANSPOSE = "transpose"
    PAD = "pad"
    SLICE = "slice"
    CONCAT = "concat"
    ADD = "add"  # a + b, b broadcast against a's trailing axes (a bias)
    OUTPUT = "output"


@dataclass(frozen=True, slots=True)
class Value:
    id: int
    shape: tuple[int, ...]
    dtype: str = "float64"

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def __str__(self) -> str:
        return f"%{self.id}"


@dataclass(frozen=True, slots=True)
class NameAttrs:  # INPUT, PARAM, CONST, OUTPUT
    name: str


@dataclass(frozen=True, slots=True)
class EinsumAttrs:
    terms: tuple[str, ...]  # one label string per operand; "" for a scalar
    out: str
    epilogue: str = ""  # an activation applied to the result (set by the fuse pass)

    @property
    def equation(self) -> str:
        return ",".join(self.terms) + "->" + self.out


@dataclass(frozen=True, slots=True)
class MapAttrs:
    fn: str  # a name in activations.ACTIVATIONS


@dataclass(frozen=True, slots=True)
class ShapeAttrs:  # RESHAPE
    shape: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class PermAttrs:  # TRANSPOSE
    perm: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class PadAttrs:  # PAD (zeros)
    pads: tuple[tuple[int, int], ...]


@dataclass(frozen=True, slots=True)
class SliceAttrs:  # SLICE (unit step)
    starts: tuple[int, ...]
    stops: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class AxisAttrs:  # CONCAT
    axis: int


@dataclass(frozen=True, slots=True)
class AddAttrs:  # ADD
    pass


Attrs = Union[AddAttrs, NameAttrs, EinsumAttrs, MapAttrs, ShapeAttrs, PermAttrs, PadAttrs, SliceAttrs, AxisAttrs]


@dataclass(frozen=True, slots=True)
class Node:
    op: Op
    inputs: tuple[Value, ...]
    out: Value
    attrs: Attrs
    path: str = ""  # the user's generator path, e.g. "ttn.level2.node1"


@dataclass(frozen=True)
class Graph:
    nodes: tuple[Node, ...]
    tensors: Mapping[str, np.ndarray] = field(default_factory=dict)  # initial values of params/consts

    @property
    def inputs(self) -> tuple[Value, ...]:
        return tuple(n.out for n in self.nodes if n.op is Op.INPUT)

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(n.attrs.name for n in self.nodes if n.op is Op.INPUT)  # type: ignore[union-attr]

    @property
    def params(self) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.op is Op.PARAM)

    @property
    def outputs(self) -> tuple[Value, ...]:
        return tuple(n.out for n in self.nodes if n.op is Op.OUTPUT)

    def producer(self) -> dict[int, Node]:
        return {n.out.id: n for n in self.nodes}

    def __str__(self) -> str:
        from .printer import format_graph

        return format_graph(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Graph):
            return NotImplemented
        return (
            self.nodes == other.nodes
            and self.tensors.keys() == other.tensors.keys()
            and all(
                a.dtype == (b := other.tensors[k]).dtype and a.shape == b.shape and np.array_equal(a, b)
                for k, a in self.tensors.items()
            )
        )

    __hash__ = None  # type: ignore[assignment]
