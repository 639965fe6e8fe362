"""Shape rules, one per op. Both the builder and `verify` use this table."""
from __future__ import annotations

from typing import Callable

import numpy as np

from .graph import (
    AdaptivePoolAttrs,
    AddAttrs,
    AxisAttrs,
    BinaryAttrs,
    ConvAttrs,
    EinsumAttrs,
    NormAttrs,
    Op,
    PadAttrs,
    PermAttrs,
    PoolAttrs,
    ShapeAttrs,
    SliceAttrs,
)

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
    if attrs.causal:
        raise ShapeRuleError("causal is an attribute of softmax, not of concat")
    if not 0 <= a < len(xs[0]) or any(len(x) != len(xs[0]) or x[:a] + x[a + 1:] != xs[0][:a] + xs[0][a + 1:]
                                       for x in xs):
        raise ShapeRuleError(f"cannot concatenate shapes {', '.join(map(str, xs))} along axis {a}")
    return xs[0][:a] + (sum(x[a] for x in xs),) + xs[0][a + 1:]


def _add(attrs: AddAttrs, a: Shape, b: Shape) -> Shape:
    if len(b) > len(a) or any(y not in (1, x) for x, y in zip(a[len(a) - len(b):], b)):
        raise ShapeRuleError(f"cannot add shape {b} to {a}: it must broadcast against the trailing axes")
    return a


BINARY_FNS = ("add", "sub", "mul", "div", "max", "min")


def broadcast(a: Shape, b: Shape) -> Shape:
    """numpy's broadcast of two shapes."""
    n = max(len(a), len(b))
    a, b = (1,) * (n - len(a)) + tuple(a), (1,) * (n - len(b)) + tuple(b)
    if any(x != y and 1 not in (x, y) for x, y in zip(a, b)):
        raise ShapeRuleError(f"shapes {a} and {b} do not broadcast")
    return tuple(max(x, y) if 1 in (x, y) else x for x, y in zip(a, b))


def _binary(attrs: BinaryAttrs, a: Shape, b: Shape) -> Shape:
    if attrs.fn not in BINARY_FNS:
        raise ShapeRuleError(f"unknown binary op {attrs.fn!r}; known: {', '.join(BINARY_FNS)}")
    return broadcast(a, b)


def _window(n: int, k: int, s: int, p: int, d: int, ceil: bool = False) -> int:
    """Output length of a sliding window (torch's rule, incl. ceil_mode's last window starting inside)."""
    span = n + 2 * p - d * (k - 1) - 1
    out = (-(-span // s) if ceil else span // s) + 1
    if ceil and (out - 1) * s >= n + p:
        out -= 1
    return out


def _positive(what: str, xs) -> None:
    if any(not isinstance(v, int) or v < 1 for v in xs):
        raise ShapeRuleError(f"{what} must be positive integers, got {xs}")


def conv_out(attrs: ConvAttrs, x: Shape) -> tuple[int, int]:
    if len(x) != 4:
        raise ShapeRuleError(f"im2col expects (N, C, H, W), got {x}")
    _positive("kernel, stride and dilation", (*attrs.kernel, *attrs.stride, *attrs.dilation, attrs.groups))
    if any(p < 0 for p in attrs.padding):
        raise ShapeRuleError(f"padding must be >= 0, got {attrs.padding}")
    if x[1] % attrs.groups:
        raise ShapeRuleError(f"{x[1]} channels are not divisible by groups={attrs.groups}")
    ho, wo = (_window(n, k, s, p, d) for n, k, s, p, d in
              zip(x[2:], attrs.kernel, attrs.stride, attrs.padding, attrs.dilation))
    if ho < 1 or wo < 1:
        raise ShapeRuleError(f"kernel {attrs.kernel} (dilation {attrs.dilation}) is larger than the padded input "
                             f"{x[2] + 2 * attrs.padding[0]}x{x[3] + 2 * attrs.padding[1]}")
    return ho, wo


def _im2col(attrs: ConvAttrs, x: Shape) -> Shape:
    ho, wo = conv_out(attrs, x)
    g = attrs.groups
    return (g, x[1] // g * attrs.kernel[0] * attrs.kernel[1], x[0], ho * wo)


def _pool(attrs: PoolAttrs, x: Shape) -> Shape:
    if len(x) != 4:
        raise ShapeRuleError(f"pool expects (N, C, H, W), got {x}")
    if attrs.mode not in ("max", "avg"):
        raise ShapeRuleError(f"pool mode must be max or avg, got {attrs.mode!r}")
    _positive("kernel, stride and dilation", (*attrs.kernel, *attrs.stride, *attrs.dilation))
    if any(not 0 <= p <= k // 2 for p, k in zip(attrs.padding, attrs.kernel)):
        raise ShapeRuleError(f"padding {attrs.padding} must be at most half the kernel {attrs.kernel}")
    ho, wo = (_window(n, k, s, p, d, attrs.ceil_mode) for n, k, s, p, d in
              zip(x[2:], attrs.kernel, attrs.stride, attrs.padding, attrs.dilation))
    if ho < 1 or wo < 1:
        raise ShapeRuleError(f"pool window {attrs.kernel} is larger than the input {x[2:]}")
    return (*x[:2], ho, wo)


def _adaptive_pool(attrs: AdaptivePoolAttrs, x: Shape) -> Shape:
    if len(x) != 4 or attrs.mode not in ("max", "avg"):
        raise ShapeRuleError(f"adaptive {attrs.mode} pool expects (N, C, H, W) and mode max or avg, got {x}")
    _positive("output_size", attrs.output_size)
    return (*x[:2], *attrs.output_size)


def _layer_norm(attrs: NormAttrs, x: Shape, gamma: Shape, beta: Shape) -> Shape:
    if not 1 <= attrs.axes <= len(x) or gamma != x[len(x) - attrs.axes:] or beta != gamma:
        raise ShapeRuleError(f"layer norm over the last {attrs.axes} axes of {x} needs gamma and beta of shape "
                             f"{x[len(x) - attrs.axes:]}, got {gamma} and {beta}")
    if not attrs.eps > 0:
        raise ShapeRuleError(f"eps must be > 0, got {attrs.eps}")
    return x


def _softmax(attrs: AxisAttrs, x: Shape) -> Shape:
    if not 0 <= attrs.axis < len(x):
        raise ShapeRuleError(f"softmax axis {attrs.axis} is out of range for shape {x}")
    if attrs.causal and (len(x) < 2 or attrs.axis != len(x) - 1):
        raise ShapeRuleError(f"a causal softmax runs over the last axis of a (..., queries, keys) shape; got axis "
                             f"{attrs.axis} of {x}")
    return x


def _take(attrs, table: Shape, ids: Shape) -> Shape:
    if len(table) != 2:
        raise ShapeRuleError(f"take reads rows of a (rows, features) table, got table shape {table}")
    return (*ids, table[1])


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
    Op.BINARY: _binary,
    Op.IM2COL: _im2col,
    Op.POOL: _pool,
    Op.ADAPTIVE_POOL: _adaptive_pool,
    Op.LAYER_NORM: _layer_norm,
    Op.SOFTMAX: _softmax,
    Op.TAKE: _take,
    Op.OUTPUT: _unary,
}

ARITY: dict[Op, int | None] = {
    Op.INPUT: 0, Op.PARAM: 0, Op.CONST: 0, Op.EINSUM: None, Op.MAP: 1,
    Op.RESHAPE: 1, Op.TRANSPOSE: 1, Op.PAD: 1, Op.SLICE: 1, Op.CONCAT: None, Op.ADD: 2, Op.OUTPUT: 1,
    Op.BINARY: 2, Op.IM2COL: 1, Op.POOL: 1, Op.ADAPTIVE_POOL: 1, Op.LAYER_NORM: 3, Op.SOFTMAX: 1,
    Op.TAKE: 2,
}
