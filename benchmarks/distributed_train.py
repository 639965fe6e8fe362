"""Distillation on several processes: the time per epoch of `adntn.train.distill` on Fashion-MNIST (an MLP
784-4096-10 whose FC1 is a ttn at ~2,000x, distilled from the dense MLP) as one process and under
`torchrun --nproc_per_node N` (gloo, one thread per process), interleaved round by round (this VM drifts); medians.
The N-process run follows the one-process trajectory (tests/test_distributed.py), so only time differs.

    python benchmarks/distributed_train.py [--procs 2] [--samples 12000] [--batches 128 512] [--rounds 3] [--quick]
Writes benchmarks/results/distributed_train.{json,txt}.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def job(samples: int, batch: int, out: str) -> None:
    """One epoch of distillation (run as one process or by torchrun); rank 0 writes its seconds."""
    import torch

    import adntn_compiler as adntn
    from adntn_compiler.training.distributed import world

    torch.manual_seed(0)
    d = adntn.data.fashion_mnist()
    x, y = d.x_train[:samples].flatten(1), d.y_train[:samples]
    mlp = lambda: torch.nn.Sequential(torch.nn.Linear(784, 4096), torch.nn.ReLU(), torch.nn.Linear(4096, 10))  # noqa
    teacher = mlp().eval()
    student = adntn.compress(mlp(), {"0": dict(arch="ttn", ratio=2000)})
    res = adntn.train.distill(student, teacher, (x, y), epochs=1, batch_size=batch, progress=False)
    if world().rank == 0:
        Path(out).write_text(json.dumps(dict(epoch_s=res.epoch_s[0], loss=res.losses[0])))


def run(procs: int, samples: int, batch: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp, "r.json")
        launch = [sys.executable] if procs == 1 else \
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs)]
        env = dict(os.environ, OMP_NUM_THREADS="1", TVM_NUM_THREADS="1")
        t = time.perf_counter()
        subprocess.run([*launch, __file__, "--job", str(out), "--samples", str(samples),
                        "--batch", str(batch)], check=True, env=env)
        return dict(json.loads(out.read_text()), wall_s=time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--samples", type=int, default=12000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batches", type=int, nargs="+", default=[128, 512], help="global batch sizes")
    ap.add_argument("--quick", action="store_true", help="a smoke run: 1,024 samples, one round")
    ap.add_argument("--job", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=128, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.job:
        return job(a.samples, a.batch, a.job)
    samples, rounds, batches = (1024, 1, [128]) if a.quick else (a.samples, a.rounds, a.batches)
    variants = [(b, p) for b in batches for p in (1, a.procs)]
    times: dict[tuple, list[dict]] = {v: [] for v in variants}
    for _ in range(rounds):
        for b, p in variants:
            times[b, p].append(run(p, samples, b))
    rows = [dict(batch=b, procs=p, epoch_s=statistics.median(r["epoch_s"] for r in times[b, p]),
                 loss=times[b, p][0]["loss"]) for b, p in variants]
    one = {r["batch"]: r["epoch_s"] for r in rows if r["procs"] == 1}
    lines = [f"distill, Fashion-MNIST {samples:,} samples, MLP 784-4096-10 (FC1 ttn ~2,000x), one epoch, "
             f"medians of {rounds} interleaved rounds, {os.cpu_count()} cores, one thread per process",
             f"{'batch':>6} {'processes':>10} {'s/epoch':>10} {'speed-up':>9} {'epoch loss':>11}"]
    lines += [f"{r['batch']:>6} {r['procs']:>10} {r['epoch_s']:>10.2f} {one[r['batch']] / r['epoch_s']:>8.2f}x "
              f"{r['loss']:>11.4f}" for r in rows]
    text = "\n".join(lines)
    print(text)
    if not a.quick:
        (HERE / "results").mkdir(exist_ok=True)
        (HERE / "results/distributed_train.txt").write_text(text + "\n")
        (HERE / "results/distributed_train.json").write_text(json.dumps(dict(samples=samples, rounds=rounds,
                                                                             rows=rows), indent=1))


if __name__ == "__main__":
    main()
