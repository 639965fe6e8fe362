"""The IR: a topologically ordered tuple of immutable SSA nodes.

A `Value` is defined exactly once, by one node. Param and const values live in `Graph.tensors`
(keyed by name), so nodes stay small, hashable data.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Mapping, TypeVar, Union, cast

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
    # whole-model ops (the torch.export frontend); the TVM backend takes their compute from topi
    BINARY = "binary"  # add/sub/mul/div/max with numpy broadcasting of both operands
    IM2COL = "im2col"  # x (N, C, H, W) -> patches (G, C/G*kh*kw, N, Ho*Wo): a conv is im2col + einsum
    POOL = "pool"  # max/avg pooling over (H, W) of (N, C, H, W)
    ADAPTIVE_POOL = "adaptive_pool"  # adaptive avg/max pooling to a fixed (Ho, Wo)
    LAYER_NORM = "layer_norm"  # (x, gamma, beta): normalise over the trailing `axes` axes
    SOFTMAX = "softmax"  # along one axis
    TAKE = "take"  # (table (V, D), ids (...)) -> (..., D): rows of a table by integer ids given at run time
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
class AxisAttrs:  # CONCAT, SOFTMAX
    axis: int
    causal: bool = False  # SOFTMAX over the last axis only: entry k of row q takes part only if k <= q (torch's
    #                       is_causal, top-left aligned); masked from the indices, never a stored mask


@dataclass(frozen=True, slots=True)
class AddAttrs:  # ADD
    pass


@dataclass(frozen=True, slots=True)
class TakeAttrs:  # TAKE
    pass


@dataclass(frozen=True, slots=True)
class BinaryAttrs:  # BINARY
    fn: str  # add, sub, mul, div, max, min


@dataclass(frozen=True, slots=True)
class ConvAttrs:  # IM2COL (torch.nn.functional.conv2d's arguments)
    kernel: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1


@dataclass(frozen=True, slots=True)
class PoolAttrs:  # POOL (torch.nn.functional.max_pool2d / avg_pool2d's arguments)
    mode: str  # max, avg
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    ceil_mode: bool = False
    count_include_pad: bool = True


@dataclass(frozen=True, slots=True)
class AdaptivePoolAttrs:  # ADAPTIVE_POOL
    mode: str  # max, avg
    output_size: tuple[int, int]


@dataclass(frozen=True, slots=True)
class NormAttrs:  # LAYER_NORM
    axes: int  # how many trailing axes are normalised
    eps: float


Attrs = Union[AddAttrs, TakeAttrs, BinaryAttrs, ConvAttrs, PoolAttrs, AdaptivePoolAttrs, NormAttrs, NameAttrs,
              EinsumAttrs, MapAttrs, ShapeAttrs, PermAttrs, PadAttrs, SliceAttrs, AxisAttrs]
AttrsT = TypeVar("AttrsT", bound=Attrs)


@dataclass(frozen=True, slots=True)
class Node:
    op: Op
    inputs: tuple[Value, ...]
    out: Value
    attrs: Attrs
    path: str = ""  # the user's generator path, e.g. "ttn.level2.node1"

    def attrs_as(self, kind: type[AttrsT]) -> AttrsT:
        """`attrs` as the op's attrs class `kind`, for the type checker (no check here: `verify` checks that
        every node's attrs fit its op)."""
        return cast(AttrsT, self.attrs)

    @property
    def name(self) -> str:
        """The name of an INPUT, PARAM, CONST or OUTPUT node."""
        return self.attrs_as(NameAttrs).name


@dataclass(frozen=True, eq=False)  # our __eq__ compares tensor values; unhashable (tensors is a dict)
class Graph:
    nodes: tuple[Node, ...]
    tensors: Mapping[str, np.ndarray] = field(default_factory=dict)  # initial values of params/consts

    @property
    def inputs(self) -> tuple[Value, ...]:
        return tuple(n.out for n in self.nodes if n.op is Op.INPUT)

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(n.name for n in self.nodes if n.op is Op.INPUT)

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
