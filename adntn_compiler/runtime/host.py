"""Will a library built for a Target run in this process? The loader's and the tuner's check of the host."""
from __future__ import annotations

import platform

from ..errors import ConfigError
from ..targets import Target, host_isa, local_cuda_archs


def check_gpu_here(t: Target) -> None:
    """Refuse a CUDA library without a GPU of its arch (or device memory to run it with), an OpenCL one without
    pyopencl or an OpenCL device."""
    if t.tvm.get("kind") == "opencl":
        try:
            import pyopencl
        except ImportError:
            raise ConfigError(f"target {t.name!r} runs through pyopencl, which is not installed (pip install "
                              f"pyopencl)") from None
        try:
            found = [d for p in pyopencl.get_platforms() for d in p.get_devices()]
        except pyopencl.Error:  # e.g. no ICD installed at all
            found = []
        if not found:
            raise ConfigError(f"target {t.name!r}: this machine has no OpenCL device (install a driver, e.g. "
                              f"Debian's pocl-opencl-icd)")
        return
    arch = t.tvm.get("arch")
    here = local_cuda_archs()
    if not here:
        raise ConfigError(f"the artifact was built for an NVIDIA GPU ({arch}, target {t.name!r}); this machine has "
                          f"no NVIDIA GPU (nvidia-smi finds none), so its kernels cannot run here")
    if arch not in here:
        raise ConfigError(f"the artifact's kernels were built for {arch}, this machine's GPU is {', '.join(here)}; "
                          f"recompile it with --target cuda:{here[0]}")
    if t.arch != platform.machine():
        raise ConfigError(f"the artifact's host code was built for {t.arch}, this machine is {platform.machine()}")
    from ..backends.tvm import cuda_arrays

    cuda_arrays()  # device memory comes from torch or CuPy: refuse here if neither reaches the GPU


def check_runs_here(t: Target) -> None:
    """Refuse a library built for another architecture or for ISA extensions this machine lacks."""
    if t.device == "gpu":
        return check_gpu_here(t)
    here = platform.machine()
    if t.arch != here:
        raise ConfigError(f"the artifact's library was built for {t.arch} (target {t.name!r}), this machine is "
                          f"{here}; recompile it here with --target cpu")
    if t.runtime == "c-bundle":
        raise ConfigError(f"target {t.name!r} deploys as a C bundle, not a loadable library: save it to a folder "
                          f"and build it with its Makefile (or run it under qemu: `adntn run BUNDLE`)")
    if t.device != "cpu" or t.runtime != "tvm":
        raise ConfigError(f"the artifact was built for a {t.device} target ({t.name!r}, runtime {t.runtime}); it "
                          f"does not load into this process")
    missing = sorted(set(t.isa) - host_isa())
    if missing:
        raise ConfigError(f"the artifact's library was built for a CPU with {', '.join(missing)}, which this CPU "
                          f"lacks; recompile it here with --target cpu")
