"""Per-layer sensitivity: how much of a pretrained model's quality survives replacing each layer (or group of
layers) alone by a generator at each ratio and architecture.

    res = adntn.sensitivity(model, ["features.24", ("features.34", "features.37")], ratios=(200, 2000),
                            archs=("ttn",), data=calibration_x, metric=lambda m: {"acc": accuracy(m)})
    print(res.table()); res.plot("sensitivity.png"); res.keep("acc", 0.95, ratio=2000)

Each entry is replaced in a copy of the model, initialised data-aware (fit_outputs on the layer's real inputs,
recorded on the calibration data through the dense model), then briefly distilled end to end against the dense
model with only the replaced layers trained, batch norm kept in eval mode. The model itself is not changed.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from ..errors import ConfigError, ShapeError


@dataclass
class Sensitivity:
    """rows: one per (layers, arch, target) plus the dense reference: layers, arch, target, ratio (dense over
    generated parameters of the entry), params, dense_params, the metric's values, seconds, fit_error (the relative
    output error of the data-aware initialisation, the worst layer of the entry); `unreachable` where
    no configuration reaches the ratio."""
    rows: list[dict[str, Any]] = field(default_factory=list)
    metrics: tuple[str, ...] = ()

    def table(self) -> str:
        head = (f"{'layers':<34} {'arch':<6} {'target':>7} {'ratio':>9} {'params':>10} {'dense params':>12} "
                + " ".join(f"{m:>10}" for m in self.metrics) + f" {'fit error':>9} {'seconds':>8}")
        lines = [head, "-" * len(head)]
        for r in self.rows:
            if r.get("unreachable"):
                lines.append(f"{r['layers']:<34} {r['arch']:<6} {r['target']:>6}x {'not reachable':>20}")
                continue
            lines.append(f"{r['layers']:<34} {r['arch']:<6} {r['target']:>6}x {r['ratio']:>8,.0f}x {r['params']:>10,} "
                         f"{r['dense_params']:>12,} " + " ".join(f"{r[m]:>10.4f}" for m in self.metrics)
                         + f" {r.get('fit_error', 0):>9.3f} {r['seconds']:>8.1f}")
        return "\n".join(lines)

    def keep(self, metric: str, threshold: float, ratio: float | None = None, arch: str | None = None) -> list[str]:
        """The entries whose `metric` is at least `threshold` (at this target ratio and arch, if given)."""
        return sorted({r["layers"] for r in self.rows if not r.get("unreachable") and r["arch"] != "dense"
                       and (ratio is None or r["target"] == ratio) and (arch is None or r["arch"] == arch)
                       and r[metric] >= threshold})

    def plot(self, path: str, metric: str | None = None) -> None:
        """Heat map per architecture: rows are the layer entries, columns the target ratios, colour the metric
        (blank: not reachable)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        metric = metric or self.metrics[0]
        rows = [r for r in self.rows if r["arch"] != "dense"]
        archs = list(dict.fromkeys(r["arch"] for r in rows))
        entries = list(dict.fromkeys(r["layers"] for r in rows))
        targets = sorted({r["target"] for r in rows})
        fig, axes = plt.subplots(1, len(archs), squeeze=False,
                                 figsize=(2.2 + 1.6 * len(targets) * len(archs), 1 + 0.45 * len(entries)))
        for ax, arch in zip(axes[0], archs):
            M = np.full((len(entries), len(targets)), np.nan)
            for r in rows:
                if r["arch"] == arch and not r.get("unreachable"):
                    M[entries.index(r["layers"]), targets.index(r["target"])] = r[metric]
            im = ax.imshow(M, cmap="viridis", aspect="auto", vmin=np.nanmin(M) if np.isfinite(M).any() else 0, vmax=1)
            for (i, j), v in np.ndenumerate(M):
                ax.text(j, i, "n/a" if np.isnan(v) else f"{v:.3f}", ha="center", va="center", fontsize=7,
                        color="k" if np.isnan(v) or v >= np.nanmean(M) else "w")
            ax.set_xticks(range(len(targets)), [f"{t:,}x" for t in targets])
            ax.set_yticks(range(len(entries)), entries if ax is axes[0][0] else [""] * len(entries), fontsize=7)
            ax.set_title(f"{arch}: {metric}")
            fig.colorbar(im, ax=ax, fraction=0.05)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)


def _entries(model: torch.nn.Module, layers: Sequence) -> list[tuple[str, tuple[str, ...]]]:
    modules = dict(model.named_modules())
    out = []
    for e in layers:
        names = (e,) if isinstance(e, str) else tuple(e)
        for n in names:
            if not isinstance(modules.get(n), (torch.nn.Linear, torch.nn.Conv2d)):
                known = [k for k, m in modules.items() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
                raise ConfigError(f"sensitivity: {n!r} is not a Linear or Conv2d layer of the model; those are "
                                  f"{known[:12]}{' ...' if len(known) > 12 else ''}")
        out.append(("+".join(names), names))
    return out


def record_inputs(model, names: set[str], batches: list[torch.Tensor], per_layer: int) -> dict[str, torch.Tensor]:
    """Each layer's calibration inputs (rows for Linear, patches for Conv2d), at most `per_layer` of them."""
    from .train import conv_patches

    modules = dict(model.named_modules())
    got: dict[str, list] = {n: [] for n in names}

    def hook(name):
        def f(m, inp, out):
            x = inp[0].detach()
            got[name].append(conv_patches(m, x, per_layer) if isinstance(m, torch.nn.Conv2d)
                             else x.reshape(-1, x.shape[-1]))
        return f

    handles = [modules[n].register_forward_hook(hook(n)) for n in names]
    try:
        model.eval()
        with torch.no_grad():
            for x in batches:
                model(x)
    finally:
        for h in handles:
            h.remove()
    out = {}
    g = torch.Generator().manual_seed(0)
    for n in sorted(got):  # (a set's order depends on the process's hash seed: the samples would too)
        x = torch.cat(got[n])
        out[n] = x[torch.randperm(len(x), generator=g)[:per_layer]]
    return out


def init_from_data(student: torch.nn.Module, dense: torch.nn.Module, names: Sequence[str],
                   inputs: dict[str, torch.Tensor], steps: int = 300, seed: int = 0,
                   activation: str | None = None) -> list[float]:
    """Data-aware initialisation: fit each compressed layer `names` of `student` to the outputs of the same layer
    of `dense` on its recorded inputs (`record_inputs`); returns each layer's relative output error.
    activation="relu": the layers are followed by a ReLU; match what survives it (`fit_outputs`)."""
    from .train import fit_outputs

    sub, ref = dict(student.named_modules()), dict(dense.named_modules())
    errors = []
    for n in names:
        layer = sub[n]
        bias = None if activation is None or ref[n].bias is None else ref[n].bias.detach().numpy()
        errors.append(fit_outputs(layer.gen, ref[n].weight.detach().double().numpy(), inputs[n].numpy(),
                                  steps=steps, progress=False, seed=seed, bias=bias, activation=activation).rel_error)
        with torch.no_grad():
            for k, v in layer.gen.cores.items():
                layer.cores[k].copy_(torch.as_tensor(v))
    return errors


def sensitivity(model: torch.nn.Module, layers: Sequence, ratios: Sequence[float], archs: Sequence[str] = ("ttn",),
                data=None, metric: Callable[[torch.nn.Module], Any] | None = None, *, steps: int = 20,
                lr: float = 1e-3, loss: str = "mse", fit_steps: int = 300, calibration_batches: int = 4,
                per_layer: int = 8192, seed: int = 0, progress: bool = True, **distill_kw) -> Sensitivity:
    """Replace each entry of `layers` (a layer name, or a tuple of names replaced together) alone, for each
    target ratio and architecture; return the metric table.

    data: the calibration / distillation inputs: a tensor x (batches of `distill_kw['batch_size']`, default 8) or
    a sampler data(generator) -> x (augmented crops). metric(model) -> float or {name: float}, evaluated on
    held-out data, also on the dense model (the first row). steps: distillation steps per entry (0: only the
    data-aware initialisation; with tensor data: one epoch over it, or none at 0); loss: "mse" (dense outputs) or
    "kl" (logits); other keyword arguments go to `adntn.train.distill`."""
    from ..training.compress import compress
    from .distributed import alone, world
    from .train import distill

    if metric is None or data is None:
        raise ConfigError("sensitivity needs data (calibration inputs) and metric(model) -> float or dict")
    if not ratios or any(not r > 1 for r in ratios):
        raise ConfigError(f"ratios must be compression ratios > 1, got {list(ratios)}")
    entries = _entries(model, layers)
    batch_size = distill_kw.pop("batch_size", 8)
    g = torch.Generator().manual_seed(seed)
    if callable(data):
        batches = [data(g) for _ in range(calibration_batches)]
    elif isinstance(data, torch.Tensor):
        batches = list(data[:calibration_batches * batch_size].split(batch_size))
    else:
        raise ShapeError("sensitivity's data must be a tensor of inputs or a sampler data(generator) -> x")
    t0 = time.perf_counter()
    inputs = record_inputs(model, {n for _, names in entries for n in names}, batches, per_layer)
    calib_s = time.perf_counter() - t0

    def measure(m) -> dict[str, float]:
        m.eval()
        with torch.no_grad():
            v = metric(m)
        return {k: float(x) for k, x in (v.items() if isinstance(v, dict) else {"metric": v}.items())}

    ref = measure(model)
    res = Sensitivity(metrics=tuple(ref))
    modules = dict(model.named_modules())
    dense_total = sum(modules[n].weight.numel() for _, names in entries for n in names)
    res.rows.append(dict(layers="(dense model)", arch="dense", target=1, ratio=1.0, params=dense_total,
                         dense_params=dense_total, seconds=0.0, **ref))
    jobs = [(label, names, arch, r) for label, names in entries for r in ratios for arch in archs]
    w = world()  # under torchrun, job k runs on rank k % size, alone; the table is gathered on every rank
    mine = list(range(w.rank, len(jobs), w.size))
    rows = {}
    for k in tqdm(mine, desc="sensitivity", disable=not progress or w.rank != 0):
        label, names, arch, r = jobs[k]
        t = time.perf_counter()
        dense = sum(modules[n].weight.numel() for n in names)
        student = copy.deepcopy(model)
        try:
            compress(student, {n: dict(arch=arch, ratio=r, seed=seed + i) for i, n in enumerate(names)})
        except ConfigError as e:
            rows[k] = dict(layers=label, arch=arch, target=r, unreachable=True, why=str(e))
            continue
        sub = dict(student.named_modules())
        with alone():
            fit = init_from_data(student, model, names, inputs, fit_steps, seed)
            if steps:
                distill(student, model, data, epochs=1, steps=steps if callable(data) else None,
                        lr=lr, loss=loss, params="compressed", train_mode=False, batch_size=batch_size, seed=seed,
                        progress=False, **distill_kw)
        params = sum(sub[n].gen.num_params for n in names)
        rows[k] = dict(layers=label, arch=arch, target=r, ratio=dense / params, params=params, dense_params=dense,
                       seconds=time.perf_counter() - t + calib_s / max(1, len(jobs)), fit_error=max(fit),
                       config={n: sub[n].gen.config for n in names}, **measure(student))
    gathered = {int(k): row for part in w.gather_json(rows) for k, row in part.items()}
    res.rows += [gathered[k] for k in range(len(jobs))]
    return res


def score_correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation of two maps (flattened)."""
    a, b = a.flatten().double(), b.flatten().double()
    a, b = a - a.mean(), b - b.mean()
    d = math.sqrt(float(a.pow(2).sum() * b.pow(2).sum()))
    return float((a * b).sum()) / d if d > 0 else float("nan")
