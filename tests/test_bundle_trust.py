"""C bundles hold against tampering: signed like artifacts, every file's size and sha256 checked before it is read
whole, the header and Makefile bound to the manifest, and the build and the emulators in a sandbox (bwrap), so a
bundle's code can touch nothing of the host but its scratch folder."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tvm", reason="apache-tvm is not installed")

import adntn_compiler as adntn  # noqa: E402
from adntn_compiler.errors import SerializationError  # noqa: E402
from adntn_compiler.runtime import signing  # noqa: E402
from adntn_compiler.runtime.bundle import Bundle  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
HWM = '''
def hwm_mb():  # this process's peak resident memory (ru_maxrss would carry the parent's across exec)
    return int(next(ln for ln in open("/proc/self/status") if ln.startswith("VmHWM")).split()[1]) // 1024
'''


@pytest.fixture(scope="module")
def m4():
    return adntn.compile(adntn.ttn((32, 48), rank=2, seed=1), target="cortex-m4")


@pytest.fixture(scope="module")
def a64():
    return adntn.compile(adntn.ttn((32, 48), rank=2, seed=1), target="arm64")


def _edit(folder: Path, name: str, text: bytes, key=None, sign: bool = True) -> None:
    """Replace `name`, fix its sha256 and size in the manifest (what anyone editing a bundle does), and re-sign
    with `key` (None: leave the old signature, which no longer matches)."""
    (folder / name).write_bytes(text)
    m = json.loads((folder / "manifest.json").read_text())
    m["files"][name] = hashlib.sha256(text).hexdigest()
    m["sizes"][name] = len(text)
    mb = json.dumps(m, indent=1).encode()
    (folder / "manifest.json").write_bytes(mb)
    if sign and key is not None:
        (folder / "signature.json").write_text(json.dumps(signing.sign(mb, key)))


def _evil_makefile(folder: Path, marker: Path) -> bytes:
    mk = (folder / "Makefile").read_bytes()
    return mk.replace(b"adntn_run: harness/harness.c libadntn_model.a\n",
                      b"adntn_run: harness/harness.c libadntn_model.a\n\ttouch " + str(marker).encode() + b"\n")


def test_a_bundle_edited_and_rechecksummed_never_runs_its_makefile(m4, tmp_path):
    """The audit's reproduction: a `touch` in the Makefile, its sha256 recomputed. The old signature no longer
    matches; an untrusted key's is refused; even a trusted re-signing is refused (the Makefile is not adntn's).
    Nothing is built, so the marker never appears: not by load, a call, size(), instructions() or `adntn info`."""
    marker = tmp_path / "pwned"
    other = signing.load_private(signing.keygen(tmp_path / "mallory")[0])
    cases = [(None, "signature does not match"), (other, "does not trust"),
             (signing.default_key(), "Makefile is not the one adntn writes")]
    for k, (key, msg) in enumerate(cases):
        d = m4.save(tmp_path / f"b{k}")
        _edit(d, "Makefile", _evil_makefile(d, marker), key)
        with pytest.raises(SerializationError, match=msg):
            Bundle.load(d)
        if key is other:  # allowing an untrusted signer does not allow another Makefile
            with pytest.warns(UserWarning, match="untrusted key"), \
                    pytest.raises(SerializationError, match="Makefile is not the one adntn writes"):
                Bundle.load(d, allow_unsigned=True)
        for cmd in (["info", str(d)], ["info", str(d), "--build"], ["run", str(d)]):
            r = subprocess.run([sys.executable, "-m", "adntn_compiler.cli", *cmd], capture_output=True, text=True,
                               cwd=REPO, timeout=300)
            assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert not marker.exists()


def test_bundles_are_signed_and_unsigned_ones_need_an_explicit_choice(m4, tmp_path):
    d = m4.save(tmp_path / "b")
    assert Bundle.load(d).manifest == m4.manifest  # this user's signature: trusted
    (d / "signature.json").unlink()
    with pytest.raises(SerializationError, match="not signed"):
        Bundle.load(d)
    with pytest.warns(UserWarning, match="unsigned bundle"):
        Bundle.load(d, allow_unsigned=True)


def _shape(m: dict, which: str, shape: list) -> None:
    """An edited input or output shape (the manifest's `inputs`/`outputs` entry and its `*_shape` copy)."""
    m[which + "s"][0]["shape"] = m[which + "_shape"] = shape


@pytest.mark.parametrize("edit, msg", [
    (lambda m: _shape(m, "input", [1, 4800]), "does not match the header's ADNTN_MODEL_INPUT_SIZE"),
    (lambda m: _shape(m, "output", [1, 16]), "does not match the header.s ADNTN_MODEL_OUTPUT_SIZE"),
    (lambda m: _shape(m, "output", [2, 16]), "does not start with batch_size 1"),
    (lambda m: m.update(input_shape=[1, 4800]), "input_shape and output_shape are not the first input's"),
    (lambda m: m["target"].update(name="cortex-m7"), "Makefile is not the one adntn writes"),
    (lambda m: m.update(files={}, sizes={}), "should be non-empty|lists no"),
    (lambda m: _shape(m, "input", [1, 300000000]), "more than a bundle takes"),
    (lambda m: m.update(calls="many"), "manifest field calls"),
    (lambda m: m["memory"].update(ram_bytes="x"), "manifest field memory/ram_bytes"),
    (lambda m: m.update(layers=[1]), "manifest field layers/0"),
    (lambda m: m.update(version=1), "version 1 is not supported"),
])
def test_manifest_fields_are_bound_to_the_built_code(m4, tmp_path, edit, msg):
    """Even signed by a trusted key (a mistaken builder), a manifest that disagrees with its code is refused."""
    d = m4.save(tmp_path / "b")
    m = json.loads((d / "manifest.json").read_text())
    edit(m)
    mb = json.dumps(m).encode()
    (d / "manifest.json").write_bytes(mb)
    (d / "signature.json").write_text(json.dumps(signing.sign(mb)))
    with pytest.raises(SerializationError, match=msg):
        Bundle.load(d)


BOMB = r'''
import sys, zipfile
def hwm_mb():  # this process's peak resident memory (ru_maxrss would carry the parent's across exec)
    return int(next(ln for ln in open("/proc/self/status") if ln.startswith("VmHWM")).split()[1]) // 1024
from adntn_compiler.runtime.bundle import Bundle
from adntn_compiler.errors import SerializationError
src, dst = sys.argv[1], sys.argv[2]
if sys.argv[3] == "make":  # (in its own process: zipfile's writer holds a lot of memory)
    with zipfile.ZipFile(src) as z:
        ms = {n: z.read(n) for n in z.namelist()}
    block = bytes(1 << 20)
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as z:
        for n, b in ms.items():
            if n in ("adntn_weights.c", "kernels.o", "adntn_model.c"):  # 3 x 256 MiB of zeros: ~0.8 MB zipped
                with z.open(n, "w", force_zip64=True) as f:
                    for _ in range(256):
                        f.write(block)
            else:
                z.writestr(n, b)
if sys.argv[3] == "make":
    sys.exit(0)
try:
    Bundle.load(dst)
    print("LOADED")
except SerializationError as e:
    print("REFUSED", e)
print("RSS_MB", hwm_mb())
'''


def test_a_bundle_bomb_is_refused_from_the_zip_directory(m4, tmp_path):
    src = m4.save(tmp_path / "b.zip")
    for mode in ("make", "load"):
        r = subprocess.run([sys.executable, "-c", BOMB, str(src), str(tmp_path / "bomb.zip"), mode],
                           capture_output=True, text=True, cwd=REPO, timeout=300)
    assert (tmp_path / "bomb.zip").stat().st_size < 4 << 20
    assert "REFUSED" in r.stdout and "more than a bundle may" in r.stdout, r.stdout + r.stderr[-2000:]
    assert int(r.stdout.split("RSS_MB")[1]) < 200


def test_a_huge_input_shape_is_refused_before_allocating(m4, tmp_path):
    """`adntn run BUNDLE` without --input used to allocate standard_normal(input_shape) from the manifest."""
    d = m4.save(tmp_path / "b")
    m = json.loads((d / "manifest.json").read_text())
    _shape(m, "input", [1, 300000000])
    mb = json.dumps(m).encode()
    (d / "manifest.json").write_bytes(mb)
    (d / "signature.json").write_text(json.dumps(signing.sign(mb)))
    code = (HWM + "import sys; from adntn_compiler.cli import main; rc = main(['run', sys.argv[1]]); "
            "print('RC', rc, 'RSS_MB', hwm_mb())")
    r = subprocess.run([sys.executable, "-c", code, str(d)], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert "RC 2" in r.stdout and "more than a bundle takes" in r.stderr, r.stdout + r.stderr[-2000:]
    assert int(r.stdout.split("RSS_MB")[1]) < 200
    assert not (d / "input.bin").exists()


def _guest_attack(bundle: Bundle, host: Path) -> bytes:
    """adntn_model.c calling a host shell (semihosting SYS_SYSTEM on Cortex-M; a fork+exec under qemu-aarch64)
    and opening host paths by absolute name, before the model runs."""
    src = bundle.files["adntn_model.c"]
    attack = (f'#include <stdio.h>\n#include <stdlib.h>\nstatic void adntn_attack(void) {{\n'
              f'  system("touch {host}/by_system");\n'
              f'  FILE *f = fopen("{host}/by_open", "w"); if (f) {{ fputs("x", f); fclose(f); }}\n'
              f'  f = fopen("{host}/existing", "w"); if (f) {{ fputs("overwritten", f); fclose(f); }}\n}}\n').encode()
    src = src.replace(b"int adntn_model_run(const float *x, float *y) {",
                      b"int adntn_model_run(const float *x, float *y) {\n  adntn_attack();", 1)
    return attack + src


@pytest.mark.qemu
@pytest.mark.parametrize("which", ["m4", "a64"])
def test_guest_code_cannot_touch_the_host(which, request, tmp_path):
    """A signed bundle whose code attacks (the signer trusted, the code malicious): under the sandbox its shell and
    absolute-path opens reach only the box; the host folder stays as it was."""
    bundle = request.getfixturevalue(which)
    host = tmp_path / "host"
    host.mkdir()
    (host / "existing").write_text("original")
    d = bundle.save(tmp_path / "b")
    _edit(d, "adntn_model.c", _guest_attack(bundle, host), signing.default_key())
    evil = Bundle.load(d)
    y = evil(np.zeros(evil.input_shape, np.float32))  # the attack ran, then the model
    np.testing.assert_allclose(y, bundle(np.zeros(bundle.input_shape, np.float32)), rtol=1e-6, atol=1e-6)
    assert sorted(p.name for p in host.iterdir()) == ["existing"]
    assert (host / "existing").read_text() == "original"


def test_info_never_builds(m4, tmp_path, monkeypatch):
    d = m4.save(tmp_path / "b")
    from adntn_compiler.runtime import sandbox

    def no(*a, **k):
        raise AssertionError("info ran a build or an emulator")

    monkeypatch.setattr(sandbox, "run", no)
    from adntn_compiler.cli import main

    assert main(["info", str(d), "--json"]) == 0
    assert not any(p.name in ("libadntn_model.a", "adntn_run") for p in d.iterdir())


def test_zip_bundles_with_duplicate_or_special_members_are_refused(m4, tmp_path):
    src = m4.save(tmp_path / "b.zip")
    with zipfile.ZipFile(src) as z:
        ms = {n: z.read(n) for n in z.namelist()}
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with zipfile.ZipFile(tmp_path / "dup.zip", "w") as z:
            for n, b in ms.items():
                z.writestr(n, b)
            z.writestr("Makefile", b"all:\n\ttouch /tmp/x\n")
    with pytest.raises(SerializationError, match="duplicate members"):
        Bundle.load(tmp_path / "dup.zip")
    fifo = tmp_path / "fifo.zip"
    import os

    os.mkfifo(fifo)
    with pytest.raises(SerializationError, match="not a regular file"):
        Bundle.load(fifo)


@pytest.mark.qemu
def test_the_callers_timeout_bounds_the_build_and_the_emulator(monkeypatch):
    """Bundle(x, timeout=5) ignored the timeout while `make` ran. A build that would take 60 s is stopped."""
    import time

    from adntn_compiler.errors import ConfigError
    from adntn_compiler.runtime import sandbox

    b = adntn.compile(adntn.ttn((16, 24), rank=2, seed=3), target="arm64")
    real = sandbox.command
    monkeypatch.setattr(sandbox, "command", lambda cmd, root: real(["sleep", "60"], root))
    t = time.perf_counter()
    with pytest.raises(ConfigError, match="building the arm64 bundle did not finish within 2 s"):
        b(np.zeros(b.input_shape, np.float32), timeout=2)
    assert time.perf_counter() - t < 10
