"""Generator specs: each knows its cores' shapes, its parameter count and its compression ratio."""
from __future__ import annotations

from typing import Any, Sequence

from ..errors import ConfigError
from .base import Generator
from .baselines import CP, TT, BrickWall, Dense, LowRank, Tucker
from .legs import LAYOUTS, Legs, factor, make_legs
from .mera import MERA
from .tree import ATTN, TTN

ARCHS: dict[str, type[Generator]] = {c.arch: c for c in (TTN, ATTN, MERA, TT, Tucker, CP, LowRank, BrickWall, Dense)}


def make(arch: str, shape: Sequence[int], **config: Any) -> Generator:
    """Build a generator by architecture name, e.g. make("ttn", (4096, 4096), rank=4)."""
    if arch not in ARCHS:
        raise ConfigError(f"unknown architecture {arch!r}; known: {', '.join(ARCHS)}")
    try:
        return ARCHS[arch](shape, **config)
    except TypeError as e:
        raise ConfigError(f"{arch}: {e}") from None


def ttn(shape, **kw) -> TTN:
    return make("ttn", shape, **kw)  # type: ignore[return-value]


def attn(shape, **kw) -> ATTN:
    return make("attn", shape, **kw)  # type: ignore[return-value]


def mera(shape, **kw) -> MERA:
    return make("mera", shape, **kw)  # type: ignore[return-value]


def tt(shape, **kw) -> TT:
    return make("tt", shape, **kw)  # type: ignore[return-value]


def tucker(shape, **kw) -> Tucker:
    return make("tucker", shape, **kw)  # type: ignore[return-value]


def cp(shape, **kw) -> CP:
    return make("cp", shape, **kw)  # type: ignore[return-value]


def lowrank(shape, **kw) -> LowRank:
    return make("lowrank", shape, **kw)  # type: ignore[return-value]


def brickwall(shape, **kw) -> BrickWall:
    return make("brickwall", shape, **kw)  # type: ignore[return-value]


def dense(shape, **kw) -> Dense:
    return make("dense", shape, **kw)  # type: ignore[return-value]


__all__ = ["ARCHS", "LAYOUTS", "Generator", "Legs", "factor", "make", "make_legs", "ttn", "attn", "mera", "tt",
           "tucker", "cp", "lowrank", "brickwall", "dense"]
