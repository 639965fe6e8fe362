"""VGG-16 FC6-shaped TTN layer (~18,000x) on the CPU, in one run: torch dense nn.Linear, the generator run
naively by torch eager (build W, then matmul), and the optimised plan on the torch backend.

    python benchmarks/layer_cpu.py [--threads 1] [--repeats 20] [--out benchmarks/results/layer_cpu.json]
Prints a table of medians and ratios and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

import adntn_compiler as adntn


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32, 256])
    ap.add_argument("--out", default="benchmarks/results/layer_cpu.json")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    gen = adntn.ttn((4096, 25088), rank=4, layout="interleaved", activation="tanh", seed=0)
    layer = adntn.ADNTNLinear(gen, bias=False)
    dense = torch.nn.Linear(25088, 4096, bias=False)
    rows = []
    with torch.no_grad():
        for b in tqdm(a.batches, desc="batch sizes"):
            x = torch.randn(b, 25088)
            p = adntn.plan(gen, batch_size=b, schedule="auto")
            run_plan = p.torch_callable(torch.float32)
            err = float((run_plan(x) - F.linear(x, layer.weight)).abs().max())
            t_dense = median_time(lambda: dense(x), a.repeats)
            t_naive = median_time(lambda: F.linear(x, layer.weight), max(3, a.repeats // 4))
            t_plan = median_time(lambda: run_plan(x), a.repeats)
            rows.append(dict(batch=b, schedule=p.schedule, dense_s=t_dense, naive_eager_s=t_naive, plan_torch_s=t_plan,
                             speedup_vs_dense=t_dense / t_plan, speedup_vs_naive=t_naive / t_plan,
                             flops_per_call=p.flops_per_call, max_abs_err=err))
    result = dict(layer="vgg16.fc6 (4096x25088)", generator=repr(gen), ratio=gen.compression_ratio,
                  threads=a.threads, repeats=a.repeats, torch=torch.__version__, rows=rows)
    print(f"{gen!r}: {gen.compression_ratio:,.0f}x, {a.threads} thread(s), medians of {a.repeats}")
    print(f"{'batch':>5} {'schedule':>10} {'dense ms':>9} {'naive ms':>9} {'plan ms':>8} {'vs dense':>9} {'vs naive':>9}")
    for r in rows:
        print(f"{r['batch']:>5} {r['schedule']:>10} {1e3 * r['dense_s']:>9.3f} {1e3 * r['naive_eager_s']:>9.2f} "
              f"{1e3 * r['plan_torch_s']:>8.3f} {r['speedup_vs_dense']:>8.1f}x {r['speedup_vs_naive']:>8.1f}x")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
