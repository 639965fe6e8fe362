import os

from hypothesis import HealthCheck, settings

if os.environ.get("PYTEST_XDIST_WORKER"):  # one thread per worker: the workers fill the cores, threads would fight
    os.environ.setdefault("TVM_NUM_THREADS", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")

# ci (the default, what `make test` runs): the same examples every run, so CI is never red by chance; the tests
# that build a library per example set their own (smaller) counts. dev: few examples for the edit-test loop.
# fuzz (`pytest --fuzz`): new random examples each run, more of them: the lane for finding, not gating.
settings.register_profile("ci", max_examples=100, deadline=None, derandomize=True, database=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("fuzz", max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def _have_gpu() -> bool:
    import shutil
    import subprocess

    if not shutil.which("nvidia-smi"):
        return False
    return subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0


def _have_qemu() -> bool:
    import shutil

    return all(shutil.which(t) for t in QEMU_TOOLS)


def _have_opencl() -> bool:
    try:
        import pyopencl
        return any(p.get_devices() for p in pyopencl.get_platforms())
    except Exception:  # not installed, no ICD loader, no platform
        return False


def _have_nvcc() -> bool:
    import shutil

    return shutil.which("nvcc") is not None


# bwrap: the sandbox every bundle build and emulator run goes through
QEMU_TOOLS = ("qemu-aarch64", "aarch64-linux-gnu-gcc", "qemu-system-arm", "arm-none-eabi-gcc", "bwrap")


def pytest_collection_modifyitems(config, items):
    """Hardware tests run where their tool is; elsewhere they are skipped with the reason (CI installs qemu)."""
    import pytest

    have = {"gpu": _have_gpu, "qemu": _have_qemu, "opencl": _have_opencl, "nvcc": _have_nvcc}
    reasons = {"gpu": "no CUDA GPU here (nvidia-smi -L fails)", "qemu": f"one of {', '.join(QEMU_TOOLS)} is missing",
               "opencl": "no OpenCL device (pip install pyopencl; apt-get install pocl-opencl-icd)",
               "nvcc": "nvcc (the CUDA toolkit) is not on PATH"}
    cache: dict[str, bool] = {}
    for item in items:
        for mark in have:
            if mark in item.keywords:
                if mark not in cache:
                    cache[mark] = have[mark]()
                if not cache[mark]:
                    item.add_marker(pytest.mark.skip(reason=reasons[mark]))


# Signing keys of the test session live in a private folder (a key is made on the first compile); subprocesses
# inherit it, so an artifact saved in one test loads in a fresh process as it would for a user.
import tempfile  # noqa: E402

os.environ["ADNTN_HOME"] = tempfile.mkdtemp(prefix="adntn-home-")
# Tuning records (which compile() uses by default) of the user's cache must not change the tests' plans.
os.environ["ADNTN_TUNING"] = tempfile.mkdtemp(prefix="adntn-tuning-")


def pytest_addoption(parser):
    parser.addoption("--fuzz", action="store_true", default=False,
                     help="the fuzz lane: random seeds and more examples (the fuzz profile; tests/test_fuzz.py "
                          "draws 300 per target). CI runs everything derandomized")


def pytest_configure(config):
    if config.getoption("--fuzz"):
        settings.load_profile("fuzz")
