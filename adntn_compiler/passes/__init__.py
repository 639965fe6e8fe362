"""Passes: pure functions Graph -> Graph, run as named pipelines with `verify` between them in tests."""
from __future__ import annotations

from typing import Callable, Sequence

from ..errors import AdntnError
from ..ir.graph import Graph
from ..ir.verify import verify
from .batch import batch
from .fold import Folded, fold
from .fuse import fuse
from .order import order
from .segment import segment
from .tile import tile


class PassError(AdntnError):
    pass


def optimize(g: Graph, passes: Sequence[Callable[[Graph], Graph]] = (segment, order), check: bool = __debug__) -> Graph:
    for i, p in enumerate(passes):
        try:
            g = p(g)
        except AdntnError:
            raise
        except Exception as e:
            raise PassError(f"{getattr(p, '__name__', p)} failed after {[getattr(q, '__name__', q) for q in passes[:i]]}"
                            f": {type(e).__name__}: {e}") from e
        if check:
            verify(g)
    return g


__all__ = ["batch", "Folded", "PassError", "fold", "fuse", "optimize", "order", "segment", "tile"]
