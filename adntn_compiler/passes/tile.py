"""tile: slice the per-call contractions so that their largest intermediate fits.

Each per-call einsum whose largest intermediate (under its best order) exceeds `target_size` elements is
split into chunks along its output labels (the batch label first, then the largest): every operand that
carries the label is sliced, each chunk is an ordinary einsum (same structure, so the order search is
cached), and the chunk results are concatenated. Labels are split in halves until the target is met, every output
label is down to size 1, or there would be more than MAX_TILES tiles. This is the bounded-memory `stream` schedule's
tiling.

With `recompute=True` (the `recompute` schedule, where nothing but the cores is kept) the generated operands
are what must fit: each tile computes its own slice of them, since a slice of an operand is pushed into the
operand's computation, through activations (elementwise) and einsums (a slice of an output label slices the
operands that carry it) down to the cores. So the generated tensors never exist whole. A summed label may be
split too (for an einsum without an activation: the chunks' results are added), which is what bounds the
operands that carry only input legs. The loops are nested so that the fewest elements are generated again
(`_nest`): an operand's slice is shared by the tiles inside its loops and remade outside them.
"""
from __future__ import annotations

import math

from ..ir.graph import EinsumAttrs, Graph, MapAttrs, Node, Op, Value
from ..ir.ops import einsum_sizes
from .order import path_cost, search_path
from .rebuild import Rebuilder, depends_on_input, prune


def largest_intermediate(terms, out, sizes) -> int:
    return path_cost(terms, out, sizes, search_path(terms, out, sizes)).largest


MAX_TILES = 256  # per einsum: beyond this, tiles cost more in overhead than they save


def choose_chunks(terms, out: str, sizes: dict[str, int], target_size: int, generated: tuple[bool, ...] | None = None,
                  summed: bool = False, share: bool = True) -> dict[str, int]:
    """Chunk size per sliced label (labels not listed are whole). `generated` (recompute): which operands are
    computed per tile, so must fit the target too; `summed`: summed labels may be split (no activation);
    `share`: whether tiles share slices (the cost of a split is then `_nest`'s, else `_fresh_cost`)."""
    cost = (lambda ch: _nest(terms, generated, sizes, ch)[1]) if share else \
        (lambda ch: _fresh_cost(terms, generated, sizes, ch))
    chunks: dict[str, int] = {}
    labels = out + "".join(sorted({c for t in terms for c in t} - set(out))) if summed else out
    while True:
        cur = {**sizes, **chunks}
        largest = largest_intermediate(terms, out, cur)
        big = max(((math.prod(cur[c] for c in t), t) for t, gen in zip(terms, generated or ()) if gen and t),
                  default=(0, ""))
        if max(largest, big[0]) <= target_size:
            return chunks
        tiles = math.prod(math.ceil(sizes[c] / k) for c, k in chunks.items())
        if big[0] > largest:  # shrink the largest generated operand, recomputing as little as possible
            splittable = [c for c in big[1] if c in labels and cur[c] > 1]
            pick = lambda c: (cost({**chunks, c: math.ceil(cur[c] / 2)}), -cur[c])  # noqa: E731
        else:
            splittable = [c for c in labels if cur[c] > 1]
            pick = lambda c: (not out or c != out[0], -cur[c])  # noqa: E731  (the batch label first, then the largest)
        if not splittable or tiles * 2 > MAX_TILES:
            return chunks  # as small as it gets; the plan reports the peak it could reach
        c = min(splittable, key=pick)
        chunks[c] = math.ceil(cur[c] / 2)


def _fresh_cost(terms, generated, sizes: dict[str, int], chunks: dict[str, int]) -> int:
    """Elements generated when every tile makes its own slices: an operand that carries a sliced label is made
    once for every chunk of each sliced label it lacks; one that carries none is made once, whole."""
    n = {c: math.ceil(sizes[c] / k) for c, k in chunks.items() if k < sizes[c]}
    total = 0
    for t, gen in zip(terms, generated):
        if gen and t:
            total += math.prod(sizes[c] for c in t) * (math.prod(v for c, v in n.items() if c not in t)
                                                       if any(c in n for c in t) else 1)
    return total


def _nest(terms, generated, sizes: dict[str, int], chunks: dict[str, int]) -> tuple[list[str], int]:
    """The loop order of the sliced labels (outermost first) that generates the fewest elements, and that count.

    A slice of an operand is kept while the loops inside its own labels run, and made again whenever a label
    outside them advances (so that the tiles' slices of one operand never all live at once): an operand is
    generated once for every chunk of the sliced labels it lacks that lie outside its own. The labels are
    grouped by the largest generated operand that carries them; the groups' order is searched."""
    from itertools import permutations

    n = {c: math.ceil(sizes[c] / k) for c, k in chunks.items() if k < sizes[c]}
    gen_terms = [t for t, g in zip(terms, generated or (True,) * len(terms)) if g and t]
    size = lambda t: math.prod(sizes[c] for c in t)  # noqa: E731
    owner = {c: max((t for t in gen_terms if c in t), key=size, default="") for c in n}
    groups = list(dict.fromkeys(owner.values()))
    best: tuple[int, list[str]] | None = None
    for perm in permutations(groups):
        order = [c for grp in perm for c in n if owner[c] == grp]
        level = {c: k for k, c in enumerate(order)}
        cost = 0
        for t in gen_terms:
            own = [level[c] for c in t if c in level]
            inner = max(own, default=-1)
            cost += size(t) * math.prod(n[c] for c in order if c not in t and level[c] < inner)
        if best is None or cost < best[0]:
            best = (cost, order)
    return (best[1], best[0]) if best else ([], sum(size(t) for t in gen_terms))


class _Slicer:
    """Slices of old values in the new graph; with `push`, computed from slices of their producers' inputs.
    A slice is remembered with the sliced labels it depends on, and forgotten when a loop over one of them (or
    one outside it) advances: see `_nest`."""

    def __init__(self, r: Rebuilder, push: bool, share: bool = True):
        self.r, self.push, self.share = r, push, share
        self.producer = r.g.producer()
        self.memo: dict[tuple, tuple[Value, set[str]]] = {}

    def forget(self, labels: set[str], tile: bool = False) -> None:
        if tile and not self.share:
            self.memo = {}
        else:
            self.memo = {k: (v, d) for k, (v, d) in self.memo.items() if not d & labels}

    def __call__(self, v: Value, lo: tuple[int, ...], hi: tuple[int, ...], path: str, deps: set[str]) -> Value:
        if lo == (0,) * len(lo) and hi == tuple(v.shape):
            return self.r[v]
        key = (v.id, lo, hi)
        if key in self.memo:
            self.memo[key][1].update(deps)
        else:
            self.memo[key] = (self._make(v, lo, hi, path, deps), set(deps))
        return self.memo[key][0]

    def _make(self, v: Value, lo, hi, path: str, deps: set[str]) -> Value:
        n = self.producer[v.id]
        if self.push and n.op is Op.MAP:
            return self.r.b.map(n.attrs_as(MapAttrs).fn, self(n.inputs[0], lo, hi, path, deps), path)
        if self.push and n.op is Op.EINSUM:
            ea = n.attrs_as(EinsumAttrs)
            ranges = {c: (a, b) for c, a, b in zip(ea.out, lo, hi)}
            ops = []
            for u, term in zip(n.inputs, ea.terms):
                ulo = tuple(ranges[c][0] if c in ranges else 0 for c in term)
                uhi = tuple(ranges[c][1] if c in ranges else s for c, s in zip(term, u.shape))
                ops.append((self(u, ulo, uhi, path, deps), list(term)))
            return self.r.b.contract(ops, list(ea.out), path, ea.epilogue)
        return self.r.b.slice(self.r[v], list(lo), list(hi), path)


def _emit_chunks(r: Rebuilder, n: Node, chunks: dict[str, int], starts: dict[str, int],
                 labels: list[str], sliced: _Slicer) -> Value:
    """The chunks of `n` over labels[0] (concatenated for an output label, added for a summed one), recursing
    over the remaining labels."""
    a = n.attrs_as(EinsumAttrs)
    sizes = einsum_sizes(a, [v.shape for v in n.inputs])
    if not labels:
        sliced.forget(set(), tile=True)
        ops = []
        for v, term in zip(n.inputs, a.terms):
            lo = tuple(starts.get(c, 0) for c in term)
            hi = tuple(min(starts[c] + chunks[c], sizes[c]) if c in starts else sizes[c] for c in term)
            ops.append((sliced(v, lo, hi, f"{n.path}.tile", {c for c in term if c in starts}), list(term)))
        return r.b.contract(ops, list(a.out), f"{n.path}.tile", a.epilogue)
    c, rest = labels[0], labels[1:]
    parts = []
    for s in range(0, sizes[c], chunks[c]):
        sliced.forget(set(labels))
        part = _emit_chunks(r, n, chunks, {**starts, c: s}, rest, sliced)
        if c in a.out:
            parts.append(part)
        else:  # a summed label: accumulate chunk by chunk, so one chunk's operands live at a time
            parts = [r.b.add(parts[0], part, f"{n.path}.tile")] if parts else [part]
    return r.b.concat(parts, a.out.index(c), f"{n.path}.tile") if c in a.out else parts[0]


def tile(g: Graph, target_size: int, recompute: bool = False, share: bool = True) -> Graph:
    """`share=False` (recompute): every tile makes its own slices (the least memory, the most flops)."""
    dynamic = depends_on_input(g)
    slicers: list[_Slicer] = []

    def emit(r: Rebuilder, n: Node) -> Value | None:
        if n.op is not Op.EINSUM or n.out.id not in dynamic:
            return r.copy(n)
        a = n.attrs_as(EinsumAttrs)
        sizes = einsum_sizes(a, [v.shape for v in n.inputs])
        generated = tuple(v.id not in dynamic for v in n.inputs) if recompute else None
        chunks = choose_chunks(a.terms, a.out, sizes, target_size, generated,
                               summed=recompute and not a.epilogue, share=share)
        if not chunks:
            return r.copy(n)
        if not slicers:
            slicers.append(_Slicer(r, recompute, share))
        order = [c for c in a.out if c in chunks]
        if recompute and share:
            order = _nest(a.terms, generated, sizes, chunks)[0]
        order += [c for c in chunks if c not in order]  # (summed labels; a label split to size: no loop)
        return _emit_chunks(r, n, chunks, {}, order, slicers[0])

    out = Rebuilder(g).run(emit)
    return prune(out) if recompute else out  # (the whole generated tensors are no longer used)
