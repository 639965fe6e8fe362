"""order: choose the contraction tree of every multi-operand einsum and lower it to pairwise steps.

Small segments use opt_einsum's exact `dp`; larger ones cotengra's HyperOptimizer (greedy + kahypar,
cmaes, explicit max_repeats, no process pool; see shared/notes/cotengra.md). Paths are cached on
disk keyed by the segment's structure, so identical layers search once. Paths use the opt_einsum /
cotengra protocol: (inputs, output, size_dict) -> [(i, j), ...].
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

import opt_einsum

from ..ir.graph import Graph, Node, Op, Value
from ..ir.ops import einsum_sizes
from .rebuild import Rebuilder

EXACT_MAX = 10  # operands up to which opt_einsum's dp is used (exact and fast at this size)


def cache_dir() -> Path:
    return Path(os.environ.get("ADNTN_CACHE", Path.home() / ".cache" / "adntn")) / "paths"


def search_path(inputs: Sequence[str], output: str, sizes: dict[str, int], seed: int = 0) -> list[tuple[int, ...]]:
    if len(inputs) <= 2:
        return [tuple(range(len(inputs)))]
    key = hashlib.sha256(json.dumps([list(inputs), output, sorted(sizes.items()), seed]).encode()).hexdigest()
    f = cache_dir() / f"{key}.json"
    if f.exists():
        try:
            return [tuple(p) for p in json.loads(f.read_text())]
        except (ValueError, TypeError):
            pass  # a damaged cache entry is searched again and rewritten
    if len(inputs) <= EXACT_MAX:
        path = opt_einsum.paths.DynamicProgramming(minimize="flops")(list(map(set, inputs)), set(output), sizes)
    else:
        import cotengra as ctg

        opt = ctg.HyperOptimizer(methods=["greedy", "kahypar"], max_repeats=32, optlib="cmaes", parallel=False,
                                 minimize="flops", progbar=False, seed=seed)
        path = opt.search([tuple(t) for t in inputs], tuple(output), sizes).get_path()
    path = [tuple(int(i) for i in p) for p in path]
    naive = [(0, 1)] * (len(inputs) - 1)
    if _path_flops(inputs, output, sizes, naive) < _path_flops(inputs, output, sizes, path):
        path = naive  # the optimisers minimise their own cost models; never lose to left-to-right on ours
    f.parent.mkdir(parents=True, exist_ok=True)
    tmp = f.with_suffix(".tmp")
    tmp.write_text(json.dumps(path))
    tmp.replace(f)  # atomic: concurrent compiles never read half a file
    return path


def step_flops(terms: Sequence[str], out: str, sizes: dict[str, int]) -> int:
    """Flops of one einsum evaluated directly, counted as opt_einsum counts them (2 per multiply-add)."""
    labels = set("".join(terms)) | set(out)
    inner = bool(set("".join(terms)) - set(out))
    return int(opt_einsum.helpers.flop_count(labels, inner, max(len(terms), 1), sizes))


def naive_flops(terms: Sequence[str], out: str, sizes: dict[str, int]) -> int:
    """Left-to-right pairwise order: the baseline the optimiser must never lose to."""
    return _path_flops(terms, out, sizes, [(0, 1)] * (len(terms) - 1))


def _path_flops(terms, out, sizes, path) -> int:
    terms, total = list(terms), 0
    for step in path:
        picked = [terms[i] for i in step]
        for i in sorted(step, reverse=True):
            terms.pop(i)
        keep = set("".join(terms)) | set(out)
        res = "".join(sorted(set("".join(picked)) & keep))
        total += step_flops(picked, res, sizes)
        terms.append(res)
    return total


def path_flops(terms, out, sizes, path) -> int:
    return _path_flops(terms, out, sizes, path)


def order(g: Graph, seed: int = 0) -> Graph:
    """Every einsum with three or more operands becomes a chain of pairwise einsums."""

    def emit(r: Rebuilder, n: Node) -> Value | None:
        if n.op is not Op.EINSUM or len(n.inputs) <= 2:
            return r.copy(n)
        terms, out = list(n.attrs.terms), n.attrs.out
        sizes = einsum_sizes(n.attrs, [v.shape for v in n.inputs])
        path = search_path(terms, out, sizes, seed)
        ops: list[tuple[Value, str]] = [(r[v], t) for v, t in zip(n.inputs, terms)]
        for k, step in enumerate(path):
            picked = [ops[i] for i in step]
            for i in sorted(step, reverse=True):
                ops.pop(i)
            last = k == len(path) - 1
            keep = set(out) if last else set("".join(t for _, t in ops)) | set(out)
            res = out if last else "".join(c for c in dict.fromkeys("".join(t for _, t in picked)) if c in keep)
            v = r.b.contract([(pv, list(pt)) for pv, pt in picked], list(res), f"{n.path}.step{k}")
            ops.append((v, res))
        return ops[0][0]

    return Rebuilder(g).run(emit)
