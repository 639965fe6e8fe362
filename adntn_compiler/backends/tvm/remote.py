"""Running a Program on another machine through TVM RPC (a session from `tvm.rpc.connect_tracker(...).request`):
the library is uploaded, every buffer lives in the remote's memory, each kernel call is a remote call, and the
kernels are timed where they run (`time_evaluator`), so the network never enters a measurement."""
from __future__ import annotations

import math
import statistics
import uuid
from typing import Mapping

import numpy as np

from ...errors import SerializationError
from .gpu import DeviceRunner
from .program import Program


class _RemoteArrays:
    """Float32 buffers in the remote's memory (the DeviceRunner's `arrays`)."""

    def __init__(self, session):
        import tvm

        self.tvm, self.dev = tvm, session.cpu()

    def empty(self, n: int):
        return self.tvm.runtime.empty((n,), "float32", self.dev)

    def view(self, buf, shape):
        return buf._create_view(tuple(int(s) for s in shape))

    def upload(self, dst, a: np.ndarray) -> None:
        flat = np.ascontiguousarray(a, np.float32).reshape(-1)
        dst._create_view((flat.size,)).copyfrom(flat)

    def download(self, buf, shape) -> np.ndarray:
        return buf._create_view((math.prod(shape),)).numpy().reshape(shape)


class RemoteRunner(DeviceRunner):
    """A DeviceRunner on a remote CPU; `time_calls` times the program where it runs."""

    def __init__(self, session, module, program: Program, tensors: Mapping[str, np.ndarray]):
        arrays = _RemoteArrays(session)
        self.module, self.dev, self._args = module, arrays.dev, []

        def steps(k: int, c: dict, bufs: dict):
            try:
                f = module[c["kernel"]]
            except (AttributeError, KeyError, RuntimeError) as e:
                raise SerializationError(f"the remote library has no kernel {c['kernel']!r} "
                                         f"({type(e).__name__})") from None
            args = [arrays.view(bufs[b], shape) for b, shape in c["args"]]
            self._args.append((c["kernel"], args))
            yield lambda: f(*args)

        super().__init__(arrays, program, tensors, steps)

    def time_calls(self, number: int, repeat: int = 3) -> float:
        """Seconds of one run of the program: the sum of each call's median time, measured on the remote by
        `time_evaluator` (`number` runs per sample, `repeat` samples) on the buffers of the last call."""
        total = 0.0
        for kernel, args in self._args:
            res = self.module.time_evaluator(kernel, self.dev, number=number, repeat=repeat)(*args)
            total += statistics.median(res.results)
        return total


class RemoteLibrary:
    """A library uploaded to the remote (under a fresh name in its session's folder) and loaded there."""

    def __init__(self, session, lib_bytes: bytes, programs: Mapping[str, Program]):
        name = f"adntn-{uuid.uuid4().hex[:12]}.so"
        session.upload(bytearray(lib_bytes), name)
        self.session, self.module, self.programs = session, session.load_module(name), programs

    def runner(self, name: str, tensors: Mapping[str, np.ndarray]) -> RemoteRunner:
        return RemoteRunner(self.session, self.module, self.programs[name], tensors)
