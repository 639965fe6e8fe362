"""64-byte-aligned numpy buffers: TVM takes numpy memory through DLPack only when it is aligned."""
from __future__ import annotations

import numpy as np

ALIGN = 64


def aligned_empty(shape, dtype="float32") -> np.ndarray:
    dtype = np.dtype(dtype)
    n = int(np.prod(shape, dtype=np.int64))
    raw = np.empty(n * dtype.itemsize + ALIGN, np.uint8)
    off = (-raw.ctypes.data) % ALIGN
    return raw[off: off + n * dtype.itemsize].view(dtype).reshape(shape)
