"""Training objectives for the cores: reconstruct a pretrained weight, or match a layer's outputs.

    res = fit_weight(gen, W)            # min ||W_gen - W||^2 / ||W||^2
    res = fit_outputs(gen, W, X)        # min ||X W_gen^T - X W^T||^2 / ||X W^T||^2 (data-aware)
    res.losses, res.rel_error; res.plot("fit.png")

Both train the generator's cores in place (through an ADNTN torch layer) and return the loss curve. End-to-end
task training is a plain torch loop over a model from `compress` (see examples/compress_and_train.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from .errors import ShapeError
from .generators.base import Generator


@dataclass
class FitResult:
    objective: str
    losses: list[float] = field(default_factory=list)

    @property
    def rel_error(self) -> float:
        """Relative error (the square root of the final normalised squared loss)."""
        return float(np.sqrt(self.losses[-1]))

    def plot(self, path: str, label: str | None = None) -> None:
        plot_losses({label or self.objective: self}, path)


def plot_losses(results: dict[str, FitResult], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, r in results.items():
        ax.plot(r.losses, label=name)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("relative squared error")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _layer(gen: Generator):
    from .nn import ADNTNConv2d, ADNTNLinear

    return (ADNTNLinear(gen, bias=False) if gen.kind == "linear" else ADNTNConv2d(gen, bias=False))


def _fit(gen: Generator, objective: str, loss_fn, steps: int, lr: float, progress: bool) -> FitResult:
    layer = _layer(gen)
    opt = torch.optim.Adam(layer.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    res = FitResult(objective)
    for _ in tqdm(range(steps), desc=f"{objective} {gen.arch}", disable=not progress, leave=False):
        loss = loss_fn(layer)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        res.losses.append(loss.item())
    layer.sync_generator()
    return res


def _check(gen: Generator, W: np.ndarray) -> torch.Tensor:
    if tuple(np.shape(W)) != gen.shape:
        raise ShapeError(f"target weight has shape {tuple(np.shape(W))}, the generator makes {gen.shape}")
    return torch.as_tensor(np.asarray(W), dtype=torch.float32)


def fit_weight(gen: Generator, W: np.ndarray, steps: int = 500, lr: float = 1e-2, progress: bool = True) -> FitResult:
    """The loss is the relative squared error at the best scale, 1 - cos^2(W_gen, W), so the scale never
    collapses to 0 (from a random start, plain ||W_gen - W||^2 shrinks the scale first and then sits at the
    saddle where every core gradient is proportional to it). The scale is set to its optimum at the end."""
    target = _check(gen, W)
    norm = target.pow(2).sum()

    def loss(layer) -> torch.Tensor:
        w = layer.weight
        return 1 - (w * target).sum() ** 2 / (w.pow(2).sum() * norm)

    res = _fit(gen, "fit_weight", loss, steps, lr, progress)
    if gen.has_scale:
        from .frontends.trace import materialize

        Wg = materialize(gen)
        cores = dict(gen.cores)
        cores["scale"] = cores["scale"] * np.sum(Wg * np.asarray(W)) / np.sum(Wg * Wg)
        gen.set_cores(cores)
    return res


def fit_outputs(gen: Generator, W: np.ndarray, X: np.ndarray, steps: int = 500, lr: float = 1e-2,
                batch_size: int = 256, progress: bool = True, seed: int = 0) -> FitResult:
    """Match the dense layer's outputs on calibration inputs X[N, I] (Linear-shaped generators)."""
    target_w = _check(gen, W)
    if gen.kind != "linear":
        raise ShapeError("fit_outputs needs a Linear-shaped generator; use fit_weight for Conv2d")
    X = torch.as_tensor(np.asarray(X), dtype=torch.float32)
    if X.ndim != 2 or X.shape[1] != gen.I:
        raise ShapeError(f"calibration inputs must have shape (N, {gen.I}), got {tuple(X.shape)}")
    g = torch.Generator().manual_seed(seed)

    def loss(layer) -> torch.Tensor:
        xb = X[torch.randint(len(X), (min(batch_size, len(X)),), generator=g)]
        y = xb @ target_w.T
        return (layer(xb) - y).pow(2).sum() / y.pow(2).sum()

    return _fit(gen, "fit_outputs", loss, steps, lr, progress)


def train_classifier(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float = 1e-3,
                     batch_size: int = 128, seed: int = 0,
                     core_lr: float | None = None) -> tuple[list[float], list[float]]:
    """End-to-end task training with cross-entropy and Adam: (mean loss per epoch, seconds per epoch).
    `core_lr` gives the ADNTN cores their own learning rate (the other parameters keep `lr`)."""
    import time

    import torch.nn.functional as F

    named = list(model.named_parameters())
    cores = [p for n, p in named if ".cores." in f".{n}"]
    if core_lr is None or not cores:
        opt = torch.optim.Adam(model.parameters(), lr=lr)
    else:
        rest = [p for n, p in named if ".cores." not in f".{n}"]
        opt = torch.optim.Adam([{"params": rest, "lr": lr}, {"params": cores, "lr": core_lr}])
    g = torch.Generator().manual_seed(seed)
    losses, times = [], []
    model.train()
    for _ in range(epochs):
        t = time.perf_counter()
        perm = torch.randperm(len(x), generator=g)
        total = 0.0
        for i in range(0, len(x), batch_size):
            idx = perm[i:i + batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        times.append(time.perf_counter() - t)
        losses.append(total / len(x))
    model.eval()
    return losses, times


def same_budget(shape: Sequence[int], arch: str, params: int, **fixed) -> Generator:
    """The configuration of `arch` with the most parameters not above `params` (for like-for-like tests)."""
    from .generators import make
    from .generators.search import candidates

    best = max((g for g, _ in candidates(shape, arch, **fixed) if g.num_params <= params), key=lambda g: g.num_params)
    return make(arch, shape, **best.config)
