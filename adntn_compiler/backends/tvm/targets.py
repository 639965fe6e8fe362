"""Our target names and the TVM target dicts they mean (the one place where that mapping lives)."""
from __future__ import annotations

import os
import platform

from ...errors import ConfigError

TARGETS = ("cpu",)
LATER = ("cuda", "arm64", "cortex-m")  # named by DESIGN.md, built in a later issue


INSTALL = "pip install apache-tvm==0.27.0.post1 apache-tvm-ffi==0.1.14.post1"


def import_tvm():
    """tvm, or a clear error saying how to install it."""
    try:
        import tvm
    except ImportError as e:
        raise ConfigError(f"the TVM backend needs Apache TVM 0.27 ({e}); install it with: {INSTALL}") from None
    return tvm


def tvm_target(name: str):
    """The TVM Target for one of our target names. The host CPU is detected by LLVM (never mcpu=native,
    which TVM 0.27 silently turns into generic x86 without vector units)."""
    if name not in ("cpu", *LATER):
        raise ConfigError(f"unknown target {name!r}; known: {', '.join(TARGETS)}")
    tvm = import_tvm()

    if name == "cpu":
        cpu = tvm.target.codegen.llvm_get_system_cpu()
        return tvm.target.Target({"kind": "llvm", "mcpu": cpu, "num-cores": os.cpu_count() or 1})
    if name in LATER:
        raise ConfigError(f"target {name!r} is not supported yet; supported: {', '.join(TARGETS)}")
    raise ConfigError(f"unknown target {name!r}; known: {', '.join(TARGETS)}")


def vector_lanes() -> int:
    """float32 lanes of the widest vector unit of this (the compiling and target) CPU."""
    feats = set(cpu_flags())
    return 16 if "avx512f" in feats else 8 if "avx" in feats else 4


ISA_PREFIXES = ("sse", "ssse", "avx", "fma", "f16c", "amx", "bmi", "asimd", "sve", "neon")


def cpu_flags() -> list[str]:
    """The ISA extensions of this CPU (from /proc/cpuinfo), used to refuse libraries built for a CPU with more."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return sorted({w for w in line.split(":", 1)[1].split() if w.startswith(ISA_PREFIXES)})
    except OSError:
        pass
    return []


def host() -> dict:
    return {"machine": platform.machine(), "isa": cpu_flags()}


def check_host(built: dict) -> None:
    """Refuse a library built for another machine or for ISA extensions this CPU lacks."""
    here = host()
    if built.get("machine") != here["machine"]:
        raise ConfigError(f"the artifact's library was built for {built.get('machine')}, this machine is "
                          f"{here['machine']}; recompile it here with --target cpu")
    missing = sorted(set(built.get("isa", ())) - set(here["isa"]))
    if missing:
        raise ConfigError(f"the artifact's library was built for a CPU with {', '.join(missing)}, which this CPU "
                          f"lacks; recompile it here with --target cpu")
