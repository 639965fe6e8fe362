"""`save_model` / `load_model`: a compressed torch model as one safetensors file, no pickle.

The weights are the file's tensors; the architecture (a tree of layer specs, generators by arch, shape and
config) is JSON in the safetensors metadata under "adntn_model", with the sha256 of the tensors. Loading checks
the digest and every tensor's exact shape against the described layers (and the memory they need) before any
layer is allocated, then rebuilds the modules and sets the trained cores (no initialisation or calibration).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

from ..errors import ConfigError, SerializationError

FORMAT = "adntn-model"
VERSION = 1
_ACTS = ("ReLU", "Tanh", "Sigmoid", "SiLU", "Identity")


def _spec(m, path: str, tensors: dict) -> dict:
    from torch import nn

    from ..nn.layers import ADNTNConv2d, ADNTNLinear

    def keep(name: str, t) -> None:
        tensors[f"{path}.{name}" if path else name] = t.detach().cpu().contiguous()

    name = type(m).__name__
    if isinstance(m, (ADNTNLinear, ADNTNConv2d)):
        for k, v in m.cores.items():
            keep(f"cores.{k}", v)
        if m.bias is not None:
            keep("bias", m.bias)
        d = dict(type=name, arch=m.gen.arch, shape=list(m.gen.shape), config=m.gen.config, bias=m.bias is not None)
        if isinstance(m, ADNTNConv2d):
            d.update(stride=m.stride, padding=m.padding, dilation=m.dilation, groups=m.groups)
        return d
    if isinstance(m, nn.Linear):
        keep("weight", m.weight)
        if m.bias is not None:
            keep("bias", m.bias)
        return dict(type=name, in_features=m.in_features, out_features=m.out_features, bias=m.bias is not None)
    if isinstance(m, nn.Conv2d):
        keep("weight", m.weight)
        if m.bias is not None:
            keep("bias", m.bias)
        return dict(type=name, in_channels=m.in_channels, out_channels=m.out_channels, kernel_size=m.kernel_size,
                    stride=m.stride, padding=m.padding, dilation=m.dilation, groups=m.groups, bias=m.bias is not None)
    if isinstance(m, nn.Sequential):
        return dict(type=name, children=[[k, _spec(c, f"{path}.{k}" if path else k, tensors)]
                                         for k, c in m.named_children()])
    return _stateless_spec(m, path)


def _stateless_spec(m, path: str) -> dict:
    """Activations, flatten, dropout: layers without tensors, by their arguments."""
    name = type(m).__name__
    args = {"GELU": ("approximate",), "LeakyReLU": ("negative_slope",), "Flatten": ("start_dim", "end_dim"),
            "Dropout": ("p",), **{a: () for a in _ACTS}}.get(name)
    if args is None:
        raise ConfigError(f"save_model cannot store module {path or '<root>'} of type {name}")
    return dict(type=name, **{a: getattr(m, a) for a in args})


def save_model(model, path: str | os.PathLike) -> Path:
    """Write `model` (nn.Sequential of ADNTN/dense layers and activations, or one layer) to `path`."""
    from safetensors.torch import save_file

    tensors: dict = {}
    spec = _spec(model, "", tensors)
    meta = {"adntn_model": json.dumps(dict(format=FORMAT, version=VERSION, model=spec,
                                           tensors_sha256=_digest({k: v.numpy() for k, v in tensors.items()})))}
    from ..runtime.container import write_atomic

    return write_atomic(Path(path), lambda tmp: save_file(tensors, tmp, metadata=meta))


def _digest(arrays: dict) -> str:
    """sha256 over the tensors in name order: each name, dtype, shape and bytes."""
    h = hashlib.sha256()
    for k in sorted(arrays):
        a = arrays[k]
        h.update(json.dumps([k, str(a.dtype), list(a.shape)]).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _expected(d: dict, path: str, out: dict) -> None:
    """The exact shape of every tensor the described layers hold, from the description alone (a generator
    is built for its core shapes, which allocates nothing)."""
    from ..generators import make

    key = lambda name: f"{path}.{name}" if path else name  # noqa: E731
    t = d.get("type")
    if t in ("ADNTNLinear", "ADNTNConv2d"):
        gen = make(d["arch"], d["shape"], **d["config"])
        out.update({key(f"cores.{k}"): tuple(s) for k, s in gen.core_shapes.items()})
        o = gen.O
    elif t == "Linear":
        out[key("weight")], o = (int(d["out_features"]), int(d["in_features"])), int(d["out_features"])
    elif t == "Conv2d":
        o, groups = int(d["out_channels"]), int(d["groups"])
        if groups < 1 or int(d["in_channels"]) % groups:
            raise SerializationError(f"layer {path}: in_channels {d['in_channels']} is not a multiple of groups "
                                     f"{groups}")
        out[key("weight")] = (o, int(d["in_channels"]) // groups, *map(int, d["kernel_size"]))
    elif t == "Sequential":
        for k, c in d["children"]:
            _expected(c, key(str(k)), out)
        return
    else:
        return  # activations, Flatten, Dropout: no tensors
    if d.get("bias"):
        out[key("bias")] = (o,)


def _build(d: dict, path: str, tensors: dict):
    import torch
    from torch import nn

    from ..generators import make
    from ..nn.layers import ADNTNConv2d, ADNTNLinear

    def get(name: str):
        key = f"{path}.{name}" if path else name
        if key not in tensors:
            raise SerializationError(f"model file has no tensor {key!r}")
        return tensors[key]

    t = d.get("type")
    if t in ("ADNTNLinear", "ADNTNConv2d"):
        gen = make(d["arch"], d["shape"], **d["config"])
        gen.set_cores({k: get(f"cores.{k}").double().numpy() for k in gen.core_shapes})
        m = ADNTNLinear(gen, bias=d["bias"]) if t == "ADNTNLinear" else \
            ADNTNConv2d(gen, stride=d["stride"], padding=d["padding"], dilation=d["dilation"], groups=d["groups"],
                        bias=d["bias"])
    elif t == "Linear":
        m = nn.Linear(d["in_features"], d["out_features"], bias=d["bias"])
    elif t == "Conv2d":
        m = nn.Conv2d(d["in_channels"], d["out_channels"], d["kernel_size"], stride=d["stride"],
                      padding=d["padding"], dilation=d["dilation"], groups=d["groups"], bias=d["bias"])
    elif t == "Sequential":
        return nn.Sequential(*[_build(c, f"{path}.{k}" if path else k, tensors) for k, c in d["children"]])
    elif t in _ACTS:
        return getattr(nn, t)()
    elif t == "GELU":
        return nn.GELU(approximate=d["approximate"])
    elif t == "LeakyReLU":
        return nn.LeakyReLU(d["negative_slope"])
    elif t == "Flatten":
        return nn.Flatten(d["start_dim"], d["end_dim"])
    elif t == "Dropout":
        return nn.Dropout(d["p"])
    else:
        raise SerializationError(f"model file has a layer of unknown type {t!r} at {path or '<root>'}")
    with torch.no_grad():
        for name, p in m.named_parameters():
            src = get(name)
            if tuple(src.shape) != tuple(p.shape):  # copy_ would broadcast a (1,) bias silently
                raise SerializationError(f"tensor {path}.{name} has shape {tuple(src.shape)}, layer needs "
                                         f"{tuple(p.shape)}")
            p.copy_(src)
    return m


def _num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _ints(x, n: int, lo: int) -> bool:
    return isinstance(x, list) and len(x) == n and all(isinstance(v, int) and not isinstance(v, bool) and
                                                       lo <= v <= MAX_INT for v in x)


MAX_INT = 1 << 24  # features, channels, kernel sizes, strides, paddings
def _pair(v, lo: int) -> bool:
    return _ints([v], 1, lo) or _ints(v, 2, lo)


_CONV = {"stride": lambda v: _pair(v, 1), "dilation": lambda v: _pair(v, 1),
         "padding": lambda v: _pair(v, 0) or v in ("valid", "same"), "groups": lambda v: _ints([v], 1, 1)}
_FIELDS = {  # layer type -> field -> check: every argument a layer is built from, by type and range
    "Linear": {"in_features": lambda v: _ints([v], 1, 1), "out_features": lambda v: _ints([v], 1, 1),
               "bias": lambda v: isinstance(v, bool)},
    "Conv2d": {"in_channels": lambda v: _ints([v], 1, 1), "out_channels": lambda v: _ints([v], 1, 1),
               "kernel_size": lambda v: _ints(v, 2, 1), "bias": lambda v: isinstance(v, bool), **_CONV},
    "ADNTNLinear": {"arch": lambda v: isinstance(v, str), "shape": lambda v: _ints(v, len(v), 1) if
                    isinstance(v, list) else False, "config": lambda v: isinstance(v, dict),
                    "bias": lambda v: isinstance(v, bool)},
    "GELU": {"approximate": lambda v: v in ("none", "tanh")},
    "LeakyReLU": {"negative_slope": _num},
    "Flatten": {"start_dim": lambda v: _ints([v], 1, -64), "end_dim": lambda v: _ints([v], 1, -64)},
    "Dropout": {"p": lambda v: _num(v) and 0 <= v <= 1},
    "Sequential": {"children": lambda v: isinstance(v, list) and all(
        isinstance(c, list) and len(c) == 2 and isinstance(c[0], str) and isinstance(c[1], dict) for c in v)},
    **{a: {} for a in _ACTS},
}
_FIELDS["ADNTNConv2d"] = {**_FIELDS["ADNTNLinear"], **_CONV}


def _check_layers(d, where: str = "<root>") -> None:
    """Every layer's type and arguments (type and range) before any module is built: NaN slopes, stride 0 or a
    GELU approximation torch does not know would load, then fail or give NaN at the first forward."""
    if not isinstance(d, dict):
        raise SerializationError(f"layer {where}: a layer is a JSON object, got {type(d).__name__}")
    t = d.get("type")
    if t not in _FIELDS:
        raise SerializationError(f"layer {where}: unknown layer type {t!r}; known: {', '.join(sorted(_FIELDS))}")
    for field, ok in _FIELDS[t].items():
        if field not in d or not ok(d[field]):
            raise SerializationError(f"layer {where} ({t}): {field} = {d.get(field, '<missing>')!r:.80} is not valid")
    if t == "Conv2d" and (d["in_channels"] % d["groups"] or d["out_channels"] % d["groups"]):
        raise SerializationError(f"layer {where} (Conv2d): channels {d['in_channels']} -> {d['out_channels']} are "
                                 f"not multiples of groups {d['groups']}")
    for k, c in d.get("children", []) if t == "Sequential" else []:
        _check_layers(c, f"{where}.{k}" if where != "<root>" else k)


def load_model(path: str | os.PathLike):
    """The torch model stored by `save_model` (eval mode). Checked before any tensor is read: a regular file, the
    description (JSON with bounded depth, every layer's arguments by type and range), the tensors' shapes in the
    header against the described layers, and the memory they need; then the tensors' sha256."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from ..runtime import jsonio
    from ..runtime.container import check_regular

    if not os.path.lexists(path):
        raise SerializationError(f"{path}: no such model file")
    check_regular(path, str(path))
    try:
        with safe_open(str(path), "pt") as f:  # the header only
            meta = f.metadata() or {}
            have = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as e:  # safetensors' own error types
        raise SerializationError(f"{path}: not a readable safetensors model file ({e})") from None
    if "adntn_model" not in meta:
        raise SerializationError(f"{path}: safetensors file has no adntn model description "
                                 "(write it with adntn.save_model)")
    doc = jsonio.loads(meta["adntn_model"], f"{path}: the model description")
    if doc.get("format") != FORMAT or doc.get("version") != VERSION:
        raise SerializationError(f"{path}: model format {doc.get('format')!r} version {doc.get('version')!r} is not "
                                 f"supported (this build reads {FORMAT} version {VERSION})")
    from ..errors import AdntnError
    from ..memory import available_bytes, fmt_bytes

    try:
        _check_layers(doc.get("model"))
        want: dict = {}
        _expected(doc["model"], "", want)
    except SerializationError as e:
        raise SerializationError(f"{path}: {e}") from None
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise SerializationError(f"{path}: malformed model description ({type(e).__name__}: {e})") from None
    except AdntnError as e:
        raise SerializationError(f"{path}: a layer in the model description is invalid: {e}") from None
    for k in sorted(set(want) | set(have)):
        if want.get(k) != have.get(k):
            raise SerializationError(f"{path}: tensor {k!r}: the described layers need shape {want.get(k)}, the file "
                                     f"holds {have.get(k)}")
    need = 2 * 4 * sum(math.prod(s) for s in want.values())  # the layers' parameters next to the file's copy
    if need > available_bytes():
        raise SerializationError(f"{path}: the model needs about {fmt_bytes(need)}; {fmt_bytes(available_bytes())} "
                                 f"is available")
    try:
        tensors = load_file(str(path))
    except Exception as e:  # safetensors' own error types
        raise SerializationError(f"{path}: not a readable safetensors model file ({e})") from None
    if doc.get("tensors_sha256") != _digest({k: v.numpy() for k, v in tensors.items()}):
        raise SerializationError(f"{path}: the tensors do not match the sha256 in the model description (the file "
                                 f"was modified or damaged)")
    try:
        return _build(doc["model"], "", tensors).eval()
    except (KeyError, TypeError, ValueError) as e:
        raise SerializationError(f"{path}: malformed model description ({type(e).__name__}: {e})") from None
