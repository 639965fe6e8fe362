"""Binary MERA, top-down: isometries double the legs, disentanglers mix neighbours across isometry
boundaries, the activation acts on each whole level tensor except the last (linear) level."""
from __future__ import annotations

import math
from typing import Sequence

from ..errors import ConfigError
from .base import Generator, Leg, check_rank, isometry, level_rank, near_identity, normalize_shape
from .legs import mixer_legs


class MERA(Generator):
    arch = "mera"

    def __init__(self, shape, rank: int | Sequence[int] = 4, layout: str = "binary", activation: str = "tanh",
                 seed: int = 0, legs=None, leg_order: Sequence[int] | None = None):
        _, O, I = normalize_shape(shape)
        self.ranks = check_rank(rank)  # chi per level, counted from the physical level up
        lg = mixer_legs(self.arch, layout, O, I, legs, leg_order)
        if len(lg.legs) < 3:
            raise ConfigError(f"mera: needs at least 3 legs, layout {layout!r} gives {len(lg.legs)}")
        self.legs = lg
        # levels[0] = physical legs; levels[k] groups pairs of levels[k-1]; the top has 2 sites.
        levels = [[(j,) for j in range(len(lg.legs))]]
        while len(levels[-1]) > 2:
            prev = levels[-1]
            levels.append([sum(prev[i:i + 2], ()) for i in range(0, len(prev), 2)])
        self.levels = levels
        super().__init__(shape, lg, activation, seed, dict(
            rank=rank, layout=layout, activation=activation, seed=seed, legs=legs, leg_order=leg_order))

    def chi(self, k: int, site: tuple[int, ...]) -> int:
        d = math.prod(self.legs.dim(j) for j in site)
        return d if k == 0 else min(level_rank(self.ranks, k - 1), d)

    def _children(self, k: int, i: int) -> list[int]:
        """Indices at level k-1 of the children of site i at level k."""
        n = len(self.levels[k - 1])
        return [c for c in (2 * i, 2 * i + 1) if c < n]

    def _pairs(self, k: int) -> list[tuple[int, int]]:
        """Neighbouring sites of level k-1 across the isometry boundaries of level k."""
        return [(self._children(k, i)[-1], self._children(k, i + 1)[0]) for i in range(len(self.levels[k]) - 1)]

    def structure(self):
        top = len(self.levels) - 1
        shapes = {"top": tuple(self.chi(top, s) for s in self.levels[top])}
        for k in range(top, 0, -1):
            for i, site in enumerate(self.levels[k]):
                shapes[f"iso{k}_{i}"] = (self.chi(k, site),) + tuple(
                    self.chi(k - 1, self.levels[k - 1][c]) for c in self._children(k, i))
            for p, (a, c) in enumerate(self._pairs(k)):
                da, dc = self.chi(k - 1, self.levels[k - 1][a]), self.chi(k - 1, self.levels[k - 1][c])
                shapes[f"dis{k}_{p}"] = (da, dc, da, dc)
        return shapes

    def init_core(self, name, shape, rng):
        """Isometries and disentanglers start as (scaled) isometries, as in MERA practice: every level then keeps
        the mean square of the entries of its tensor, so the activations see entries of order 1 and the
        generated W comes out at the std of a dense layer (the calibrated `scale` stays near 1).
        - top: N(0, 1) entries;
        - an isometry w[chi_in, c1, c2]: orthonormal rows times sqrt(c1 c2 / chi_in) (the entries' mean square is
          kept), times a share of its level's gain: the level's n isometries act on one tensor, so each gets the
          n-th root of 1 / Var[act] (the activation's loss, once per level) and, on the last (linear) level, of
          the target std of W;
        - a disentangler: an orthogonal matrix near the identity (exactly norm-preserving).
        Gaussian isometries scaled by 1 / Var[act] each compounded that gain once per isometry: W's raw std was
        23 on mera((256, 512), rank=3) and its scale 1.1e-3."""
        if name == "top":
            return rng.standard_normal(shape)
        if name.startswith("iso"):
            k = int(name[3:].split("_")[0])
            n_out = math.prod(shape[1:])
            gain2 = n_out / shape[0]
            if k < len(self.levels) - 1:  # its input went through the activation
                gain2 *= self.gain2() ** (1.0 / len(self.levels[k]))
            if k == 1:  # the linear last level makes W: its entries' std goes to a dense layer's
                gain2 *= self.target_std ** (2.0 / len(self.levels[k]))
            return isometry(rng, shape[0], n_out).reshape(shape) * math.sqrt(gain2)
        da, dc = shape[0], shape[1]
        return near_identity(rng, da * dc).reshape(shape)

    def emit(self, b, cores):
        top = len(self.levels) - 1

        def lab(k: int, i: int, tag=None):
            return [Leg(self.levels[0][i][0], tag)] if k == 0 else [("site", k, i, tag)]

        x = cores["top"]
        x_labels = [l for i in range(len(self.levels[top])) for l in lab(top, i)]
        for k in range(top, 0, -1):
            path = f"mera.level{k}"
            n = len(self.levels[k - 1])
            paired = {c for pr in self._pairs(k) for c in pr}
            tag = {c: "pre" if c in paired else None for c in range(n)}  # "pre": before its disentangler
            ops = [(x, x_labels)]
            for i in range(len(self.levels[k])):
                ops.append(self.core(b, cores, f"iso{k}_{i}",
                                     lab(k, i) + [l for c in self._children(k, i) for l in lab(k - 1, c, tag[c])],
                                     f"{path}.isometry{i}"))
            pre = self._expand([l for c in range(n) for l in lab(k - 1, c, tag[c])])
            x = b.contract(ops, pre, f"{path}.isometries")
            ops = [(x, pre)]
            for p, (a, c) in enumerate(self._pairs(k)):
                ops.append(self.core(b, cores, f"dis{k}_{p}",
                                     lab(k - 1, a, "pre") + lab(k - 1, c, "pre") + lab(k - 1, a) + lab(k - 1, c),
                                     f"{path}.disentangler{p}"))
            x_labels = self._expand([l for c in range(n) for l in lab(k - 1, c)])
            x = b.contract(ops, x_labels, f"{path}.disentanglers")
            if k > 1:
                x = self.act(b, x, path)
        return x, x_labels

    def _expand(self, labels):
        out = []
        for l in labels:
            if isinstance(l, Leg):
                out.extend(self.leg_labels(l.j, l.tag))
            else:
                out.append(l)
        return out
