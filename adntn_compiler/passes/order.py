"""order: choose the contraction tree of every multi-operand einsum and lower it to pairwise steps.

Small segments use opt_einsum's exact `dp`; larger ones cotengra's HyperOptimizer (greedy + kahypar,
cmaes, explicit max_repeats, no process pool; see shared/notes/cotengra.md). Paths are cached on
disk keyed by the segment's structure, so identical layers search once. Paths use the opt_einsum /
cotengra protocol: (inputs, output, size_dict) -> [(i, j), ...].

Objective "call" minimises the flops of the steps that depend on the layer input (the per-call part;
constant steps are folded to load time), then total flops. Every intermediate that depends on x keeps
the batch label (it is in the output), so searching with the x-only labels inflated makes the optimisers
weigh per-call steps; the real costs then pick among the candidates.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generator, Literal, Sequence

import opt_einsum

from ..ir.graph import EinsumAttrs, Graph, Node, Op, Value
from ..ir.ops import einsum_sizes
from .rebuild import Rebuilder, depends_on_input

EXACT_MAX = 10  # operands up to which opt_einsum's dp is used (exact and fast at this size)
INFLATE = (64, 4096)  # factors for the x-only labels in the per-call searches
Objective = Literal["call", "total"]


def cache_dir() -> Path:
    from ..settings import cache_dir

    return cache_dir() / "paths"


def step_flops(terms: Sequence[str], out: str, sizes: dict[str, int]) -> int:
    """Flops of one einsum evaluated directly, counted as opt_einsum counts them (2 per multiply-add);
    a scalar operand (fused scale) costs one multiply per output element."""
    scalars = sum(1 for t in terms if not t)
    terms = [t for t in terms if t]
    labels = set("".join(terms)) | set(out)
    inner = bool(set("".join(terms)) - set(out))
    flops = int(opt_einsum.helpers.flop_count(labels, inner, max(len(terms), 1), sizes)) if terms else 0
    return flops + scalars * int(opt_einsum.helpers.compute_size_by_dict(out, sizes))


def walk(items: Sequence[tuple[Any, str]], out: str, path: Sequence[Sequence[int]]
         ) -> Generator[tuple[list, str], Any, None]:
    """Replay a path over (payload, term) items: yields (picked items, result term) per step and appends
    the caller's new item, which it sends back (generator.send), or (None, res) when sent nothing."""
    items = list(items)
    for k, step in enumerate(path):
        picked = [items[i] for i in step]
        for i in sorted(step, reverse=True):
            items.pop(i)
        if k == len(path) - 1:
            res = out
        else:
            keep = set("".join(t for _, t in items)) | set(out)
            res = "".join(c for c in dict.fromkeys("".join(t for _, t in picked)) if c in keep)
        new = yield picked, res
        items.append((new, res))


@dataclass(frozen=True)
class PathCost:
    flops: int  # all steps
    call_flops: int  # steps that depend on a varying (per-call) operand
    largest: int  # largest intermediate, elements


def path_cost(terms: Sequence[str], out: str, sizes: dict[str, int], path, varying: frozenset[int] = frozenset()
              ) -> PathCost:
    flops = call = largest = 0
    w = walk([(i in varying, t) for i, t in enumerate(terms)], out, path)
    try:
        picked, res = next(w)
        while True:
            f = step_flops([t for _, t in picked], res, sizes)
            is_call = any(v for v, _ in picked)
            flops, call = flops + f, call + (f if is_call else 0)
            largest = max(largest, opt_einsum.helpers.compute_size_by_dict(res, sizes))
            picked, res = w.send(is_call)
    except StopIteration:
        pass
    return PathCost(flops, call, largest)


def naive_path(n: int) -> list[tuple[int, ...]]:
    return [(0, 1)] * (n - 1) if n > 1 else [(0,)]


def _seeded_greedy(inputs, output, size_dict, random_strength=0.0, temperature=0.0, costmod=1.0):
    """cotengra's greedy trial, with its noise seeded from the (seeded) global `random` module."""
    import random

    from cotengra.core import ContractionTree, jitter_dict
    from cotengra.pathfinders.path_basic import get_optimize_greedy

    seed = random.randint(0, 2**31 - 1)
    sizes = jitter_dict(size_dict, random_strength, seed) if random_strength else size_dict
    ssa = get_optimize_greedy()(inputs, output, sizes, temperature=temperature, costmod=costmod, seed=seed,
                                use_ssa=True)
    return ContractionTree.from_path(inputs, output, size_dict, ssa_path=ssa)


def _register_seeded_greedy() -> str:
    from cotengra.hyperoptimizers import hyper

    if "adntn-greedy" not in hyper._HYPER_SEARCH_SPACE:
        hyper.register_hyper_function("adntn-greedy", _seeded_greedy, dict(hyper._HYPER_SEARCH_SPACE["greedy"]))
    return "adntn-greedy"


def _search(inputs: Sequence[str], output: str, sizes: dict[str, int], seed: int,
            minimize: str = "flops") -> list[tuple[int, ...]]:
    if len(inputs) <= EXACT_MAX:
        path = opt_einsum.paths.DynamicProgramming(minimize=minimize)(list(map(set, inputs)), set(output), sizes)
    else:
        import random

        import cotengra as ctg

        # cotengra draws kahypar's seeds from the global `random` module, and its greedy trial (cotengrust)
        # from the OS: we seed `random` and use a greedy trial that takes its seed from there too.
        state = random.getstate()
        random.seed(seed)
        try:
            opt = ctg.HyperOptimizer(methods=[_register_seeded_greedy(), "kahypar"], max_repeats=32, optlib="cmaes",
                                     optlib_opts={"seed": seed}, parallel=False, minimize=minimize, progbar=False)
            path = opt.search([tuple(t) for t in inputs], tuple(output), sizes).get_path()
        finally:
            random.setstate(state)
    return [tuple(int(i) for i in p) for p in path]


def search_path(inputs: Sequence[str], output: str, sizes: dict[str, int], seed: int = 0,
                varying: frozenset[int] = frozenset(), objective: Objective = "total", tree: int = 0
                ) -> list[tuple[int, ...]]:
    """The best path by our cost (`tree` 0), or the `tree`-th best of the distinct candidates (the tuner times
    them: flops are not time). Candidates: the optimisers minimising flops (plus, for the per-call objective,
    with the x-only labels inflated), then, for tree > 0, minimising the largest intermediate and the bytes
    written; the naive left-to-right chain. A `tree` past the last candidate gives the last one."""
    if len(inputs) <= 2:
        return [tuple(range(len(inputs)))]
    use_call = objective == "call" and bool(varying)
    key_src = [list(inputs), output, sorted(sizes.items()), seed, sorted(varying) if use_call else []]
    key_src += [tree] if tree else []  # tree 0 keeps the cache keys of before
    f = cache_dir() / f"{hashlib.sha256(json.dumps(key_src).encode()).hexdigest()}.json"
    if f.exists():
        try:
            return [tuple(p) for p in json.loads(f.read_text())]
        except (ValueError, TypeError):
            pass  # a damaged cache entry is searched again and rewritten
    candidates = [_search(inputs, output, sizes, seed), naive_path(len(inputs))]
    if use_call:
        const_labels = set("".join(t for i, t in enumerate(inputs) if i not in varying))
        x_only = {c for i in varying for c in inputs[i]} - const_labels
        for k in INFLATE if x_only else ():
            inflated = {c: s * (k if c in x_only else 1) for c, s in sizes.items()}
            candidates.append(_search(inputs, output, inflated, seed))

    def score(p):  # the optimisers minimise their own cost models; choose on ours
        c = path_cost(inputs, output, sizes, p, varying)
        return (c.call_flops, c.flops) if use_call else (c.flops,)

    path = min(candidates, key=score)
    if tree:
        rest = candidates + [_search(inputs, output, sizes, seed, m) for m in ("size", "write")]
        ranked = [path] + sorted({tuple(p): list(p) for p in rest if list(p) != list(path)}.values(), key=score)
        path = ranked[min(tree, len(ranked) - 1)]
    f.parent.mkdir(parents=True, exist_ok=True)
    tmp = f.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(path))
    tmp.replace(f)  # atomic: concurrent compiles never read half a file
    return path


def order(g: Graph, seed: int = 0, objective: Objective = "total", tree: int = 0) -> Graph:
    """Every einsum with three or more operands becomes a chain of pairwise einsums (`tree`: see search_path)."""
    dynamic = depends_on_input(g)

    def emit(r: Rebuilder, n: Node) -> Value | None:
        if n.op is not Op.EINSUM or len(n.inputs) <= 2:
            return r.copy(n)
        a = n.attrs_as(EinsumAttrs)
        terms, out = list(a.terms), a.out
        sizes = einsum_sizes(a, [v.shape for v in n.inputs])
        varying = frozenset(i for i, v in enumerate(n.inputs) if v.id in dynamic)
        path = search_path(terms, out, sizes, seed, varying, objective, tree)
        w = walk([(r[v], t) for v, t in zip(n.inputs, terms)], out, path)
        picked, res = next(w)
        for k in range(len(path)):
            v = r.b.contract([(pv, list(pt)) for pv, pt in picked], list(res), f"{n.path}.step{k}")
            try:
                picked, res = w.send(v)
            except StopIteration:
                return v
        raise AssertionError("empty path")

    return Rebuilder(g).run(emit)
