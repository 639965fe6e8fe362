"""Running a lowered program: numpy owns the (aligned) buffers, TVM kernels see them through DLPack.

Needs only numpy and the TVM runtime (no torch, no TVM compiler), so deployed artifacts run with it.
"""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from ...errors import ConfigError, SerializationError
from .buffers import aligned_empty
from .program import Program, prepare_const


class ProgramRunner:
    """Binds a Program to a module of kernels and to its constant tensors; calling it runs the kernels."""

    def __init__(self, module, program: Program, tensors: Mapping[str, np.ndarray],
                 buffers: Mapping[str, np.ndarray] | None = None):
        """`buffers` supplies (flat, aligned) memory for some buffers, e.g. another program's outputs."""
        import tvm

        self.program = program
        given = dict(buffers or {})
        offsets = program.arena["offsets"] if program.arena else {}
        arena = aligned_empty((program.arena["size"],)) if program.arena else None
        self.bufs = {name: given[name] if name in given else
                     arena[offsets[name]: offsets[name] + size] if name in offsets else aligned_empty((size,))
                     for name, size in program.buffers.items()}
        program.check_tensors(tensors)
        self.update(tensors)

        def view(b: str, shape) -> np.ndarray:
            return self.bufs[b][: math.prod(shape)].reshape(shape)

        self._steps = []
        for c in program.calls:
            args = [tvm.runtime.from_dlpack(view(b, s)) for b, s in c["args"]]
            try:
                kernel = module[c["kernel"]]
            except (AttributeError, KeyError, RuntimeError) as e:
                raise SerializationError(f"the library has no kernel {c['kernel']!r} ({type(e).__name__})") from None
            self._steps.append((kernel, args))
        self.input_names = [name for name, _, _ in program.inputs]
        self._inputs = [view(b, s) for _, b, s in program.inputs]
        self._outputs = [(name, view(b, s)) for name, b, s in program.outputs]

    def update(self, tensors: Mapping[str, np.ndarray]) -> None:
        """(Re)fill the constant buffers made from these tensors, e.g. cores after an optimiser step."""
        for spec in self.program.consts:
            if spec["tensor"] in tensors:
                a = prepare_const(tensors[spec["tensor"]], spec)
                self.bufs[spec["buffer"]][: a.size] = a  # (a buffer may be larger than what fills it)

    def _run(self, args) -> None:
        if len(args) != len(self._inputs):
            raise ConfigError(f"program takes {len(self._inputs)} inputs, got {len(args)}")
        for k, (buf, x) in enumerate(zip(self._inputs, args)):
            if x is None:  # already in place (a shared buffer)
                continue
            x = np.asarray(x)
            if x.shape != buf.shape:
                raise ConfigError(f"input {k}: expected shape {buf.shape}, got {x.shape}")
            np.copyto(buf, x, casting="same_kind" if x.dtype.kind == "f" else "unsafe")
        for k, (f, a) in enumerate(self._steps):
            try:
                f(*a)
            except Exception as e:  # TVM's argument checks: a program whose shapes do not match its kernels
                raise SerializationError(f"kernel call {k} ({self.program.calls[k]['kernel']}) failed: "
                                         f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None

    def __call__(self, *args: np.ndarray) -> dict[str, np.ndarray]:
        self._run(args)
        return {name: v.copy() for name, v in self._outputs}

    def run_in_place(self, *args) -> dict[str, np.ndarray]:
        """Like calling it, but the outputs are views of the runner's buffers (valid until the next call)."""
        self._run(args)
        return dict(self._outputs)

    def output_buffer(self, name: str) -> tuple[str, np.ndarray]:
        """(buffer name, flat buffer) holding output `name` after a call."""
        b = next(b for n, b, _ in self.program.outputs if n == name)
        return b, self.bufs[b]


    def profile(self, *args, repeats: int = 5) -> list[dict]:
        """Median seconds of each kernel call, timed inside whole runs of the program (real data flow)."""
        import statistics
        import time

        self._run(args)
        times: list[list[float]] = [[] for _ in self._steps]
        for _ in range(repeats):
            for k, (f, a) in enumerate(self._steps):
                t = time.perf_counter()
                f(*a)
                times[k].append(time.perf_counter() - t)
        return [dict(kernel=c["kernel"], args=[tuple(s) for _, s in c["args"]], seconds=statistics.median(ts))
                for c, ts in zip(self.program.calls, times)]
