"""Contraction-order quality: flops and largest intermediate of naive left-to-right order, opt_einsum
greedy and ours (segment + order), per generator and batch; and flops per call of `factored` against
`materialize` then dense matmul.

    python benchmarks/contraction_order.py [--ranks 4 8 16] [--out benchmarks/results/contraction_order.json]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import opt_einsum
from tqdm import tqdm

import adntn_compiler as adntn
from adntn_compiler.ir.graph import Op
from adntn_compiler.ir.ops import einsum_sizes
from adntn_compiler.passes import segment
from adntn_compiler.passes.order import naive_path, path_cost, search_path

CONFIGS = {  # arch -> generator options (rank is swept)
    "ttn": dict(layout="interleaved"),
    "attn": dict(layout="binary"),
    "mera": dict(layout="separated", legs=6),
}
SHAPES = {"vgg16.fc6": (4096, 25088), "4096x4096": (4096, 4096)}


def measure(gen, batch: int) -> dict:
    g = segment(adntn.trace(gen, "layer", batch_size=batch, structure_only=True))
    tot = {k: [0, 0] for k in ("naive", "greedy", "ours")}
    for n in g.nodes:
        if n.op is not Op.EINSUM:
            continue
        terms, out = list(n.attrs.terms), n.attrs.out
        sizes = einsum_sizes(n.attrs, [v.shape for v in n.inputs])
        paths = {"naive": naive_path(len(terms)),
                 "greedy": opt_einsum.paths.greedy(list(map(set, terms)), set(out), sizes),
                 "ours": search_path(terms, out, sizes)}
        for k, p in paths.items():
            c = path_cost(terms, out, sizes, p)
            tot[k][0] += c.flops
            tot[k][1] = max(tot[k][1], c.largest)
    m, f = adntn.plan(gen, batch, "materialize"), adntn.plan(gen, batch, "factored")
    return {**{f"{k}_flops": v[0] for k, v in tot.items()}, **{f"{k}_peak": v[1] for k, v in tot.items()},
            "materialize_flops_per_call": m.flops_per_call, "factored_flops_per_call": f.flops_per_call}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--ranks", type=int, nargs="+", default=[4, 8, 16])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32, 256])
    ap.add_argument("--archs", nargs="+", default=list(CONFIGS))
    ap.add_argument("--out", default="benchmarks/results/contraction_order.json")
    a = ap.parse_args(argv)
    jobs = [(arch, s, r, b) for arch in a.archs for s in SHAPES for r in a.ranks for b in a.batches]
    rows = []
    for arch, s, r, b in tqdm(jobs, desc="networks"):
        gen = adntn.make(arch, SHAPES[s], rank=r, **CONFIGS[arch])
        rows.append(dict(arch=arch, shape=s, rank=r, batch=b, ratio=gen.compression_ratio, **measure(gen, b)))
    print(f"{'arch':<5} {'shape':<10} {'r':>3} {'B':>4} {'ratio':>8} {'naive':>9} {'greedy':>9} {'ours':>9} "
          f"{'naive/ours':>10} {'greedy/ours':>11} {'mat/fact':>9}")
    for x in rows:
        print(f"{x['arch']:<5} {x['shape']:<10} {x['rank']:>3} {x['batch']:>4} {x['ratio']:>7.0f}x "
              f"{x['naive_flops']:>9.2e} {x['greedy_flops']:>9.2e} {x['ours_flops']:>9.2e} "
              f"{x['naive_flops'] / x['ours_flops']:>9.1f}x {x['greedy_flops'] / x['ours_flops']:>10.2f}x "
              f"{x['materialize_flops_per_call'] / x['factored_flops_per_call']:>8.1f}x")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
