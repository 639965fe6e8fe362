"""How a weight W[O, I] becomes physical legs: factorisation, padding and the three layouts.

Every physical leg is a group of "fine axes"; fine axis k < n_out is an out-factor, the rest are
in-factors. A leg of the `interleaved` layout holds one out- and one in-factor (size o_k * i_k).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from ..errors import ConfigError, ShapeError

LAYOUTS = ("separated", "interleaved", "binary")


def _primes(n: int) -> list[int]:
    out, p = [], 2
    while p * p <= n:
        while n % p == 0:
            out.append(p)
            n //= p
        p += 1
    return out + ([n] if n > 1 else [])


def _balanced(p: int, n: int) -> list[int]:
    buckets = [1] * n
    for q in sorted(_primes(p), reverse=True):
        buckets[buckets.index(min(buckets))] *= q
    return sorted(buckets, reverse=True)


def factor(d: int, n: int, what: str = "dimension") -> tuple[int, ...]:
    """n factors >= 2 of the smallest p >= d (p <= 2d) whose factors are balanced (max <= 2x the n-th root)."""
    if n < 1:
        raise ConfigError(f"{what} {d}: number of legs must be >= 1, got {n}")
    if n == 1:
        return (d,)
    if 2**n > 2 * d:
        raise ShapeError(f"{what} {d} cannot be split into {n} legs of size >= 2 (needs {what} >= {2 ** (n - 1)})")
    for p in range(d, 2 * d + 1):
        fs = _balanced(p, n)
        if min(fs) >= 2 and max(fs) <= 2 * math.ceil(p ** (1.0 / n)):
            return tuple(fs)
    raise ShapeError(f"{what} {d} cannot be factored into {n} balanced legs even with 2x padding")


@dataclass(frozen=True)
class Legs:
    layout: str
    out_dims: tuple[int, ...]  # fine out-factors; their product is O_pad
    in_dims: tuple[int, ...]
    legs: tuple[tuple[int, ...], ...]  # physical leg -> fine axis ids, in tree order

    @property
    def fine(self) -> tuple[int, ...]:
        return self.out_dims + self.in_dims

    def dim(self, j: int) -> int:
        return math.prod(self.fine[f] for f in self.legs[j])

    @property
    def dims(self) -> tuple[int, ...]:
        return tuple(self.dim(j) for j in range(len(self.legs)))

    def side(self, j: int) -> str | None:
        """'out' or 'in' when every fine axis of leg j is on that side of W; None for a mixed leg."""
        outs = [f < len(self.out_dims) for f in self.legs[j]]
        return "out" if all(outs) else "in" if not any(outs) else None

    def one_side(self, js) -> str | None:
        """'out' or 'in' when all the legs js lie on that side of W, else None."""
        sides = {self.side(j) for j in js}
        return sides.pop() if len(sides) == 1 else None

    @property
    def O_pad(self) -> int:
        return math.prod(self.out_dims)

    @property
    def I_pad(self) -> int:
        return math.prod(self.in_dims)


def default_legs(layout: str, O: int, I: int) -> tuple[int, int]:
    if layout == "interleaved":  # legs of about 512 elements
        n = max(2, round(math.log(O * I) / math.log(512)))
        n = min(n, int(math.log2(2 * min(O, I))))
        return n, n
    return (max(1, min(round(math.log(O) / math.log(16)), int(math.log2(2 * O)))),
            max(1, min(round(math.log(I) / math.log(16)), int(math.log2(2 * I)))))


def make_legs(layout: str, O: int, I: int, legs: int | Sequence[int] | None = None,
              order: Sequence[int] | None = None) -> Legs:
    if layout not in LAYOUTS:
        raise ConfigError(f"unknown layout {layout!r}; known: {', '.join(LAYOUTS)}")
    if layout == "binary":
        if legs is not None:
            raise ConfigError("layout 'binary' fixes the legs (all of size 2); do not pass legs=")
        od = (2,) * max(1, math.ceil(math.log2(O)))
        idim = (2,) * max(1, math.ceil(math.log2(I)))
    else:
        n_o, n_i = default_legs(layout, O, I) if legs is None else (
            (legs, legs) if isinstance(legs, int) else tuple(legs))
        if layout == "interleaved" and n_o != n_i:
            raise ConfigError(f"layout 'interleaved' needs as many out- as in-legs, got legs={legs!r}")
        od, idim = factor(O, n_o, "output dimension"), factor(I, n_i, "input dimension")
    no = len(od)
    if layout == "interleaved":
        groups = tuple((k, no + k) for k in range(no))
    else:
        groups = tuple((k,) for k in range(no + len(idim)))
    if order is not None:
        if sorted(order) != list(range(len(groups))):
            raise ConfigError(f"leg order {tuple(order)} is not a permutation of {len(groups)} legs")
        groups = tuple(groups[k] for k in order)
    return Legs(layout, od, idim, groups)


MIXER_MAX = 4096  # entries of one two-leg mixer D[d_a, d_c, d_a, d_c] that a default configuration allows


def mixer_legs(arch: str, layout: str, O: int, I: int, legs: int | Sequence[int] | None = None,
               order: Sequence[int] | None = None) -> Legs:
    """Legs for an architecture with two-leg mixers (attn, mera), which hold (d_a d_c)^2 entries each. With
    legs=None the default count is raised until the largest leg gives mixers of at most MIXER_MAX entries
    (interleaved legs of ~512 elements would make each one 2^36 entries)."""
    lg = make_legs(layout, O, I, legs, order)
    if legs is not None or order is not None or layout == "binary":
        return lg
    n_o, n_i = default_legs(layout, O, I)
    cap = (int(math.log2(2 * O)), int(math.log2(2 * I)))
    while max(lg.dims) ** 4 > MIXER_MAX:
        n_o, n_i = min(n_o + 1, cap[0]), min(n_i + 1, cap[1])
        if layout == "interleaved":
            n_o = n_i = min(n_o, n_i)
        try:
            nxt = make_legs(layout, O, I, (n_o, n_i))
        except ShapeError:
            nxt = lg
        if nxt == lg:  # no more legs to be had
            d = max(lg.dims)
            raise ConfigError(
                f"{arch}: with layout {layout!r}, {O}x{I} splits into at most {len(lg.legs)} legs, the largest of "
                f"{d} elements, so a disentangler would hold {d ** 4:,} entries (limit {MIXER_MAX:,}); pass legs= "
                f"explicitly or use layout='binary'")
        lg = nxt
    return lg


def plain_legs(O: int, I: int) -> Legs:
    """Two legs (O and I) with no factorisation or padding: lowrank and dense."""
    return Legs("separated", (O,), (I,), ((0,), (1,)))
