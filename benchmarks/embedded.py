"""The VGG-16 classifier head and its FC6 alone, compressed (the demo's VGG16_HEAD_SPECS: 8,682 generator
parameters for the three layers, 123.6 M dense), as runtime-free C
bundles for arm64, Cortex-M4 and Cortex-M7, run under qemu: flash and RAM of the linked model code (the cross
toolchain's `size` of libadntn_model.a), the estimate the board budget was checked against, kernels and calls,
instructions per inference, and the error against the reference interpreter. The dense layers cannot be built
for these boards at all; their row gives what they would need.

Instruction counts are emulated (no caches, no wait states; the same every run): exact trace counts on arm64,
icount + the MPS2 board timer on Cortex-M (within 0.2 % of the trace count). They are not cycle counts.

    python benchmarks/embedded.py [--targets arm64,cortex-m4,cortex-m7] [--ram 512KiB --flash 1MiB]

A second table trades RAM for flops: FC6 on the Cortex-M7 under RAM budgets from --sweep (the recompute
schedule's tiles share more of what they generate when they may be larger). A third (--calls) builds the same
bundles with straight-line kernel calls and with a loop over a call table (`policy.call_table`, what the qemu
tuner chooses): code, flash and instructions of each.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

import adntn_compiler as adntn
from adntn_compiler.apps.models import VGG16_HEAD_SPECS, compressed_vgg16_head, vgg16_head
from adntn_compiler.memory import fmt_bytes


def fc6():
    from torch import nn

    from adntn_compiler.training.compress import compress

    return compress(nn.Sequential(nn.Linear(25088, 4096)), {"0": dict(VGG16_HEAD_SPECS["0"], seed=0)}).eval()


MODELS = {"fc6": fc6, "vgg16_head": compressed_vgg16_head}
DENSE = {"fc6": (25088 * 4096 + 4096, 2 * 25088 * 4096),
         "vgg16_head": (sum(p.numel() for p in vgg16_head().parameters()),
                        2 * (25088 * 4096 + 4096 * 4096 + 4096 * 1000))}


def run_one(name: str, target: str, budget: dict, call_table: bool = False) -> dict:
    from dataclasses import replace

    from adntn_compiler.backends.tvm.policy import default_policy
    from adntn_compiler.targets import resolve

    model = MODELS[name]()
    t = time.perf_counter()
    policy = replace(default_policy(resolve(target)), call_table=call_table)
    b = adntn.compile(model, target=target, policy=policy, records=None, **budget)
    compile_s = time.perf_counter() - t
    x = np.random.default_rng(0).standard_normal(b.input_shape).astype(np.float32)
    t = time.perf_counter()
    y = b(x)
    emulated_s = time.perf_counter() - t
    ref = b.reference(x)
    size, mem = b.size(), b.manifest["memory"]
    layers = [lay for lay in b.manifest["layers"] if lay["kind"] == "adntn"]
    return dict(
        model=name, target=target, budget=budget, schedules=[lay["schedule"] for lay in layers],
        params=(sum(lay["params"] for lay in layers)
                + int(sum(p.numel() for n, p in model.named_parameters() if "bias" in n))),
        flash_bytes=size["model_flash_bytes"], ram_bytes=size["model_ram_bytes"], code_bytes=size["code_bytes"],
        weight_bytes=mem["weight_bytes"], arena_bytes=mem["arena_bytes"], workspace_bytes=mem["workspace_bytes"],
        unshared_bytes=mem["unshared_bytes"], kernels=len(b.manifest["kernels"]), calls=b.manifest["calls"],
        flops=int(sum(lay.get("flops_per_call", 0) for lay in layers)), instructions=b.instructions(x),
        rel_error=float(np.abs(y - ref).max() / np.abs(ref).max()), compile_s=compile_s, emulated_s=emulated_s,
        call_table=call_table)


def table(rows: list[dict]) -> str:
    head = ("| model | target | schedules | flash (linked) | of it weights | RAM (linked) | arena w/o reuse | kernels "
            "| calls | MFLOP | instructions | instr/flop | rel. error |")
    out = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        out.append(f"| {r['model']} | {r['target']} | {'/'.join(sorted(set(r['schedules'])))} | "
                   f"{fmt_bytes(r['flash_bytes'])} | {fmt_bytes(r['weight_bytes'])} | {fmt_bytes(r['ram_bytes'])} | "
                   f"{fmt_bytes(r['unshared_bytes'])} | {r['kernels']} | {r['calls']:,} | {r['flops'] / 1e6:.1f} | "
                   f"{r['instructions']:,} | {r['instructions'] / max(r['flops'], 1):.2f} | {r['rel_error']:.1e} |")
    for name, (params, flops) in DENSE.items():
        out.append(f"| {name} dense | any | - | {fmt_bytes(4 * params)} | {fmt_bytes(4 * params)} | - | - | - | - | "
                   f"{flops / 1e6:.1f} | does not fit | - | - |")
    return "\n".join(out)


def sweep_table(rows: list[dict]) -> str:
    out = ["| FC6 on cortex-m7, RAM budget | schedule | RAM (linked) | flash (linked) | calls | MFLOP | instructions |",
           "|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['budget']['ram_bytes']} | {'/'.join(sorted(set(r['schedules'])))} | "
                   f"{fmt_bytes(r['ram_bytes'])} | {fmt_bytes(r['flash_bytes'])} | {r['calls']:,} | "
                   f"{r['flops'] / 1e6:.1f} | {r['instructions']:,} |")
    return "\n".join(out)


def calls_table(rows: list[dict]) -> str:
    out = ["| model | target | calls | straight-line: code | flash | instructions | call table: code | flash | "
           "instructions | code saved | instructions added |", "|" + "---|" * 11]
    for a, b in zip(rows[::2], rows[1::2]):
        out.append(f"| {a['model']} | {a['target']} | {a['calls']:,} | {fmt_bytes(a['code_bytes'])} | "
                   f"{fmt_bytes(a['flash_bytes'])} | {a['instructions']:,} | {fmt_bytes(b['code_bytes'])} | "
                   f"{fmt_bytes(b['flash_bytes'])} | {b['instructions']:,} | "
                   f"{1 - b['code_bytes'] / a['code_bytes']:.0%} | "
                   f"{b['instructions'] / a['instructions'] - 1:+.2%} |")
    return "\n".join(out)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    labels = [f"{r['model']}\n{r['target']}" for r in rows] + [f"{n}\ndense" for n in DENSE]
    flash = [r["flash_bytes"] for r in rows] + [4 * p for p, _ in DENSE.values()]
    ram = [r["ram_bytes"] for r in rows] + [0 for _ in DENSE]
    xs = np.arange(len(labels))
    ax.bar(xs - 0.2, flash, 0.4, label="flash (weights + code)")
    ax.bar(xs + 0.2, ram, 0.4, label="RAM (arena)")
    ax.set_yscale("log")
    ax.axhline(1 << 20, color="grey", ls="--", lw=1)
    ax.text(len(labels) - 0.5, 1.1 * (1 << 20), "1 MiB", ha="right", color="grey")
    ax.set_xticks(xs, labels, fontsize=7)
    ax.set_ylabel("bytes")
    ax.set_title("VGG-16 head on embedded targets: linked size of the compiled bundle vs the dense weights")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="fc6,vgg16_head")
    ap.add_argument("--targets", default="arm64,cortex-m4,cortex-m7")
    ap.add_argument("--ram", default="512KiB", help="board RAM budget of the Cortex-M targets")
    ap.add_argument("--flash", default="1MiB", help="board flash budget of the Cortex-M targets")
    ap.add_argument("--sweep", default="384KiB,512KiB,1MiB,2MiB", help="RAM budgets for FC6 on cortex-m7 ('' skips)")
    ap.add_argument("--calls", default="vgg16_head:cortex-m7,fc6:cortex-m7",
                    help="model:target pairs built with straight-line calls and with a call table ('' skips)")
    ap.add_argument("--out", default="benchmarks/results/embedded.json")
    a = ap.parse_args(argv)
    jobs = [(m, t, dict(ram_bytes=a.ram, flash_bytes=a.flash) if t.startswith("cortex-m") else {})
            for m in a.models.split(",") for t in a.targets.split(",")]
    jobs += [("fc6", "cortex-m7", dict(ram_bytes=r, flash_bytes=a.flash)) for r in a.sweep.split(",") if r]
    rows = []
    for m, t, budget in tqdm(jobs, desc="embedded"):
        try:
            rows.append(run_one(m, t, budget))
        except adntn.MemoryEstimateError as e:  # a budget too small: the refusal is the result
            rows.append(dict(model=m, target=t, budget=budget, refused=str(e)))
    sweep = rows[len(jobs) - len([r for r in a.sweep.split(",") if r]):]
    rows = rows[: len(rows) - len(sweep)]
    pairs = [tuple(p.split(":")) for p in a.calls.split(",") if p]
    calls = [run_one(m, t, dict(ram_bytes=a.ram, flash_bytes=a.flash) if t.startswith("cortex-m") else {}, table)
             for m, t in tqdm(pairs, desc="call tables") for table in (False, True)]
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "sweep": sweep, "calls": calls}, indent=1))
    text = table(rows) + "\n\n" + sweep_table([r for r in sweep if "refused" not in r])
    text += "\n\n" + calls_table(calls) if calls else ""
    text += "".join(f"\n\nrefused at RAM {r['budget']['ram_bytes']}: {r['refused']}" for r in sweep if "refused" in r)
    out.with_suffix(".txt").write_text(text + "\n")
    plot(rows, out.with_suffix(".png"))
    print(text)
    return rows


if __name__ == "__main__":
    main()
