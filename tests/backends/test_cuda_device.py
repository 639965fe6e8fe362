"""CUDA artifacts run on a real GPU (marked `gpu`, skipped without one) and equal the reference interpreter.

The artifacts come from $ADNTN_GPU_PAYLOAD when it is set (`benchmarks/layer_gpu.py --build`, run on a machine with
TVM and nvcc: the lent GPU machines cannot install TVM, and loading a CUDA artifact needs only tvm_ffi), else they
are compiled here for the local GPU's arch."""
from __future__ import annotations

import json
import os
import runpy
from pathlib import Path

import numpy as np
import pytest

import adntn_compiler as adntn

pytestmark = pytest.mark.gpu
BENCH = Path(__file__).parent.parent.parent / "benchmarks" / "layer_gpu.py"


@pytest.fixture(scope="module")
def payload(tmp_path_factory):
    folder = os.environ.get("ADNTN_GPU_PAYLOAD")
    if folder:
        p = json.loads((Path(folder) / "payload.json").read_text())
        return Path(folder), p["checks"], [p["signer"]]
    pytest.importorskip("tvm", reason="no payload folder ($ADNTN_GPU_PAYLOAD) and no TVM to compile one")
    folder = tmp_path_factory.mktemp("gpu")
    return folder, runpy.run_path(str(BENCH))["build_checks"](folder, "cuda"), []


def test_cuda_artifacts_on_the_gpu_equal_reference(payload):
    folder, checks, keys = payload
    assert checks
    for c in checks:
        exe = adntn.load(folder / c["file"], trusted_keys=keys)
        x = np.load(folder / c["x"])
        y, ref = exe(x), exe.reference(x)
        np.testing.assert_allclose(y, ref, atol=1e-4 * max(1.0, float(np.abs(ref).max())), rtol=1e-4,
                                   err_msg=c["name"])
        np.testing.assert_array_equal(exe(x), y)  # buffers stay on the device between calls: same result again


def test_cuda_artifact_for_another_arch_is_refused(payload):
    from adntn_compiler.runtime.host import check_runs_here
    from adntn_compiler.targets import Target, local_cuda_archs

    here = local_cuda_archs()[0]
    other = "sm_80" if here != "sm_80" else "sm_90"
    t = Target(f"cuda:{other}", {"kind": "cuda", "arch": other}, os.uname().machine, 1, 1, device="gpu",
               isa=(other,), schedules="gpu")
    with pytest.raises(adntn.ConfigError, match=f"built for {other}, this machine's GPU is {here}"):
        check_runs_here(t)
