"""Running a lowered program: numpy owns the (aligned) buffers, TVM kernels see them through DLPack.

Needs only numpy and the TVM runtime (no torch, no TVM compiler), so deployed artifacts run with it.
"""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from ...errors import ConfigError
from .buffers import aligned_empty
from .lower import Program, prepare_const


class ProgramRunner:
    """Binds a Program to a module of kernels and to its constant tensors; calling it runs the kernels."""

    def __init__(self, module, program: Program, tensors: Mapping[str, np.ndarray]):
        import tvm

        self.program = program
        self.bufs = {name: aligned_empty((size,)) for name, size in program.buffers.items()}
        for spec in program.consts:
            if spec["tensor"] not in tensors:
                raise ConfigError(f"program needs tensor {spec['tensor']!r}, which is missing")
            self.bufs[spec["buffer"]][:] = prepare_const(tensors[spec["tensor"]], spec)

        def view(b: str, shape) -> np.ndarray:
            return self.bufs[b][: math.prod(shape)].reshape(shape)

        self._steps = []
        for c in program.calls:
            args = [tvm.runtime.from_dlpack(view(b, s)) for b, s in c["args"]]
            self._steps.append((module[c["kernel"]], args))
        self._inputs = [view(b, s) for b, s in program.inputs]
        self._outputs = [(name, view(b, s)) for name, b, s in program.outputs]

    def __call__(self, *args: np.ndarray) -> dict[str, np.ndarray]:
        if len(args) != len(self._inputs):
            raise ConfigError(f"program takes {len(self._inputs)} inputs, got {len(args)}")
        for k, (buf, x) in enumerate(zip(self._inputs, args)):
            x = np.asarray(x)
            if x.shape != buf.shape:
                raise ConfigError(f"input {k}: expected shape {buf.shape}, got {x.shape}")
            np.copyto(buf, x, casting="same_kind" if x.dtype.kind == "f" else "unsafe")
        for f, a in self._steps:
            f(*a)
        return {name: v.copy() for name, v in self._outputs}
