"""The numpy interpreter: the definition of what every graph means."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import opt_einsum

from .. import activations
from ..errors import ConfigError
from ..ir.graph import Graph, Node, Op
from ..ir.interpret import interpret
from ..ir.ops import conv_out
from ..memory import check_fits


def _einsum(n: Node, *xs: np.ndarray) -> np.ndarray:
    y = opt_einsum.contract(n.attrs.equation, *xs)
    return activations.get(n.attrs.epilogue).numpy(y) if n.attrs.epilogue else y


def _im2col(n: Node, x: np.ndarray) -> np.ndarray:
    a = n.attrs
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = a.kernel, a.stride, a.padding, a.dilation
    N, C = x.shape[:2]
    _, _, _, P = n.out.shape
    ho, wo = conv_out(a, x.shape)
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    cols = np.stack([xp[:, :, u * dh: u * dh + sh * (ho - 1) + 1: sh, v * dw: v * dw + sw * (wo - 1) + 1: sw]
                     for u in range(kh) for v in range(kw)], axis=2)  # (N, C, kh*kw, ho, wo)
    g = a.groups
    cols = cols.reshape(N, g, C // g * kh * kw, P)
    return np.ascontiguousarray(cols.transpose(1, 2, 0, 3))


def _windows(n: int, k: int, s: int, p: int, d: int, out: int) -> list[np.ndarray]:
    """Per output position: the input indices of its window (padding positions as -1)."""
    return [np.array([i * s - p + j * d for j in range(k)]) for i in range(out)]


def _pool(n: Node, x: np.ndarray) -> np.ndarray:
    a = n.attrs
    H, W = x.shape[2:]
    ho, wo = n.out.shape[2:]
    y = np.empty(n.out.shape, x.dtype)
    rows = _windows(H, a.kernel[0], a.stride[0], a.padding[0], a.dilation[0], ho)
    cols = _windows(W, a.kernel[1], a.stride[1], a.padding[1], a.dilation[1], wo)
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            rv, cv = r[(r >= 0) & (r < H)], c[(c >= 0) & (c < W)]
            win = x[:, :, rv][:, :, :, cv]
            if a.mode == "max":
                y[:, :, i, j] = win.max(axis=(2, 3))
            else:  # torch: the divisor counts padding inside the padded input, never beyond it (ceil_mode)
                rin = r[r < H + a.padding[0]] if a.count_include_pad else rv
                cin = c[c < W + a.padding[1]] if a.count_include_pad else cv
                y[:, :, i, j] = win.sum(axis=(2, 3)) / (len(rin) * len(cin))
    return y


def _adaptive_pool(n: Node, x: np.ndarray) -> np.ndarray:
    H, W = x.shape[2:]
    ho, wo = n.attrs.output_size
    y = np.empty(n.out.shape, x.dtype)
    f = np.max if n.attrs.mode == "max" else np.mean
    for i in range(ho):
        for j in range(wo):  # torch's bins: [floor(i*H/ho), ceil((i+1)*H/ho))
            win = x[:, :, (i * H) // ho: -(-((i + 1) * H) // ho), (j * W) // wo: -(-((j + 1) * W) // wo)]
            y[:, :, i, j] = f(win, axis=(2, 3))
    return y


def _layer_norm(n: Node, x: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> np.ndarray:
    axes = tuple(range(x.ndim - n.attrs.axes, x.ndim))
    mu = x.mean(axis=axes, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=axes, keepdims=True)
    return (x - mu) / np.sqrt(var + n.attrs.eps) * gamma + beta


def causal_mask(q: int, k: int) -> np.ndarray:
    """True where key k comes after query q (masked out)."""
    return np.arange(k)[None, :] > np.arange(q)[:, None]


def _softmax(n: Node, x: np.ndarray) -> np.ndarray:
    if n.attrs.causal:
        x = np.where(causal_mask(*x.shape[-2:]), -np.inf, x)
    e = np.exp(x - x.max(axis=n.attrs.axis, keepdims=True))
    return e / e.sum(axis=n.attrs.axis, keepdims=True)


def take_ids(ids, rows: int, path: str = "") -> np.ndarray:
    """Integer row indices from `ids` (any numeric array), refused by name unless every one is a whole number in
    [0, rows): a wrong token id must never become a wrong answer."""
    a = np.asarray(ids)
    with np.errstate(invalid="ignore"):  # NaN and infinities cast to garbage, which the comparison then flags
        i = np.where(np.isfinite(a), a, -1).astype(np.int64)
    bad = np.flatnonzero((i != a) | (i < 0) | (i >= rows))
    if bad.size:
        k = np.unravel_index(bad[0], a.shape)
        v = a[k].item()
        v = int(v) if float(v).is_integer() else v
        raise ConfigError(f"{path or 'take'}: index {v!r} at {tuple(int(v) for v in k)} is out of range for a "
                          f"table of {rows} rows ({bad.size} such)")
    return i


BINARY_NUMPY = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide, "max": np.maximum,
                "min": np.minimum}

IMPL_NUMPY = {  # INPUT, PARAM and CONST are bound by the interpreter
    Op.EINSUM: _einsum,
    Op.MAP: lambda n, x: activations.get(n.attrs.fn).numpy(x),
    Op.RESHAPE: lambda n, x: x.reshape(n.attrs.shape),
    Op.TRANSPOSE: lambda n, x: x.transpose(n.attrs.perm),
    Op.PAD: lambda n, x: np.pad(x, n.attrs.pads),
    Op.SLICE: lambda n, x: x[tuple(slice(a, b) for a, b in zip(n.attrs.starts, n.attrs.stops))],
    Op.CONCAT: lambda n, *xs: np.concatenate(xs, axis=n.attrs.axis),
    Op.ADD: lambda n, a, b: a + b,
    Op.BINARY: lambda n, a, b: BINARY_NUMPY[n.attrs.fn](a, b),
    Op.IM2COL: _im2col,
    Op.POOL: _pool,
    Op.ADAPTIVE_POOL: _adaptive_pool,
    Op.LAYER_NORM: _layer_norm,
    Op.SOFTMAX: _softmax,
    Op.TAKE: lambda n, t, ids: t[take_ids(ids, t.shape[0], n.path)],
    Op.OUTPUT: lambda n, x: x,
}


def run(g: Graph, args: Sequence[np.ndarray] = (), tensors: Mapping[str, np.ndarray] | None = None,
        dtype=np.float64) -> list[np.ndarray]:
    """Execute `g` on `args` (one per input node, in order); params default to the graph's tensors, and a
    constant missing from `tensors` comes from the graph's."""
    tensors = g.tensors if tensors is None else {**g.tensors, **tensors}
    check_fits(g, np.dtype(dtype).itemsize)

    def bind_tensor(n: Node) -> np.ndarray:
        if n.attrs.name not in tensors:
            raise ConfigError(f"no tensor named {n.attrs.name!r} was given")
        return np.asarray(tensors[n.attrs.name], dtype=dtype)

    return interpret(g, args, IMPL_NUMPY, lambda n, x: np.asarray(x, dtype=dtype), bind_tensor, "reference")


def with_resident(load: Graph | None, tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`tensors` in float64 plus the resident tensors the model's load graph makes from them (by output name);
    None or an empty graph: a model without ADNTN layers has nothing to load."""
    t = {k: np.asarray(v, np.float64) for k, v in tensors.items()}
    if load is not None and load.nodes:
        t.update(zip([n.attrs.name for n in load.nodes if n.op is Op.OUTPUT], run(load, [], t)))
    return t


class ReferenceBackend:
    name = "reference"

    def unsupported(self, g: Graph, target="cpu") -> list[Node]:
        return [n for n in g.nodes if n.op not in IMPL_NUMPY]

    def compile(self, g: Graph, target="cpu", tensors: Mapping[str, np.ndarray] | None = None):
        return lambda *args: tuple(run(g, args, tensors))
