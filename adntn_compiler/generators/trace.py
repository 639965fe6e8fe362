"""Tracer: generator spec -> IR. The weight program maps cores to W; the layer program maps cores
and x[B, I] to y = x @ W.T, with x pushed into W's fine axes so that later passes may avoid W."""
from __future__ import annotations

from typing import Literal, Mapping

import numpy as np

from ..errors import ConfigError
from ..ir.builder import Builder
from ..ir.graph import Graph, Value
from ..ir.verify import verify
from .base import Generator


def _emit_scaled(gen: Generator, b: Builder, tensors: Mapping[str, np.ndarray]) -> tuple[Value, list]:
    cores = {k: b.param(k, np.asarray(tensors[k]), f"{gen.arch}.{k}") for k in gen.core_shapes}
    w, labels = gen.emit(b, cores)
    if gen.has_scale:  # W = scale * Z_root: still one linear einsum
        w = b.contract([(w, labels), (cores["scale"], [])], labels, f"{gen.arch}.scale")
    return w, labels


def _structure_tensors(gen: Generator) -> dict[str, np.ndarray]:
    """Zero-stride stand-ins: trace the structure without allocating the cores."""
    return {k: np.broadcast_to(np.zeros((), np.float64), s) for k, s in gen.core_shapes.items()}


def weight_program(gen: Generator, tensors: Mapping[str, np.ndarray] | None = None) -> Graph:
    b = Builder()
    w, labels = _emit_scaled(gen, b, gen.cores if tensors is None else tensors)
    lg = gen.legs
    order = [labels.index(("f", f, None)) for f in range(len(lg.fine))]
    w = b.transpose(w, order, f"{gen.arch}.weight")
    w = b.reshape(w, (lg.O_pad, lg.I_pad), f"{gen.arch}.weight")
    w = b.slice(w, (0, 0), (gen.O, gen.I), f"{gen.arch}.crop")
    w = b.reshape(w, gen.shape, f"{gen.arch}.weight")
    b.output(w, "W")
    return verify(b.build())


def layer_program(gen: Generator, batch_size: int = 1, tensors: Mapping[str, np.ndarray] | None = None) -> Graph:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    b = Builder()
    x = b.input("x", (batch_size, gen.I), "layer.x")
    w, labels = _emit_scaled(gen, b, gen.cores if tensors is None else tensors)
    lg = gen.legs
    no = len(lg.out_dims)
    x = b.pad(x, ((0, 0), (0, lg.I_pad - gen.I)), "layer.pad")
    x = b.reshape(x, (batch_size,) + lg.in_dims, "layer.x")
    out = ["batch"] + [("f", f, None) for f in range(no)]
    x_labels = ["batch"] + [("f", no + f, None) for f in range(len(lg.in_dims))]
    y = b.contract([(x, x_labels), (w, labels)], out, "layer.matmul")
    y = b.reshape(y, (batch_size, lg.O_pad), "layer.y")
    y = b.slice(y, (0, 0), (batch_size, gen.O), "layer.crop")
    b.output(y, "y")
    return verify(b.build())


def trace(gen: Generator, program: Literal["layer", "weight"] = "layer", batch_size: int = 1,
          structure_only: bool = False) -> Graph:
    """IR of the layer program (y = x @ W.T; x is an input) or of the weight program (cores -> W).

    structure_only=True traces without initialising the cores (their tensors are zero-stride stand-ins).
    """
    tensors = _structure_tensors(gen) if structure_only else None
    if program == "layer":
        return layer_program(gen, batch_size, tensors)
    if program == "weight":
        return weight_program(gen, tensors)
    raise ConfigError(f"unknown program {program!r}; use 'layer' or 'weight'")


def _check_generator(gen, what: str) -> None:
    if not isinstance(gen, Generator):
        hint = "; for a trained layer pass layer.sync_generator()" if hasattr(gen, "sync_generator") else ""
        raise ConfigError(f"{what} takes a generator (adntn.ttn(...), ...), got {type(gen).__name__}{hint}")


def materialize(gen: Generator) -> np.ndarray:
    """The generated weight (float64 numpy, the target shape), via the reference interpreter."""
    from ..backends.reference import run
    from ..memory import check_fits

    _check_generator(gen, "materialize")
    check_fits(trace(gen, "weight", structure_only=True), 8, f"materializing {gen!r}")
    return run(weight_program(gen, gen.cores))[0]


def activation_usage(gen: Generator) -> list[dict]:
    """How much each activation of the weight program bends its input, at the generator's current cores: one row
    per activation node (path, fn, elements, rms of its input, the fraction of inputs beyond +-1, and `nonlinear`:
    the part of the output's spread that no affine function of the input explains, |f(z) - a z - c| / |f(z) - mean|,
    0 for a function in its linear range). A trained tree whose activations read ~0 is a linear tree in effect."""
    from ..backends.reference import IMPL_NUMPY
    from ..ir.graph import Op
    from ..ir.interpret import interpret
    from ..memory import check_fits

    _check_generator(gen, "activation_usage")
    g = weight_program(gen, gen.cores)
    check_fits(g, 8, f"activation usage of {gen!r}")
    rows: list[dict] = []

    def record(n, z):
        out = IMPL_NUMPY[Op.MAP](n, z)
        zc, fc = (z - z.mean()).ravel(), (out - out.mean()).ravel()
        a = float(zc @ fc / (zc @ zc)) if zc.any() else 0.0
        spread = float(np.linalg.norm(fc))
        rows.append(dict(path=n.path, fn=n.attrs.fn, elements=int(z.size), rms=float(np.sqrt(np.mean(z * z))),
                         saturated=float(np.mean(np.abs(z) > 1)),
                         nonlinear=float(np.linalg.norm(fc - a * zc)) / spread if spread else 0.0))
        return out

    interpret(g, [], {**IMPL_NUMPY, Op.MAP: record}, lambda n, x: x,
              lambda n: np.asarray(g.tensors[n.attrs.name], np.float64), "reference")
    return rows
