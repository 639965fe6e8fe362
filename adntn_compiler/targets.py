"""Targets are values: a `Target` says everything the lowering, the kernels, the cost model and the artifact need
to know about the device, so that nothing below the frontends reads the host.

`resolve("cpu")` is the only place that looks at the machine it runs on (the host CPU, as LLVM detects it); every
other name in the registry is a fixed description. The artifact records the Target it was built for, and the
loader checks *that* against its own machine (`runtime.host.check_runs_here`).
"""
from __future__ import annotations

import copy
import functools
import json
import os
import platform
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Literal, Mapping

from .errors import ConfigError

INSTALL_TVM = "pip install apache-tvm==0.27.0.post1 apache-tvm-ffi==0.1.14.post1"

Device = Literal["cpu", "gpu", "microcontroller"]


@dataclass(frozen=True)
class Target:
    name: str  # as the user named it: "cpu", "cpu:x86-64", ...
    tvm: Mapping[str, Any] = field(hash=False)  # the TVM target dict (`tvm.target.Target(target.tvm)`)
    arch: str  # the machine, as platform.machine() names it on the device: x86_64, aarch64, ...
    lanes: int  # float32 lanes of the widest vector unit the kernels may use
    threads: int  # parallel loops run on this many threads (1: none)
    device: Device = "cpu"
    link: Literal["host", "cross", "none"] = "host"  # how a library is linked: host cc, a cross compiler, not at all
    cross_compiler: str | None = None
    isa: tuple[str, ...] = ()  # ISA extensions the library uses: the loading machine must have all of them
    runtime: Literal["tvm", "c-bundle"] = "tvm"  # what it deploys with
    schedules: str = "cpu"  # the schedule module (backends/tvm/schedules/<name>.py) and its policy

    @property
    def parallel(self) -> bool:
        return self.threads > 1

    def to_dict(self) -> dict:
        return {**asdict(self), "tvm": dict(self.tvm), "isa": list(self.isa)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Target":
        """Raises ConfigError naming a missing or mistyped field (manifests are checked with it)."""
        try:
            t = cls(**{**d, "isa": tuple(d["isa"]), "tvm": dict(d["tvm"])})
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"malformed target record ({e})") from None
        if not all(isinstance(s, str) for s in t.isa) or not isinstance(t.lanes, int) or t.lanes < 1:
            raise ConfigError(f"malformed target record: isa {t.isa!r}, lanes {t.lanes!r}")
        for k, kinds in (("name", str), ("arch", str), ("threads", int), ("device", str), ("link", str),
                         ("runtime", str), ("schedules", str), ("cross_compiler", (str, type(None)))):
            if not isinstance(getattr(t, k), kinds) or isinstance(getattr(t, k), bool):
                raise ConfigError(f"malformed target record: {k} {getattr(t, k)!r:.40}")
        return t

    def tvm_target(self):
        tvm = import_tvm()
        return tvm.target.Target(dict(self.tvm))

    def describe(self) -> str:
        return (f"{self.name}: {self.device} {self.arch}, {self.lanes} float32 lanes, {self.threads} thread(s), "
                f"TVM {dict(self.tvm)}")


def runtime_threads() -> int:
    """The threads TVM's pool runs parallel loops on: TVM_NUM_THREADS, else the physical cores this process may
    use. (TVM's own default halves the logical CPU count on x86, assuming two hyper-threads per core: on a 2-vCPU
    VM without SMT it ran every model on one thread.)"""
    if os.environ.get("TVM_NUM_THREADS"):
        return max(1, int(os.environ["TVM_NUM_THREADS"]))
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    cores = set()
    for c in cpus:
        try:
            with open(f"/sys/devices/system/cpu/cpu{c}/topology/thread_siblings_list") as f:
                cores.add(f.read().strip())  # one entry per physical core
        except OSError:
            cores.add(str(c))
    return max(1, len(cores))


def import_tvm():
    """tvm, or a clear error saying how to install it. Sets TVM_NUM_THREADS (when unset) to `runtime_threads()`
    first: the pool reads it when it starts, at the first parallel kernel."""
    os.environ.setdefault("TVM_NUM_THREADS", str(runtime_threads()))
    try:
        import tvm
    except ImportError as e:
        raise ConfigError(f"the TVM backend needs Apache TVM 0.27 ({e}); install it with: {INSTALL_TVM}") from None
    return tvm


# ISA extensions that matter for generated kernels (vector units); others (cmov, popcnt...) are not checked.
_ISA_PREFIXES = ("sse", "ssse", "avx", "fma", "f16c", "amx", "neon", "sve")


def _norm(feature: str) -> str:
    """One spelling for LLVM's and /proc/cpuinfo's names: sse4.1 / sse4_1, avx512vnni / avx512_vnni, neon / asimd."""
    f = feature.lower().replace(".", "").replace("_", "").replace("-", "")
    return "neon" if f == "asimd" else f


def _llvm_isa(tvm_dict: Mapping[str, Any]) -> tuple[str, ...]:
    from tvm.target import codegen

    feats = codegen.llvm_get_cpu_features(import_tvm().target.Target(dict(tvm_dict)))
    return tuple(sorted({_norm(f) for f in feats if _norm(f).startswith(_ISA_PREFIXES)}))


def _x86_lanes(isa: tuple[str, ...]) -> int:
    return 16 if "avx512f" in isa else 8 if "avx" in isa else 4


def _cpu(name: str, mcpu: str | None) -> Target:
    """The host CPU (mcpu None: as LLVM detects it; never mcpu=native, which TVM 0.27 silently turns into generic
    x86 without vector units) or a named CPU of the host's architecture (e.g. cpu:x86-64 for any x86-64)."""
    import_tvm()
    from tvm.target import codegen

    if mcpu is not None and not codegen.llvm_is_valid_cpu(mcpu, codegen.llvm_get_system_triple()):
        raise ConfigError(f"target {name!r}: LLVM does not know the CPU {mcpu!r}")
    threads = runtime_threads()
    d = {"kind": "llvm", "mcpu": mcpu or codegen.llvm_get_system_cpu(), "num-cores": threads}
    isa = _llvm_isa(d)
    if mcpu is None:  # LLVM's model of the detected CPU may list extensions a VM hides: record what is really here
        isa = tuple(f for f in isa if f in host_isa())
    machine = platform.machine()
    lanes = 4 if machine in ("aarch64", "arm64") else _x86_lanes(isa)
    return Target(name, d, machine, lanes, threads, isa=isa)


# Named cores LLVM's aarch64 backend knows; "generic" is any ARMv8-A with NEON.
ARM64_CORES = ("generic", "cortex-a53", "cortex-a55", "cortex-a72", "cortex-a76", "neoverse-n1")


def _arm64(name: str, core: str | None) -> Target:
    """aarch64 Linux boards (NEON, 4 float32 lanes), deployed as a runtime-free C bundle. One thread: the
    bundle has no thread pool (a board's other cores stay the application's)."""
    core = core or "generic"
    if core not in ARM64_CORES:
        raise ConfigError(f"target {name!r}: unknown arm64 core {core!r}; known: {', '.join(ARM64_CORES)}")
    d = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": core, "mattr": ["+neon"]}
    return Target(name, d, "aarch64", 4, 1, link="cross", cross_compiler="aarch64-linux-gnu-gcc", isa=("neon",),
                  runtime="c-bundle", schedules="cpu")


def _cortex_m(core: str) -> Callable[[str, str | None], Target]:
    """A Cortex-M with a single-precision FPU (M4F: FPv4, M7: FPv5), bare metal (thumbv7em, hard-float ABI:
    without it GNU ld refuses to link the kernels with the board's code). No vector unit, no threads."""
    def make(name: str, arg: str | None) -> Target:
        if arg is not None:
            raise ConfigError(f"target {name!r}: {core} takes no option (got {arg!r})")
        # vector-width: the FPU's 32 bits (LLVM otherwise assumes 128-bit vectors, and says so on every build)
        d = {"kind": "llvm", "mtriple": "thumbv7em-none-eabihf", "mcpu": core, "mfloat-abi": "hard", "vector-width": 32}
        return Target(name, d, "armv7em", 1, 1, device="microcontroller", link="cross",
                      cross_compiler="arm-none-eabi-gcc", runtime="c-bundle", schedules="micro")
    return make


def local_cuda_archs() -> list[str]:
    """The compute capabilities of this machine's NVIDIA GPUs as sm_XX (nvidia-smi; empty without a GPU)."""
    import shutil
    import subprocess

    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        r = subprocess.run([smi, "--query-gpu=compute_cap", "--format=csv,noheader"], capture_output=True, text=True,
                           timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return ["sm_" + line.strip().replace(".", "") for line in r.stdout.splitlines() if r.returncode == 0 and
            line.strip().replace(".", "").isdigit()]


# The oldest arch CUDA 13's nvcc still builds for (Turing); newer ones are named as nvcc names them.
MIN_CUDA_ARCH = 75


def _cuda(name: str, arch: str | None) -> Target:
    """NVIDIA GPUs: kernels built ahead of time by nvcc for one arch (the local GPU's, or the one named)."""
    if arch is None:
        found = local_cuda_archs()
        if not found:
            raise ConfigError(f"target {name!r}: this machine has no NVIDIA GPU to take the arch from; name it, "
                              f"e.g. cuda:sm_80 (A100) or cuda:sm_90 (H100/H200)")
        arch = found[0]
    m = re.fullmatch(r"sm_(\d+)[af]?", arch)
    if m is None or int(m.group(1)) < MIN_CUDA_ARCH:
        raise ConfigError(f"target {name!r}: {arch!r} is not a CUDA arch nvcc 13 builds for (sm_{MIN_CUDA_ARCH} or "
                          f"newer, e.g. sm_80, sm_90)")
    return Target(f"cuda:{arch}", {"kind": "cuda", "arch": arch}, platform.machine(), 1, 1, device="gpu",
                  isa=(arch,), schedules="gpu")


def _opencl(name: str, arg: str | None) -> Target:
    """Any OpenCL 1.2 device (Intel, AMD and Mali GPUs; pocl's CPU device in the tests): the library is OpenCL C
    plus its launch table, built for the device when it is loaded, so it is not tied to this machine."""
    if arg is not None:
        raise ConfigError(f"target {name!r}: opencl takes no option (got {arg!r}); pick the device at load time "
                          f"with ADNTN_OPENCL_DEVICE=<index>")
    return Target(name, {"kind": "opencl"}, "any", 1, 1, device="gpu", schedules="gpu")


@dataclass(frozen=True)
class Entry:
    make: Callable[[str, str | None], Target]
    device: Device
    summary: str
    supported: bool = True


REGISTRY: dict[str, Entry] = {
    "cpu": Entry(_cpu, "cpu", "this machine's CPU (LLVM detects it); cpu:<llvm cpu> for another CPU of this "
                              "architecture, e.g. cpu:x86-64 (SSE2 only) or cpu:skylake-avx512"),
    "arm64": Entry(_arm64, "cpu", "aarch64 Linux boards with NEON, as a runtime-free C bundle; arm64:<core> for "
                                  f"one of {', '.join(ARM64_CORES[1:])}"),
    "cortex-m4": Entry(_cortex_m("cortex-m4"), "microcontroller", "Cortex-M4F microcontrollers, runtime-free C bundle"),
    "cortex-m7": Entry(_cortex_m("cortex-m7"), "microcontroller", "Cortex-M7 microcontrollers, runtime-free C bundle"),
    "cuda": Entry(_cuda, "gpu", "NVIDIA GPUs, kernels built ahead of time by nvcc; cuda:sm_XX names the arch "
                                "(required on a machine without a GPU)"),
    "opencl": Entry(_opencl, "gpu", "OpenCL devices (GPUs; pocl's CPU device), OpenCL C built at load time"),
}


def supported() -> list[str]:
    return [k for k, e in REGISTRY.items() if e.supported]


def targets() -> list[dict]:
    """Every named target: its device kind, whether it is supported yet, and what it is for."""
    return [dict(name=k, device=e.device, supported=e.supported, summary=e.summary) for k, e in REGISTRY.items()]


@functools.lru_cache(maxsize=None)
def _resolve(name: str) -> Target:
    base, _, arg = name.partition(":")
    if base not in REGISTRY:
        raise ConfigError(f"unknown target {name!r}; known: {', '.join(REGISTRY)}")
    return REGISTRY[base].make(name, arg or None)


def resolve(target: "str | Target") -> Target:
    """A Target from a name (resolved once per process) or a Target as it is."""
    if isinstance(target, Target):
        return target
    if not isinstance(target, str):
        raise ConfigError(f"target must be a name ({', '.join(REGISTRY)}) or a Target, got {type(target).__name__}")
    return _resolve(target)


def cpu_model() -> str:
    """This machine's CPU model as /proc/cpuinfo names it (else what `platform` says)."""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        cpu = ""
    return cpu or platform.processor()


def device_facts() -> dict:
    """What a machine that measures for another (an `adntn rpc-server`) reports about itself: the facts of its
    fingerprint that only it knows, and its ISA extensions (what a library built for a target needs there)."""
    return dict(cpu=cpu_model(), machine=platform.machine(), isa=sorted(host_isa()),
                threads=runtime_threads())


def host_isa() -> set[str]:
    """The ISA extensions of the machine this process runs on (from /proc/cpuinfo), in `_norm` spelling."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return {_norm(w) for w in line.split(":", 1)[1].split()}
    except OSError:
        pass
    return set()


def _device_name(t: Target) -> str:
    """The GPU a GPU target runs on here ("" for a CPU target, or when none is found)."""
    if t.device != "gpu":
        return ""
    if t.tvm.get("kind") == "opencl":
        try:
            import pyopencl as cl

            devices = [d for p in cl.get_platforms() for d in p.get_devices()]
            return devices[int(os.environ.get("ADNTN_OPENCL_DEVICE", 0))].name.strip()
        except Exception:  # no pyopencl, no device: no name (the fingerprint then matches no tuned record)
            return ""
    import shutil
    import subprocess

    smi = shutil.which("nvidia-smi")
    if smi is None:
        return ""
    try:
        r = subprocess.run([smi, "--query-gpu=name,compute_cap", "--format=csv,noheader"], capture_output=True,
                           text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return r.stdout.splitlines()[0].strip() if r.returncode == 0 and r.stdout.strip() else ""


def fingerprint(target: "str | Target") -> dict:
    """What a measurement on this machine depends on besides the workload: the target's canonical dict, the CPU
    model (and the GPU's name and compute capability for a GPU target), the TVM, LLVM and CUDA versions, and
    ours (our schedules change between versions). Tuning records are keyed by it (notes/targets.md: TVM's own
    database ignores the target when it looks records up)."""
    t = resolve(target)
    threads = int(os.environ.get("TVM_NUM_THREADS") or t.threads)  # what the runtime's pool measures with
    return copy.deepcopy(_fingerprint(json.dumps(t.to_dict(), sort_keys=True), threads))


@functools.lru_cache(maxsize=64)
def _fingerprint(target_json: str, threads: int) -> dict:
    """Computed once per process for a target (it reads /proc/cpuinfo, and runs nvcc for a CUDA target)."""
    import shutil
    import subprocess

    from .settings import VERSION as __version__

    t = Target.from_dict(json.loads(target_json))
    try:
        import tvm

        tvm_version, llvm = tvm.__version__, str(tvm.target.codegen.llvm_version_major())
    except (ImportError, AttributeError):
        tvm_version = llvm = ""
    cuda = ""
    if t.tvm.get("kind") == "cuda" and shutil.which("nvcc"):
        out = subprocess.run(["nvcc", "--version"], capture_output=True, text=True).stdout
        cuda = next((line.rsplit(",", 1)[-1].strip() for line in out.splitlines() if "release" in line), "")
    return dict(target=t.to_dict(), cpu=cpu_model(), machine=platform.machine(),
                device=_device_name(t), threads=threads, tvm=tvm_version, llvm=llvm, cuda=cuda, adntn=__version__)
