"""Passes: pure functions Graph -> Graph, run as the named pipelines of `pipelines.py`."""
from __future__ import annotations

from .batch import batch
from .fold import Folded, fold
from .fuse import fuse
from .order import order
from .pipelines import PassError, Pipeline, optimize
from .segment import segment
from .tile import tile

__all__ = ["batch", "Folded", "PassError", "Pipeline", "fold", "fuse", "optimize", "order", "segment", "tile"]
