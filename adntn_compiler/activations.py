"""Elementwise activations: numpy and torch implementations and derivatives, in one table.

The numpy column is the definition; the torch column must agree with it (tests check both).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.special import erf

from .errors import ConfigError

LEAKY_SLOPE = 0.01  # torch's default negative slope


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free form


def _gelu(z: np.ndarray) -> np.ndarray:
    return 0.5 * z * (1.0 + erf(z / math.sqrt(2.0)))


def _gelu_d(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + erf(z / math.sqrt(2.0))) + z * np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)


GELU_C, GELU_A = math.sqrt(2.0 / math.pi), 0.044715  # GPT-2's tanh approximation (torch's approximate="tanh")


def _gelu_tanh(z: np.ndarray) -> np.ndarray:
    return 0.5 * z * (1.0 + np.tanh(GELU_C * (z + GELU_A * z ** 3)))


def _gelu_tanh_d(z: np.ndarray) -> np.ndarray:
    t = np.tanh(GELU_C * (z + GELU_A * z ** 3))
    return 0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * GELU_C * (1.0 + 3.0 * GELU_A * z * z)


@dataclass(frozen=True)
class Activation:
    name: str
    numpy: Callable[[np.ndarray], np.ndarray]
    derivative: Callable[[np.ndarray], np.ndarray]  # d act / dz, evaluated at the pre-activation z
    torch_name: str  # attribute of torch.nn.functional (or "identity")
    model_only: bool = False  # an elementwise op of whole models (RMSNorm's rsqrt), never a generator's activation


ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in (
        Activation("identity", lambda z: z, lambda z: np.ones_like(z), "identity"),
        Activation("tanh", np.tanh, lambda z: 1.0 - np.tanh(z) ** 2, "tanh"),
        Activation("relu", lambda z: np.maximum(z, 0), lambda z: (z > 0).astype(z.dtype), "relu"),
        Activation(
            "leaky_relu",
            lambda z: np.where(z > 0, z, LEAKY_SLOPE * z),
            lambda z: np.where(z > 0, 1.0, LEAKY_SLOPE).astype(z.dtype),
            "leaky_relu",
        ),
        Activation("gelu", _gelu, _gelu_d, "gelu"),
        Activation("gelu_tanh", _gelu_tanh, _gelu_tanh_d, "gelu"),
        Activation("sigmoid", _sigmoid, lambda z: _sigmoid(z) * (1.0 - _sigmoid(z)), "sigmoid"),
        Activation("hardswish", lambda z: z * np.clip(z + 3, 0, 6) / 6,
                   lambda z: np.where(z < -3, 0.0, np.where(z > 3, 1.0, (2 * z + 3) / 6)).astype(z.dtype), "hardswish"),
        Activation("hardsigmoid", lambda z: np.clip(z / 6 + 0.5, 0, 1),
                   lambda z: ((z > -3) & (z < 3)).astype(z.dtype) / 6, "hardsigmoid"),
        Activation("silu", lambda z: z * _sigmoid(z), lambda z: _sigmoid(z) * (1.0 + z * (1.0 - _sigmoid(z))), "silu"),
        Activation("sqrt", np.sqrt, lambda z: 0.5 / np.sqrt(z), "sqrt", model_only=True),
        Activation("rsqrt", lambda z: 1.0 / np.sqrt(z), lambda z: -0.5 * z ** -1.5, "rsqrt", model_only=True),
    )
}


DERIV_PREFIX = "d:"  # map "d:tanh" is tanh's derivative (the autodiff pass emits these)


def get(name: str) -> Activation:
    if name.startswith(DERIV_PREFIX):
        base = get(name[len(DERIV_PREFIX):])
        return Activation(name, base.derivative, lambda z: np.zeros_like(z), name)
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ConfigError(f"unknown activation {name!r}; known: {', '.join(ACTIVATIONS)}") from None


def _torch_derivative(name: str) -> Callable:
    import torch

    s = torch.sigmoid
    return {
        "identity": lambda z: torch.ones_like(z),
        "tanh": lambda z: 1 - torch.tanh(z) ** 2,
        "relu": lambda z: (z > 0).to(z.dtype),
        "leaky_relu": lambda z: torch.where(z > 0, torch.ones_like(z), torch.full_like(z, LEAKY_SLOPE)),
        "gelu": lambda z: (0.5 * (1 + torch.erf(z / math.sqrt(2)))
                           + z * torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)),
        "gelu_tanh": lambda z: _torch_gelu_tanh_d(z),
        "sigmoid": lambda z: s(z) * (1 - s(z)),
        "silu": lambda z: s(z) * (1 + z * (1 - s(z))),
        "hardsigmoid": lambda z: ((z > -3) & (z < 3)).to(z.dtype) / 6,
        "hardswish": lambda z: torch.where(z < -3, 0.0, torch.where(z > 3, 1.0, (2 * z + 3) / 6)).to(z.dtype),
        "sqrt": lambda z: 0.5 * torch.rsqrt(z),
        "rsqrt": lambda z: -0.5 * torch.rsqrt(z) ** 3,
    }[name]


def _torch_gelu_tanh_d(z):
    import torch

    t = torch.tanh(GELU_C * (z + GELU_A * z ** 3))
    return 0.5 * (1 + t) + 0.5 * z * (1 - t * t) * GELU_C * (1 + 3 * GELU_A * z * z)


def torch_fn(name: str) -> Callable:
    import torch
    import torch.nn.functional as F

    act = get(name)
    if name.startswith(DERIV_PREFIX):
        return _torch_derivative(name[len(DERIV_PREFIX):])
    if act.name == "identity":
        return lambda z: z
    if act.name == "tanh":
        return torch.tanh
    if act.name == "sigmoid":
        return torch.sigmoid
    if act.name == "leaky_relu":
        return lambda z: F.leaky_relu(z, LEAKY_SLOPE)
    if act.name == "gelu_tanh":
        return lambda z: F.gelu(z, approximate="tanh")
    if act.name == "hardsigmoid":  # F.hardsigmoid rounds 1/6 to float32 even on float64 tensors
        return lambda z: torch.clamp(z / 6 + 0.5, 0, 1)
    if act.model_only:
        return getattr(torch, act.torch_name)
    return getattr(F, act.torch_name)


def _gauss_mean(f) -> float:
    """E[f(z)] for z ~ N(0, 1), by Gauss-Hermite quadrature."""
    x, w = np.polynomial.hermite_e.hermegauss(80)
    return float(np.sum(w * f(x)) / np.sqrt(2.0 * np.pi))


def first_moment(name: str) -> float:
    """E[act(z)] for z ~ N(0, 1): 0 for odd activations (tanh), 0.40 for relu, 0.5 for sigmoid."""
    m = _gauss_mean(get(name).numpy)
    return 0.0 if abs(m) < 1e-12 else m


def second_moment(name: str) -> float:
    """E[act(z)^2] for z ~ N(0, 1); used to keep init variance steady."""
    return _gauss_mean(lambda x: get(name).numpy(x) ** 2)
