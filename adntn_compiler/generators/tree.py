"""TTN (bottom-up k-ary tree with activations, linear root) and aTTN (TTN + boundary disentanglers)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import AdntnError, ConfigError
from ..ir.builder import Builder
from ..ir.graph import Value
from .base import Generator, Labels, Leg, check_rank, level_rank, near_identity, normalize_shape
from .legs import make_legs, mixer_legs


@dataclass(frozen=True)
class TreeNode:
    name: str  # core name
    path: str  # e.g. "ttn.level2.node1"
    level: int
    children: tuple["TreeNode", ...]
    leaves: tuple[int, ...]  # physical legs under this node, in order
    bond: int  # 0 for the root


class TTN(Generator):
    arch = "ttn"
    mixers = False  # two-leg disentanglers (aTTN): their size limits the default legs

    def __init__(self, shape, rank: int | Sequence[int] = 4, layout: str = "interleaved", activation: str = "tanh",
                 seed: int = 0, legs=None, arity: int = 2, leaf_activation: bool = False,
                 leg_order: Sequence[int] | None = None):
        _, O, I = normalize_shape(shape)
        self.ranks = check_rank(rank)
        if not isinstance(arity, int) or arity < 2:
            raise ConfigError(f"{self.arch}: arity must be an integer >= 2, got {arity!r}")
        self.arity = arity
        self.leaf_activation = leaf_activation
        lg = mixer_legs(self.arch, layout, O, I, legs, leg_order) if self.mixers else \
            make_legs(layout, O, I, legs, leg_order)
        if len(lg.legs) < 2:
            raise ConfigError(f"{self.arch}: needs at least 2 legs, layout {layout!r} gives {len(lg.legs)}")
        self.legs = lg
        self.root = self._build_tree()
        if activation != "identity" and not self._activated():
            if legs is not None or leg_order is not None or layout == "binary":
                raise ConfigError(
                    f"{self.arch}: activation {activation!r} would have no effect: legs {self.legs.dims} give a tree "
                    f"of depth {self.root.level} (arity {arity}), whose only node is the linear root; pass more "
                    f"legs, leaf_activation=True or activation='identity'")
            self._deepen(layout, O, I)
        super().__init__(shape, self.legs, activation, seed, dict(
            rank=rank, layout=layout, activation=activation, seed=seed, legs=legs, arity=arity,
            leaf_activation=leaf_activation, leg_order=leg_order))

    def _activated(self) -> bool:
        """Whether any node applies the activation: a leaf (leaf_activation) or an inner node below the root."""
        return self.leaf_activation or any(c.children for c in self.root.children)

    def _deepen(self, layout: str, O: int, I: int) -> None:
        """Default legs that give a tree of depth 1 make a nonlinear generator linear: add a leg on each side
        (the longer side first in the separated layout) until some node below the root is activated."""
        from .legs import default_legs

        n_o, n_i = (len(self.legs.out_dims), len(self.legs.in_dims))
        tries = [(n_o + 1, n_i + 1)] if layout == "interleaved" else sorted(
            [(n_o + 1, n_i), (n_o, n_i + 1), (n_o + 1, n_i + 1)], key=lambda t: (sum(t), -t[0] if O >= I else -t[1]))
        for t in tries:
            try:
                lg = mixer_legs(self.arch, layout, O, I, t) if self.mixers else make_legs(layout, O, I, t)
            except AdntnError:
                continue
            self.legs, self.root = lg, None
            self.root = self._build_tree()
            if self._activated():
                return
        raise ConfigError(f"{self.arch}: a {O}x{I} weight is too small for a tree with an activated level "
                          f"(default legs {default_legs(layout, O, I)}); pass leaf_activation=True or "
                          f"activation='identity'")

    # Separated layout: out-legs and in-legs get their own subtrees, joined at the root.
    def _blocks(self) -> list[list[int]]:
        n = len(self.legs.legs)
        if self.legs.layout == "separated":
            outs = [j for j in range(n) if all(f < len(self.legs.out_dims) for f in self.legs.legs[j])]
            ins = [j for j in range(n) if j not in outs]
            if outs and ins:
                return [outs, ins]
        return [list(range(n))]

    def _build_tree(self) -> TreeNode:
        dims = self.legs.dims
        a = self.arch

        def node(level: int, i: int, children: tuple[TreeNode, ...], root: bool) -> TreeNode:
            leaves = tuple(j for c in children for j in c.leaves)
            bond = 0 if root else min(level_rank(self.ranks, level), math.prod(dims[j] for j in leaves))
            return TreeNode("root" if root else f"l{level}n{i}", f"{a}.root" if root else f"{a}.level{level}.node{i}",
                            level, children, leaves, bond)

        def group(nodes: list[TreeNode], level: int, counter: list[int]) -> list[TreeNode]:
            out = []
            for s in range(0, len(nodes), self.arity):
                chunk = tuple(nodes[s:s + self.arity])
                if len(chunk) == 1:
                    out.append(chunk[0])  # carried up unchanged
                else:
                    out.append(node(level, counter[0], chunk, root=False))
                    counter[0] += 1
            return out

        blocks = [[TreeNode(f"leaf{j}", f"{a}.leaf{j}", 0, (), (j,), min(level_rank(self.ranks, 0), dims[j]))
                   for j in blk] for blk in self._blocks()]
        level = 1
        while True:
            if len(blocks) == 1 and len(blocks[0]) <= self.arity:
                return node(level, 0, tuple(blocks[0]), root=True)
            if all(len(blk) == 1 for blk in blocks):  # each block is one subtree: join them
                blocks = [[blk[0] for blk in blocks]]
                continue
            counter = [0]
            blocks = [group(blk, level, counter) if len(blk) > 1 else blk for blk in blocks]
            level += 1

    def nodes(self) -> list[TreeNode]:
        """All nodes, children before parents."""
        out: list[TreeNode] = []

        def walk(n: TreeNode) -> None:
            for c in n.children:
                walk(c)
            out.append(n)

        walk(self.root)
        return out

    def structure(self):
        shapes = {}
        for n in self.nodes():
            if not n.children:
                shapes[n.name] = (self.legs.dim(n.leaves[0]), n.bond)
            else:
                shapes[n.name] = tuple(c.bond for c in n.children) + ((n.bond,) if n.bond else ())
        return shapes

    def activated_elements(self) -> int:
        """The largest activated node output: its physical legs' elements times its bond (leaves count only with
        leaf_activation; the linear root never)."""
        sizes = [math.prod(self.legs.dim(j) for j in n.leaves) * n.bond for n in self.nodes()
                 if n is not self.root and (n.children or self.leaf_activation)]
        return max(sizes, default=0)

    def rank_bound(self) -> int:
        # The root is linear: when each child subtree is all-out or all-in, W = H_out C H_in^T.
        sides = [self.legs.one_side(c.leaves) for c in self.root.children]
        if None in sides:
            return super().rank_bound()
        bonds = {s: math.prod(c.bond for c, cs in zip(self.root.children, sides) if cs == s) for s in ("out", "in")}
        return min(bonds["out"], bonds["in"], super().rank_bound())

    def _out_m2(self, n: TreeNode) -> float:
        """E[h^2] of a node's output under the init (1 before activation)."""
        if not n.children:
            return 1.0 / self.gain2() if self.leaf_activation else 1.0
        return 1.0 / self.gain2()

    def init_core(self, name, shape, rng):
        n = next(n for n in self.nodes() if n.name == name)
        if not n.children:
            return rng.standard_normal(shape)
        fan = math.prod(c.bond for c in n.children) * math.prod(self._out_m2(c) for c in n.children)
        return rng.standard_normal(shape) / math.sqrt(fan)

    def emit(self, b: Builder, cores: dict[str, Value]) -> tuple[Value, Labels]:
        h: dict[str, tuple[Value, Labels]] = {}
        for n in self.nodes():
            if not n.children:
                v, labels = self.core(b, cores, n.name, [Leg(n.leaves[0]), ("bond", n.name)], n.path)
                h[n.name] = (self.act(b, v, n.path) if self.leaf_activation else v, labels)
                continue
            core_labels = [("bond", c.name) for c in n.children] + ([("bond", n.name)] if n.bond else [])
            phys = [l for c in n.children for l in h[c.name][1] if l[0] == "f"]
            z = b.contract([h[c.name] for c in n.children] + [(cores[n.name], core_labels)],
                           phys + core_labels[len(n.children):], n.path)
            h[n.name] = (z if n is self.root else self.act(b, z, n.path), phys + core_labels[len(n.children):])
        return h[self.root.name]


class ATTN(TTN):
    """TTN whose output passes through linear disentanglers D[d_a, d_b, d_a', d_b'] on the leg pairs
    (a, b) that sit in neighbouring lowest-level subtrees."""
    arch = "attn"
    mixers = True

    def __init__(self, shape, rank: int | Sequence[int] = 4, layout: str = "binary", activation: str = "tanh",
                 seed: int = 0, legs=None, arity: int = 2, leaf_activation: bool = False,
                 leg_order: Sequence[int] | None = None):
        super().__init__(shape, rank=rank, layout=layout, activation=activation, seed=seed, legs=legs, arity=arity,
                         leaf_activation=leaf_activation, leg_order=leg_order)

    BALANCE_SAMPLES = 2048

    def balance(self, cores, rng):
        """Each inner node's core rescaled so that its pre-activation entries have mean square 1, and the root's
        so that W's have the target std: measured, bottom-up, on the entries at BALANCE_SAMPLES random positions
        of the physical legs (a node's entry needs only its children's bond vectors there: rank^arity work per
        sample). The analytic init assumes Gaussian pre-activations; the products of the tree are heavy-tailed,
        tanh then loses more variance than it assumes, and that deficit squares at each level: the root's std
        came out 0.05-0.3 and attn's scale 3-20. A random position of every leg at once is a random entry of
        every node's tensor, so one draw serves the whole tree."""
        from .. import activations

        cores = dict(cores)
        act = activations.get(self.activation)
        centred = bool(activations.first_moment(self.activation))
        dims = self.legs.dims
        idx = [rng.integers(0, d, self.BALANCE_SAMPLES) for d in dims]
        h: dict[str, np.ndarray] = {}
        for n in self.nodes():
            if not n.children:
                z = cores[n.name][idx[n.leaves[0]]]  # (samples, bond)
                if not self.leaf_activation:
                    h[n.name] = z
                    continue
            else:
                core = cores[n.name] if n.bond else cores[n.name][..., None]
                z = h[n.children[0].name]
                for k, c in enumerate(n.children[1:], 1):  # (samples, b1 ... bk) built up child by child
                    z = z[..., None] * h[c.name].reshape((len(z),) + (1,) * k + (-1,))
                z = z.reshape(len(z), -1) @ core.reshape(-1, core.shape[-1])
                m2 = float(np.mean(z * z))
                if m2 > 0:
                    want = self.target_std if n is self.root else 1.0
                    cores[n.name] = cores[n.name] * (want / np.sqrt(m2))
                    z = z * (want / np.sqrt(m2))
                if n is self.root:
                    break
            a = act.numpy(z)
            h[n.name] = a - a.mean(0) if centred else a
        return cores

    def boundary_pairs(self) -> list[tuple[int, int]]:
        groups: list[tuple[int, ...]] = []

        def lowest(n: TreeNode) -> None:  # maximal subtrees whose children are all leaves
            if not n.children or all(not c.children for c in n.children):
                groups.append(n.leaves)
            else:
                for c in n.children:
                    lowest(c)

        lowest(self.root)
        return [(g[-1], h[0]) for g, h in zip(groups, groups[1:])] if len(groups) > 1 else []

    def rank_bound(self) -> int:
        # A linear disentangler on an out-leg a and an in-leg c multiplies the rank by at most min(d_a, d_c)^2.
        bound, d = super().rank_bound(), self.legs.dims
        for a, c in self.boundary_pairs():
            if self.legs.one_side((a, c)) is None:
                bound *= min(d[a], d[c]) ** 2
        return min(bound, Generator.rank_bound(self))

    def structure(self):
        shapes = super().structure()
        d = self.legs.dims
        for k, (a, c) in enumerate(self.boundary_pairs()):
            shapes[f"dis{k}"] = (d[a], d[c], d[a], d[c])
        return shapes

    def init_core(self, name, shape, rng):
        """The tree as a TTN's (then `balance`d); each disentangler an orthogonal matrix near the identity, which
        keeps W's norm exactly (it was I + noise before)."""
        if not name.startswith("dis"):
            return super().init_core(name, shape, rng)
        da, db = shape[0], shape[1]
        return near_identity(rng, da * db).reshape(shape)

    def emit(self, b, cores):
        w, labels = super().emit(b, cores)
        pairs = self.boundary_pairs()
        if not pairs:
            return w, labels
        moved = {f for a, c in pairs for j in (a, c) for f in self.legs.legs[j]}
        w_labels = [("f", l[1], "pre") if l[1] in moved else l for l in labels]
        ops = [(w, w_labels)]
        for k, (a, c) in enumerate(pairs):
            ops.append(self.core(b, cores, f"dis{k}", [Leg(a, "pre"), Leg(c, "pre"), Leg(a), Leg(c)],
                                 f"{self.arch}.disentangler{k}"))
        return b.contract(ops, labels, f"{self.arch}.disentanglers"), labels
