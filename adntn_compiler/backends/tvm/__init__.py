"""The TVM backend: every step of a graph becomes a TensorIR kernel scheduled by the Target's schedule module
under a policy; all kernels of a build go into one library, and each graph's call sequence is a JSON `Program`
run by `ProgramRunner` (numpy + the TVM runtime).

TVM is imported lazily: importing this package does not need it.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from ...errors import ConfigError, SerializationError
from ...ir.graph import Graph, Node
from ...targets import Target, import_tvm, resolve
from . import emit_c  # (no TVM import: the C-bundle text only)
from .program import Program


class Library:
    """Compiled kernels for one Target plus the programs (call sequences) of the graphs built into them."""

    backend = "tvm"

    def __init__(self, module, programs: Mapping[str, Program], target: Target, lib_bytes: bytes | None = None):
        """`lib_bytes`: the library's file when it is known (loaded, or a GPU build's); else exported on demand."""
        self.module, self.programs, self.target = module, dict(programs), target
        self._bytes = lib_bytes
        self._native = None  # (a CPU library: the exported shared library, loaded; `_loaded`)

    def runner(self, name: str, tensors: Mapping[str, np.ndarray], buffers=None):
        """A `ProgramRunner` for program `name`, its constant buffers filled from `tensors` (on a GPU target: a
        runner whose buffers live on the device)."""
        if self.target.device == "gpu":
            from . import gpu

            if buffers:
                raise ValueError("GPU runners do not share host buffers")
            if self.target.tvm["kind"] == "opencl":
                return gpu.opencl_runner(self.opencl(), self.programs[name], tensors)
            return gpu.cuda_runner(self.module, self.programs[name], tensors)
        from .runtime import ProgramRunner

        return ProgramRunner(self._loaded(), self.programs[name], tensors, buffers)

    def _loaded(self):
        """The module a CPU runner calls: the exported shared library, loaded back, i.e. the machine code that
        `to_bytes` ships. Asking the LLVM module itself for a function would JIT-compile the whole module a second
        time, which took as long as exporting it (12 s of the demo's 62 s compile)."""
        if self._native is None:
            self._native = _load_shared(self.to_bytes())
        return self._native

    def remote(self, session):
        """This library uploaded to the other end of a TVM RPC `session` (a CPU there): a `RemoteLibrary`, whose
        `runner(name, tensors)` runs a program there and times it there (`time_calls`)."""
        from .remote import RemoteLibrary

        if self.target.device != "cpu":
            raise ValueError(f"remote runners run CPU libraries; this one is for {self.target.name}")
        return RemoteLibrary(session, self.to_bytes(), self.programs)

    def opencl(self):
        """The OpenCL library built for this machine's OpenCL device (once)."""
        from . import gpu

        if not isinstance(self.module, gpu.OpenCLModule):
            self.module = gpu.OpenCLModule(self.module.source, self.module.launches)
        return self.module

    def to_bytes(self) -> bytes:
        """The library's file (exported once: machine code is generated then)."""
        if self._bytes is None:
            _check_linker()
            with tempfile.TemporaryDirectory(prefix="adntn-") as d:
                path = os.path.join(d, "lib.so")
                self.module.export_library(path)
                self._bytes = Path(path).read_bytes()
        return self._bytes

    def gpu_record(self) -> dict | None:
        """The GPU build's record for the manifest (api, arch, CUDA version, ptxas report), or None."""
        return self.module.record() if hasattr(self.module, "record") else None

    def program_dicts(self) -> dict[str, dict]:
        return {k: p.to_dict() for k, p in self.programs.items()}


def build(graphs: Mapping[str, Graph], target: "str | Target" = "cpu", policy=None,
          progress: Callable[[str], None] | None = None) -> Library:
    """Lower and compile several graphs (e.g. {"load": ..., "call": ...}) into one library for `target`, with
    `policy` (default: the target's) choosing tiles and thresholds."""
    target = resolve(target)
    tvm = import_tvm()
    from .lower import lower
    from .policy import default_policy

    policy = policy or default_policy(target)
    funcs, programs = {}, {}
    for name, g in graphs.items():
        programs[name], fs = lower(g, name, target, policy)
        funcs.update(fs)
        if progress:
            progress(f"lowered {name}: {len(fs)} kernels")
    if target.device == "gpu":
        from .gpu import build_gpu

        module = build_gpu(funcs, target)
        lib = Library(module, programs, target, module.to_bytes())
    else:
        lib = Library(tvm.compile(tvm.IRModule(funcs), target=target.tvm_target()), programs, target)
    if progress:
        progress(f"compiled {len(funcs)} kernels")
    return lib


def load_library(lib_bytes: bytes, programs: Mapping[str, dict], target: Target,
                 tensors: Mapping[str, np.ndarray] | None = None) -> Library:
    """A Library from an artifact's bytes (through a private temporary file) and its program dicts. The programs
    are checked first (schema, buffers, order; with `tensors`, that every constant has its tensor at its size):
    nothing is written or loaded for a malformed one."""
    from ...memory import available_bytes

    progs = {}
    for k, v in programs.items():
        try:
            progs[k] = Program.from_dict(v, max_elements=available_bytes() // 8)
        except (ValueError, AttributeError, TypeError) as e:
            raise SerializationError(f"the manifest's {k!r} program is malformed ({e})") from None
    if tensors is not None:
        # what the load program makes (at run time it shadows a stored tensor of the same name)
        produced = {name: shape for name, _, shape in progs["load"].outputs} if "load" in progs else {}
        for k, p in progs.items():
            for c in p.consts:
                t = tensors.get(c["tensor"])
                if t is None and c["tensor"] not in produced:
                    raise SerializationError(f"the {k!r} program needs tensor {c['tensor']!r}, which the artifact "
                                             f"lacks")
                if k != "load" and c["tensor"] in produced and \
                        int(np.prod(produced[c["tensor"]])) != int(np.prod(c["shape"])):
                    raise SerializationError(f"the {k!r} program reads {c['tensor']!r} as {tuple(c['shape'])}, but "
                                             f"it is produced as {tuple(produced[c['tensor']])}")
                if t is not None and (t.dtype != np.float32 or t.size != int(np.prod(c["shape"]))):
                    raise SerializationError(f"tensor {c['tensor']!r} is {t.dtype} {t.shape}; the {k!r} program "
                                             f"reads it as float32 {tuple(c['shape'])}")
    if target.device == "gpu":  # neither needs TVM itself: pyopencl, or tvm_ffi alone for CUDA
        from . import gpu

        opencl = target.tvm.get("kind") == "opencl"
        module = gpu.OpenCLModule.from_bytes(lib_bytes) if opencl else gpu.load_cuda_module(lib_bytes)
        return Library(module, progs, target, lib_bytes)
    lib = Library(_load_shared(lib_bytes), progs, target, lib_bytes)
    lib._native = lib.module
    return lib


def _check_linker() -> None:
    """TVM links a CPU library's object code into a shared object with the system's C compiler (running it then
    needs none): say so before the export fails deep inside TVM."""
    import shutil

    from tvm.support.cc import get_cc  # (TVM's own choice: $CXX, $CC, then g++, gcc, clang++, clang, c++, cc)

    cc = get_cc()
    if cc is None or shutil.which(cc.split()[0]) is None:
        raise ConfigError(f"building a CPU library needs a C compiler to link its shared object, and "
                          f"{'none was found (g++, gcc, clang, cc)' if cc is None else repr(cc) + ' is not one'}: "
                          f"install one (`apt-get install --no-install-recommends gcc`) or set CC; loading a "
                          f"compiled artifact needs none")


def _load_shared(lib_bytes: bytes):
    """A CPU library's shared object loaded through a private temporary file."""
    tvm = import_tvm()
    with tempfile.TemporaryDirectory(prefix="adntn-") as d:
        path = os.path.join(d, "lib.so")
        Path(path).write_bytes(lib_bytes)
        return tvm.runtime.load_module(path)  # stays mapped after the file is removed


# ---------------------------------------------------------------- the C-bundle build (runtime/bundle.py ships it)
C_HEADER = emit_c.HEADER  # the header whose sizes a bundle's loader checks against its manifest


def lower_c(call: Graph, target: Target, policy) -> tuple[Program, dict, dict]:
    """A call graph lowered for a runtime-free C bundle, no code generated yet: (program, kernels, memory: arena,
    workspace, RAM = arena + workspace, weight and unshared bytes)."""
    from .emit_c import workspace_bytes
    from .lower import lower

    prog, funcs = lower(call, "call", target, policy)
    mem = prog.memory()
    ws = workspace_bytes(funcs, target)
    memory = dict(arena_bytes=mem["arena_bytes"], workspace_bytes=ws, ram_bytes=mem["arena_bytes"] + ws,
                  weight_bytes=mem["const_bytes"], unshared_bytes=mem["unshared_bytes"])
    return prog, funcs, memory


def c_kernels(funcs: dict, target: Target) -> bytes:
    """The kernels as one object file for the target's cross toolchain."""
    tvm = import_tvm()
    # On a microcontroller the kernels' argument checks (and their messages) are most of the code, and they can
    # never fail: every call's tensors are static, written from the same program the kernels were built from.
    with tvm.transform.PassContext(config={"tirx.disable_assert": target.device == "microcontroller"}):
        module = tvm.compile(tvm.IRModule(funcs), target=target.tvm_target())
    with tempfile.TemporaryDirectory(prefix="adntn-") as d:
        module.mod.write_to_file(os.path.join(d, "kernels.o"))
        return Path(d, "kernels.o").read_bytes()


def c_sources(prog: Program, consts: Mapping[str, np.ndarray], target: Target, inputs: list[dict],
              outputs: list[dict], memory: Mapping[str, int], call_table: bool = False) -> dict[str, str]:
    """The bundle's C: the header (adntn_model_run's contract), the call sequence over a static arena (straight
    line, or a loop over a call table) and the weights as const arrays. `inputs`/`outputs`: the model's
    (ModelGraphs.inputs / outputs: names, shapes, token tables)."""
    rows = {s["name"]: s["rows"] for s in inputs if "rows" in s}
    return {
        emit_c.HEADER: emit_c.header("adntn_model", target.name, inputs, outputs, memory["ram_bytes"],
                                     memory["weight_bytes"]),
        emit_c.SOURCE: emit_c.model_source(prog, consts, memory["workspace_bytes"], call_table, rows),
        emit_c.WEIGHTS: emit_c.weights_source(consts),
    }


def cuda_arrays():
    """Device memory for CUDA runs (torch or CuPy); raises ConfigError when neither reaches the GPU."""
    from .gpu import cuda_arrays as arrays

    return arrays()


def gemm_shapes(g: Graph, target: Target, policy) -> list:
    """The (I, J, K) shapes of the GEMMs `g` lowers to under `policy` (what tuning tiles)."""
    from .lower import gemm_shapes as shapes

    return shapes(g, target, policy)


def conv_workloads(g: Graph, target: Target, policy) -> list:
    """The convs `g` lowers without im2col (`lower.find_convs`): what tuning times, one candidate program each."""
    from .lower import find_convs
    from .schedules import for_target

    return find_convs(g, hasattr(for_target(target), "depthwise")) if policy.implicit_conv else []


def winograd(chain, target: Target, policy) -> bool | None:
    """None where Winograd cannot run conv `chain` on `target`, else whether the lowering picks it under `policy`
    (`lower.use_winograd`: forced, tuned, or the cost model's choice)."""
    from .lower import use_winograd, winograd_applies
    from .schedules import for_target

    sched = for_target(target)
    return use_winograd(chain, sched, policy) if winograd_applies(chain, sched) else None


class TVMBackend:
    name = "tvm"

    def unsupported(self, g: Graph, target: "str | Target" = "cpu") -> list[Node]:
        from .lower import Lowerer

        return [n for n in g.nodes if not hasattr(Lowerer, "op_" + n.op.value)]

    def compile(self, g: Graph, target: "str | Target" = "cpu", tensors: Mapping[str, np.ndarray] | None = None,
                policy=None):
        """A callable running `g` on TVM kernels (float32); params bound from `tensors` (default g.tensors)."""
        lib = build({"main": g}, target, policy)
        runner = lib.runner("main", dict(g.tensors if tensors is None else {**g.tensors, **tensors}))
        names = [o for o, _, _ in lib.programs["main"].outputs]
        return lambda *args: tuple(runner(*args)[n] for n in names)

    build = staticmethod(build)
    load = staticmethod(load_library)


__all__ = ["C_HEADER", "Library", "Program", "TVMBackend", "build", "c_kernels", "c_sources", "conv_workloads",
           "cuda_arrays", "gemm_shapes", "load_library", "lower_c", "winograd"]
