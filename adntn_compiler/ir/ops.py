"""Shape rules, one per op. Both the builder and `verify` use this table."""
from __future__ import annotations

from typing import Callable

import numpy as np

from .graph import AddAttrs, AxisAttrs, EinsumAttrs, Op, PadAttrs, PermAttrs, ShapeAttrs, SliceAttrs

Shape = tuple[int, ...]


class ShapeRuleError(Exception):
    """Raised by a shape rule; the caller adds the node context."""


def einsum_sizes(attrs: EinsumAttrs, shapes: list[Shape]) -> dict[str, int]:
    if len(attrs.terms) != len(shapes):
        raise ShapeRuleError(f"{len(attrs.terms)} terms but {len(shapes)} operands")
    sizes: dict[str, int] = {}
    for k, (term, shape) in enumerate(zip(attrs.terms, shapes)):
        if len(term) != len(shape):
            raise ShapeRuleError(f"operand {k} has term '{term}' of {len(term)} labels but shape {shape}")
        for label, size in zip(term, shape):
            if sizes.setdefault(label, size) != size:
                raise ShapeRuleError(
                    f"label '{label}': operand {k} has size {size}, earlier operands have {sizes[label]}; "
                    f"operand shapes {', '.join(map(str, shapes))}"
                )
    return sizes


def _check_fn(fn: str) -> None:
    from ..activations import ACTIVATIONS, DERIV_PREFIX

    if fn.removeprefix(DERIV_PREFIX) not in ACTIVATIONS:
        raise ShapeRuleError(f"unknown activation '{fn}'")


def _einsum(attrs: EinsumAttrs, *shapes: Shape) -> Shape:
    if attrs.epilogue:
        _check_fn(attrs.epilogue)
    sizes = einsum_sizes(attrs, list(shapes))
    if len(set(attrs.out)) != len(attrs.out):
        raise ShapeRuleError(f"output '{attrs.out}' repeats a label")
    missing = [c for c in attrs.out if c not in sizes]
    if missing:
        raise ShapeRuleError(f"output labels {missing} appear in no operand")
    return tuple(sizes[c] for c in attrs.out)


def _reshape(attrs: ShapeAttrs, x: Shape) -> Shape:
    if int(np.prod(x, dtype=np.int64)) != int(np.prod(attrs.shape, dtype=np.int64)):
        raise ShapeRuleError(f"cannot reshape {x} to {attrs.shape}: sizes differ")
    return attrs.shape


def _transpose(attrs: PermAttrs, x: Shape) -> Shape:
    if sorted(attrs.perm) != list(range(len(x))):
        raise ShapeRuleError(f"perm {attrs.perm} is not a permutation of {len(x)} axes of {x}")
    return tuple(x[p] for p in attrs.perm)


def _pad(attrs: PadAttrs, x: Shape) -> Shape:
    if len(attrs.pads) != len(x) or any(lo < 0 or hi < 0 for lo, hi in attrs.pads):
        raise ShapeRuleError(f"pads {attrs.pads} do not fit shape {x}")
    return tuple(s + lo + hi for s, (lo, hi) in zip(x, attrs.pads))


def _slice(attrs: SliceAttrs, x: Shape) -> Shape:
    if len(attrs.starts) != len(x) or len(attrs.stops) != len(x):
        raise ShapeRuleError(f"slice {attrs.starts}:{attrs.stops} does not fit shape {x}")
    if any(not 0 <= a < b <= s for a, b, s in zip(attrs.starts, attrs.stops, x)):
        raise ShapeRuleError(f"slice {attrs.starts}:{attrs.stops} is out of range for shape {x}")
    return tuple(b - a for a, b in zip(attrs.starts, attrs.stops))


def _concat(attrs: AxisAttrs, *xs: Shape) -> Shape:
    if not xs:
        raise ShapeRuleError("concat needs at least one input")
    a = attrs.axis
    if not 0 <= a < len(xs[0]) or any(len(x) != len(xs[0]) or x[:a] + x[a + 1:] != xs[0][:a] + xs[0][a + 1:]
                                       for x in xs):
        raise ShapeRuleError(f"cannot concatenate shapes {', '.join(map(str, xs))} along axis {a}")
    return xs[0][:a] + (sum(x[a] for x in xs),) + xs[0][a + 1:]


def _add(attrs: AddAttrs, a: Shape, b: Shape) -> Shape:
    if len(b) > len(a) or any(y not in (1, x) for x, y in zip(a[len(a) - len(b):], b)):
        raise ShapeRuleError(f"cannot add shape {b} to {a}: it must broadcast against the trailing axes")
    return a


def _unary(attrs, x: Shape) -> Shape:
    return x


def _map(attrs, x: Shape) -> Shape:
    _check_fn(attrs.fn)
    return x


# Shape rule per op, for ops that have inputs; INPUT/PARAM/CONST shapes are declared.
SHAPE: dict[Op, Callable[..., Shape]] = {
    Op.EINSUM: _einsum,
    Op.MAP: _map,
    Op.RESHAPE: _reshape,
    Op.TRANSPOSE: _transpose,
    Op.PAD: _pad,
    Op.SLICE: _slice,
    Op.CONCAT: _concat,
    Op.ADD: _add,
    Op.OUTPUT: _unary,
}

ARITY: dict[Op, int | None] = {
    Op.INPUT: 0, Op.PARAM: 0, Op.CONST: 0, Op.EINSUM: None, Op.MAP: 1,
    Op.RESHAPE: 1, Op.TRANSPOSE: 1, Op.PAD: 1, Op.SLICE: 1, Op.CONCAT: None, Op.ADD: 2, Op.OUTPUT: 1,
}
