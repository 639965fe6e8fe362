"""Compression quality on Fashion-MNIST: an MLP 784-4096-10 whose FC1 (784 -> 4096) is generated at ~2,000x.

One recipe for every row (`adntn.train.train_classifier`'s defaults: Adam 1e-3, 5 % linear warm-up then cosine
decay to 0, batch 128), several seeds, test accuracy on the 10,000 test images after every epoch. Rows:
- logistic: a linear classifier on the raw pixels (no hidden layer): what a compressed FC1 must beat;
- dense: the MLP itself;
- tt: the linear tensor train at ~2,000x (`compress(..., ratio=2000)`);
- ttn: the nonlinear tree at ~2,000x, as `compress(..., ratio=2000)` picks it (4 interleaved legs, rank 6);
- ttn-binary: the configuration the ratio search picked first (binary legs, rank 6), kept as a row; ttn-5legs (opt
  in): the pick before the search broke near-ties by speed (5 interleaved legs, ~10x slower per epoch);
- mera at ~2,000x (`compress` picks it); attn (opt in);
- lowrank: U V^T at rank 1, 658x (no rank reaches 2,000x on 784 -> 4096); narrow: a dense 784-h-10 MLP with the
  ttn model's total parameter count (h = 59);
- ttn-frozen: the ttn left at its random init (cores, scale and bias not trained, only FC2): a control that must
  lose, or the trained layer has learned nothing;
- recipe options on the ttn (`--rows` opts in): ttn+bn (batch norm after FC1, `compress`'s norm="batch"),
  ttn+drop (dropout 0.2 after the ReLU), ttn+wd (`weight_decay` on the generated weight), ttn+bn+corelr (batch
  norm and the cores at learning rate 3e-3; tt+bn+corelr the same on tt); dense+aug, tt+aug, ttn+aug train on
  augmented batches (`augment_images()`: random shifts of up to 2 pixels, horizontal flips);
- what the nonlinearity does (`--rows` opts in): ttn-identity is the same tree as ttn with activation="identity"
  (a linear tree tensor network, the same parameters); ttn-5000, tt-5000, ttn-identity-5000 and the -20000 rows
  are FC1 at ~5,000x and ~20,000x, as `compress(..., ratio=)` picks them;
- from the trained dense model (`--rows` opts in): the seed's dense row (trained with the same recipe and epochs,
  cached as safetensors) is the teacher. +fit rows start from it, FC1 compressed and its cores fitted to the dense
  FC1's outputs on the first 4,096 training images (`init_from_data`), FC2 and FC1's bias kept; +kd rows are
  distilled from its logits (`adntn.train.distill`, KL at T=4 weight 0.9 plus 0.1 cross-entropy), as mnist1d's.

    python benchmarks/quality_fmnist.py [--epochs 8] [--seeds 0 1 2] [--samples 12000] [--rows ttn tt]
                                        [--json benchmarks/results/quality_fmnist.json] [--plot PNG] [--merge a.json]

Runs are appended to the JSON as each finishes (a rerun skips what is there; parts run in parallel processes
merge with --merge), then the markdown table is printed and the plot (accuracy per row, and per epoch) written.
Each run of a generated FC1 also records `activations`: `adntn.activation_usage` of the trained layer.
"""
from __future__ import annotations

import argparse
import copy
import inspect
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from quality import FIT_SIGNALS, LINEAR_TWIN, accuracy, count, pairs_table, save_teacher_model, teachers_dir  # noqa: E402

import adntn_compiler as adntn  # noqa: E402
from adntn_compiler.training.data import augment_images  # noqa: E402
from adntn_compiler.training.sensitivity import init_from_data  # noqa: E402
from adntn_compiler.training.train import distill, train_classifier  # noqa: E402

RATIO = 2000
# name -> (FC1's compress spec or None for a dense FC1, extra options); the model is always 784-4096-10
ROWS = {
    "logistic": None,
    "dense": dict(),
    "tt": dict(spec=dict(arch="tt", ratio=RATIO)),
    "ttn-binary": dict(spec=dict(arch="ttn", layout="binary", rank=6)),  # the old search's pick at 2,000x
    "ttn-5legs": dict(spec=dict(arch="ttn", layout="interleaved", legs=5, rank=6)),  # the pick before the speed rule
    "ttn": dict(spec=dict(arch="ttn", ratio=RATIO)),
    "attn": dict(spec=dict(arch="attn", ratio=RATIO)),
    "mera": dict(spec=dict(arch="mera", ratio=RATIO)),
    "lowrank": dict(spec=dict(arch="lowrank", rank=1)),  # rank 1 is 658x: no low-rank layer reaches 2,000x here
    "narrow": dict(narrow=True),  # 784-h-10 dense, h chosen for the ttn model's total parameter count
    "ttn-frozen": dict(spec=dict(arch="ttn", ratio=RATIO), frozen=True),
    "ttn+bn": dict(spec=dict(arch="ttn", ratio=RATIO, norm="batch")),
    "ttn+drop": dict(spec=dict(arch="ttn", ratio=RATIO), dropout=0.2),
    "ttn+wd": dict(spec=dict(arch="ttn", ratio=RATIO), weight_decay=1e-4),
    "ttn+bn+corelr": dict(spec=dict(arch="ttn", ratio=RATIO, norm="batch"), train=dict(core_lr=3e-3)),
    "tt+bn+corelr": dict(spec=dict(arch="tt", ratio=RATIO, norm="batch"), train=dict(core_lr=3e-3)),
    # augmented batches (shifts of up to 2 pixels, horizontal flips), on every model
    "dense+aug": dict(train=dict(augment=augment_images())),
    "tt+aug": dict(spec=dict(arch="tt", ratio=RATIO), train=dict(augment=augment_images())),
    "ttn+aug": dict(spec=dict(arch="ttn", ratio=RATIO), train=dict(augment=augment_images())),
    # what the nonlinearity does: the same tree made linear, and FC1 at higher ratios
    "ttn-identity": dict(spec=dict(LINEAR_TWIN, ratio=RATIO)),
    "ttn-5000": dict(spec=dict(arch="ttn", ratio=5000)),
    "tt-5000": dict(spec=dict(arch="tt", ratio=5000)),
    "ttn-identity-5000": dict(spec=dict(LINEAR_TWIN, ratio=5000)),
    "ttn-20000": dict(spec=dict(arch="ttn", ratio=20000)),
    "tt-20000": dict(spec=dict(arch="tt", ratio=20000)),
    "ttn-identity-20000": dict(spec=dict(LINEAR_TWIN, ratio=20000)),
    # from the trained dense model of the seed: FC1's cores fitted to its outputs, then trained or distilled
    **{f"{name}{how}": dict(base, **{k: True for k in how.split("+")[1:]})
       for name, base in (("ttn", dict(spec=dict(arch="ttn", ratio=RATIO))),
                         ("tt", dict(spec=dict(arch="tt", ratio=RATIO))),
                         ("ttn-identity", dict(spec=dict(LINEAR_TWIN, ratio=RATIO))))
       for how in ("+fit", "+kd", "+fit+kd")},
}
DEFAULT_ROWS = ("logistic", "dense", "tt", "lowrank", "narrow", "ttn-binary", "ttn", "mera", "ttn-frozen")


def narrow_width() -> int:
    """Hidden width h of a dense 784-h-10 MLP with the trainable parameters of the ttn row's model."""
    return round((count(build("ttn", 0), trainable=True) - 10) / (784 + 1 + 10))


def build(row: str, seed: int) -> nn.Module:
    opt = ROWS[row]
    hidden = narrow_width() if opt and opt.get("narrow") else 4096
    torch.manual_seed(seed)
    if opt is None:
        return nn.Sequential(nn.Linear(784, 10))
    drop = [nn.Dropout(opt["dropout"])] if opt.get("dropout") else []
    model = nn.Sequential(nn.Linear(784, hidden), nn.ReLU(), *drop, nn.Linear(hidden, 10))
    if "spec" in opt:
        adntn.compress(model, {"0": dict(opt["spec"], seed=seed)})
    if opt.get("frozen"):
        model[0].requires_grad_(False)  # the optimiser skips what has no gradient
    return model


def fc1(model: nn.Module) -> nn.Module:
    m = model[0]
    return m[0] if isinstance(m, nn.Sequential) else m  # norm="batch" wraps the layer with its batch norm


def teacher(seed: int, data, epochs: int) -> nn.Module:
    """The dense row's model of this seed, trained with the recipe for `epochs`; cached as safetensors (no pickle)
    so that parallel runs and reruns train it once."""
    from safetensors.torch import load_file

    f = teachers_dir() / f"fmnist-{len(data[0])}-{len(data[2])}-{epochs}ep-seed{seed}.safetensors"
    model = build("dense", seed)
    if f.exists():
        model.load_state_dict(load_file(f))
    else:
        train_classifier(model, data[0], data[1], epochs=epochs, seed=seed)
        save_teacher_model(model, f)
    return model.eval()


def run(row: str, seed: int, data, epochs: int, progress: bool) -> dict:
    xtr, ytr, xte, yte = data
    opt = ROWS[row] or {}
    fit_error = None
    if opt.get("fit") or opt.get("kd"):
        dense = teacher(seed, data, epochs)
    if opt.get("fit"):  # the trained dense model, FC1's cores fitted to its outputs
        model = adntn.compress(copy.deepcopy(dense).train(), {"0": dict(opt["spec"], seed=seed)})
        [fit_error] = init_from_data(model, dense, ["0"], {"0": xtr[:FIT_SIGNALS]}, seed=seed)
    else:
        model = build(row, seed)
    layer = fc1(model)
    gen = getattr(layer, "gen", None)
    t = time.perf_counter()
    kw = dict(opt.get("train", {}), **({"weight_decay": opt["weight_decay"]} if "weight_decay" in opt else {}))
    kw.update(epochs=epochs, seed=seed, evaluate=lambda m: accuracy(m, xte, yte), progress=progress)
    if opt.get("kd"):
        res = distill(model, dense, (xtr, ytr), **kw)
    else:
        res = train_classifier(model, xtr, ytr, **kw)
    return dict(row=row, seed=seed, accuracy=res.metrics[-1], test_accuracy=res.metrics, losses=res.losses,
                epoch_s=statistics.median(res.epoch_s), train_s=time.perf_counter() - t,
                params=count(model, trainable=True), layer_params=gen.num_params if gen else layer.weight.numel(),
                ratio=gen.compression_ratio if gen else 1.0, config=gen.config if gen else None,
                fit_error=fit_error, activations=adntn.activation_usage(layer.sync_generator()) if gen else None)


def summarize(runs: list[dict], order) -> list[dict]:
    out = []
    for row in order:
        rs = [r for r in runs if r["row"] == row]
        if not rs:
            continue
        accs = [r["accuracy"] for r in rs]
        out.append(dict(row=row, seeds=len(rs), acc_mean=statistics.mean(accs),
                        acc_std=statistics.stdev(accs) if len(accs) > 1 else 0.0, acc_min=min(accs),
                        acc_max=max(accs), ratio=rs[0]["ratio"], layer_params=rs[0]["layer_params"],
                        params=rs[0]["params"], epochs=len(rs[0]["losses"]),
                        loss=statistics.mean(r["losses"][-1] for r in rs),
                        epoch_s=statistics.median(r["epoch_s"] for r in rs), config=rs[0]["config"],
                        curve=[statistics.mean(c) for c in zip(*(r["test_accuracy"] for r in rs))]))
    return out


def table(summary: list[dict]) -> str:
    lines = ["| FC1 (784 -> 4096) | ratio | FC1 params | configuration | test accuracy | min-max | seeds | epochs "
             "| final train loss | s/epoch |", "|---|---|---|---|---|---|---|---|---|---|"]
    for s in summary:
        cfg = " ".join(f"{k}={s['config'][k]}" for k in ("layout", "legs", "rank") if (s["config"] or {}).get(k))
        ratio = "no FC1" if s["row"] == "logistic" else f"{s['ratio']:,.0f}x"
        lines.append(f"| {s['row']} | {ratio} | {s['layer_params']:,} | {cfg} | {100 * s['acc_mean']:.1f} ± "
                     f"{100 * s['acc_std']:.1f} % | {100 * s['acc_min']:.1f}-{100 * s['acc_max']:.1f} % | "
                     f"{s['seeds']} | {s['epochs']} | {s['loss']:.3f} | {s['epoch_s']:.1f} |")
    return "\n".join(lines)


RATIO_FAMILIES = ("ttn", "ttn-identity", "tt")  # rows at ~2,000x and, with -5000 / -20000, at the higher ratios


def plot(summary: list[dict], path: Path) -> None:
    """Left: mean test accuracy per row (bars: min-max over seeds). Middle: test accuracy after each epoch. Right,
    where rows at several ratios ran: accuracy against FC1's ratio for ttn, its linear twin and tt."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def family(row: str) -> str:
        return row.rsplit("-", 1)[0] if row.endswith(("-5000", "-20000")) else row

    by_ratio = [s for s in summary if family(s["row"]) in RATIO_FAMILIES]
    ratios = any(family(s["row"]) != s["row"] for s in by_ratio)  # a -5000 or -20000 row ran (not only tt's 2,089x)
    fig, axes = plt.subplots(1, 3 if ratios else 2, figsize=(18 if ratios else 12, 4.5))
    ax, ax2 = axes[:2]
    color = [plt.cm.tab20(i % 20) for i in range(len(summary))]  # 20 distinct colours: the rows outgrew 10
    ys = range(len(summary))
    ax.barh(ys, [100 * s["acc_mean"] for s in summary], xerr=[[100 * (s["acc_mean"] - s["acc_min"]) for s in summary],
                                                             [100 * (s["acc_max"] - s["acc_mean"]) for s in summary]],
            color=color, capsize=3)
    ax.set_yticks(list(ys), [s["row"] for s in summary])
    ax.invert_yaxis()
    lo = min(100 * s["acc_min"] for s in summary)
    ax.set_xlim(max(0.0, lo - 5), 100 * max(s["acc_max"] for s in summary) + 2)
    ax.set_xlabel("Fashion-MNIST test accuracy (%)")
    ax.set_title("MLP 784-4096-10: mean, min-max over seeds")
    for i, s in enumerate(summary):
        ax2.plot(range(1, len(s["curve"]) + 1), [100 * c for c in s["curve"]], "o-", color=color[i], label=s["row"])
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("test accuracy (%), mean over seeds")
    ax2.legend(fontsize=6)
    if ratios:
        ax3 = axes[2]
        for i, name in enumerate(RATIO_FAMILIES):
            pts = sorted((s for s in by_ratio if family(s["row"]) == name), key=lambda s: s["ratio"])
            ax3.errorbar([s["ratio"] for s in pts], [100 * s["acc_mean"] for s in pts], fmt="o-", capsize=3,
                         yerr=[[100 * (s["acc_mean"] - s["acc_min"]) for s in pts],
                               [100 * (s["acc_max"] - s["acc_mean"]) for s in pts]], color=f"C{i}",
                         label={"ttn-identity": "ttn, activation identity"}.get(name, name))
        for s in summary:
            if s["row"] in ("dense", "logistic"):
                ax3.axhline(100 * s["acc_mean"], ls="--" if s["row"] == "dense" else ":", color="k", label=s["row"])
        ax3.set_xscale("log")
        ax3.set_xlabel("FC1 compression ratio")
        ax3.set_ylabel("test accuracy (%), mean and min-max over seeds")
        ax3.set_title("the nonlinearity's ablation")
        ax3.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--samples", type=int, default=None, help="the first N training images (default all 60,000)")
    ap.add_argument("--test-samples", type=int, default=None, help="the first N test images (default all 10,000)")
    ap.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(DEFAULT_ROWS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default="benchmarks/results/quality_fmnist.json")
    ap.add_argument("--plot", default=None, help="PNG (default: the --json path with .png)")
    ap.add_argument("--merge", nargs="+", default=[], help="add the runs of these result files first")
    ap.add_argument("--progress", action="store_true", help="a progress bar per training run too")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    out = Path(a.json)
    defaults = {k: p.default for k, p in inspect.signature(train_classifier).parameters.items()}
    recipe = dict(epochs=a.epochs, samples=a.samples, test_samples=a.test_samples, lr=defaults["lr"],
                  batch=defaults["batch_size"], schedule=defaults["schedule"], warmup=defaults["warmup"])
    done = {}
    for f in [out, *map(Path, a.merge)]:
        if f.exists():
            d = json.loads(f.read_text())
            if d["recipe"] != recipe:  # another protocol's runs are not comparable
                raise SystemExit(f"{f}: recipe {d['recipe']} differs from this run's {recipe}")
            done.update({(r["row"], r["seed"]): r for r in d["runs"]})
    d = adntn.data.fashion_mnist()
    n, m = a.samples or len(d.x_train), a.test_samples or len(d.x_test)
    data = (d.x_train[:n].flatten(1), d.y_train[:n], d.x_test[:m].flatten(1), d.y_test[:m])

    def save() -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(dict(recipe=recipe, runs=list(done.values())), indent=1))

    jobs = [(row, s) for s in a.seeds for row in a.rows if (row, s) not in done]  # seed-major
    for row, seed in tqdm(jobs, desc="training runs"):
        done[row, seed] = run(row, seed, data, a.epochs, a.progress)
        save()
    if a.merge:
        save()
    order = [r for r in ROWS if any(k[0] == r for k in done)]
    summary = summarize(list(done.values()), order)
    print(f"Fashion-MNIST, {n:,} training / {m:,} test images, {a.epochs} epochs, seeds "
          f"{sorted({k[1] for k in done})}\n")
    print(table(summary))
    if pairs := pairs_table(list(done.values())):
        print("\n" + pairs)
    plot(summary, Path(a.plot) if a.plot else out.with_suffix(".png"))
    return summary


if __name__ == "__main__":
    main()
