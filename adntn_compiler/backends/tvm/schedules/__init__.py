"""Schedule modules, one per kind of device: `cpu` (x86, NEON), `micro` (Cortex-M), `gpu` (CUDA and
OpenCL). A Target names its
module (`Target.schedules`); the lowering asks it for every kernel's schedule."""
from __future__ import annotations

import importlib
from types import ModuleType

from ....errors import ConfigError

KNOWN = ("cpu", "micro", "gpu")


def for_target(target) -> ModuleType:
    if target.schedules not in KNOWN:
        raise ConfigError(f"target {target.name!r}: no schedule module {target.schedules!r}; known: {', '.join(KNOWN)}")
    return importlib.import_module(f".{target.schedules}", __name__)
