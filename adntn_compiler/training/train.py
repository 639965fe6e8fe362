"""Training objectives for the cores: reconstruct a pretrained weight, or match a layer's outputs.

    res = fit_weight(gen, W)            # min over the scale a of ||a W_gen - W||^2 / ||W||^2
    res = fit_outputs(gen, W, X)        # min over a of ||a X W_gen^T - X W^T||^2 / ||X W^T||^2 (data-aware)
    res.losses, res.rel_error; res.plot("fit.png")

Both train the generator's cores in place (through an ADNTN torch layer) and return the loss curve. End to end:

    res = train_classifier(model, x, y, epochs=12)        # cross-entropy, Adam, warm-up + cosine decay
    res = distill(student, teacher, (x, y), epochs=12)    # soft-target KL (T=4) + 0.1 cross-entropy
    res = distill(student, Ensemble(dense_models), (x, y))  # from the mean of several teachers' logits
    res.losses, res.metrics; res.plot("distill.png")
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from ..errors import ConfigError, ShapeError
from ..generators.base import Generator
from .distributed import World, scaled, world


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
    from ..nn.layers import ADNTNConv2d, ADNTNLinear

    return (ADNTNLinear(gen, bias=False) if gen.kind == "linear" else ADNTNConv2d(gen, bias=False))


def _fit(gen: Generator, objective: str, loss_fn, steps: int, lr: float, progress: bool) -> FitResult:
    """`loss_fn(layer, world) -> (total, weight)`, the loss being total / weight over the global batch. The layer's
    weight is read directly (no forward), so under torchrun the gradients are averaged here, not by DDP."""
    w = world()
    layer = _layer(gen)
    w.broadcast(list(layer.parameters()))
    opt = torch.optim.Adam(layer.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    res = FitResult(objective)
    for _ in tqdm(range(steps), desc=f"{objective} {gen.arch}", disable=not progress or w.rank != 0, leave=False):
        loss, value = scaled(w, *loss_fn(layer, w))
        opt.zero_grad()
        loss.backward()
        w.average_grads(list(layer.parameters()))
        opt.step()
        sched.step()
        res.losses.append(value)
    layer.sync_generator()
    return res


def _check(gen: Generator, W: np.ndarray) -> torch.Tensor:
    if tuple(np.shape(W)) != gen.shape:
        raise ShapeError(f"target weight has shape {tuple(np.shape(W))}, the generator makes {gen.shape}")
    if not np.all(np.isfinite(W)) or not np.any(W):  # the relative errors divide by its norm: NaN cores otherwise
        raise ConfigError("target weight must be finite and not all zeros: there is nothing to fit")
    return torch.as_tensor(np.asarray(W), dtype=torch.float32)


def fit_weight(gen: Generator, W: np.ndarray, steps: int = 500, lr: float = 1e-2, progress: bool = True) -> FitResult:
    """The loss is the relative squared error at the best scale, 1 - cos^2(W_gen, W), so the scale never
    collapses to 0 (from a random start, plain ||W_gen - W||^2 shrinks the scale first and then sits at the
    saddle where every core gradient is proportional to it). The scale is set to its optimum at the end."""
    target = _check(gen, W)
    norm = target.pow(2).sum()

    def loss(layer, world: World) -> tuple[torch.Tensor, torch.Tensor]:  # (the same on every rank)
        w = layer.weight
        return 1 - (w * target).sum() ** 2 / (w.pow(2).sum() * norm), torch.tensor(1.0)

    res = _fit(gen, "fit_weight", loss, steps, lr, progress)
    if gen.has_scale:
        from ..generators.trace import materialize

        Wg = materialize(gen)
        _scale_by(gen, np.sum(Wg * np.asarray(W)) / np.sum(Wg * Wg))
    return res


def _scale_by(gen: Generator, factor: float) -> None:
    """Multiply the generator's scale (the fits end at the least-squares optimum of it)."""
    cores = dict(gen.cores)
    cores["scale"] = cores["scale"] * factor
    gen.set_cores(cores)


FIT_ACTIVATIONS = (None, "relu")  # what fit_outputs can match after


def fit_outputs(gen: Generator, W: np.ndarray, X: np.ndarray, steps: int = 500, lr: float = 1e-2,
                batch_size: int = 256, progress: bool = True, seed: int = 0, bias: np.ndarray | None = None,
                activation: str | None = None) -> FitResult:
    """Match the dense layer's outputs on calibration inputs: X[N, I] for a Linear-shaped generator, or for a
    Conv2d-shaped one its input patches X[N, Cin*kh*kw] (`conv_patches`), the weight acting as (Cout, Cin*kh*kw).

    activation="relu" (with the layer's `bias`) matches what survives the ReLU that follows the layer: the outputs
    the dense layer keeps (> 0) exactly, the ones it zeroes only held at or below 0. A trained layer zeroes most of
    its outputs (93 % on mnist1d's FC2); fitted before the ReLU, the few parameters go to those, the kept outputs
    shrink, and at 20,000x no unit survived the ReLU (benchmarks/quality.py, +fit rows).

    Without an activation the loss is the error at the best scale of the outputs (on the global batch), as in
    fit_weight, and the scale is set to its optimum on X at the end: with the plain squared error a random start's
    outputs shrink to 0 first and can stay there (a ttn on a conv net's FC1 ended at relative error 0.99999)."""
    if activation not in FIT_ACTIVATIONS:
        raise ConfigError(f"fit_outputs: unknown activation {activation!r}; known: None, "
                          + ", ".join(a for a in FIT_ACTIVATIONS if a))
    target_w = _check(gen, W).reshape(gen.O, gen.I)
    X = torch.as_tensor(np.asarray(X), dtype=torch.float32)
    if X.ndim != 2 or X.shape[1] != gen.I:
        what = "input patches (conv_patches)" if gen.kind == "conv2d" else "inputs"
        raise ShapeError(f"calibration {what} must have shape (N, {gen.I}), got {tuple(X.shape)}")
    if not torch.isfinite(X).all() or not X.any():
        raise ConfigError("calibration inputs must be finite and not all zeros: every output would be 0")
    b = torch.zeros(gen.O) if bias is None else torch.as_tensor(np.asarray(bias), dtype=torch.float32)
    if tuple(b.shape) != (gen.O,):
        raise ShapeError(f"fit_outputs: bias must have shape ({gen.O},), got {tuple(b.shape)}")
    g = torch.Generator().manual_seed(seed)

    def loss(layer, world: World) -> tuple[torch.Tensor, torch.Tensor]:
        rows = min(batch_size, len(X))
        xb, = world.shard((X[torch.randint(len(X), (rows,), generator=g)],), rows)  # every rank draws it all
        y, p = xb @ target_w.T, xb @ layer.weight.reshape(gen.O, gen.I).T
        if activation is None:  # held constant, the best scale gives the scale-free loss's gradient (envelope)
            best = world.sum((p * y).sum().detach()) / world.sum(p.pow(2).sum().detach()).clamp_min(1e-30)
            return (best * p - y).pow(2).sum() if gen.has_scale else (p - y).pow(2).sum(), y.pow(2).sum()
        y, p = y + b, p + b  # where the ReLU zeroes the dense output, only a prediction above 0 costs
        kept = torch.relu(y).pow(2).sum().clamp_min(1e-12)  # (a batch where the dense layer keeps nothing)
        return torch.where(y > 0, p - y, torch.relu(p)).pow(2).sum(), kept

    res = _fit(gen, "fit_outputs", loss, steps, lr, progress)
    if activation is None and gen.has_scale:
        _rescale(gen, X, target_w)
    return res


def _rescale(gen: Generator, X: torch.Tensor, target_w: torch.Tensor, chunk: int = 1024) -> None:
    """Set the generator's scale so its outputs on X best match target_w's (least squares in the scale)."""
    from ..generators.trace import materialize

    w = torch.as_tensor(materialize(gen), dtype=torch.float32).reshape(gen.O, gen.I)
    py = pp = 0.0
    for i in range(0, len(X), chunk):
        p, y = X[i:i + chunk] @ w.T, X[i:i + chunk] @ target_w.T
        py, pp = py + float((p * y).sum()), pp + float(p.pow(2).sum())
    if pp > 0:
        _scale_by(gen, py / pp)


def conv_patches(conv: torch.nn.Conv2d, x: torch.Tensor, n: int | None = None, seed: int = 0) -> torch.Tensor:
    """The (N * L, Cin*kh*kw) input patches a Conv2d (groups 1) sees on inputs x (N, Cin, H, W), or `n` of them
    drawn at random: the calibration inputs of fit_outputs for a conv layer."""
    import torch.nn.functional as F

    if conv.groups != 1:
        raise ShapeError(f"conv_patches needs groups=1, the layer has groups={conv.groups}")
    p = F.unfold(x, conv.kernel_size, conv.dilation, conv.padding, conv.stride)  # (N, Cin*kh*kw, L)
    p = p.transpose(1, 2).reshape(-1, p.shape[1])
    if n is not None and n < len(p):
        p = p[torch.randperm(len(p), generator=torch.Generator().manual_seed(seed))[:n]]
    return p


# ---------------------------------------------------------------- end-to-end training: the recipe, distillation
# One recipe for every model (dense, compressed, baselines): Adam, learning rate warmed up linearly over the first
# `warmup` fraction of the steps, then cosine-decayed to 0. A constant rate understated the ttn and tt rows of the
# quality table by up to 2 points (benchmarks/quality.py reports both).
SCHEDULES = ("cosine", "constant")


def lr_schedule(opt: torch.optim.Optimizer, steps: int, schedule: str = "cosine",
                warmup: float = 0.05) -> torch.optim.lr_scheduler.LambdaLR:
    if schedule not in SCHEDULES:
        raise ConfigError(f"unknown schedule {schedule!r}; known: {', '.join(SCHEDULES)}")
    if not 0 <= warmup < 1:
        raise ConfigError(f"warmup is a fraction of the steps in [0, 1), got {warmup}")
    w = int(warmup * steps)

    def factor(i: int) -> float:
        if i < w:
            return (i + 1) / w
        if schedule == "constant":
            return 1.0
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (i - w) / max(1, steps - w))))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


@dataclass
class TrainResult:
    """Per-epoch mean loss, seconds, and the `evaluate` metric after each epoch (when given); per-step losses."""
    objective: str
    losses: list[float] = field(default_factory=list)
    epoch_s: list[float] = field(default_factory=list)
    metrics: list[float] = field(default_factory=list)
    step_losses: list[float] = field(default_factory=list)

    def plot(self, path: str, metric: str = "metric") -> None:
        """Loss per epoch (log scale) and, on the right axis, the metric after each epoch."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(range(1, len(self.losses) + 1), self.losses, "o-", label=f"{self.objective} loss")
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel("training loss")
        if self.metrics:
            ax2 = ax.twinx()
            ax2.plot(range(1, len(self.metrics) + 1), self.metrics, "s--", color="C1", label=metric)
            ax2.set_ylabel(metric)
        fig.legend(loc="upper center", fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)


def _param_groups(model: torch.nn.Module, lr: float, core_lr: float | None, which: str) -> list[dict]:
    if which not in ("all", "compressed"):
        raise ConfigError(f"params must be 'all' or 'compressed', got {which!r}")
    from ..nn.layers import _ADNTNBase

    if which == "compressed":
        named = [(f"{m_name}.{n}", p) for m_name, m in model.named_modules() if isinstance(m, _ADNTNBase)
                 for n, p in m.named_parameters()]
        if not named:
            raise ConfigError("params='compressed' but the model has no ADNTN layer")
    else:
        named = list(model.named_parameters())
    named = [(n, p) for n, p in named if p.requires_grad]
    cores = [p for n, p in named if ".cores." in f".{n}"]
    rest = [p for n, p in named if ".cores." not in f".{n}"]
    groups = [{"params": rest, "lr": lr}, {"params": cores, "lr": lr if core_lr is None else core_lr}]
    return [g for g in groups if g["params"]]


def weight_norm2(model: torch.nn.Module) -> torch.Tensor:
    """Sum of ||W||_F^2 over the model's weights: an ADNTN layer's *generated* W (its weight plan, differentiable
    in the cores), and nn.Linear / nn.Conv2d weights as they are. Biases and norms are not counted."""
    from ..nn.layers import _ADNTNBase

    total = torch.zeros(())
    for m in model.modules():
        if isinstance(m, _ADNTNBase):
            w = m.weight
        elif isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)) and m.weight.requires_grad:
            w = m.weight
        else:
            continue
        total = total + w.pow(2).sum()
    return total


def _batches(data, batch_size: int, g: torch.Generator, steps: int | None):
    """One epoch of batches: index batches of a tensor dataset, or `steps` calls of a sampler."""
    if callable(data):
        for _ in range(steps):
            b = data(g)
            yield None, tuple(b) if isinstance(b, (tuple, list)) else (b,)
        return
    n = len(data[0])
    perm = torch.randperm(n, generator=g)
    for i in range(0, n, batch_size):
        idx = perm[i:i + batch_size]
        yield idx, tuple(t[idx] for t in data)


def _loop(model, data, loss_fn, epochs: int, lr: float, batch_size: int, seed: int, core_lr, schedule: str,
          warmup: float, params: str, train_mode: bool, steps: int | None, evaluate, progress: bool,
          desc: str, weight_decay: float = 0.0, augment=None) -> TrainResult:
    import time

    if epochs < 1:
        raise ConfigError(f"epochs must be >= 1, got {epochs}")
    if not weight_decay >= 0:
        raise ConfigError(f"weight_decay must be >= 0, got {weight_decay}")
    if not lr > 0 or (core_lr is not None and not core_lr > 0):  # a negative rate climbs the loss, silently
        raise ConfigError(f"learning rates must be > 0, got lr={lr}, core_lr={core_lr}")
    if augment is not None and not callable(augment):
        raise ConfigError(f"augment must be a function (x, generator) -> x, got {type(augment).__name__}")
    if weight_decay:
        task_loss = loss_fn

        def loss_fn(net, idx, batch):  # noqa: F811  (the task's loss plus the decay, once per global batch)
            total, weight = task_loss(net, idx, batch)
            return total + weight_decay / 2 * weight_norm2(model) * weight, weight
    if callable(data) and not steps:
        raise ConfigError("a sampler as data needs steps= (batches per epoch)")
    per_epoch = steps if callable(data) else math.ceil(len(data[0]) / batch_size)
    groups = _param_groups(model, lr, core_lr, params)
    opt = torch.optim.Adam(groups)
    sched = lr_schedule(opt, epochs * per_epoch, schedule, warmup)
    trained = {id(p) for g in groups for p in g["params"]}
    w = world()
    with _frozen([p for p in model.parameters() if p.requires_grad and id(p) not in trained]):
        net = w.wrap(model)  # (after freezing: DDP reduces the gradients of what is trained)
        g = torch.Generator().manual_seed(seed)
        res = TrainResult(desc)
        bar = tqdm(total=epochs * per_epoch, desc=desc, disable=not progress or w.rank != 0, leave=False)
        for _ in range(epochs):
            model.train(train_mode)
            t, total, count = time.perf_counter(), 0.0, 0
            for idx, batch in _batches(data, batch_size, g, steps):
                n = len(batch[0])
                if augment is not None:  # on the global batch, before sharding: every rank draws the same
                    batch = (augment(batch[0], g), *batch[1:])
                mine = w.shard(batch if idx is None else (idx, *batch), n)  # this rank's rows of the global batch
                loss, value = scaled(w, *loss_fn(net, *((None, mine) if idx is None else (mine[0], mine[1:]))))
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                total, count = total + value * n, count + n
                res.step_losses.append(value)
                bar.update()
                bar.set_postfix(loss=f"{value:.4f}")
            res.epoch_s.append(time.perf_counter() - t)
            res.losses.append(total / count)
            model.eval()
            if evaluate is not None:
                with torch.no_grad():
                    res.metrics.append(float(evaluate(model)))
        bar.close()
        model.eval()
        return res


@contextlib.contextmanager
def _frozen(params: list):
    """No gradients for what is not trained (backward then stops at the first trained layer); restored after."""
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def _as_tuple(data) -> tuple:
    if callable(data):
        return data
    t = tuple(data) if isinstance(data, (tuple, list)) else (data,)
    if not t or not all(isinstance(a, torch.Tensor) for a in t) or len({len(a) for a in t}) != 1:
        raise ShapeError("data must be a tensor x, a tuple (x, y) of tensors of equal length, or a sampler "
                         "data(generator) -> x or (x, y)")
    return t


def train_classifier(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float = 1e-3,
                     batch_size: int = 128, seed: int = 0, core_lr: float | None = None, schedule: str = "cosine",
                     warmup: float = 0.05, evaluate=None, progress: bool = False,
                     weight_decay: float = 0.0, augment=None) -> TrainResult:
    """End-to-end task training with cross-entropy and the recipe above. `core_lr` gives the ADNTN cores their
    own learning rate (the other parameters keep `lr`); `evaluate(model) -> float` is recorded after each epoch.
    `weight_decay` adds weight_decay / 2 * `weight_norm2(model)` to the loss: the Frobenius norm of each ADNTN
    layer's generated weight (a penalty on the cores would not bound W: the scale and the activations sit
    between them) and of the ordinary Linear / Conv2d weights. `augment(x, generator) -> x` transforms each
    training batch's inputs (`adntn_compiler.training.data.augment_signals` / `augment_images`); evaluation sees
    the data as it is."""
    import torch.nn.functional as F

    def loss(net, idx, batch):
        return F.cross_entropy(net(batch[0]), batch[1], reduction="sum"), torch.tensor(float(len(batch[0])))

    return _loop(model, _as_tuple((x, y)), loss, epochs, lr, batch_size, seed, core_lr, schedule, warmup, "all",
                 True, None, evaluate, progress, "train", weight_decay, augment)


def _outputs(teacher, x: torch.Tensor, chunk: int = 512) -> torch.Tensor:
    teacher.eval()
    with torch.no_grad():
        return torch.cat([teacher(x[i:i + chunk]) for i in range(0, len(x), chunk)])


class Ensemble(torch.nn.Module):
    """The mean of several models' outputs (logits), every model on the same batch: a stronger teacher for `distill`
    than any one of them (Hinton et al. 2015 distil an ensemble into one net)."""

    def __init__(self, models: Sequence[torch.nn.Module]):
        super().__init__()
        if not models:
            raise ConfigError("an Ensemble needs at least one model")
        self.models = torch.nn.ModuleList(models)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [m(x) for m in self.models]
        if len({o.shape for o in outs}) > 1:
            shapes = [tuple(o.shape) for o in outs]
            raise ShapeError(f"the Ensemble's models give outputs of different shapes: {shapes}")
        return torch.stack(outs).mean(0)


def distill(student: torch.nn.Module, teacher, data, epochs: int = 12, lr: float = 1e-3, batch_size: int = 128,
            temperature: float = 4.0, alpha: float = 0.9, loss: str = "kl", steps: int | None = None,
            seed: int = 0, core_lr: float | None = None, schedule: str = "cosine", warmup: float = 0.05,
            params: str = "all", train_mode: bool = True, evaluate=None, progress: bool = True,
            weight_decay: float = 0.0, augment=None) -> TrainResult:
    """Train `student` (a model where some layers were compressed) to match `teacher` (the dense model).

    loss="kl": alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T)) + (1 - alpha) * cross-entropy on the
    labels (Hinton et al.; T^2 keeps the soft term's gradient scale independent of T). Without labels alpha is 1.
    loss="mse": ||student(x) - teacher(x)||^2 / ||teacher(x)||^2, for dense outputs (score maps, features).

    data: a tensor x or (x, y) of tensors (one epoch = one pass in batches of `batch_size`), or a sampler
    data(generator) -> x or (x, y) (augmented crops; one epoch = `steps` calls). teacher: a module, or (for
    tensor data) a tensor of its outputs on x, which are then computed once. params="compressed" trains only the
    ADNTN layers' parameters; train_mode=False keeps batch norm and dropout in eval mode (tiny batches).
    weight_decay, augment: as in `train_classifier`; with `augment` the teacher sees the same augmented batch as
    the student, so it must be a module."""
    import torch.nn.functional as F

    if loss not in ("kl", "mse"):
        raise ConfigError(f"unknown distillation loss {loss!r}; known: kl, mse")
    if not temperature > 0 or not 0 <= alpha <= 1:
        raise ConfigError(f"need temperature > 0 and 0 <= alpha <= 1, got {temperature}, {alpha}")
    data = _as_tuple(data)
    cached = None
    if isinstance(teacher, torch.Tensor):
        if augment is not None:
            raise ConfigError("precomputed teacher outputs cannot follow augmented inputs; pass the teacher module")
        if callable(data) or len(teacher) != len(data[0]):
            raise ShapeError(f"teacher outputs ({tuple(teacher.shape)}) must be given for every one of the "
                             f"{'sampled' if callable(data) else len(data[0])} inputs; pass the teacher module")
        cached = teacher.detach()
    elif not callable(data) and augment is None:
        cached = _outputs(teacher, data[0])  # tensor data: the teacher's outputs are the same every epoch
    else:
        teacher.eval()

    def objective(net, idx, batch):  # (total, weight): the loss is total / weight over the global batch
        x, y = batch[0], (batch[1] if len(batch) > 1 else None)
        if cached is not None:
            t = cached[idx]
        else:
            with torch.no_grad():
                t = teacher(x)
        s = net(x)
        if s.shape != t.shape:
            raise ShapeError(f"student output {tuple(s.shape)} and teacher output {tuple(t.shape)} differ")
        if loss == "mse":
            return (s - t).pow(2).sum(), t.pow(2).sum().clamp_min(1e-12)
        T = temperature
        soft = F.kl_div(F.log_softmax(s / T, -1), F.log_softmax(t / T, -1), log_target=True, reduction="sum") * T * T
        n = torch.tensor(float(len(x)))
        if y is None or alpha == 1:
            return soft, n
        return alpha * soft + (1 - alpha) * F.cross_entropy(s, y, reduction="sum"), n

    return _loop(student, data, objective, epochs, lr, batch_size, seed, core_lr, schedule, warmup, params,
                 train_mode, steps, evaluate, progress, f"distill ({loss})", weight_decay, augment)


def same_budget(shape: Sequence[int], arch: str, params: int, **fixed) -> Generator:
    """The configuration of `arch` with the most parameters not above `params` (for like-for-like tests)."""
    from ..generators import make
    from ..generators.search import candidates

    best = max((g for g, _ in candidates(shape, arch, **fixed) if g.num_params <= params), key=lambda g: g.num_params)
    return make(arch, shape, **best.config)
