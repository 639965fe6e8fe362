"""Backends behind one interface: `unsupported(graph)` and `compile(graph, target) -> callable`.

Backends are imported lazily so that numpy-only users never import torch.
"""
from __future__ import annotations

import importlib
from typing import Callable, Protocol

from ..errors import ConfigError
from ..ir.graph import Graph, Node


class Backend(Protocol):
    name: str

    def unsupported(self, g: Graph) -> list[Node]: ...

    def compile(self, g: Graph, target: str = "cpu") -> Callable[..., tuple]: ...


_REGISTRY = {"reference": ("reference", "ReferenceBackend"), "torch": ("torch", "TorchBackend"),
             "tvm": ("tvm", "TVMBackend")}


def get_backend(name: str) -> Backend:
    if name not in _REGISTRY:
        raise ConfigError(f"unknown backend {name!r}; known: {', '.join(_REGISTRY)}")
    module, cls = _REGISTRY[name]
    return getattr(importlib.import_module(f".{module}", __name__), cls)()
