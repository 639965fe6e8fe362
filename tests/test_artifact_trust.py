"""Artifacts hold against tampering: signatures by trusted keys, limits read from the zip directory, a lock for
threads, byte-reproducible files. The swapped-library attack never runs the attacker's code."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tvm", reason="apache-tvm is not installed")

import adntn_compiler as adntn  # noqa: E402
from adntn_compiler.cli import main as cli  # noqa: E402
from adntn_compiler.errors import SerializationError  # noqa: E402
from adntn_compiler.runtime import artifact, signing  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    exe = adntn.compile(adntn.ttn((48, 96), rank=3, seed=3), batch_size=2)
    return exe, exe.save(tmp_path_factory.mktemp("trust") / "layer.adntn")


def _members(path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as z:
        return {n: z.read(n) for n in z.namelist()}


def _zip(path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for n, b in members.items():
            z.writestr(n, b)
    return path


def _evil_library(tmp_path) -> tuple[bytes, Path]:
    """A shared library whose constructor writes a marker file when it is loaded."""
    marker = tmp_path / "pwned"
    src = tmp_path / "evil.c"
    src.write_text(f'#include <stdio.h>\n__attribute__((constructor)) static void f(void) {{ FILE *o = '
                   f'fopen("{marker}", "w"); if (o) fclose(o); }}\n')
    so = tmp_path / "evil.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(so), str(src)], check=True)
    return so.read_bytes(), marker


def _swapped(saved, tmp_path, key) -> tuple[Path, Path]:
    """lib.so replaced, every checksum recomputed, the manifest re-signed with `key` (None: the old signature)."""
    lib, marker = _evil_library(tmp_path)
    ms = _members(saved[1])
    m = json.loads(ms[artifact.MANIFEST])
    m["files"][artifact.LIB] = hashlib.sha256(lib).hexdigest()
    m["manifest_sha256"] = artifact._manifest_digest(m)
    ms[artifact.MANIFEST], ms[artifact.LIB] = json.dumps(m).encode(), lib
    if key is not None:
        ms[artifact.SIGNATURE] = json.dumps(signing.sign(ms[artifact.MANIFEST], key)).encode()
    return _zip(tmp_path / "evil.adntn", ms), marker


@pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler to build the attacker's library")
@pytest.mark.parametrize("resign", ["kept", "attacker"])
def test_swapped_library_never_runs(saved, tmp_path, resign):
    key = None
    if resign == "attacker":
        signing.keygen(tmp_path / "attacker")
        key = signing.load_private(tmp_path / "attacker" / "signing.key")
    path, marker = _swapped(saved, tmp_path, key)
    msg = "does not match the manifest" if key is None else "signed by key .* which this machine does not trust"
    with pytest.raises(SerializationError, match=msg):
        adntn.load(path)
    assert cli(["verify", str(path)]) == 2
    if key is None:
        with pytest.raises(SerializationError, match="does not match"):
            artifact.inspect(path)
    else:  # info only reads the manifest: it shows who signed, and runs nothing
        assert cli(["info", str(path)]) == 0
        assert artifact.inspect(path)["signed_by_trusted_key"] is False
    # and in a fresh process, as a user would run it
    out = subprocess.run([sys.executable, "-m", "adntn_compiler.cli", "run", str(path)], capture_output=True,
                         text=True, cwd=REPO)
    assert out.returncode == 2 and "error:" in out.stderr
    assert not marker.exists(), "the attacker's constructor ran"


def test_unsigned_and_foreign_artifacts_need_an_explicit_choice(saved, tmp_path):
    ms = _members(saved[1])
    unsigned = _zip(tmp_path / "u.adntn", {k: v for k, v in ms.items() if k != artifact.SIGNATURE})
    with pytest.raises(SerializationError, match="not signed"):
        adntn.load(unsigned)
    with pytest.warns(UserWarning, match="unsigned"):
        adntn.load(unsigned, allow_unsigned=True)
    # signed by someone else: refused until that key is trusted (per call, or on this machine)
    _, pub = signing.keygen(tmp_path / "colleague")
    other = signing.load_private(tmp_path / "colleague" / "signing.key")
    foreign = _zip(tmp_path / "f.adntn", {**ms, artifact.SIGNATURE: json.dumps(
        signing.sign(ms[artifact.MANIFEST], other)).encode()})
    with pytest.raises(SerializationError, match="does not trust"):
        adntn.load(foreign)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        adntn.load(foreign, trusted_keys=[pub])
    assert cli(["trust", str(pub)]) == 0
    adntn.load(foreign)
    assert cli(["verify", str(foreign)]) == 0


def test_zip_layout_is_checked_before_reading(saved, tmp_path):
    ms = _members(saved[1])
    with zipfile.ZipFile(tmp_path / "d.adntn", "w") as z:
        for n, b in ms.items():
            z.writestr(n, b)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zipfile warns about the duplicate name
            z.writestr(artifact.LIB, b"second")
    with pytest.raises(SerializationError, match="duplicate members"):
        adntn.load(tmp_path / "d.adntn")
    with pytest.raises(SerializationError, match="unexpected members"):
        adntn.load(_zip(tmp_path / "e.adntn", {**ms, "extra.py": b"print(1)"}))
    big = _zip(tmp_path / "b.adntn", {**ms, artifact.MANIFEST: b" " * (artifact.MANIFEST_MAX + 1)})
    with pytest.raises(SerializationError, match="manifest.json declares"):
        adntn.load(big)
    fifo = tmp_path / "fifo.adntn"
    os.mkfifo(fifo)
    with pytest.raises(SerializationError, match="not a regular file"):
        adntn.load(fifo)  # would block forever if it were opened


def test_one_executable_serves_many_threads(saved):
    exe = saved[0]
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((2, 96)).astype(np.float32) for _ in range(8)]
    want = [exe(x) for x in xs]
    wrong = []

    def work(k):
        for i in range(300):
            j = (i + k) % len(xs)
            if not np.array_equal(exe(xs[j]), want[j]):
                wrong.append(j)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []


@pytest.mark.slow
def test_fresh_compiles_give_byte_identical_artifacts(tmp_path):
    code = """
import sys, adntn_compiler as adntn
adntn.compile(adntn.ttn((40, 64), rank=3, seed=5), batch_size=3).save(sys.argv[1])
"""
    paths = [tmp_path / f"a{k}.adntn" for k in range(2)]
    for p in paths:
        subprocess.run([sys.executable, "-c", code, str(p)], check=True, cwd=REPO)
    assert paths[0].read_bytes() == paths[1].read_bytes()
    umask = os.umask(0)
    os.umask(umask)
    assert paths[0].stat().st_mode & 0o777 == 0o666 & ~umask


def _trusted_edit(saved, tmp_path, name, edit_manifest=None, members=None) -> Path:
    """An artifact changed and re-signed by this machine's trusted key (a mistaken builder, not an attacker):
    what stands behind the signature must refuse it."""
    ms = {**_members(saved[1]), **(members or {})}
    m = json.loads(ms[artifact.MANIFEST])
    if edit_manifest:
        edit_manifest(m)
    m["files"] = {n: hashlib.sha256(ms[n]).hexdigest() for n in (artifact.TENSORS, artifact.LIB)}
    m["manifest_sha256"] = artifact._manifest_digest(m)
    ms[artifact.MANIFEST] = json.dumps(m).encode()
    ms[artifact.SIGNATURE] = json.dumps(signing.sign(ms[artifact.MANIFEST])).encode()
    return _zip(tmp_path / name, ms)


def test_manifest_and_programs_are_validated_before_loading(saved, tmp_path):
    cases = [
        (lambda m: m.update(batch_size="two"), "manifest field batch_size"),
        (lambda m: m["target"].update(lanes=-1), "manifest field target/lanes"),
        (lambda m: m["programs"]["call"]["calls"].pop(0), "before anything writes it|is never written"),
        (lambda m: m["programs"]["call"]["calls"][0]["args"][0].__setitem__(0, "nowhere"), "unknown buffer 'nowhere'"),
        (lambda m: m["programs"]["call"]["buffers"].update(huge=1 << 50), "more than the limit"),
        (lambda m: m["programs"]["load"]["calls"][0].update(kernel="not_there"), "no kernel 'not_there'"),
    ]
    for k, (edit, msg) in enumerate(cases):
        with pytest.raises(SerializationError, match=msg):
            adntn.load(_trusted_edit(saved, tmp_path, f"m{k}.adntn", edit))


def test_tensors_must_have_the_shapes_the_programs_read(saved, tmp_path):
    from safetensors.numpy import load as st_load
    from safetensors.numpy import save as st_save

    t = st_load(_members(saved[1])[artifact.TENSORS])
    name = sorted(t)[0]
    t[name] = np.zeros((1,), np.float32)  # would broadcast
    with pytest.raises(SerializationError, match=f"tensor '{name}' is float32 \\(1,\\)"):
        adntn.load(_trusted_edit(saved, tmp_path, "t.adntn", members={artifact.TENSORS: st_save(t)}))


def test_complex_and_string_inputs_are_refused(saved):
    exe = saved[0]
    for bad in (np.zeros((2, 96), np.complex64), np.full((2, 96), "1")):
        with pytest.raises(adntn.ConfigError, match="float or integer array"):
            exe(bad)
    np.testing.assert_array_equal(exe(np.ones((2, 96), np.int64)), exe(np.ones((2, 96), np.float32)))


def test_model_without_adntn_layers_saves_and_loads(tmp_path):
    """A dense model's load program has nothing to compute: its artifact loads (it was refused as malformed)."""
    torch = pytest.importorskip("torch")
    model = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    exe = adntn.compile(model, input_shape=(16,))
    x = np.random.default_rng(0).standard_normal((1, 16)).astype(np.float32)
    np.testing.assert_array_equal(adntn.load(exe.save(tmp_path / "dense.adntn"))(x), exe(x))


@pytest.mark.parametrize("edit, msg", [
    (lambda m: m["programs"]["call"]["outputs"][0].__setitem__(0, ""), "non-empty and distinct|outputs must be"),
    (lambda m: m["programs"]["call"]["outputs"][0].__setitem__(0, "z"), "outputs must be"),
    (lambda m: m["programs"]["call"]["inputs"][0].__setitem__(0, "q"), "inputs must be"),
    (lambda m: m["programs"]["call"]["outputs"][0].__setitem__(2, [1, 1]), "outputs must be"),
    (lambda m: m["programs"]["load"]["inputs"].append(["x", "in0", [2, 96]]), "takes no inputs"),
])
def test_program_names_are_checked_at_load(saved, tmp_path, edit, msg):
    """The fuzzer's finding: a call program whose output is named '' loaded and failed at the first call."""
    with pytest.raises(SerializationError, match=msg):
        adntn.load(_trusted_edit(saved, tmp_path, "n.adntn", edit))
    with pytest.raises(SerializationError, match=msg):
        artifact.inspect(_trusted_edit(saved, tmp_path, "n.adntn", edit))


BOMB = '''
import hashlib, json, sys, zipfile
def hwm_mb():  # this process's peak resident memory (ru_maxrss would carry the parent's across exec)
    return int(next(ln for ln in open("/proc/self/status") if ln.startswith("VmHWM")).split()[1]) // 1024
from adntn_compiler.runtime import artifact
from adntn_compiler.errors import SerializationError
src, dst = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(src) as z:
    ms = {n: z.read(n) for n in z.namelist()}
size, block, h = 512 << 20, bytes(1 << 20), hashlib.sha256()
for _ in range(size >> 20):
    h.update(block)
m = json.loads(ms[artifact.MANIFEST])
m["files"][artifact.TENSORS] = h.hexdigest()  # checksums consistent: only the size gives it away
m["manifest_sha256"] = artifact._manifest_digest(m)
with zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as z:
    z.writestr(artifact.MANIFEST, json.dumps(m))
    with z.open(artifact.TENSORS, "w", force_zip64=True) as f:
        for _ in range(size >> 20):
            f.write(block)
    z.writestr(artifact.LIB, ms[artifact.LIB])
import adntn_compiler as adntn
adntn.load(src)  # everything a load imports, imported: what follows is the bomb's own cost
base = hwm_mb()
try:
    adntn.load(dst, allow_unsigned=True)
    print("LOADED")
except SerializationError as e:
    print("REFUSED", e)
print("BASE_MB", base, "RSS_MB", hwm_mb() - base)
'''


def test_tensor_bomb_is_refused_before_inflating(saved, tmp_path):
    """An unsigned artifact whose tensors inflate to 512 MiB of zeros (the manifest's shapes need ~50 KB): refused
    from the zip directory, whatever the signature says, with under 50 MB more resident memory than a load."""
    out = subprocess.run([sys.executable, "-c", BOMB, str(saved[1]), str(tmp_path / "bomb.adntn")],
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    assert "REFUSED" in out.stdout and "tensors.safetensors declares" in out.stdout, out.stdout + out.stderr[-2000:]
    rss = int(out.stdout.split("RSS_MB")[1])
    assert rss < 50, f"resident memory grew by {rss} MB"
    assert (tmp_path / "bomb.adntn").stat().st_size < 4 << 20
