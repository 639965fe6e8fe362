"""One training step (forward, backward, Adam step) of a VGG-16 FC6-shaped TTN layer at batch 32, in one run:
torch eager autograd over the optimised layer program (ADNTNLinear, backend="torch"), the naive eager form
(build W with torch, then F.linear), and the compiled TVM forward/backward programs (backend="tvm").

Each variant runs in its own fresh process, so its peak memory is its own: the resident-set high-water mark
(VmHWM, reset through /proc/self/clear_refs just before the timed steps) minus the resident set at that
point, i.e. the extra memory the steps needed.

    python benchmarks/train_step.py [--threads 1] [--steps 10] [--batch 32]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, os, statistics, sys, time
import torch
import torch.nn.functional as F
import adntn_compiler as adntn

variant, batch, steps, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
torch.manual_seed(0)
gen = adntn.ttn((4096, 25088), rank=4, layout="interleaved", activation="tanh", seed=0)
layer = adntn.ADNTNLinear(gen, bias=True, backend="tvm" if variant == "compiled_tvm" else "torch")
fwd = (lambda x: F.linear(x, layer.weight, layer.bias)) if variant == "naive_eager" else layer
opt = torch.optim.Adam(layer.parameters(), lr=1e-3)
x, target = torch.randn(batch, 25088), torch.randn(batch, 4096)

def step():
    opt.zero_grad()
    loss = F.mse_loss(fwd(x), target)
    loss.backward()
    opt.step()
    return float(loss)

t = time.perf_counter()
step()  # compiles the TVM programs for this batch size (backend="tvm")
first = time.perf_counter() - t
step()

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024

with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the high-water mark
base = status("VmRSS:")
ts, losses = [], []
for _ in range(steps):
    t = time.perf_counter()
    losses.append(step())
    ts.append(time.perf_counter() - t)
print(json.dumps(dict(variant=variant, median_s=statistics.median(ts), first_step_s=first,
                      peak_extra_bytes=status("VmHWM:") - base, losses=losses)))
"""

VARIANTS = ("torch_eager", "naive_eager", "compiled_tvm")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--out", default="benchmarks/results/train_step.json")
    a = ap.parse_args(argv)
    env = dict(os.environ, TVM_NUM_THREADS=str(a.threads), OMP_NUM_THREADS=str(a.threads))
    rows = []
    for v in VARIANTS:
        out = subprocess.run([sys.executable, "-c", CHILD, v, str(a.batch), str(a.steps), str(a.threads)],
                             capture_output=True, text=True, env=env)
        if out.returncode:
            raise SystemExit(f"{v} failed:\n{out.stderr}")
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"  {v}: {1e3 * rows[-1]['median_s']:.1f} ms", file=sys.stderr)
    base = rows[0]
    print(f"VGG-16 FC6 TTN rank 4 interleaved (~18,000x), batch {a.batch}, {a.threads} thread(s), "
          f"median of {a.steps} steps (forward + backward + Adam)")
    print(f"{'variant':<14} {'step ms':>9} {'vs eager':>9} {'peak extra MiB':>15} {'first step s':>13}")
    for r in rows:
        r["speedup_vs_torch_eager"] = base["median_s"] / r["median_s"]
        print(f"{r['variant']:<14} {1e3 * r['median_s']:>9.1f} {r['speedup_vs_torch_eager']:>8.2f}x "
              f"{r['peak_extra_bytes'] / 2**20:>15.1f} {r['first_step_s']:>13.1f}")
    result = dict(layer="vgg16.fc6 (4096x25088) ttn rank 4 interleaved", batch=a.batch, threads=a.threads,
                  steps=a.steps, rows=rows)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
