"""Whole bundled networks, compressed (their big layers as ADNTN layers), on this CPU, one thread: the compiled
artifact (saved and loaded back) against torch eager of the same compressed model, torch eager of the dense
model, and torch.compile (Inductor) of the compressed model. Variants interleaved round after round; medians.
Also the compile time, the arena and the flop rate of the compiled model (einsum flops of its call graph).

    python benchmarks/models_cpu.py [--models alexnet,vgg16_bn,resnet18,vit_block] [--batches 1,8] [--no-inductor]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TVM_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

import adntn_compiler as adntn  # noqa: E402
from adntn_compiler.apps import models  # noqa: E402
from adntn_compiler.ir.graph import Op  # noqa: E402

RATIOS = {"alexnet": 2000, "vgg16_bn": 2000, "vgg16": 2000, "resnet18": 100, "vit_block": 200}


def example(name: str, batch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    shape = (batch, 197, 768) if name == "vit_block" else (batch, 3, 64, 64)
    return torch.randn(*shape, generator=g)


def call_flops(exe) -> int:
    """2 x the product of all label sizes of every einsum in the call graph (what the kernels compute)."""
    from adntn_compiler.ir.serialize import from_dict

    g = from_dict(exe.manifest["graphs"]["call"], {k: v for k, v in exe._tensors.items()})
    total = 0
    for n in g.nodes:
        if n.op is Op.EINSUM:
            sizes = {c: s for t, v in zip(n.attrs.terms, n.inputs) for c, s in zip(t, v.shape)}
            total += 2 * math.prod(sizes.values())
    return total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="alexnet,vgg16_bn,resnet18,vit_block")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--no-inductor", action="store_true")
    ap.add_argument("--out", default="benchmarks/results/models_cpu.json")
    a = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    d = Path(tempfile.mkdtemp(prefix="adntn-bench-"))
    for name in tqdm(a.models.split(","), desc="models_cpu"):
        comp = models.compressed(name, RATIOS[name]).eval()
        torch.manual_seed(0)
        dense = models.BUILDERS[name]().eval()
        dense.load_state_dict({k: v for k, v in comp.state_dict().items() if k in dense.state_dict()}, strict=False)
        for batch in map(int, a.batches.split(",")):
            x = example(name, batch)
            t = time.perf_counter()
            exe = adntn.compile(comp, example_inputs=(x,))
            t_compile = time.perf_counter() - t
            exe = adntn.load(exe.save(d / f"{name}_{batch}.adntn"))
            xn = x.numpy()
            with torch.no_grad():
                err = float(np.abs(exe(xn) - comp(x).numpy()).max() / np.abs(comp(x).numpy()).max())
            variants = {"compiled": lambda: exe(xn), "torch eager (compressed)": lambda: comp(x),
                        "torch eager (dense)": lambda: dense(x)}
            t_inductor = None
            if not a.no_inductor:
                t = time.perf_counter()
                ind = torch.compile(comp, dynamic=False)
                with torch.no_grad():
                    ind(x)
                t_inductor = time.perf_counter() - t
                variants["torch.compile (compressed)"] = lambda: ind(x)
            times = {k: [] for k in variants}
            with torch.no_grad():
                for f in variants.values():
                    f()
                for _ in range(a.rounds):
                    for k, f in variants.items():
                        s = time.perf_counter()
                        f()
                        times[k].append(time.perf_counter() - s)
            med = {k: statistics.median(v) for k, v in times.items()}
            mem = exe.info()["memory"]["call"]
            fl = call_flops(exe)
            rows.append(dict(model=name, batch=batch, ratio=RATIOS[name], compile_s=t_compile,
                             inductor_compile_s=t_inductor, max_rel_error=err, median_s=med,
                             speedup_vs_eager=med["torch eager (compressed)"] / med["compiled"],
                             speedup_vs_dense=med["torch eager (dense)"] / med["compiled"],
                             arena_bytes=mem["arena_bytes"], unshared_bytes=mem["unshared_bytes"], gflops=fl / 1e9,
                             gflop_per_s=fl / med["compiled"] / 1e9,
                             params=sum(p.numel() for p in comp.parameters()),
                             dense_params=sum(p.numel() for p in dense.parameters())))
    cols = ["compiled", "torch eager (compressed)", "torch eager (dense)"] + ([] if a.no_inductor else
                                                                             ["torch.compile (compressed)"])
    head = (f"{'model':<10} {'batch':>5} {'params':>11} {'dense':>11} " + " ".join(f"{c[:24]:>24}" for c in cols) +
            f" {'vs eager':>8} {'vs dense':>8} {'GFLOP/s':>8} {'arena':>9} {'no reuse':>9} {'compile':>8}")
    lines = [f"one thread, medians of {a.rounds} interleaved rounds (ms); arena / no reuse: call-graph buffers (MB)",
             head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['model']:<10} {r['batch']:>5} {r['params']:>11,} {r['dense_params']:>11,} " +
                     " ".join(f"{1e3 * r['median_s'][c]:>24.2f}" for c in cols) +
                     f" {r['speedup_vs_eager']:>7.2f}x {r['speedup_vs_dense']:>7.2f}x {r['gflop_per_s']:>8.1f} "
                     f"{r['arena_bytes'] / 2**20:>9.1f} {r['unshared_bytes'] / 2**20:>9.1f} {r['compile_s']:>7.1f}s")
    text = "\n".join(lines)
    print(text)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from adntn_compiler.targets import resolve

    out.write_text(json.dumps(dict(rows=rows, target=resolve("cpu").to_dict()), indent=1, default=str))
    out.with_suffix(".txt").write_text(text + "\n")


if __name__ == "__main__":
    main()
