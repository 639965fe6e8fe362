"""`compress` a torch model (its nn.Linear / nn.Conv2d / Hugging Face Conv1D layers become ADNTN layers) and `report`
what it holds."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import nn

from ..errors import ConfigError, ShapeError
from ..generators import make
from ..nn.layers import ADNTNConv2d, ADNTNLinear, _ADNTNBase

KNOWN_LAYERS = "nn.Linear, nn.Conv2d and Hugging Face's Conv1D"


def is_conv1d(m: nn.Module) -> bool:
    """Hugging Face's Conv1D (GPT-2's layers; y = x @ weight + bias, weight (in, out)), recognised by its class name
    and layout so that transformers need not be imported."""
    w = getattr(m, "weight", None)
    return (type(m).__name__ == "Conv1D" and isinstance(w, torch.Tensor) and w.dim() == 2
            and getattr(m, "nf", None) == w.shape[1])


def is_linear(m: nn.Module) -> bool:
    """A layer ADNTNLinear replaces: nn.Linear or a Conv1D."""
    return isinstance(m, nn.Linear) or is_conv1d(m)


def is_compressible(m: nn.Module) -> bool:
    return is_linear(m) or isinstance(m, nn.Conv2d)


def layer_shape(m: nn.Module) -> tuple[int, ...]:
    if isinstance(m, nn.Linear):
        return (m.out_features, m.in_features)
    if is_conv1d(m):
        return (m.weight.shape[1], m.weight.shape[0])
    if isinstance(m, nn.Conv2d):
        return (m.out_channels, m.in_channels // m.groups, *m.kernel_size)
    raise ConfigError(f"cannot compress a {type(m).__name__}; only {KNOWN_LAYERS}")


def dense_weight(m: nn.Module) -> torch.Tensor:
    """The weight of a dense layer in the generator's layout (layer_shape): a Conv1D's (in, out) weight transposed,
    for fitting a generator to it (`fit_weight(gen, dense_weight(m).detach().double().numpy())`)."""
    layer_shape(m)  # refuses unknown layers
    return m.weight.T if is_conv1d(m) else m.weight


NORMS = ("batch",)


def _replacement(name: str, m: nn.Module, spec: Mapping[str, Any]) -> nn.Module:
    """The ADNTN layer for `m`; with norm="batch" and/or dropout=p, nn.Sequential(layer, batch norm, dropout)."""
    spec = dict(spec)
    norm, dropout = spec.pop("norm", None), spec.pop("dropout", 0.0)
    if norm is not None and norm not in NORMS:
        raise ConfigError(f"layer '{name}': unknown norm {norm!r}; known: {', '.join(NORMS)}")
    if not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ConfigError(f"layer '{name}': dropout is a probability in [0, 1), got {dropout!r}")
    new = _adntn_layer(name, m, spec)
    if norm is None and not dropout:
        return new
    p = next(m.parameters())
    # right after the compressed layer, as the published >= 1,000x recipes do (Novikov et al., Garipov et al.)
    bn = nn.BatchNorm1d if is_linear(m) else nn.BatchNorm2d
    extra = [bn(new.gen.O, dtype=p.dtype, device=p.device)] if norm else []
    if norm and "scale" in new.cores:
        # The norm makes the loss blind to W's scale, so that scalar's gradient is noise, which Adam turns into
        # steps of the full learning rate: on Fashion-MNIST (FC1 at 2,000x, cores at 3e-3, seed 9) it fell 2.4x in
        # one epoch, the running variance lagged and that epoch's eval gave one class (10.0 %). The norm's own
        # weight carries the scale; frozen, the same run has no such epoch and ends level (88.73 against 88.75 %).
        new.cores["scale"].requires_grad_(False)
    extra += [nn.Dropout(dropout)] if dropout else []
    return nn.Sequential(new, *extra)


def _adntn_layer(name: str, m: nn.Module, spec: dict[str, Any]) -> _ADNTNBase:
    arch = spec.pop("arch", "ttn")
    shape = layer_shape(m)
    if "shape" in spec and tuple(spec.pop("shape")) != shape:
        raise ShapeError(f"layer '{name}' ({type(m).__name__}) has weight shape {shape}, the spec says "
                         f"{tuple(spec.get('shape', ()))}")
    prefer, batch, target = spec.pop("prefer", "quality"), spec.pop("batch_size", None), spec.pop("target", None)
    if prefer not in ("quality", "speed"):
        raise ConfigError(f"layer '{name}': prefer must be 'quality' or 'speed', got {prefer!r}")
    if prefer == "quality" and (batch is not None or target is not None):
        raise ConfigError(f"layer '{name}': batch_size and target choose a configuration by speed; add "
                          f"prefer='speed'")
    timing = None
    if prefer == "speed":
        if not is_linear(m) or "ratio" not in spec:
            raise ConfigError(f"layer '{name}': prefer='speed' times the configurations of a Linear layer that "
                              f"reach a `ratio`; give ratio= (and a Linear layer)")
        from ..tuning import fastest_config

        spec, timing = fastest_config(shape, arch, spec.pop("ratio"), int(batch or 1), target or "cpu", **spec)
    elif "ratio" in spec:
        from ..generators.search import config_for_ratio

        spec = {**config_for_ratio(shape, arch, spec.pop("ratio"), **spec)}
    gen = make(arch, shape, **spec)
    p = next(m.parameters())
    has_bias = m.bias is not None
    if is_linear(m):  # a Conv1D computes x @ weight + b = x @ (weight.T).T + b: an nn.Linear(in, out)
        new: _ADNTNBase = ADNTNLinear(gen, bias=has_bias, dtype=p.dtype)
    else:
        new = ADNTNConv2d(gen, m.stride, m.padding, m.dilation, m.groups, bias=has_bias, dtype=p.dtype)
    if has_bias:
        with torch.no_grad():
            new.bias.copy_(m.bias)
    new.timing = timing  # how fast this configuration was on the device (prefer="speed"), for report()
    return new.to(p.device)


def compress(model: nn.Module, specs: Mapping[str, Mapping[str, Any]]) -> nn.Module:
    """Replace the named nn.Linear / nn.Conv2d / Hugging Face Conv1D layers by ADNTN layers (in place; returns the
    model; a Conv1D (in, out) becomes an ADNTNLinear whose generator has shape (out, in)).

    A spec gives the generator's configuration (`arch`, `rank`, `layout`, ...) or a target `ratio`; `norm="batch"`
    adds a batch norm right after the layer and `dropout=p` a dropout (the layer then becomes nn.Sequential(ADNTN
    layer, norm, dropout)). All replacements are built first, so a bad spec leaves the model untouched."""
    modules = dict(model.named_modules())
    new = {}
    for name, spec in specs.items():
        if name not in modules:
            known = [n for n, m in modules.items() if is_compressible(m)]
            raise ConfigError(f"model has no layer named '{name}'; its {KNOWN_LAYERS} layers: {known}")
        new[name] = _replacement(name, modules[name], spec)
    for name, m in new.items():
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, attr, m)
    return model


@dataclass
class Report:
    rows: list[dict[str, Any]]

    @property
    def total(self) -> dict[str, Any]:
        dense = sum(r["dense_params"] for r in self.rows)
        gen = sum(r["params"] for r in self.rows)
        return {"dense_params": dense, "params": gen, "ratio": dense / gen if gen else float("nan")}

    def __str__(self) -> str:
        timed = any(r.get("timing") for r in self.rows)
        head = (f"{'layer':<20} {'shape':<22} {'arch':<10} {'dense params':>14} {'params':>10} {'ratio':>10} "
                f"{'pad':>6} {'max rank':>8}" + (f" {'ms/call':>18}" if timed else "") + "  configuration")
        lines = [head, "-" * len(head)]
        for r in self.rows:
            cfg = " ".join(f"{k}={r['config'][k]}" for k in ("layout", "legs", "rank", "depth", "activation")
                           if r["config"].get(k) is not None)
            t = r.get("timing")
            when = f"{1e3 * t['seconds']:.3f} @{t['batch_size']} {t['how'][:4]}" if t else ""
            lines.append(f"{r['layer']:<20} {str(r['shape']):<22} {r['arch']:<10} {r['dense_params']:>14,} "
                         f"{r['params']:>10,} {r['ratio']:>9,.0f}x {r['padding']:>6.2f} {r['max_rank']:>8,}"
                         + (f" {when:>18}" if timed else "") + f"  {cfg}")
        t = self.total
        lines.append(f"{'total':<20} {'':<22} {'':<10} {t['dense_params']:>14,} {t['params']:>10,} "
                     f"{t['ratio']:>9,.0f}x")
        return "\n".join(lines)


def report(model: nn.Module) -> Report:
    """Per-layer table: shape, dense params, generator params, ratio, arch, the largest rank of W the
    structure allows, the configuration (bias not counted)."""
    rows = []
    for name, m in model.named_modules():
        if isinstance(m, _ADNTNBase):
            g = m.gen
            rows.append(dict(layer=name, shape=g.shape, arch=g.arch, dense_params=g.dense_params,
                             params=g.num_params, ratio=g.compression_ratio, padding=g.padding_overhead,
                             max_rank=g.rank_bound(), config=g.config, timing=getattr(m, "timing", None)))
        elif is_compressible(m):
            n = m.weight.numel()
            shape = layer_shape(m)
            rows.append(dict(layer=name, shape=shape, arch="dense", dense_params=n, params=n, ratio=1.0,
                             padding=1.0, max_rank=min(shape[0], n // shape[0]), config={}))
    return Report(rows)
