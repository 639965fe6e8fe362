"""What the convolution layouts cost in memory: the call program's arena and constant bytes (what `adntn info`
reports) of each bundled conv model, compiled with today's lowering (implicit-GEMM convs in NHWC, Winograd where it
wins, weights packed at load) and with the earlier one (im2col + GEMM, `policy.implicit_conv=False`), and the same
for a small conv net built as a Cortex-M7 C bundle (arena and flash against the board's budget).

    python benchmarks/conv_arena.py [--models resnet18,vgg16_bn,alexnet,mobilenet_v2] [--size 224] [--quick]
        [--out benchmarks/results/conv_arena.json]

No timing: it only compiles, so it may run beside other work.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

import adntn_compiler as adntn
from adntn_compiler.apps import models
from adntn_compiler.backends.tvm.policy import default_policy
from adntn_compiler.targets import resolve

LOWERINGS = {"im2col (before)": dict(implicit_conv=False, winograd=False), "implicit + Winograd": {}}


def cpu_row(name: str, size: int) -> dict:
    model = models.compressed(name, {"alexnet": 2000, "vgg16_bn": 2000}.get(name, 100)).eval()
    x = torch.randn(1, 3, size, size)
    row = dict(model=name, target="cpu", size=size)
    for label, knobs in LOWERINGS.items():
        policy = dataclasses.replace(default_policy(resolve("cpu")), **knobs)
        mem = adntn.compile(model, example_inputs=(x,), policy=policy).info()["memory"]["call"]
        row[label] = dict(arena_bytes=mem["arena_bytes"], const_bytes=mem["const_bytes"])
    return row


def micro_row() -> dict:
    """A small conv net on 1 x 28 x 28 as a Cortex-M7 bundle (arena and flash of the whole bundle)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1),
                        nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16 * 7 * 7, 10)).eval()
    x = torch.randn(1, 1, 28, 28)
    row = dict(model="conv net 1x28x28 (8, 16 channels)", target="cortex-m7", size=28)
    for label, knobs in LOWERINGS.items():
        policy = dataclasses.replace(default_policy(resolve("cortex-m7")), **knobs)
        b = adntn.compile(net, target="cortex-m7", example_inputs=(x,), policy=policy)
        m = b.manifest["memory"]
        row[label] = dict(arena_bytes=m["arena_bytes"], const_bytes=m["weight_bytes"])
    return row


def table(rows: list) -> str:
    lines = [f"{'model':<36} {'target':<10} {'lowering':<20} {'arena bytes':>13} {'constant bytes':>15}", "-" * 98]
    for r in rows:
        for label in LOWERINGS:
            m = r[label]
            lines.append(f"{r['model']:<36} {r['target']:<10} {label:<20} {m['arena_bytes']:>13,} "
                         f"{m['const_bytes']:>15,}")
    return "\n".join(lines)


def main(argv=None) -> list:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet18,vgg16_bn,alexnet,mobilenet_v2")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--quick", action="store_true", help="resnet18 at 32 x 32, no bundle")
    ap.add_argument("--out", default="benchmarks/results/conv_arena.json")
    a = ap.parse_args(argv)
    names, size = (["resnet18"], 32) if a.quick else (a.models.split(","), a.size)
    rows = [cpu_row(n, size) for n in tqdm(names, desc="conv arena")]
    if not a.quick:
        rows.append(micro_row())
    text = table(rows)
    print(text)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(rows=rows), indent=1))
    out.with_suffix(".txt").write_text(text + "\n")
    return rows


if __name__ == "__main__":
    main()
