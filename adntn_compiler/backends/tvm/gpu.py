"""GPU libraries: the GPU-scheduled kernels of a build, for CUDA (ahead of time by nvcc) or OpenCL.

Both come from one lowering: `build_gpu` compiles the same scheduled PrimFuncs for the target's code generator
and reads, from the module TVM splits into host and device code, each kernel's launches (device kernel, which
of its arguments, grid and block). Then

- **OpenCL**: the library is the OpenCL C source plus that launch table (JSON); `OpenCLModule` builds it with
  pyopencl for the first OpenCL device (pocl's CPU device in CI) and launches the kernels itself.
- **CUDA**: TVM's `cuda_host` code generator writes the kernels and their host launchers as one CUDA C++ file,
  and nvcc compiles it for the named arch into a shared library holding the cubin and PTX (nothing is
  JIT-compiled at load time; the library needs only libtvm_ffi and the CUDA driver: cudart is linked
  statically). ptxas's report (registers, shared memory, spills per kernel) is kept with it and checked against
  the launch bounds.

`DeviceRunner` runs a Program on either (`opencl_runner`, `cuda_runner`): every buffer lives on the device (its
own allocation: the CPU arena plan is not used there), constants are uploaded once, and a call uploads `x`,
launches the kernels back to back and downloads `y`.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from ...errors import ConfigError, SerializationError
from ...targets import Target, import_tvm
from .program import Program, prepare_const

_THREAD_AXES = ("blockIdx.x", "blockIdx.y", "blockIdx.z", "threadIdx.x", "threadIdx.y", "threadIdx.z")


# ---------------------------------------------------------------- the launch table


def _fields(node) -> list:
    info = getattr(type(node), "__tvm_ffi_type_info__", None)
    return [getattr(node, f.name) for f in info.fields] if info and info.fields else []


def _is_call(e) -> bool:
    return type(e).__name__ == "Call" and hasattr(e, "op")


def launch_table(host_func, name: str) -> list[dict]:
    """The device launches of one host function (after TVM's SplitHostDevice), in order: for each, the device
    kernel, the indices of the function's parameters it takes, and its grid and block sizes. Raises ConfigError
    if the host part does anything but launch kernels on its parameters (a loop, a workspace buffer)."""
    from tvm.tirx.stmt import Stmt

    params = list(host_func.params)
    declared: dict = {}  # a DeclBuffer's buffer -> its data expression (a view of a parameter)
    launches: list[dict] = []

    def param_of(expr) -> int:
        while True:
            if _is_call(expr) and expr.op.name == "tirx.buffer_data":
                expr = expr.args[0]
            for k, p in enumerate(params):
                if expr.same_as(p):
                    return k
            nxt = next((d for b, d in declared.items() if b.same_as(expr)), None)
            if nxt is None:
                raise ConfigError(f"GPU kernel {name}: a launch reads {expr}, which is not one of its buffers "
                                  f"(the schedule left a host-side intermediate)")
            expr = nxt

    def visit(node) -> None:
        kind = type(node).__name__
        if kind in ("AllocBuffer", "For", "While"):
            raise ConfigError(f"GPU kernel {name}: the schedule leaves a host-side {kind} (every stage must run "
                              f"inside device kernels)")
        if kind == "DeclBuffer":
            declared[node.buffer] = node.data
        if kind == "Evaluate" and _is_call(node.value) and \
                node.value.op.name == "tirx.call_ffi_kernel":
            launches.append(_device_launch(node.value, name, param_of))
            return
        for f in _fields(node):
            for child in (f if isinstance(f, (list, tuple)) or type(f).__name__ == "Array" else [f]):
                if isinstance(child, Stmt):
                    visit(child)

    visit(host_func.body)
    if not launches:
        raise ConfigError(f"GPU kernel {name} has no device launch (an unscheduled function compiles to host code)")
    return launches


def _device_launch(c, name: str, param_of) -> dict:
    """One `tirx.call_ffi_kernel` of host function `name`: the device kernel, the parameter indices
    (`param_of`) of its buffer arguments, its grid and block."""
    axes = list(c.attrs.launch_params)
    n_args = len(c.args) - 1 - len(axes)
    extents = dict(zip(axes, (int(e) for e in c.args[1 + n_args:])))
    unknown = [a for a in axes if a not in _THREAD_AXES]
    if unknown:
        raise ConfigError(f"GPU kernel {name}: unsupported launch parameters {unknown}")
    return {"kernel": str(c.args[0].value), "args": [param_of(a) for a in c.args[1:1 + n_args]],
            "grid": [extents.get(f"blockIdx.{d}", 1) for d in "xyz"],
            "block": [extents.get(f"threadIdx.{d}", 1) for d in "xyz"]}


def _split_modules(mod, target):
    """tvm.compile(mod, target) and the IRModule right after SplitHostDevice (host functions and kernels)."""
    tvm = import_tvm()
    seen = {}

    @tvm.ir.instrument.pass_instrument
    class Grab:
        def run_after_pass(self, m, info):
            if info.name.endswith("SplitHostDevice"):
                seen["mod"] = m

    with tvm.transform.PassContext(instruments=[Grab()]):
        ex = tvm.compile(mod, target=target)
    return ex, seen["mod"]


# ---------------------------------------------------------------- building


@dataclass
class GPUModule:
    """What a GPU build produces: the launch table and either the OpenCL source or the CUDA library."""
    kind: str  # "opencl" | "cuda"
    launches: dict[str, list[dict]]  # kernel (host function) name -> its device launches
    source: str  # OpenCL C, or the CUDA C++ translation unit
    lib_bytes: bytes = b""  # CUDA: the nvcc-built shared library
    ptxas: dict | None = None  # CUDA: kernel -> {"registers", "smem", "spill_stores", "spill_loads", "stack"}
    cuda_version: str | None = None  # CUDA: nvcc's release
    arch: str | None = None  # CUDA: the sm_XX the cubin is for

    def record(self) -> dict:
        """What the manifest says of the GPU build (`adntn info` shows it)."""
        launches = sum(len(v) for v in self.launches.values())
        r = {"api": self.kind, "kernels": len(self.launches), "launches": launches}
        if self.kind == "cuda":
            r |= {"arch": self.arch, "cuda_version": self.cuda_version, "ptxas": self.ptxas}
        return r

    def to_bytes(self) -> bytes:
        if self.kind == "cuda":
            return self.lib_bytes
        return json.dumps({"format": "adntn-opencl", "source": self.source, "launches": self.launches}).encode()


def build_gpu(funcs: Mapping[str, object], target: Target) -> GPUModule:
    tvm = import_tvm()
    kind = target.tvm["kind"]
    host = {"kind": "cuda_host"} if kind == "cuda" else {"kind": "llvm"}
    ex, split = _split_modules(tvm.IRModule(dict(funcs)), tvm.target.Target(dict(target.tvm), host=host))
    launches = {name: launch_table(split[name], name) for name in funcs}
    if kind == "opencl":
        if not ex.mod.imports:
            raise ConfigError("the OpenCL build produced no device module")
        return GPUModule("opencl", launches, ex.mod.imports[0].inspect_source())
    from tvm.backend.cuda.host import export_cuda_host

    source = export_cuda_host(ex.mod)
    lib, report = nvcc_library(source, target.tvm["arch"])
    problems = check_ptxas(report, launches)
    if problems:
        raise ConfigError(f"the CUDA kernels exceed the launch bounds of {target.tvm['arch']}: {'; '.join(problems)}")
    return GPUModule("cuda", launches, source, lib, report, nvcc_version(), target.tvm["arch"])


def nvcc_version() -> str:
    r = subprocess.run([os.path.join(cuda_root(), "bin", "nvcc"), "--version"], capture_output=True, text=True)
    m = re.search(r"release ([\d.]+)", r.stdout)
    return m.group(1) if m else "unknown"


def cuda_root() -> str:
    """The CUDA toolkit folder (CUDA_PATH, else nvcc's real location's parent: TVM's own guess is wrong when nvcc
    is a symlink in /usr/local/bin)."""
    if os.environ.get("CUDA_PATH"):
        return os.environ["CUDA_PATH"]
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        raise ConfigError("target cuda needs nvcc (the CUDA toolkit) to build the kernels ahead of time; install "
                          "it or put it on PATH")
    return str(Path(os.path.realpath(nvcc)).parent.parent)


_PTXAS_FN = re.compile(r"Compiling entry function '(\w+)'")
_PTXAS_USED = re.compile(r"Used (\d+) registers(?:.*?(\d+) bytes smem)?")
_PTXAS_STACK = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")


def parse_ptxas(text: str) -> dict[str, dict]:
    """nvcc -Xptxas -v's report: kernel -> registers, static shared memory, stack and spill bytes."""
    out: dict[str, dict] = {}
    fn = None
    for line in text.splitlines():
        if m := _PTXAS_FN.search(line):
            fn = m.group(1)
            out[fn] = {"registers": 0, "smem": 0, "stack": 0, "spill_stores": 0, "spill_loads": 0}
        elif fn and (m := _PTXAS_STACK.search(line)):
            out[fn].update(stack=int(m.group(1)), spill_stores=int(m.group(2)), spill_loads=int(m.group(3)))
        elif fn and (m := _PTXAS_USED.search(line)):
            out[fn].update(registers=int(m.group(1)), smem=int(m.group(2) or 0))
    return out


def nvcc_library(source: str, arch: str) -> tuple[bytes, dict]:
    """nvcc: the CUDA C++ unit -> a shared library with the cubin for `arch` (sm_XX), and ptxas's report."""
    import tvm_ffi.libinfo as ffi_info

    root = cuda_root()
    nvcc = os.path.join(root, "bin", "nvcc")
    with tempfile.TemporaryDirectory(prefix="adntn-cuda-") as d:
        cu, so = os.path.join(d, "kernels.cu"), os.path.join(d, "kernels.so")
        Path(cu).write_text(source)
        cmd = [nvcc, "-std=c++17", "-O3", f"-arch={arch}", "-shared", "-Xcompiler", "-fPIC", "-Xptxas", "-v",
               f"-I{ffi_info.find_include_path()}", cu, "-o", so,
               f"-L{os.path.dirname(ffi_info.find_libtvm_ffi())}", "-ltvm_ffi", "-cudart", "static"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise ConfigError(f"nvcc failed for {arch} (exit {r.returncode}): {r.stderr.strip()[-2000:]}")
        return Path(so).read_bytes(), parse_ptxas(r.stderr + r.stdout)


def check_ptxas(report: Mapping[str, dict], launches: Mapping[str, list[dict]], max_registers: int = 65536,
                max_smem: int = 48 * 1024) -> list[str]:
    """Problems in ptxas's report: spills, or registers x threads / shared memory beyond one block's limits."""
    threads = {ln["kernel"]: math.prod(ln["block"]) for ls in launches.values() for ln in ls}
    problems = []
    for k, r in report.items():
        if r["spill_stores"] or r["spill_loads"]:
            problems.append(f"{k}: {r['spill_stores']} bytes spill stores, {r['spill_loads']} bytes spill loads")
        if r["registers"] * threads.get(k, 1) > max_registers:
            problems.append(f"{k}: {r['registers']} registers x {threads.get(k, 1)} threads > {max_registers}")
        if r["smem"] > max_smem:
            problems.append(f"{k}: {r['smem']} bytes of shared memory > {max_smem}")
    return problems


# ---------------------------------------------------------------- running


class OpenCLModule:
    """An OpenCL library (source + launch table) built for an OpenCL device through pyopencl."""

    def __init__(self, source: str, launches: Mapping[str, list[dict]]):
        self.cl = _pyopencl()
        devices = [d for p in self.cl.get_platforms() for d in p.get_devices()]
        if not devices:
            raise ConfigError("no OpenCL device found (install an OpenCL driver, e.g. Debian's pocl-opencl-icd)")
        self.device = devices[int(os.environ.get("ADNTN_OPENCL_DEVICE", 0))]
        self.context = self.cl.Context([self.device])
        self.queue = self.cl.CommandQueue(self.context)
        self.program = self.cl.Program(self.context, source).build()
        self.launches = dict(launches)
        self._kernels = {}

    def kernel(self, name: str):
        if name not in self._kernels:
            self._kernels[name] = getattr(self.program, name)
        return self._kernels[name]

    @classmethod
    def from_bytes(cls, data: bytes) -> "OpenCLModule":
        try:
            d = json.loads(data)
            if d.get("format") != "adntn-opencl" or not isinstance(d.get("source"), str):
                raise ValueError("not an adntn OpenCL library")
            for name, ls in d["launches"].items():
                for ln in ls:
                    if not (isinstance(ln["kernel"], str) and all(isinstance(a, int) and a >= 0 for a in ln["args"])
                            and len(ln["grid"]) == len(ln["block"]) == 3
                            and all(isinstance(v, int) and v >= 1 for v in ln["grid"] + ln["block"])):
                        raise ValueError(f"malformed launch of {name}")
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise SerializationError(f"the OpenCL library is malformed ({e})") from None
        return cls(d["source"], d["launches"])


def _pyopencl():
    try:
        import pyopencl
    except ImportError as e:
        raise ConfigError(f"target opencl runs through pyopencl ({e}); install it with: pip install pyopencl") from None
    return pyopencl


class DeviceRunner:
    """A Program on a device: every buffer in device memory (`arrays`), constants uploaded once; a call uploads
    the inputs, runs the kernel steps back to back and downloads the outputs. Same interface as `ProgramRunner`
    (call it; `update` refills constants). `steps(k, call, buffers)` gives the zero-argument launches of call k."""

    def __init__(self, arrays, program: Program, tensors: Mapping[str, np.ndarray], steps):
        self.arrays, self.program = arrays, program
        program.check_tensors(tensors)
        self.bufs = {b: arrays.empty(n) for b, n in program.buffers.items()}
        self.update(tensors)
        self._steps = [f for k, c in enumerate(program.calls) for f in steps(k, c, self.bufs)]
        self.input_names = [name for name, _, _ in program.inputs]

    def update(self, tensors: Mapping[str, np.ndarray]) -> None:
        for spec in self.program.consts:
            if spec["tensor"] in tensors:
                self.arrays.upload(self.bufs[spec["buffer"]], prepare_const(tensors[spec["tensor"]], spec))

    def __call__(self, *args: np.ndarray) -> dict[str, np.ndarray]:
        if len(args) != len(self.program.inputs):
            raise ConfigError(f"program takes {len(self.program.inputs)} inputs, got {len(args)}")
        for (name, b, shape), x in zip(self.program.inputs, args):
            x = np.asarray(x)
            if x.shape != tuple(shape):
                raise ConfigError(f"input {name}: expected shape {tuple(shape)}, got {x.shape}")
            self.arrays.upload(self.bufs[b], x)
        for f in self._steps:
            f()
        return {name: self.arrays.download(self.bufs[b], shape) for name, b, shape in self.program.outputs}


class _OpenCLArrays:
    def __init__(self, module: OpenCLModule):
        self.cl, self.module = module.cl, module

    def empty(self, n: int):
        return self.cl.Buffer(self.module.context, self.cl.mem_flags.READ_WRITE, 4 * n)

    def upload(self, dst, a: np.ndarray) -> None:
        self.cl.enqueue_copy(self.module.queue, dst, np.ascontiguousarray(a, np.float32))

    def download(self, buf, shape) -> np.ndarray:
        y = np.empty(shape, np.float32)
        self.cl.enqueue_copy(self.module.queue, y, buf)  # (blocking: after the kernels queued before it)
        return y


def opencl_runner(module: OpenCLModule, program: Program, tensors: Mapping[str, np.ndarray]) -> DeviceRunner:
    """A DeviceRunner launching the OpenCL kernels as the launch table says."""
    def steps(k: int, c: dict, bufs: dict):
        launches = module.launches.get(c["kernel"])
        if launches is None:
            raise SerializationError(f"the library has no kernel {c['kernel']!r}")
        for ln in launches:
            if max(ln["args"], default=-1) >= len(c["args"]):
                raise SerializationError(f"kernel {c['kernel']!r} takes argument {max(ln['args'])}, call {k} "
                                         f"passes {len(c['args'])}")
            kern, local = module.kernel(ln["kernel"]), tuple(ln["block"])
            glob = tuple(g * b for g, b in zip(ln["grid"], local))
            args = [bufs[c["args"][a][0]] for a in ln["args"]]
            yield lambda kern=kern, glob=glob, local=local, args=args: kern(module.queue, glob, local, *args)

    return DeviceRunner(_OpenCLArrays(module), program, tensors, steps)


def cuda_arrays():
    """Device memory for the CUDA runner, from torch (with CUDA) or else CuPy: the nvcc-built library needs only
    libtvm_ffi and the driver, so a deployment box needs neither TVM nor a particular framework."""
    try:
        import torch

        if torch.cuda.is_available():
            return _TorchArrays(torch)
    except ImportError:
        pass
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount():
            return _CupyArrays(cupy)
    except Exception:  # not installed, or no device / driver
        pass
    raise ConfigError("running CUDA artifacts needs torch with CUDA or CuPy for device memory (neither finds a GPU)")


class _TorchArrays:
    def __init__(self, torch):
        self.torch = torch

    def empty(self, n: int):
        return self.torch.zeros(n, dtype=self.torch.float32, device="cuda")

    def view(self, buf, shape):
        return buf[: math.prod(shape)].view(tuple(shape))

    def upload(self, dst, a: np.ndarray) -> None:
        dst[: a.size].copy_(self.torch.from_numpy(np.ascontiguousarray(a, np.float32).reshape(-1)))

    def download(self, buf, shape) -> np.ndarray:
        return self.view(buf, shape).cpu().numpy()  # (synchronises with the kernels before it)


class _CupyArrays(_TorchArrays):
    def __init__(self, cupy):
        self.cupy = cupy

    def empty(self, n: int):
        return self.cupy.zeros(n, dtype=self.cupy.float32)

    def view(self, buf, shape):
        return buf[: math.prod(shape)].reshape(tuple(shape))

    def upload(self, dst, a: np.ndarray) -> None:
        dst[: a.size] = self.cupy.asarray(np.ascontiguousarray(a, np.float32).reshape(-1))

    def download(self, buf, shape) -> np.ndarray:
        return self.cupy.asnumpy(self.view(buf, shape))


def load_cuda_module(lib_bytes: bytes):
    """The nvcc-built library through tvm_ffi alone (no TVM compiler or runtime), via a private temporary file."""
    import tvm_ffi

    with tempfile.TemporaryDirectory(prefix="adntn-cuda-") as d:
        path = os.path.join(d, "kernels.so")
        Path(path).write_bytes(lib_bytes)
        try:
            return tvm_ffi.load_module(path)  # stays mapped after the file is removed
        except Exception as e:
            raise SerializationError(f"the CUDA library does not load ({type(e).__name__}: {e})") from None


def cuda_runner(module, program: Program, tensors: Mapping[str, np.ndarray]) -> DeviceRunner:
    """A DeviceRunner calling the nvcc-built library's host launchers (default stream) on torch / CuPy memory."""
    import tvm_ffi

    def steps(k: int, c: dict, bufs: dict):
        try:
            f = module[c["kernel"]]
        except (AttributeError, KeyError, RuntimeError) as e:
            raise SerializationError(f"the library has no kernel {c['kernel']!r} ({type(e).__name__})") from None
        args = [tvm_ffi.from_dlpack(arrays.view(bufs[b], shape)) for b, shape in c["args"]]
        yield lambda: f(*args)

    arrays = cuda_arrays()
    return DeviceRunner(arrays, program, tensors, steps)
