"""Artifacts: save/load round trip in a fresh process without torch, and refusal of bad ones."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tvm", reason="apache-tvm is not installed")

import adntn_compiler as adntn  # noqa: E402
from adntn_compiler.errors import SerializationError  # noqa: E402
from adntn_compiler.runtime import artifact, signing  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def blocking(module: str) -> str:
    """Python source that makes `import <module>` (and its submodules) fail in the process that runs it."""
    return f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == {module!r} or name.startswith({module + "."!r}):
            raise ImportError("No module named {module!r} (blocked in this test)")
sys.meta_path.insert(0, Block())
"""


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    gen = adntn.ttn((48, 96), rank=3, layout="interleaved", activation="tanh", seed=3)
    exe = adntn.compile(gen, batch_size=2)
    path = exe.save(tmp_path_factory.mktemp("art") / "layer.adntn")
    x = np.random.default_rng(0).standard_normal((2, 96)).astype(np.float32)
    return exe, path, x


def test_round_trip_in_fresh_process_without_torch(saved, tmp_path):
    exe, path, x = saved
    np.save(tmp_path / "x.npy", x)
    code = blocking("torch") + f"""
import numpy as np
import adntn_compiler as adntn
exe = adntn.load({str(path)!r})
np.save({str(tmp_path / 'y.npy')!r}, exe(np.load({str(tmp_path / 'x.npy')!r})))
print("torch" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"
    y = np.load(tmp_path / "y.npy")
    np.testing.assert_array_equal(y, exe(x))  # the same library, the same bits
    ref = exe.reference(x)
    np.testing.assert_allclose(y, ref, atol=1e-5 * np.abs(ref).max())


def test_compiling_needs_a_c_compiler_and_loading_does_not(saved, tmp_path, monkeypatch):
    _, path, x = saved
    empty = tmp_path / "bin"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("CC", "CXX")}
    code = f"""
import numpy as np
import adntn_compiler as adntn
print(adntn.load({str(path)!r})(np.ones((2, 96), np.float32)).shape)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         env={**env, "PATH": str(empty)})
    assert out.returncode == 0 and out.stdout.split()[-2:] == ["(2,", "48)"], out.stderr
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.delenv("CXX", raising=False)
    gen = adntn.ttn((40, 24), rank=2, seed=11)
    with pytest.raises(adntn.errors.ConfigError, match="needs a C compiler to link"):
        adntn.compile(gen, batch_size=1)(np.ones((1, 24), np.float32))


def _rewrite(src: Path, dst: Path, edit, resign: bool = True) -> Path:
    """Copy an artifact, letting `edit(name, bytes) -> bytes` change members. resign: sign the (edited) manifest
    with this machine's trusted key, as a trusted but mistaken builder would: the checks behind the signature
    are then what refuses it."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        members = {n: edit(n, zin.read(n)) for n in zin.namelist()}
        if resign and artifact.SIGNATURE in members:
            members[artifact.SIGNATURE] = json.dumps(signing.sign(members[artifact.MANIFEST])).encode()
        for n, data in members.items():
            zout.writestr(n, data)
    return dst


def _resign(m: dict) -> bytes:
    m["manifest_sha256"] = artifact._manifest_digest(m)
    return json.dumps(m).encode()


def test_truncated_zip_is_refused(saved, tmp_path):
    bad = tmp_path / "t.adntn"
    data = saved[1].read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(SerializationError, match="corrupt or truncated"):
        adntn.load(bad)


def test_not_a_zip_is_refused(tmp_path):
    bad = tmp_path / "n.adntn"
    bad.write_text("hello")
    with pytest.raises(SerializationError, match="not a valid .adntn artifact"):
        adntn.load(bad)


@pytest.mark.parametrize("member", [artifact.TENSORS, artifact.LIB])
def test_checksum_mismatch_is_refused(saved, tmp_path, member):
    def flip(n, b):
        return b[:-1] + bytes([b[-1] ^ 1]) if n == member else b

    with pytest.raises(SerializationError, match=f"checksum mismatch for {member}"):
        adntn.load(_rewrite(saved[1], tmp_path / "c.adntn", flip))


def test_tampered_manifest_is_refused(saved, tmp_path):
    def edit(n, b):
        if n != artifact.MANIFEST:
            return b
        m = json.loads(b)
        m["batch_size"] = 7  # not re-signed
        return json.dumps(m).encode()

    with pytest.raises(SerializationError, match="manifest.json checksum mismatch"):
        adntn.load(_rewrite(saved[1], tmp_path / "m.adntn", edit))


def test_unknown_format_version_is_refused(saved, tmp_path):
    def edit(n, b):
        return _resign(dict(json.loads(b), version=99)) if n == artifact.MANIFEST else b

    with pytest.raises(SerializationError, match="format version 99 is not supported"):
        adntn.load(_rewrite(saved[1], tmp_path / "v.adntn", edit))


@pytest.mark.parametrize("host,msg", [({"arch": "aarch64", "isa": []}, "built for aarch64"),
                                      ({"isa": ["avx512_future_ext"]}, "CPU with avx512_future_ext")])
def test_library_for_another_target_is_refused(saved, tmp_path, host, msg):
    def edit(n, b):
        if n != artifact.MANIFEST:
            return b
        m = json.loads(b)
        m["target"] = {**m["target"], **host}  # the recorded Target: arch, isa
        m["target"]["isa"] = json.loads(b)["target"]["isa"] + host["isa"]
        return _resign(m)

    with pytest.raises(SerializationError, match=msg):
        adntn.load(_rewrite(saved[1], tmp_path / "h.adntn", edit))


def test_missing_member_is_refused(saved, tmp_path):
    dst = tmp_path / "x.adntn"
    with zipfile.ZipFile(saved[1]) as zin, zipfile.ZipFile(dst, "w") as zout:
        for n in zin.namelist():
            if n != artifact.LIB:
                zout.writestr(n, zin.read(n))
    with pytest.raises(SerializationError, match="missing lib.so"):
        adntn.load(dst)


def test_save_leaves_nothing_half_written(saved, tmp_path, monkeypatch):
    exe = saved[0]
    target = tmp_path / "out.adntn"

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(zipfile.ZipFile, "writestr", boom)
    with pytest.raises(OSError):
        exe.save(target)
    assert list(tmp_path.iterdir()) == []


def test_no_pickle_in_artifact(saved):
    with zipfile.ZipFile(saved[1]) as z:
        assert sorted(z.namelist()) == sorted(artifact.MEMBERS)
        for n in z.namelist():
            assert b"\x80\x04\x95" not in z.read(n)[:64]  # pickle protocol 4 header


def test_missing_tvm_is_a_clear_error(saved):
    code = blocking("tvm") + f"""
import adntn_compiler as adntn
for f in (lambda: adntn.load({str(saved[1])!r}), lambda: adntn.compile(adntn.ttn((8, 8), rank=2))):
    try:
        f()
    except adntn.ConfigError as e:
        print(e)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 2 and all("pip install apache-tvm==0.27.0.post1" in line for line in lines)


def test_malformed_program_is_refused(saved, tmp_path):
    def edit(n, b):
        if n != artifact.MANIFEST:
            return b
        m = json.loads(b)
        m["programs"]["call"]["inputs"] = [e[1:] for e in m["programs"]["call"]["inputs"]]  # drop the names
        return _resign(m)

    with pytest.raises(SerializationError, match="'call' program is malformed"):
        adntn.load(_rewrite(saved[1], tmp_path / "p.adntn", edit))
