"""Backends behind one interface, found through one registry.

Every backend answers `unsupported(graph, target)` (the nodes it cannot run; empty means it can) and
`compile(graph, target, tensors=None)`, which returns a callable taking one array per graph input and returning
the tuple of graph outputs. `tensors` supplies the params/consts (default: the graph's own); the reference and
torch backends look them up on every call, so a live mapping (an `nn.ParameterDict`) stays current.
A backend that ships artifacts (tvm) also has `build(graphs, target, policy) -> Library` and
`load(library_bytes, programs, target) -> Library`.

Backends are imported lazily, so numpy-only users never import torch or TVM.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping, Protocol

from ..errors import ConfigError
from ..ir.graph import Graph, Node

Compiled = Callable[..., tuple]


class Backend(Protocol):
    name: str

    def unsupported(self, g: Graph, target: Any = "cpu") -> list[Node]: ...

    def compile(self, g: Graph, target: Any = "cpu", tensors: Mapping[str, Any] | None = None) -> Compiled: ...


_REGISTRY = {"reference": ("reference", "ReferenceBackend"), "torch": ("torch", "TorchBackend"),
             "tvm": ("tvm", "TVMBackend")}


def backends() -> list[str]:
    return list(_REGISTRY)


def get_backend(name: str) -> Backend:
    if name not in _REGISTRY:
        raise ConfigError(f"unknown backend {name!r}; known: {', '.join(_REGISTRY)}")
    module, cls = _REGISTRY[name]
    return getattr(importlib.import_module(f".{module}", __name__), cls)()
