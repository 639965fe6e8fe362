"""fit_weight on a low-rank-plus-noise target of FC7 shape: ttn against tt with the same parameter budget.

    python benchmarks/fit_weight.py [--shape 4096 4096] [--ratio 2000] [--steps 300]

Target: W = U V^T / sqrt(r) + noise (rank r = 16, noise at 10% of the signal's norm), scaled like a dense
layer. Prints the final relative error per architecture, writes JSON and a PNG of the loss curves.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import adntn_compiler as adntn
from adntn_compiler.training.train import fit_weight, plot_losses, same_budget


def target(shape, rank=16, noise=0.1, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    low = rng.standard_normal((shape[0], rank)) @ rng.standard_normal((rank, shape[1])) / np.sqrt(rank)
    W = low + noise * np.linalg.norm(low) / np.sqrt(low.size) * rng.standard_normal(shape)
    return W / np.sqrt(3 * shape[1]) / W.std()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--shape", type=int, nargs=2, default=[4096, 4096])
    ap.add_argument("--ratio", type=float, default=2000)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/results/fit_weight.json")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    shape = tuple(a.shape)
    W = target(shape)
    gens = {}
    for layout in ("separated", "interleaved"):
        gens[f"ttn/{layout}"] = adntn.make("ttn", shape, **adntn.config_for_ratio(shape, "ttn", a.ratio, layout=layout))
    budget = min(g.num_params for g in gens.values())
    gens["tt/interleaved"] = same_budget(shape, "tt", budget, layout="interleaved")
    gens["tt/separated"] = same_budget(shape, "tt", budget, layout="separated")
    gens["lowrank"] = same_budget(shape, "lowrank", budget)
    results, rows = {}, []
    for name, gen in gens.items():
        t = time.perf_counter()
        res = fit_weight(gen, W, steps=a.steps, lr=a.lr)
        results[name] = res
        rows.append(dict(name=name, params=gen.num_params, ratio=gen.compression_ratio, config=gen.config,
                         rel_error=res.rel_error, seconds=time.perf_counter() - t))
        print(f"{name:<16} {gen.num_params:>7,} params {gen.compression_ratio:>8,.0f}x  "
              f"relative error {res.rel_error:.4f}  ({rows[-1]['seconds']:.0f} s)")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(shape=shape, steps=a.steps, lr=a.lr, rows=rows), indent=1, default=str))
    plot_losses(results, str(out.with_suffix(".png")))
    return rows


if __name__ == "__main__":
    main()
