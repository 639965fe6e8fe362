"""The generator base class: target shape, legs, cores (lazily initialised), parameter counts.

A generator emits its weight program into an IR `Builder`: `emit(b, cores)` returns the weight in
fine-axis form, a value plus one label per axis; label ("f", k, None) is fine axis k of `legs`.
"""
from __future__ import annotations

import math
from typing import Any, Hashable, NamedTuple, Sequence

import numpy as np

from .. import activations
from ..errors import ConfigError, MemoryEstimateError, ShapeError
from ..ir.builder import Builder
from ..ir.graph import Value
from ..memory import available_bytes, fmt_bytes
from .legs import Legs

Labels = list[Hashable]


class Leg(NamedTuple):
    """Placeholder label for physical leg j; expands to that leg's fine axes, tagged with `tag`."""
    j: int
    tag: Hashable = None


def fine_label(f: int, tag: Hashable = None) -> tuple:
    return ("f", f, tag)


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


MAX_DIM = 1 << 24  # a side of a weight: 16.7 M (VGG-16's FC6 input is 25,088; a vocabulary 10^5-10^6)
MAX_WEIGHT = 1 << 40  # weights a generator may describe (10^12: far beyond any dense layer)


def normalize_shape(shape: Sequence[int]) -> tuple[tuple[int, ...], int, int]:
    try:
        ok = all(_is_int(s) for s in shape)
    except TypeError:
        ok = False
    if not ok:  # int(2.5) would silently make a (2, 4) layer of a (2.5, 4) request
        raise ShapeError(f"target shape {shape!r} must be a tuple of integers")
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 4) or any(s < 1 for s in shape):
        raise ShapeError(f"target shape {shape} must be (O, I) for Linear or (Cout, Cin, kh, kw) for Conv2d, "
                         "all >= 1")
    O, I = shape[0], math.prod(shape[1:])
    if max(O, I) > MAX_DIM or O * I > MAX_WEIGHT:  # before anything factors them (trial division would hang)
        raise ShapeError(f"target shape {shape}: a weight of {O:,} x {I:,} is beyond what a layer can be (each side "
                         f"at most {MAX_DIM:,}, {MAX_WEIGHT:,} weights in all)")
    return shape, O, I


def check_rank(rank: int | Sequence[int], what: str = "rank") -> tuple[int, ...]:
    try:
        ranks = (rank,) if not isinstance(rank, (list, tuple)) else tuple(rank)
    except TypeError:
        ranks = (rank,)
    if not ranks or any(not _is_int(r) or r < 1 for r in ranks):
        raise ConfigError(f"{what} must be an integer >= 1 (or a sequence of them), got {rank!r}")
    return tuple(int(r) for r in ranks)


def level_rank(ranks: tuple[int, ...], level: int) -> int:
    return ranks[min(level, len(ranks) - 1)]


def isometry(rng: np.random.Generator, n_in: int, n_out: int) -> np.ndarray:
    """A random (n_in, n_out) matrix with orthonormal rows (n_in <= n_out; Haar-distributed): x -> x @ V keeps the
    norm of every x. The QR of a Gaussian, its signs fixed by R's diagonal."""
    if n_in > n_out:
        raise ShapeError(f"an isometry from {n_in} to {n_out} dimensions cannot keep norms ({n_in} > {n_out})")
    q, r = np.linalg.qr(rng.standard_normal((n_out, n_in)))
    return (q * np.where(np.diag(r) < 0, -1.0, 1.0)).T


def near_identity(rng: np.random.Generator, n: int, eps: float = 0.1) -> np.ndarray:
    """A random orthogonal (n, n) matrix near the identity: the Q of I + eps * G / sqrt(n) (R's diagonal made
    positive), so a disentangler starts as an exact rotation that barely mixes its two legs."""
    q, r = np.linalg.qr(np.eye(n) + eps * rng.standard_normal((n, n)) / math.sqrt(n))
    return q * np.where(np.diag(r) < 0, -1.0, 1.0)


class Generator:
    arch: str = "?"
    has_scale = True

    def __init__(self, shape: Sequence[int], legs: Legs, activation: str, seed: int, config: dict[str, Any]):
        self.shape, self.O, self.I = normalize_shape(shape)
        self.legs = legs
        if activations.get(activation).model_only:
            usable = [n for n, a in activations.ACTIVATIONS.items() if not a.model_only]
            raise ConfigError(f"{self.arch}: {activation!r} is an op of whole models, not a generator's activation; "
                              f"choose one of {', '.join(usable)}")
        self.activation = activation
        if not _is_int(seed):
            raise ConfigError(f"{self.arch}: seed must be an integer, got {seed!r}")
        self.seed = int(seed)
        self.config = dict(config)  # the keyword arguments that rebuild this generator
        self.core_shapes: dict[str, tuple[int, ...]] = {k: tuple(map(int, v)) for k, v in self.structure().items()}
        if self.has_scale:
            self.core_shapes["scale"] = ()
        need = 8 * self.num_params
        if need > available_bytes():
            raise MemoryEstimateError(f"{self.arch} cores alone would need {fmt_bytes(need)} "
                                      f"({self.num_params:,} parameters); {fmt_bytes(available_bytes())} is available")
        self._cores: dict[str, np.ndarray] | None = None
        self.calibration: str | None = None  # how the scale was calibrated: exact, sampled or moments

    # --- to be provided by each architecture ---------------------------------------------------
    def structure(self) -> dict[str, tuple[int, ...]]:
        raise NotImplementedError

    def init_core(self, name: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def emit(self, b: Builder, cores: dict[str, Value]) -> tuple[Value, Labels]:
        raise NotImplementedError

    def balance(self, cores: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
        """A hook after `init_core`, before the scale is calibrated: rescale the initial cores (default: as they
        are)."""
        return cores

    # --- shared ----------------------------------------------------------------------------------
    @property
    def kind(self) -> str:
        return "conv2d" if len(self.shape) == 4 else "linear"

    @property
    def num_params(self) -> int:
        return sum(math.prod(s) for s in self.core_shapes.values())

    @property
    def dense_params(self) -> int:
        return self.O * self.I

    @property
    def compression_ratio(self) -> float:
        return self.dense_params / self.num_params

    def activated_elements(self) -> int:
        """Elements of the largest tensor the weight program maps through the activation (a cost of each training
        step and of forming W; 0 where the architecture does not say). The ratio search breaks near-ties by it."""
        return 0

    def rank_bound(self) -> int:
        """The largest matrix rank of W (O x I) the structure allows, whatever the cores: a linear bond that
        separates every out-leg from every in-leg bounds it (a separated TTN's root bond). min(O, I) where the
        structure sets no bound (a nonlinear node sees both out- and in-legs)."""
        return min(self.O, self.I)

    @property
    def padding_overhead(self) -> float:
        """Generated elements / target elements (1.0 = no padding)."""
        return self.legs.O_pad * self.legs.I_pad / (self.O * self.I)

    @property
    def target_std(self) -> float:
        """Std of a default-initialised torch Linear/Conv2d weight: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
        return 1.0 / math.sqrt(3.0 * self.I)

    @property
    def cores(self) -> dict[str, np.ndarray]:
        if self._cores is None:
            self._cores = self._initial_cores()
        return self._cores

    def set_cores(self, cores: dict[str, np.ndarray]) -> None:
        for k, s in self.core_shapes.items():
            if k not in cores or tuple(np.shape(cores[k])) != s:
                raise ShapeError(f"{self.arch}: core '{k}' must have shape {s}, "
                                 f"got {None if k not in cores else np.shape(cores[k])}")
        self._cores = {k: np.asarray(cores[k], dtype=np.float64) for k in self.core_shapes}

    def _initial_cores(self) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(self.seed)
        cores = {k: self.init_core(k, s, rng).astype(np.float64) for k, s in self.core_shapes.items() if k != "scale"}
        cores = self.balance(cores, rng)
        if not self.has_scale:
            return cores
        # Calibrate the scale so that the generated weight has the std of a default dense layer (estimated
        # without forming W: see calibrate.py).
        from .calibrate import weight_std

        std, self.calibration = weight_std(self, cores, self.seed)
        cores["scale"] = np.array(self.target_std / std if std > 0 else 1.0)
        return cores

    def core(self, b: Builder, cores: dict[str, Value], name: str, labels: Sequence[Hashable],
             path: str = "") -> tuple[Value, Labels]:
        """A core's value with its physical axes (`Leg` labels) split into fine axes."""
        v = cores[name]
        shape: list[int] = []
        out: Labels = []
        for size, lab in zip(v.shape, labels):
            if isinstance(lab, Leg):
                for f in self.legs.legs[lab.j]:
                    shape.append(self.legs.fine[f])
                    out.append(fine_label(f, lab.tag))
            else:
                shape.append(size)
                out.append(lab)
        return b.reshape(v, shape, path), out

    def leg_labels(self, j: int, tag: Hashable = None) -> Labels:
        return [fine_label(f, tag) for f in self.legs.legs[j]]

    def act(self, b: Builder, x: Value, path: str) -> Value:
        """The activation; a non-odd one (relu, gelu, silu, sigmoid, ...) centred per trailing index (a tree
        node's bond channel): act(Z) - mean of act(Z) over the other axes. Without it the positive mean of the
        outputs compounds up the tree into a rank-one part of W that swamps the rest (relu ttn at 2,000x on
        4096x4096: mean(W) = 0.35 std(W)), and a network with that layer after a ReLU trains at chance.
        A fixed shift (E[act(z)], z ~ N(0, 1)) is not enough: the node tensors are far from Gaussian."""
        h = b.map(self.activation, x, path)
        if not activations.first_moment(self.activation):
            return h
        axes = list(range(len(x.shape)))
        keep = axes[-1:] if math.prod(x.shape[:-1]) > 1 else []  # else centre over everything
        n = math.prod(x.shape[:-1] if keep else x.shape)
        if n == 1:
            return h  # one element: nothing to centre against
        minus_mean = b.param(f"{path}.centre", np.array(-1.0 / n), path, const=True)
        return b.add(h, b.contract([(h, axes), (minus_mean, [])], keep, path), path)

    def gain2(self) -> float:
        """1 / Var[act(z)] for z ~ N(0,1): the variance lost by one (centred) activation."""
        return 1.0 / (activations.second_moment(self.activation) - activations.first_moment(self.activation) ** 2)

    def __repr__(self) -> str:
        cfg = ", ".join(f"{k}={v!r}" for k, v in self.config.items())
        return f"{self.arch}({self.shape}, {cfg})"
