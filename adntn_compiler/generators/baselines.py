"""Baselines in the same framework: TT/MPO chain, Tucker, CP, low-rank, ADTN brick-wall, dense."""
from __future__ import annotations

import math
from typing import Sequence

from ..errors import ConfigError
from .base import Generator, Leg, check_rank, level_rank, normalize_shape
from .legs import make_legs, plain_legs


def linear_only(arch: str, activation: str) -> None:
    """The linear baselines take `activation` only so that generic code may pass it: anything but identity is
    refused (a tt(activation="tanh") used to build a linear TT without a word)."""
    if activation != "identity":
        raise ConfigError(f"{arch} is a linear baseline: activation must be 'identity', got {activation!r} "
                          f"(the nonlinear trees are ttn, attn, mera and brickwall)")


class TT(Generator):
    """MPO / tensor-train chain C_j[r_{j-1}, d_j, r_j] (linear); boundary bonds are omitted."""
    arch = "tt"

    def __init__(self, shape, rank: int | Sequence[int] = 4, layout: str = "interleaved", seed: int = 0, legs=None,
                 leg_order=None, activation: str = "identity"):
        _, O, I = normalize_shape(shape)
        self.ranks = check_rank(rank)
        linear_only(self.arch, activation)
        lg = make_legs(layout, O, I, legs, leg_order)
        if len(lg.legs) < 2:
            raise ConfigError(f"tt: needs at least 2 legs, got {len(lg.legs)}")
        d = lg.dims
        n = len(d)
        # bond j joins cores j and j+1; capped by the dims on either side
        self.bonds = [min(level_rank(self.ranks, j), math.prod(d[:j + 1]), math.prod(d[j + 1:])) for j in range(n - 1)]
        super().__init__(shape, lg, "identity", seed, dict(rank=rank, layout=layout, seed=seed, legs=legs,
                                                          leg_order=leg_order))

    def structure(self):
        n, d, r = len(self.legs.legs), self.legs.dims, self.bonds
        return {f"core{j}": ((r[j - 1],) if j > 0 else ()) + (d[j],) + ((r[j],) if j < n - 1 else ())
                for j in range(n)}

    def rank_bound(self):
        # A bond with only out-legs on one side and only in-legs on the other bounds the rank (linear chain).
        n = len(self.legs.legs)
        cuts = [r for j, r in enumerate(self.bonds)
                if {self.legs.one_side(range(j + 1)), self.legs.one_side(range(j + 1, n))} == {"out", "in"}]
        return min(cuts + [super().rank_bound()])

    def init_core(self, name, shape, rng):
        j = int(name[4:])
        fan = 1 if j == 0 else self.bonds[j - 1]
        return rng.standard_normal(shape) / math.sqrt(fan)

    def emit(self, b, cores):
        n = len(self.legs.legs)
        ops = []
        for j in range(n):
            labels = ([("bond", j - 1)] if j > 0 else []) + [Leg(j)] + ([("bond", j)] if j < n - 1 else [])
            ops.append(self.core(b, cores, f"core{j}", labels, f"tt.core{j}"))
        out = [l for j in range(n) for l in self.leg_labels(j)]
        return b.contract(ops, out, "tt.chain"), out


class Tucker(Generator):
    """Core G[r_1..r_n] times a factor U_j[d_j, r_j] on every leg (linear)."""
    arch = "tucker"

    def __init__(self, shape, rank: int | Sequence[int] = 4, layout: str = "separated", seed: int = 0, legs=None,
                 leg_order=None, activation: str = "identity"):
        _, O, I = normalize_shape(shape)
        self.ranks = check_rank(rank)
        linear_only(self.arch, activation)
        lg = make_legs(layout, O, I, legs, leg_order)
        self.r = [min(level_rank(self.ranks, j), d) for j, d in enumerate(lg.dims)]
        super().__init__(shape, lg, "identity", seed, dict(rank=rank, layout=layout, seed=seed, legs=legs,
                                                          leg_order=leg_order))

    def structure(self):
        shapes = {f"factor{j}": (d, self.r[j]) for j, d in enumerate(self.legs.dims)}
        shapes["core"] = tuple(self.r)
        return shapes

    def rank_bound(self):
        sides = [self.legs.side(j) for j in range(len(self.legs.legs))]
        if None in sides:
            return super().rank_bound()
        r = {s: math.prod(r for r, t in zip(self.r, sides) if t == s) for s in ("out", "in")}
        return min(r["out"], r["in"], super().rank_bound())

    def init_core(self, name, shape, rng):
        return rng.standard_normal(shape)

    def emit(self, b, cores):
        n = len(self.legs.legs)
        ops = [self.core(b, cores, f"factor{j}", [Leg(j), ("r", j)], f"tucker.factor{j}") for j in range(n)]
        ops.append((cores["core"], [("r", j) for j in range(n)]))
        out = [l for j in range(n) for l in self.leg_labels(j)]
        return b.contract(ops, out, "tucker.core"), out


class CP(Generator):
    """Sum of R rank-one terms: W = sum_r prod_j U_j[i_j, r] (linear)."""
    arch = "cp"

    def __init__(self, shape, rank: int = 4, layout: str = "separated", seed: int = 0, legs=None, leg_order=None,
                 activation: str = "identity"):
        _, O, I = normalize_shape(shape)
        self.R = check_rank(rank)[0]
        linear_only(self.arch, activation)
        lg = make_legs(layout, O, I, legs, leg_order)
        super().__init__(shape, lg, "identity", seed, dict(rank=rank, layout=layout, seed=seed, legs=legs,
                                                          leg_order=leg_order))

    def structure(self):
        return {f"factor{j}": (d, self.R) for j, d in enumerate(self.legs.dims)}

    def rank_bound(self):
        pure = all(self.legs.side(j) for j in range(len(self.legs.legs)))  # each term an outer product
        return min(self.R, super().rank_bound()) if pure else super().rank_bound()

    def init_core(self, name, shape, rng):
        return rng.standard_normal(shape)

    def emit(self, b, cores):
        n = len(self.legs.legs)
        ops = [self.core(b, cores, f"factor{j}", [Leg(j), "r"], f"cp.factor{j}") for j in range(n)]
        out = [l for j in range(n) for l in self.leg_labels(j)]
        return b.contract(ops, out, "cp.sum"), out


class LowRank(Generator):
    """W = U @ V.T (LoRA-like); no factorisation, no padding."""
    arch = "lowrank"

    def __init__(self, shape, rank: int = 4, seed: int = 0, activation: str = "identity"):
        _, O, I = normalize_shape(shape)
        linear_only(self.arch, activation)
        self.r = min(check_rank(rank)[0], O, I)
        super().__init__(shape, plain_legs(O, I), "identity", seed, dict(rank=rank, seed=seed))

    def structure(self):
        return {"U": (self.O, self.r), "V": (self.I, self.r)}

    def rank_bound(self):
        return self.r

    def init_core(self, name, shape, rng):
        return rng.standard_normal(shape) / (math.sqrt(self.r) if name == "U" else 1.0)

    def emit(self, b, cores):
        out = [("f", 0, None), ("f", 1, None)]
        return b.contract([(cores["U"], [out[0], "r"]), (cores["V"], [out[1], "r"])], out, "lowrank.UV"), out


class BrickWall(Generator):
    """ADTN brick-wall: a product state of leaf vectors, then `depth` layers of gates g[d_a,d_b,d_a',d_b'] on
    alternating neighbour pairs, with the activation between layers (the last layer is linear)."""
    arch = "brickwall"

    def __init__(self, shape, depth: int = 4, layout: str = "binary", activation: str = "tanh", seed: int = 0,
                 legs=None, leg_order=None):
        _, O, I = normalize_shape(shape)
        if not isinstance(depth, int) or depth < 1:
            raise ConfigError(f"brickwall: depth must be an integer >= 1, got {depth!r}")
        self.depth = depth
        lg = make_legs(layout, O, I, legs, leg_order)
        if len(lg.legs) < 2:
            raise ConfigError(f"brickwall: needs at least 2 legs, got {len(lg.legs)}")
        super().__init__(shape, lg, activation, seed, dict(depth=depth, layout=layout, activation=activation,
                                                          seed=seed, legs=legs, leg_order=leg_order))

    def pairs(self, layer: int) -> list[tuple[int, int]]:
        n = len(self.legs.legs)
        return [(j, j + 1) for j in range(layer % 2, n - 1, 2)]

    def structure(self):
        d = self.legs.dims
        shapes = {f"site{j}": (d[j],) for j in range(len(d))}
        for layer in range(self.depth):
            for k, (a, c) in enumerate(self.pairs(layer)):
                shapes[f"gate{layer}_{k}"] = (d[a], d[c], d[a], d[c])
        return shapes

    def rank_bound(self):
        if self.depth > 1:  # an activation over the whole tensor between layers: no structural bound
            return super().rank_bound()
        # one linear layer on a product state: each gate on an out- and an in-leg multiplies the rank by
        # at most min(d_a, d_c)^2
        bound, d = 1, self.legs.dims
        for a, c in self.pairs(0):
            bound *= min(d[a], d[c]) ** 2 if self.legs.one_side((a, c)) is None else 1
        return min(bound, super().rank_bound())

    def init_core(self, name, shape, rng):
        if name.startswith("site"):
            return rng.standard_normal(shape)
        layer = int(name[4:].split("_")[0])
        m2 = 1.0 if layer == 0 else 1.0 / self.gain2()
        return rng.standard_normal(shape) / math.sqrt(shape[0] * shape[1] * m2)

    def emit(self, b, cores):
        n = len(self.legs.legs)
        labels = [l for j in range(n) for l in self.leg_labels(j)]
        x = b.contract([self.core(b, cores, f"site{j}", [Leg(j)], f"brickwall.site{j}") for j in range(n)],
                       labels, "brickwall.product")
        for layer in range(self.depth):
            touched = {j for p in self.pairs(layer) for j in p}
            x_labels = [l for j in range(n) for l in self.leg_labels(j, "pre" if j in touched else None)]
            ops = [(x, x_labels)] + [
                self.core(b, cores, f"gate{layer}_{k}", [Leg(a, "pre"), Leg(c, "pre"), Leg(a), Leg(c)],
                          f"brickwall.layer{layer}.gate{k}") for k, (a, c) in enumerate(self.pairs(layer))]
            x = b.contract(ops, labels, f"brickwall.layer{layer}")
            if layer < self.depth - 1:
                x = self.act(b, x, f"brickwall.layer{layer}")
        return x, labels


class Dense(Generator):
    """The dense weight itself, as a single core (ratio 1); initialised like torch's default layer."""
    arch = "dense"
    has_scale = False

    def __init__(self, shape, seed: int = 0, activation: str = "identity"):
        _, O, I = normalize_shape(shape)
        linear_only(self.arch, activation)
        super().__init__(shape, plain_legs(O, I), "identity", seed, dict(seed=seed))

    def structure(self):
        return {"W": (self.O, self.I)}

    def init_core(self, name, shape, rng):
        bound = 1.0 / math.sqrt(self.I)
        return rng.uniform(-bound, bound, shape)

    def emit(self, b, cores):
        out = [("f", 0, None), ("f", 1, None)]
        return cores["W"], out
