"""Targets are values: the lowering, the kernels and the artifact take everything from the Target, not the host;
a policy handed to compile() changes the program, not its result."""
from __future__ import annotations

import dataclasses
import platform
import re

import numpy as np
import pytest

pytest.importorskip("tvm", reason="apache-tvm is not installed")

import adntn_compiler as adntn  # noqa: E402
from adntn_compiler.backends.tvm import build  # noqa: E402
from adntn_compiler.backends.tvm.policy import GemmTiles, default_policy  # noqa: E402
from adntn_compiler.errors import ConfigError  # noqa: E402
from adntn_compiler.runtime.host import check_runs_here  # noqa: E402
from adntn_compiler.targets import Target, resolve  # noqa: E402

x86 = pytest.mark.skipif(platform.machine() != "x86_64", reason="the SSE-only target is an x86-64 CPU")


def test_registry_lists_targets_and_refuses_unknown_ones():
    names = {t["name"]: t for t in adntn.targets()}
    assert names["cpu"]["supported"] and {"arm64", "cortex-m4", "cuda", "opencl"} <= set(names)
    with pytest.raises(ConfigError, match="unknown target 'tpu'"):
        resolve("tpu")
    with pytest.raises(ConfigError, match="LLVM does not know the CPU 'pentium9000'"):
        resolve("cpu:pentium9000")
    assert resolve("cpu") is resolve("cpu")  # resolved once


def test_gpu_targets():
    t = resolve("cuda:sm_90")
    assert (t.device, t.tvm, t.isa, t.schedules) == ("gpu", {"kind": "cuda", "arch": "sm_90"}, ("sm_90",), "gpu")
    assert Target.from_dict(t.to_dict()) == t
    with pytest.raises(ConfigError, match="'sm_50' is not a CUDA arch nvcc 13 builds for"):
        resolve("cuda:sm_50")
    with pytest.raises(ConfigError, match="opencl takes no option"):
        resolve("opencl:gpu0")
    assert resolve("opencl").tvm == {"kind": "opencl"}
    from adntn_compiler.targets import local_cuda_archs

    if not local_cuda_archs():  # without a GPU the arch must be named
        with pytest.raises(ConfigError, match="no NVIDIA GPU to take the arch from; name it, e.g. cuda:sm_80"):
            resolve("cuda")
        with pytest.raises(ConfigError, match="this machine has no NVIDIA GPU"):
            check_runs_here(t)


def test_target_round_trips_through_its_record():
    t = resolve("cpu")
    assert Target.from_dict(t.to_dict()) == t
    with pytest.raises(ConfigError, match="malformed target record"):
        Target.from_dict({k: v for k, v in t.to_dict().items() if k != "lanes"})


@x86
def test_non_host_target_sets_the_lanes_and_the_artifact_records_it(tmp_path):
    """cpu:x86-64 is generic x86-64 (SSE2: 4 float32 lanes), whatever this machine has: the kernels use 4-lane
    vectors only, and the artifact records that target (its ISA, not this CPU's)."""
    sse = resolve("cpu:x86-64")
    assert sse.lanes == 4 and set(sse.isa) <= {"sse", "sse2"}
    gen = adntn.ttn((64, 96), rank=3, layout="interleaved", seed=0)
    g = adntn.trace(gen, "layer", batch_size=4)
    widths = lambda lib: set(re.findall(r"<(\d+) x float>", lib.module.mod.inspect_source("ll")))  # noqa: E731
    assert widths(build({"main": g}, sse)) == {"4"}
    host = resolve("cpu")
    if host.lanes > 4:  # on an AVX machine the host build uses wider vectors: the target, not the host, decides
        assert str(host.lanes) in widths(build({"main": g}, host))
    exe = adntn.compile(gen, target=sse, batch_size=4)
    x = np.random.default_rng(0).standard_normal((4, 96)).astype(np.float32)
    np.testing.assert_allclose(exe(x), exe.reference(x), rtol=1e-4, atol=1e-5)
    loaded = adntn.load(exe.save(tmp_path / "sse.adntn"))
    rec = loaded.manifest["target"]
    assert rec["name"] == "cpu:x86-64" and rec["lanes"] == 4 and rec["isa"] == list(sse.isa)
    assert loaded.target == sse
    np.testing.assert_array_equal(loaded(x), exe(x))


def test_loader_checks_the_recorded_target_against_this_machine():
    t = resolve("cpu")
    check_runs_here(t)
    with pytest.raises(ConfigError, match="built for aarch64"):
        check_runs_here(dataclasses.replace(t, arch="aarch64" if platform.machine() != "aarch64" else "x86_64"))
    with pytest.raises(ConfigError, match="microcontroller target"):
        check_runs_here(dataclasses.replace(t, device="microcontroller"))


def test_another_policy_gives_another_correct_program():
    gen = adntn.ttn((128, 256), rank=3, layout="interleaved", seed=0)
    default = default_policy(resolve("cpu"))
    narrow = dataclasses.replace(default, max_rows=2, tiles={})
    a = adntn.compile(gen, batch_size=8, schedule="materialize")
    b = adntn.compile(gen, batch_size=8, schedule="materialize", policy=narrow)
    # the GEMM x(8, 256) . W(256, 128): tuned tiles for its shape change the packed panels
    tuned = dataclasses.replace(default, tiles={(8, 128, 256): GemmTiles(rows=4, jt=default.lanes, vec=default.lanes,
                                                                       kt=2)})
    c = adntn.compile(gen, batch_size=8, schedule="materialize", policy=tuned)
    assert c.manifest["programs"] != a.manifest["programs"]
    assert b.library.module.mod.inspect_source("ll") != a.library.module.mod.inspect_source("ll")
    x = np.random.default_rng(1).standard_normal((8, 256)).astype(np.float32)
    for exe in (a, b, c):
        np.testing.assert_allclose(exe(x), a.reference(x), rtol=1e-4, atol=1e-5)


@x86
def test_a_library_for_a_cpu_this_machine_lacks_is_built_and_saved_but_not_run(tmp_path):
    """Compiling for a CPU with extensions this one lacks must not execute its code here (SIGILL): the
    executable saves, and calling it or loading it says why."""
    from adntn_compiler.targets import host_isa

    t = resolve("cpu:sapphirerapids")
    missing = set(t.isa) - host_isa()
    if not missing:
        pytest.skip("this CPU has every extension of sapphirerapids")
    exe = adntn.compile(adntn.ttn((32, 48), rank=2, seed=0), target=t, batch_size=2)
    with pytest.raises(ConfigError, match="cannot run on this machine.*lacks"):
        exe(np.zeros((2, 48), np.float32))
    path = exe.save(tmp_path / "spr.adntn")
    with pytest.raises(adntn.SerializationError, match="CPU with .* which this CPU lacks"):
        adntn.load(path)


def test_the_fingerprint_is_computed_once_per_process_for_a_target():
    """It reads /proc/cpuinfo (and runs nvcc for CUDA): it was computed twice per compile."""
    import importlib

    import adntn_compiler as adntn

    targets = importlib.import_module("adntn_compiler.targets")  # (adntn.targets is the listing function)
    targets._fingerprint.cache_clear()
    gen = adntn.ttn((16, 24), rank=2)
    for _ in range(3):
        adntn.compile(gen, batch_size=1)  # records="auto": looks this device's records up by fingerprint
    fp = targets.fingerprint("cpu")
    fp["cpu"] = "changed by a caller"  # a copy: the cached value stays
    assert targets.fingerprint("cpu")["cpu"] != "changed by a caller"
    assert targets._fingerprint.cache_info().misses == 1


def test_the_runtime_runs_on_every_physical_core_by_default(monkeypatch):
    # TVM's own default halves the logical CPUs on x86 (assuming SMT): on a 2-vCPU VM without it, one thread
    import os
    import subprocess
    import sys

    from adntn_compiler.targets import runtime_threads

    monkeypatch.delenv("TVM_NUM_THREADS", raising=False)  # (conftest pins it to 1 for the tests)

    code = """
import numpy as np, tvm_ffi
import adntn_compiler as adntn
exe = adntn.compile(adntn.ttn((256, 256), rank=4, seed=0), batch_size=64)
exe(np.ones((64, 256), np.float32))
from adntn_compiler.targets import resolve
print(tvm_ffi.get_global_func("runtime.NumThreads")(), resolve("cpu").threads)
"""
    env = {k: v for k, v in os.environ.items() if k not in ("TVM_NUM_THREADS", "OMP_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-2:] == [str(runtime_threads())] * 2
    cores = {open(f"/sys/devices/system/cpu/cpu{c}/topology/thread_siblings_list").read()
             for c in os.sched_getaffinity(0)}
    assert out.stdout.split()[-1] == str(len(cores))  # (the child had no TVM_NUM_THREADS)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**env, "TVM_NUM_THREADS": "1"})
    assert out.stdout.split()[-2:] == ["1", "1"], out.stderr
