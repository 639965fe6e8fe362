"""One training step (forward, backward, Adam step) of a VGG-16 FC6-shaped TTN layer at batch 32, in one run:
torch eager autograd over the optimised layer program (ADNTNLinear, backend="torch"), the naive eager form
(build W with torch, then F.linear), and the compiled TVM forward/backward programs (backend="tvm"). The input
x needs no gradient (the layer is the first of a network); the "+xgrad" rows repeat torch eager and compiled
with x.requires_grad (a layer deeper in a network: grad x is computed too).

Each variant lives in its own process, so its peak memory is its own: the resident-set high-water mark
(VmHWM, reset through /proc/self/clear_refs after the warm-up) minus the resident set at that point, i.e. the
extra memory the steps needed. The timed steps run interleaved: round after round, each process runs a few
steps in turn (the order rotating), so a machine whose speed drifts over minutes (shared VMs do: the same
code measured 55 and 82 ms a few minutes apart) slows every variant alike. Reported: the median step over all
rounds, and the range of the per-round speedups.

    python benchmarks/train_step.py [--threads 1] [--rounds 6] [--steps 5] [--batch 32]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, os, sys, time
import torch
import torch.nn.functional as F
import adntn_compiler as adntn

variant, batch, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
xgrad = variant.endswith("+xgrad")
kind = variant.removesuffix("+xgrad")
torch.set_num_threads(threads)
torch.manual_seed(0)
gen = adntn.ttn((4096, 25088), rank=4, layout="interleaved", activation="tanh", seed=0)
layer = adntn.ADNTNLinear(gen, bias=True, backend="tvm" if kind == "compiled_tvm" else "torch")
fwd = (lambda x: F.linear(x, layer.weight, layer.bias)) if kind == "naive_eager" else layer
opt = torch.optim.Adam(layer.parameters(), lr=1e-3)
x, target = torch.randn(batch, 25088).requires_grad_(xgrad), torch.randn(batch, 4096)

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
losses = []
print("ready", flush=True)
for line in sys.stdin:  # "n": run n steps and answer their times; "0": answer the summary and stop
    n = int(line)
    if n == 0:
        break
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        losses.append(step())
        ts.append(time.perf_counter() - t)
    print(json.dumps(ts), flush=True)
print(json.dumps(dict(variant=variant, first_step_s=first, peak_extra_bytes=status("VmHWM:") - base,
                      losses=losses)), flush=True)
"""

VARIANTS = ("torch_eager", "naive_eager", "compiled_tvm", "torch_eager+xgrad", "compiled_tvm+xgrad")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--steps", type=int, default=5, help="steps per variant per round (the naive form: 1)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--out", default="benchmarks/results/train_step.json")
    a = ap.parse_args(argv)
    env = dict(os.environ, TVM_NUM_THREADS=str(a.threads), OMP_NUM_THREADS=str(a.threads))
    procs = {}
    for v in VARIANTS:  # one at a time: a compiling process would slow the others' warm-up
        p = subprocess.Popen([sys.executable, "-c", CHILD, v, str(a.batch), str(a.threads)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        if p.stdout.readline().strip() != "ready":
            raise SystemExit(f"{v} failed:\n{p.stderr.read()}")
        procs[v] = p

    def ask(v: str, n: int):
        procs[v].stdin.write(f"{n}\n")
        procs[v].stdin.flush()
        line = procs[v].stdout.readline()
        if not line:
            raise SystemExit(f"{v} failed:\n{procs[v].stderr.read()}")
        return json.loads(line)

    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    rounds: list[dict[str, float]] = []
    for r in range(a.rounds):
        order = VARIANTS[r % len(VARIANTS):] + VARIANTS[:r % len(VARIANTS)]
        med = {}
        for v in order:
            ts = ask(v, 1 if v == "naive_eager" else a.steps)
            times[v] += ts
            med[v] = statistics.median(ts)
        rounds.append(med)
        print(f"  round {r + 1}: " + ", ".join(f"{v} {1e3 * med[v]:.1f} ms" for v in VARIANTS), file=sys.stderr)
    rows = [dict(ask(v, 0), median_s=statistics.median(times[v]), step_s=times[v]) for v in VARIANTS]
    for p in procs.values():
        p.wait()
    lines = [f"VGG-16 FC6 TTN rank 4 interleaved (~18,000x), batch {a.batch}, {a.threads} thread(s), {a.rounds} "
             f"interleaved rounds of {a.steps} steps (forward + backward + Adam); median step",
             f"{'variant':<18} {'step ms':>9} {'vs eager':>9} {'per round':>13} {'peak extra MiB':>15} "
             f"{'first step s':>13}"]
    for r in rows:
        base = "torch_eager+xgrad" if r["variant"].endswith("+xgrad") else "torch_eager"  # same x
        r["speedup_vs_torch_eager"] = statistics.median(times[base]) / r["median_s"]
        per = [rd[base] / rd[r["variant"]] for rd in rounds]
        r["speedup_per_round"] = per
        lines.append(f"{r['variant']:<18} {1e3 * r['median_s']:>9.1f} {r['speedup_vs_torch_eager']:>8.2f}x "
                     f"{min(per):>5.2f}-{max(per):.2f}x {r['peak_extra_bytes'] / 2**20:>15.1f} "
                     f"{r['first_step_s']:>13.1f}")
    print("\n".join(lines))
    result = dict(layer="vgg16.fc6 (4096x25088) ttn rank 4 interleaved", batch=a.batch, threads=a.threads,
                  rounds=a.rounds, steps_per_round=a.steps, rows=rows)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1))
    Path(a.out).with_suffix(".txt").write_text("\n".join(lines) + "\n")
    return result


if __name__ == "__main__":
    main()
