"""VGG-16 FC6-shaped TTN layer (~18,000x) on the CPU, in one run: torch dense nn.Linear, the generator run
naively by torch eager (build W, then matmul), the optimised plan on the torch backend, and the plan compiled
by the TVM backend (`adntn.compile`, loaded back from its artifact; TVM_NUM_THREADS follows --threads).

    python benchmarks/layer_cpu.py [--threads 1] [--repeats 20] [--out benchmarks/results/layer_cpu.json]
Prints a table of medians and ratios and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

import adntn_compiler as adntn
from adntn_compiler.runtime.timing import median_time

COLD = """
import json, time
t = time.perf_counter()
import adntn_compiler as adntn
t1 = time.perf_counter()
gen = adntn.ttn((4096, 25088), rank=4, layout="interleaved", activation="tanh", seed=0)
gen.cores
t2 = time.perf_counter()
adntn.compile(gen, target="cpu", batch_size=1)
print(json.dumps(dict(import_s=t1 - t, init_s=t2 - t1, compile_s=time.perf_counter() - t2)))
"""


def cold_compile_seconds() -> dict:
    import subprocess
    import sys

    with tempfile.TemporaryDirectory() as cache:
        out = subprocess.run([sys.executable, "-c", COLD], capture_output=True, text=True, check=True,
                             env=dict(os.environ, ADNTN_CACHE=cache))
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32, 256])
    ap.add_argument("--out", default="benchmarks/results/layer_cpu.json")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    os.environ["TVM_NUM_THREADS"] = str(a.threads)  # read when the TVM runtime starts its thread pool
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
            t0 = time.perf_counter()
            exe = adntn.compile(gen, target="cpu", batch_size=b, schedule="auto")
            t_compile = time.perf_counter() - t0
            with tempfile.TemporaryDirectory() as d:
                exe = adntn.load(exe.save(Path(d) / "fc6.adntn"))  # time what ships
            xn = x.numpy()
            err_tvm = float(abs(exe(xn) - F.linear(x, layer.weight).numpy()).max())
            t_dense = median_time(lambda: dense(x), a.repeats)
            t_naive = median_time(lambda: F.linear(x, layer.weight), max(3, a.repeats // 4))
            t_plan = median_time(lambda: run_plan(x), a.repeats)
            t_tvm = median_time(lambda: exe(xn), a.repeats)
            rows.append(dict(batch=b, schedule=p.schedule, dense_s=t_dense, naive_eager_s=t_naive, plan_torch_s=t_plan,
                             compiled_tvm_s=t_tvm, compile_s=t_compile,
                             speedup_vs_dense=t_dense / t_plan, speedup_vs_naive=t_naive / t_plan,
                             tvm_vs_dense=t_dense / t_tvm, tvm_vs_plan_torch=t_plan / t_tvm,
                             flops_per_call=p.flops_per_call, max_abs_err=err, max_abs_err_tvm=err_tvm))
    import tvm

    cold = cold_compile_seconds()
    result = dict(layer="vgg16.fc6 (4096x25088)", cold_compile=cold, generator=repr(gen), ratio=gen.compression_ratio,
                  threads=a.threads, repeats=a.repeats, torch=torch.__version__, tvm=tvm.__version__,
                  cpu=tvm.target.codegen.llvm_get_system_cpu(), rows=rows)
    print(f"{gen!r}: {gen.compression_ratio:,.0f}x, {a.threads} thread(s), medians of {a.repeats}")
    print(f"{'batch':>5} {'schedule':>10} {'dense ms':>9} {'naive ms':>9} {'plan ms':>8} {'tvm ms':>8} "
          f"{'plan/dense':>10} {'tvm/dense':>9} {'tvm/plan':>8} {'compile s':>9}")
    for r in rows:
        print(f"{r['batch']:>5} {r['schedule']:>10} {1e3 * r['dense_s']:>9.3f} {1e3 * r['naive_eager_s']:>9.2f} "
              f"{1e3 * r['plan_torch_s']:>8.3f} {1e3 * r['compiled_tvm_s']:>8.3f} {r['speedup_vs_dense']:>9.1f}x "
              f"{r['tvm_vs_dense']:>8.1f}x {r['tvm_vs_plan_torch']:>7.1f}x {r['compile_s']:>9.1f}")
    print("(speed-ups are time ratios: dense time / plan time etc.; naive = build W with torch eager, then matmul)")
    print(f"cold compile at batch 1 (fresh process, empty contraction-path cache, cores already initialised): "
          f"{cold['compile_s']:.1f} s (import {cold['import_s']:.1f} s, core init {cold['init_s']:.1f} s not counted)")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
