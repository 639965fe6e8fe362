"""tile: slice the per-call contractions over output labels so that their largest intermediate fits.

Each per-call einsum whose largest intermediate (under its best order) exceeds `target_size` elements is
split into chunks along its output labels (the batch label first, then the largest): every operand that
carries the label is sliced, each chunk is an ordinary einsum (same structure, so the order search is
cached), and the chunk results are concatenated. Labels are split in halves until the target is met, every output label is down
to size 1, or there would be more than MAX_TILES tiles. This is the bounded-memory `stream` schedule's tiling.
"""
from __future__ import annotations

import math

from ..ir.graph import Graph, Node, Op, Value
from ..ir.ops import einsum_sizes
from .order import path_cost, search_path
from .rebuild import Rebuilder, depends_on_input


def largest_intermediate(terms, out, sizes) -> int:
    return path_cost(terms, out, sizes, search_path(terms, out, sizes)).largest


MAX_TILES = 256  # per einsum: beyond this, tiles cost more in overhead than they save


def choose_chunks(terms, out: str, sizes: dict[str, int], target_size: int) -> dict[str, int]:
    """Chunk size per sliced output label (labels not listed are whole)."""
    chunks: dict[str, int] = {}
    while True:
        cur = {**sizes, **chunks}
        if largest_intermediate(terms, out, cur) <= target_size:
            return chunks
        splittable = [c for c in out if cur[c] > 1]
        tiles = math.prod(math.ceil(sizes[c] / k) for c, k in chunks.items())
        if not splittable or tiles * 2 > MAX_TILES:
            return chunks  # as small as it gets; the plan reports the peak it could reach
        c = out[0] if cur[out[0]] > 1 else max(splittable, key=lambda c: cur[c])
        chunks[c] = math.ceil(cur[c] / 2)


def _emit_chunks(r: Rebuilder, n: Node, chunks: dict[str, int], starts: dict[str, int],
                 labels: list[str]) -> Value:
    """Concatenate the chunks of `n` over labels[0], recursing over the remaining labels."""
    a = n.attrs
    sizes = einsum_sizes(a, [v.shape for v in n.inputs])
    if not labels:
        ops = []
        for v, term in zip(n.inputs, a.terms):
            lo = [starts.get(c, 0) for c in term]
            hi = [min(starts[c] + chunks[c], sizes[c]) if c in starts else sizes[c] for c in term]
            ops.append((r.b.slice(r[v], lo, hi, f"{n.path}.tile"), list(term)))
        return r.b.contract(ops, list(a.out), f"{n.path}.tile", a.epilogue)
    c, rest = labels[0], labels[1:]
    parts = [_emit_chunks(r, n, chunks, {**starts, c: s}, rest) for s in range(0, sizes[c], chunks[c])]
    return r.b.concat(parts, a.out.index(c), f"{n.path}.tile")


def tile(g: Graph, target_size: int) -> Graph:
    dynamic = depends_on_input(g)

    def emit(r: Rebuilder, n: Node) -> Value | None:
        if n.op is not Op.EINSUM or n.out.id not in dynamic:
            return r.copy(n)
        sizes = einsum_sizes(n.attrs, [v.shape for v in n.inputs])
        chunks = choose_chunks(n.attrs.terms, n.attrs.out, sizes, target_size)
        if not chunks:
            return r.copy(n)
        return _emit_chunks(r, n, chunks, {}, [c for c in n.attrs.out if c in chunks])

    return Rebuilder(g).run(emit)
