"""Compression quality in the paper's setting: the FC head 4096-4096-10 of a small VGG-style conv net on
Fashion-MNIST (all 60,000 / 10,000 images), FC1 and FC2 generated at ~2,000x, ~20,000x and ~77,000x.

Protocol (Novikov et al.'s ImageNet one): per seed, the conv trunk (3 blocks conv3x3-BN-ReLU-maxpool, 32-64-128
channels, 1152 features) is trained once END TO END with the dense head; then the trunk is frozen, its features
are computed ONCE (train and test, cached in --cache as .npy) and every head variant is trained on those frozen
features. The head is features -> Linear(F, 4096) -> ReLU -> Linear(4096, 4096) -> ReLU -> Linear(4096, 10), no
dropout. One recipe for every row and the trunk (`train_classifier`'s defaults: Adam 1e-3, 5 % linear warm-up then
cosine decay to 0, batch 128); test accuracy on the 10,000 test images after every epoch. Rows:
- dense: the head itself;
- ttn, mera, attn at each --ratios target (`compress(..., dict(arch=..., ratio=R))` on FC1 and FC2; the ratio
  reported is over the two layers: their dense weights / their generated parameters); a target with no
  configuration for a layer (mera and attn reach no 20,000x on FC1) is skipped and said so;
- ttn-identity (opt in): the same tree as ttn with activation="identity", the nonlinearity's ablation;
- tt at the same targets; lowrank at rank 1 on both layers (it reaches no target: its real ratio is reported);
- narrow: a dense F-h-h-10 head with the total parameter count of the ttn head at 20,000x;
- ttn-frozen: the ttn head at 20,000x left at its random init (only the last layer trains): a control that must
  lose, or the trained layers have learned nothing; ttn-frozen+bn the same with batch norm after FC1 and FC2 (the
  norms train, the ADNTN layers do not): the control for the +bn rows;
- no-layer: the trunk features straight into Linear(F, 10);
- suffixes on a compressed row (e.g. ttn-20000+bn+kd): +bn puts batch norm right after each compressed layer
  (`compress(..., norm="batch")`); +kd distils the head from the seed's dense head (`adntn.train.distill`, KL at
  T=4 weight 0.9 plus 0.1 cross-entropy, the same schedule): the dense row caches its logits on the training
  features beside the features (a +kd row without them trains the dense head first); +fit starts the head from the
  seed's trained dense head (cached beside its logits as safetensors), FC1's and FC2's cores fitted to the dense
  layers' outputs on the first 4096 training features (`init_from_data`), FC3 and the biases trained; +e2e trains
  the head with a fresh trunk end to end on the images (--trunk-epochs, the trunk's recipe), not on the frozen
  features, and dense+e2e is the seed's trunk run itself; +corelr (after +bn or +fit, before +kd or +e2e) trains
  the ADNTN cores at CORE_LR = 3x the recipe's learning rate (`train_classifier(..., core_lr=)`; every other
  parameter keeps it, so the row is the same recipe on a dense head).
--trunk-epochs 0 keeps the trunk at its random init (only its batch norms' running statistics come from the training
images): the heads then train on random conv features, a setting where FC1 and FC2 must do the learning (with the
trained trunk, the features are nearly linearly separable and a head without hidden layers is within 1.3 points of
dense); no row trains that trunk end to end there.

    python benchmarks/quality_convnet.py [--seeds 0 1 2] [--epochs 2] [--trunk-epochs 1] [--rows dense ttn tt]
                                         [--ratios 2000 20000 76000] [--samples N] [--test-samples N] [--quick]
                                         [--json benchmarks/results/quality_convnet.json] [--plot PNG] [--merge a.json]

Runs are appended to the JSON as each finishes (a rerun skips finished (row, seed) entries; parts run in parallel
processes merge with --merge), then the markdown table is written beside it (.txt) and the plot (.png: accuracy
against compression ratio per arch, and the test accuracy after each epoch).
"""
from __future__ import annotations

import argparse
import copy
import inspect
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from quality import (  # noqa: E402  (shared helpers)
    FIT_SIGNALS,
    FIT_STEPS,
    LINEAR_TWIN,
    accuracy,
    count,
    name_far_rows,
    pairs_table,
    plot_curves,
    save_teacher,
    save_teacher_model,
)
from quality_fmnist import summarize  # noqa: E402  (mean, spread and curve per row over seeds)

import adntn_compiler as adntn  # noqa: E402
from adntn_compiler.cli import at_least  # noqa: E402
from adntn_compiler.errors import ConfigError  # noqa: E402
from adntn_compiler.training.sensitivity import init_from_data  # noqa: E402
from adntn_compiler.training.train import distill, train_classifier  # noqa: E402

CHANNELS = (32, 64, 128)  # 28 -> 14 -> 7 -> 3: 128 * 3 * 3 = 1152 features
HIDDEN = 4096
# ~77,000x: each layer's target is 76,000x, where FC1 (1152 -> 4096) gets an interleaved rank-1 ttn (76,106x, 10
# legs; the head at 78,166x over both layers); at 77,000x only separated trees (matrix rank <= 1) reach it on FC1
RATIOS = (2000, 20000, 76000)
ARCHS = ("ttn", "tt", "mera", "attn", "ttn-identity")  # the rows at each ratio
ARCH_SPECS = {"ttn-identity": LINEAR_TWIN}  # the nonlinearity's ablation (opt in)
SINGLE = ("dense", "no-layer", "lowrank", "narrow", "ttn-frozen")
FROZEN_RATIO = NARROW_RATIO = 20000
# priority order of the issue: what runs first when the time runs out
DEFAULT_ROWS = ("dense", "no-layer", "ttn", "tt", "ttn-frozen", "lowrank", "narrow", "mera", "attn")
COMPRESSED = ("0", "2")  # FC1 and FC2 in the head's nn.Sequential


# ---------------------------------------------------------------- the trunk, trained once per seed, and its features
def trunk_net() -> nn.Sequential:
    layers, cin = [], 1
    for c in CHANNELS:
        layers += [nn.Conv2d(cin, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2)]
        cin = c
    return nn.Sequential(*layers, nn.Flatten())


def head_net(features: int, hidden: int = HIDDEN) -> nn.Sequential:
    return nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, 10))


def embed(trunk: nn.Module, x: torch.Tensor, chunk: int = 1000) -> torch.Tensor:
    trunk.eval()  # batch norm's running statistics: the features do not depend on the batch
    with torch.no_grad():
        return torch.cat([trunk(x[i:i + chunk]) for i in range(0, len(x), chunk)])


def feature_key(seed: int, trunk_epochs: int, n: int, m: int, cache: Path) -> Path:
    return cache / f"seed{seed}_e{trunk_epochs}_n{n}_m{m}_c{'-'.join(map(str, CHANNELS))}"


def features(seed: int, images, trunk_epochs: int, cache: Path) -> tuple[tuple, dict]:
    """The frozen trunk's (train, test) features for this seed: trained end to end with the dense head on the first
    use, cached as .npy (never pickle) keyed by seed, epochs and sizes, so every head row reuses them."""
    xtr, ytr, xte, yte = images
    key = feature_key(seed, trunk_epochs, len(xtr), len(xte), cache)
    files = [key.with_name(key.name + f"_{s}.npy") for s in ("train", "test")]
    meta = key.with_name(key.name + ".json")
    if not all(f.exists() for f in [*files, meta]):
        torch.manual_seed(seed)
        trunk = trunk_net()
        if trunk_epochs:
            model = nn.Sequential(trunk, head_net(trunk(xtr[:1]).shape[1]))
            res = train_classifier(model, xtr, ytr, epochs=trunk_epochs, seed=seed, progress=True,
                                   evaluate=lambda m: accuracy(m, xte, yte))
            record = dict(test_accuracy=res.metrics, losses=res.losses, epoch_s=res.epoch_s)
        else:  # the random trunk: only its batch norms' statistics come from the images, so the head does the work
            torch.optim.swa_utils.update_bn(xtr.split(1000), trunk)
            record = dict(test_accuracy=[], losses=[], epoch_s=[])
        cache.mkdir(parents=True, exist_ok=True)
        for f, x in zip(files, (xtr, xte)):
            np.save(f, embed(trunk, x).numpy())
        meta.write_text(json.dumps(dict(seed=seed, epochs=trunk_epochs, **record)))
    ftr, fte = (torch.from_numpy(np.load(f)) for f in files)
    return (ftr, ytr, fte, yte), json.loads(meta.read_text())


# ---------------------------------------------------------------- the head rows
def row_names(rows, ratios) -> list[str]:
    """Arch names expand to one row per ratio ("ttn" -> "ttn-2000", ...); other names are rows as they are."""
    out = []
    for r in rows:
        out += [f"{r}-{t}" for t in ratios] if r in ARCHS else [r]
    return out


BN = "+bn"  # a row suffix: batch norm right after each compressed layer (`compress(..., norm="batch")`)
FIT = "+fit"  # the first suffix: from the seed's trained dense head, FC1's and FC2's cores fitted to its layers
KD = "+kd"  # the last suffix: distilled from the seed's dense head (its logits on the training features)
E2E = "+e2e"  # the last suffix: trunk and head trained together from scratch on the images, as the trunk was
CORELR = "+corelr"  # the cores at CORE_LR, everything else at the recipe's rate
CORE_LR = 3e-3


def core_lr(row: str) -> float | None:
    """The cores' learning rate of a row: CORE_LR with +corelr, else None (the recipe's rate for every parameter)."""
    return CORE_LR if CORELR in row else None


def spec_of(row: str) -> dict | None:
    """FC1's and FC2's compress spec (the same for both), or None for a dense head."""
    if row.endswith((KD, E2E, FIT, CORELR)):
        return spec_of(row.rpartition("+")[0])
    if row.endswith(BN):
        spec = spec_of(row[:-len(BN)])
        return None if spec is None else dict(spec, norm="batch")
    if row == "lowrank":
        return dict(arch="lowrank", rank=1)  # no rank reaches 2,000x: rank 1 and its real ratio
    if row == "ttn-frozen":
        return dict(arch="ttn", ratio=FROZEN_RATIO)
    arch, _, target = row.rpartition("-")
    return dict(ARCH_SPECS.get(arch, dict(arch=arch)), ratio=int(target)) if arch in ARCHS else None


def narrow_width(features: int, seed: int) -> int:
    """Hidden width h of a dense F-h-h-10 head with the ttn head's (at 20,000x) total parameter count:
    h^2 + (F + 12) h + 10 = total."""
    total = count(build(f"ttn-{NARROW_RATIO}", features, seed), trainable=True)
    b = features + 12
    return max(1, round((-b + math.sqrt(b * b + 4 * (total - 10))) / 2))


def build(row: str, features: int, seed: int) -> nn.Module:
    """The head of a row, seeded; raises ConfigError where compress finds no configuration for the target."""
    if row == "no-layer":
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(features, 10))
    hidden = narrow_width(features, seed) if row == "narrow" else HIDDEN
    torch.manual_seed(seed)
    model = head_net(features, hidden)
    spec = spec_of(row)
    if spec is not None:
        adntn.compress(model, {k: dict(spec, seed=seed + i) for i, k in enumerate(COMPRESSED)})
    if row.startswith("ttn-frozen"):
        for k in COMPRESSED:
            m = model[int(k)]
            # cores, scale and bias stay at their init; the optimiser skips them (a batch norm after them trains)
            (m[0] if isinstance(m, nn.Sequential) else m).requires_grad_(False)
    return model


def layer_params(model: nn.Module, row: str, features: int) -> tuple[int, float | None, list | None]:
    """(parameters of FC1 + FC2, their compression ratio against the dense 4096-wide layers, the configurations)."""
    if row == "no-layer":
        return 0, None, None
    fcs = [model[int(k)] for k in COMPRESSED]
    fcs = [m[0] if isinstance(m, nn.Sequential) else m for m in fcs]  # (layer, batch norm) with +bn
    gens = [getattr(m, "gen", None) for m in fcs]
    n = sum(g.num_params if g is not None else m.weight.numel() for g, m in zip(gens, fcs))
    dense = features * HIDDEN + HIDDEN * HIDDEN
    return n, dense / n, [g.config for g in gens] if gens[0] is not None else None


def fitted(row: str, seed: int, x: torch.Tensor, dense_file: Path, steps: int) -> tuple[nn.Module, list[float]]:
    """A +fit row's head: the seed's trained dense head with FC1 and FC2 compressed (the row's spec), their cores
    fitted to the dense layers' outputs on the first FIT_SIGNALS training features (`init_from_data`); FC3 and the
    biases start trained. Returns the head and the two fits' relative output errors."""
    from safetensors.torch import load_file

    dense = head_net(x.shape[1])
    dense.load_state_dict(load_file(dense_file))
    model = copy.deepcopy(dense)
    spec = spec_of(row)
    adntn.compress(model, {k: dict(spec, seed=seed + i) for i, k in enumerate(COMPRESSED)})
    with torch.no_grad():
        inputs = dict(zip(COMPRESSED, (x[:FIT_SIGNALS], dense[1](dense[0](x[:FIT_SIGNALS])))))
    return model, init_from_data(model, dense, list(COMPRESSED), inputs, steps=steps, seed=seed)


def run(row: str, seed: int, data, epochs: int, progress: bool, teacher: Path, fit_steps: int = FIT_STEPS) -> dict:
    """Train the row's head; the dense row also writes its logits on the training features to `teacher`, which the
    +kd rows distil from (`adntn.train.distill`: KL at T=4 weight 0.9 plus 0.1 cross-entropy, the same schedule),
    and its weights beside them (safetensors), which the +fit rows start from."""
    xtr, ytr, xte, yte = data
    features = xtr.shape[1]
    dense_file = teacher.with_name(teacher.stem.removesuffix("_logits") + ".safetensors")
    if (row.endswith(KD) and not teacher.exists()) or (FIT in row and not dense_file.exists()):
        run("dense", seed, data, epochs, progress, teacher)  # the teacher only: its row may be in another file
    base = row[:-len(KD)] if row.endswith(KD) else row
    model, fit_errors = (fitted(base, seed, xtr, dense_file, fit_steps) if FIT in base
                         else (build(base, features, seed), None))
    n, ratio, config = layer_params(model, row, features)
    kw = dict(epochs=epochs, seed=seed, evaluate=lambda m: accuracy(m, xte, yte), progress=progress,
              core_lr=core_lr(row))
    t = time.perf_counter()
    if row.endswith(KD):
        res = distill(model, torch.from_numpy(np.load(teacher, allow_pickle=False)), (xtr, ytr), **kw)
    else:
        res = train_classifier(model, xtr, ytr, **kw)
    if row == "dense":
        save_teacher_model(model, dense_file)
        save_teacher(model, data, teacher)
    return dict(row=row, seed=seed, accuracy=res.metrics[-1], test_accuracy=res.metrics, losses=res.losses,
                epoch_s=statistics.median(res.epoch_s), train_s=time.perf_counter() - t,
                params=count(model, trainable=True), layer_params=n, ratio=ratio, config=config,
                **(dict(fit_errors=fit_errors) if fit_errors else {}),
                **(dict(core_lr=kw["core_lr"]) if kw["core_lr"] else {}))


def run_e2e(row: str, seed: int, images, trunk: dict, trunk_epochs: int, progress: bool) -> dict:
    """The row's head on a fresh trunk, trained end to end with the trunk's recipe (--trunk-epochs on the images);
    dense+e2e is the seed's trunk run itself (its head is the dense one), read from its record."""
    xtr, ytr, xte, yte = images
    torch.manual_seed(seed)  # the same trunk init as the seed's dense trunk; build() seeds the head
    net = trunk_net()
    features = net(xtr[:1]).shape[1]
    head = build(row[:-len(E2E)], features, seed)
    n, ratio, config = layer_params(head, row, features)
    out = dict(row=row, seed=seed, params=count(nn.Sequential(net, head), trainable=True), layer_params=n,
               ratio=ratio, config=config)
    if row == "dense" + E2E:
        return dict(out, accuracy=trunk["test_accuracy"][-1], test_accuracy=trunk["test_accuracy"],
                    losses=trunk["losses"], epoch_s=statistics.median(trunk["epoch_s"]), train_s=sum(trunk["epoch_s"]))
    t = time.perf_counter()
    res = train_classifier(nn.Sequential(net, head), xtr, ytr, epochs=trunk_epochs, seed=seed, progress=progress,
                           evaluate=lambda m: accuracy(m, xte, yte), core_lr=core_lr(row))
    return dict(out, accuracy=res.metrics[-1], test_accuracy=res.metrics, losses=res.losses,
                epoch_s=statistics.median(res.epoch_s), train_s=time.perf_counter() - t)


# ---------------------------------------------------------------- the table and the plot
def config_text(config) -> str:
    if not config:
        return ""
    return " / ".join(" ".join(f"{k}={c[k]}" for k in ("layout", "legs", "rank") if c.get(k) is not None)
                      for c in config)


def table(summary: list[dict], trunks: dict) -> str:
    lines = ["| head | ratio (FC1+FC2) | FC1+FC2 params | head params | configuration (FC1 / FC2) | test accuracy "
             "| min-max | seeds | epochs | final train loss | s/epoch |", "|---" * 11 + "|"]
    for s in summary:
        ratio = "no hidden layer" if s["ratio"] is None else f"{s['ratio']:,.0f}x"
        lines.append(f"| {s['row']} | {ratio} | {s['layer_params']:,} | {s['params']:,} | {config_text(s['config'])} "
                     f"| {100 * s['acc_mean']:.2f} ± {100 * s['acc_std']:.2f} % | {100 * s['acc_min']:.2f}-"
                     f"{100 * s['acc_max']:.2f} % | {s['seeds']} | {s['epochs']} | {s['loss']:.3f} "
                     f"| {s['epoch_s']:.0f} |")
    if accs := [t["test_accuracy"][-1] for t in trunks.values() if t["test_accuracy"]]:
        lines.append(f"\nTrunk + dense head trained end to end (before freezing): {100 * statistics.mean(accs):.2f} % "
                     f"mean over seeds {sorted(int(k) for k in trunks)} "
                     f"({', '.join(f'{100 * a:.2f}' for a in accs)} %)")
    return "\n".join(lines)


def parts(row: str) -> tuple[str | None, str]:
    """(arch, suffixes) of an arch row ("ttn-20000+bn+kd" -> ("ttn", "+bn+kd")); (None, "") for the others."""
    name, plus, suffix = row.partition("+")
    arch, _, target = name.rpartition("-")
    return (arch, plus + suffix) if arch in ARCHS and target.isdigit() else (None, "")


def plot(summary: list[dict], path: Path, trunk: str) -> None:
    """Left: mean test accuracy against the ratio over FC1+FC2 per arch and suffix (bars: min-max over seeds), the
    dense and no-layer heads as lines. Right: the test accuracy after each epoch, mean over seeds. `trunk` names the
    trunk the features come from (trained or random), in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    by = {s["row"]: s for s in summary}
    for i, arch in enumerate(ARCHS):
        # +e2e rows: another protocol, right only
        for suffix, style in (("", "o-"), (BN, "s:"), (BN + KD, "v--"), (FIT, "D:"), (FIT + KD, "d-."),
                              (BN + CORELR, "P-")):
            pts = sorted((s for s in summary if parts(s["row"]) == (arch, suffix)), key=lambda s: s["ratio"])
            if pts:
                ax.errorbar([s["ratio"] for s in pts], [100 * s["acc_mean"] for s in pts], fmt=style, color=f"C{i}",
                            label=arch + suffix, capsize=3,
                            yerr=[[100 * (s["acc_mean"] - s["acc_min"]) for s in pts],
                                  [100 * (s["acc_max"] - s["acc_mean"]) for s in pts]])
    for j, row in enumerate(("lowrank", "narrow", "ttn-frozen", "ttn-frozen" + BN)):
        if row in by:
            ax.plot(by[row]["ratio"], 100 * by[row]["acc_mean"], "s^v<"[j], color=f"C{4 + j}", ms=9, label=row)
    for row, style in (("dense", "k-"), ("no-layer", "k:")):
        if row in by:
            ax.axhline(100 * by[row]["acc_mean"], ls=style[1:], color="k", label=f"{row} head")
    far = name_far_rows(ax, summary, lambda s: s["row"])
    ax.set_xscale("log")
    ax.set_xlabel("compression ratio of FC1 + FC2")
    ax.set_ylabel("Fashion-MNIST test accuracy (%)")
    ax.set_title(f"Conv net, FC head 4096-4096-10 on frozen features ({trunk})", fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    plot_curves(ax2, [s for s in summary if s not in far], "row")
    ax2.set_xlabel("epoch (the +e2e rows: trunk epochs, end to end)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------- the CLI
def load_images(samples: int | None, test_samples: int | None):
    d = adntn.data.fashion_mnist()
    n, m = min(samples or len(d.x_train), len(d.x_train)), min(test_samples or len(d.x_test), len(d.x_test))
    return d.x_train[:n], d.y_train[:n], d.x_test[:m], d.y_test[:m]


def parse(argv) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # checked here: a bad number must not reach the runs, where a ConfigError marks a row as skipped in the JSON
    ap.add_argument("--seeds", type=at_least(0), nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=at_least(1), default=2, help="head epochs (every row)")
    ap.add_argument("--trunk-epochs", type=at_least(0), default=1,
                    help="end-to-end epochs of trunk + dense head; 0: the trunk at its random init (its batch norms' "
                    "statistics from the training images), a setting where the head must do the learning")
    ap.add_argument("--rows", nargs="+", default=None,
                    help=f"of {', '.join(SINGLE + ARCHS)} (an arch is one row per --ratios), or e.g. ttn-20000, "
                    "ttn-20000+bn+kd")
    ap.add_argument("--ratios", type=at_least(2), nargs="+", default=list(RATIOS))
    ap.add_argument("--samples", type=at_least(1), default=None,
                    help="the first N training images (default all 60,000)")
    ap.add_argument("--test-samples", type=at_least(1), default=None,
                    help="the first N test images (default all 10,000)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 384 / 256 images, 1 epoch, seed 0, a few rows (unless --rows)")
    ap.add_argument("--threads", type=at_least(1), default=1)
    ap.add_argument("--cache", default=os.environ.get("ADNTN_CONVNET_CACHE", "/tmp/adntn_convnet_features"),
                    help="folder of the trunks' cached features (.npy)")
    ap.add_argument("--json", default="benchmarks/results/quality_convnet.json")
    ap.add_argument("--plot", default=None, help="PNG (default: the --json path with .png)")
    ap.add_argument("--merge", nargs="+", default=[], help="add the runs of these result files first")
    ap.add_argument("--progress", action="store_true", help="a progress bar per training run too")
    ap.add_argument("--no-train", action="store_true", help="only merge, and write the table and plot")
    a = ap.parse_args(argv)
    if a.quick:
        a.samples, a.test_samples, a.epochs, a.trunk_epochs, a.seeds = 384, 256, 1, min(a.trunk_epochs, 1), [0]
        a.rows, a.ratios = a.rows or ["dense", "no-layer", "ttn", "tt", "ttn-frozen"], [20000]
    a.rows = a.rows or list(DEFAULT_ROWS)
    a.names = row_names(a.rows, a.ratios)
    # in this order: +bn or +fit first, then +corelr, +kd or +e2e last (+fit+e2e: a fresh trunk has no dense head)
    suffixes = tuple(first + mid + last for first in ("", BN, FIT) for mid in ("", CORELR) for last in ("", KD, E2E)
                     if not (first == FIT and last == E2E))
    if unknown := [r for r in a.names if r not in SINGLE + ("dense" + E2E, "ttn-frozen" + BN)
                   and (parts(r)[0] is None or parts(r)[1] not in suffixes)]:
        ap.error(f"unknown rows {unknown}: an arch row is ARCH-RATIO with the suffixes {', '.join(suffixes[1:])}, "
                 f"ARCH one of {', '.join(ARCHS)}; the others are {', '.join(SINGLE)}, dense{E2E}, ttn-frozen{BN}")
    if a.trunk_epochs == 0 and (e2e := [r for r in a.names if r.endswith(E2E)]):
        ap.error(f"rows {e2e} train the trunk end to end: they need --trunk-epochs >= 1")
    return a


def main(argv=None) -> list[dict]:
    a = parse(argv)
    torch.set_num_threads(a.threads)
    out = Path(a.json)
    defaults = {k: p.default for k, p in inspect.signature(train_classifier).parameters.items()}
    recipe = dict(epochs=a.epochs, trunk_epochs=a.trunk_epochs, samples=a.samples, test_samples=a.test_samples,
                  channels=list(CHANNELS), hidden=HIDDEN, lr=defaults["lr"], batch=defaults["batch_size"],
                  schedule=defaults["schedule"], warmup=defaults["warmup"])
    done, trunks, skipped = {}, {}, {}
    for f in [out, *map(Path, a.merge)]:
        if f.exists():
            d = json.loads(f.read_text())
            if d["recipe"] != recipe:  # another protocol's runs are not comparable
                raise SystemExit(f"{f}: recipe {d['recipe']} differs from this run's {recipe}")
            done.update({(r["row"], r["seed"]): r for r in d["runs"]})
            trunks.update(d.get("trunks", {}))
            skipped.update(d.get("skipped", {}))

    def save() -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(dict(recipe=recipe, trunks=trunks, skipped=skipped, runs=list(done.values())),
                                  indent=1))

    jobs = [] if a.no_train else [(r, s) for s in a.seeds for r in a.names if (r, s) not in done and r not in skipped]
    images = load_images(a.samples, a.test_samples) if jobs else None
    data, current = None, None
    for row, seed in tqdm(jobs, desc="training runs"):
        if seed != current:  # seed-major: one seed's features in memory at a time
            data, trunks[str(seed)] = features(seed, images, a.trunk_epochs, Path(a.cache))
            current = seed
        key = feature_key(seed, a.trunk_epochs, len(images[0]), len(images[2]), Path(a.cache))
        try:
            done[row, seed] = (
                run_e2e(row, seed, images, trunks[str(seed)], a.trunk_epochs, a.progress) if row.endswith(E2E)
                else run(row, seed, data, a.epochs, a.progress, key.with_name(f"{key.name}_dense{a.epochs}_logits.npy"),
                         10 if a.quick else FIT_STEPS)
            )
        except ConfigError as e:  # e.g. mera and attn reach no 20,000x on FC1: said, not silently dropped
            skipped[row] = str(e)
            tqdm.write(f"{row}: skipped ({e})")
        save()
    if a.merge or not out.exists():
        save()
    targets = {int(t) for r, _ in done for arch, _, t in [r.rpartition("-")] if arch in ARCHS and t.isdigit()}
    order = row_names(DEFAULT_ROWS, sorted(targets | set(a.ratios)))
    order += [r for r in dict.fromkeys(k[0] for k in done) if r not in order]
    summary = summarize(list(done.values()), order)
    n = len(images[0]) if images else a.samples or 60000
    m = len(images[2]) if images else a.test_samples or 10000
    trunk = f"trunk {a.trunk_epochs} epoch(s) end to end" if a.trunk_epochs else "trunk at its random init"
    text = (f"Fashion-MNIST, {n:,} training / {m:,} test images, {trunk}, heads "
            f"{a.epochs} epoch(s) on its frozen features, seeds {sorted({k[1] for k in done})}\n\n"
            + table(summary, trunks)
            + "".join(f"\nskipped: {r}: {why}" for r, why in skipped.items()))
    if pairs := pairs_table(list(done.values())):
        text += "\n\n" + pairs
    print(text)
    out.with_suffix(".txt").write_text(text + "\n")
    if summary:
        plot(summary, Path(a.plot) if a.plot else out.with_suffix(".png"), trunk)
    return summary


if __name__ == "__main__":
    main()
