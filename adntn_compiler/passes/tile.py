"""tile: slice the per-call contractions so that their largest intermediate fits.

Each per-call einsum whose largest intermediate (under its best order) exceeds `target_size` elements is
split into chunks along its output labels (the batch label first, then the largest): every operand that
carries the label is sliced, each chunk is an ordinary einsum (same structure, so the order search is
cached), and the chunk results are concatenated. Labels are split in halves until the target is met, every output label is down
to size 1, or there would be more than MAX_TILES tiles. This is the bounded-memory `stream` schedule's tiling.

With `recompute=True` (the `recompute` schedule, where nothing but the cores is kept) the generated operands
are what must fit: each tile computes its own slice of them, since a slice of an operand is pushed into the
operand's computation, through activations (elementwise) and einsums (a slice of an output label slices the
operands that carry it) down to the cores. So the generated tensors never exist whole. A summed label may be
split too (for an einsum without an activation: the chunks' results are added), which is what bounds the
operands that carry only input legs. Tiles share nothing they slice: each recomputes its part.
"""
from __future__ import annotations

import math

from ..ir.graph import Graph, Node, Op, Value
from ..ir.ops import einsum_sizes
from .order import path_cost, search_path
from .rebuild import Rebuilder, depends_on_input, prune


def largest_intermediate(terms, out, sizes) -> int:
    return path_cost(terms, out, sizes, search_path(terms, out, sizes)).largest


MAX_TILES = 256  # per einsum: beyond this, tiles cost more in overhead than they save


def choose_chunks(terms, out: str, sizes: dict[str, int], target_size: int,
                  generated: tuple[bool, ...] | None = None, summed: bool = False) -> dict[str, int]:
    """Chunk size per sliced label (labels not listed are whole). `generated` (recompute): which operands are
    computed per tile, so must fit the target too; `summed`: summed labels may be split (no activation)."""
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
        splittable = [c for c in (big[1] if big[0] > largest else labels) if c in labels and cur[c] > 1]
        if not splittable or tiles * 2 > MAX_TILES:
            return chunks  # as small as it gets; the plan reports the peak it could reach
        c = out[0] if out and cur[out[0]] > 1 and out[0] in splittable else max(splittable, key=lambda c: cur[c])
        chunks[c] = math.ceil(cur[c] / 2)


class _Slicer:
    """Slices of old values in the new graph; with `push`, computed from slices of their producers' inputs.
    Slices are shared within a tile (`new_tile` forgets them): a tile's parts die with it."""

    def __init__(self, r: Rebuilder, push: bool):
        self.r, self.push = r, push
        self.producer = r.g.producer()
        self.memo: dict[tuple, Value] = {}

    def new_tile(self) -> None:
        self.memo = {}

    def __call__(self, v: Value, lo: tuple[int, ...], hi: tuple[int, ...], path: str) -> Value:
        if lo == (0,) * len(lo) and hi == tuple(v.shape):
            return self.r[v]
        key = (v.id, lo, hi)
        if key not in self.memo:
            self.memo[key] = self._make(v, lo, hi, path)
        return self.memo[key]

    def _make(self, v: Value, lo, hi, path: str) -> Value:
        n = self.producer[v.id]
        if self.push and n.op is Op.MAP:
            return self.r.b.map(n.attrs.fn, self(n.inputs[0], lo, hi, path), path)
        if self.push and n.op is Op.EINSUM:
            ranges = {c: (a, b) for c, a, b in zip(n.attrs.out, lo, hi)}
            ops = []
            for u, term in zip(n.inputs, n.attrs.terms):
                ulo = tuple(ranges[c][0] if c in ranges else 0 for c in term)
                uhi = tuple(ranges[c][1] if c in ranges else s for c, s in zip(term, u.shape))
                ops.append((self(u, ulo, uhi, path), list(term)))
            return self.r.b.contract(ops, list(n.attrs.out), path, n.attrs.epilogue)
        return self.r.b.slice(self.r[v], list(lo), list(hi), path)


def _emit_chunks(r: Rebuilder, n: Node, chunks: dict[str, int], starts: dict[str, int],
                 labels: list[str], sliced: _Slicer) -> Value:
    """The chunks of `n` over labels[0] (concatenated for an output label, added for a summed one), recursing
    over the remaining labels."""
    a = n.attrs
    sizes = einsum_sizes(a, [v.shape for v in n.inputs])
    if not labels:
        sliced.new_tile()
        ops = []
        for v, term in zip(n.inputs, a.terms):
            lo = tuple(starts.get(c, 0) for c in term)
            hi = tuple(min(starts[c] + chunks[c], sizes[c]) if c in starts else sizes[c] for c in term)
            ops.append((sliced(v, lo, hi, f"{n.path}.tile"), list(term)))
        return r.b.contract(ops, list(a.out), f"{n.path}.tile", a.epilogue)
    c, rest = labels[0], labels[1:]
    if c not in a.out:  # a summed label: accumulate chunk by chunk, so one chunk's operands live at a time
        acc = None
        for s in range(0, sizes[c], chunks[c]):
            part = _emit_chunks(r, n, chunks, {**starts, c: s}, rest, sliced)
            acc = part if acc is None else r.b.add(acc, part, f"{n.path}.tile")
        return acc
    parts = [_emit_chunks(r, n, chunks, {**starts, c: s}, rest, sliced) for s in range(0, sizes[c], chunks[c])]
    return r.b.concat(parts, a.out.index(c), f"{n.path}.tile")


def tile(g: Graph, target_size: int, recompute: bool = False) -> Graph:
    dynamic = depends_on_input(g)
    slicers: list[_Slicer] = []

    def emit(r: Rebuilder, n: Node) -> Value | None:
        if n.op is not Op.EINSUM or n.out.id not in dynamic:
            return r.copy(n)
        sizes = einsum_sizes(n.attrs, [v.shape for v in n.inputs])
        generated = tuple(v.id not in dynamic for v in n.inputs) if recompute else None
        chunks = choose_chunks(n.attrs.terms, n.attrs.out, sizes, target_size, generated,
                               summed=recompute and not n.attrs.epilogue)
        if not chunks:
            return r.copy(n)
        if not slicers:
            slicers.append(_Slicer(r, recompute))
        order = [c for c in n.attrs.out if c in chunks] + [c for c in chunks if c not in n.attrs.out]
        return _emit_chunks(r, n, chunks, {}, order, slicers[0])

    out = Rebuilder(g).run(emit)
    return prune(out) if recompute else out  # (the whole generated tensors are no longer used)
