"""Fuzzing real artifacts and model files (hypothesis, in a child process so that a crash fails the test instead
of killing the run): loading raises only AdntnError, never crashes or hangs, and never succeeds with a changed
result from an unsigned change."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("tvm", reason="apache-tvm is not installed")

REPO = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent('''
    import json, sys, warnings, zipfile, io
    import numpy as np
    from hypothesis import given, settings, HealthCheck, strategies as st
    import adntn_compiler as adntn
    from adntn_compiler import artifact, signing
    from adntn_compiler.errors import AdntnError

    tmp = sys.argv[1]
    exe = adntn.compile(adntn.ttn((16, 24), rank=2, seed=1), batch_size=2)
    path = exe.save(f"{tmp}/a.adntn")
    data = path.read_bytes()
    x = np.random.default_rng(0).standard_normal((2, 24)).astype(np.float32)
    want = exe(x)
    members = {n: zipfile.ZipFile(path).read(n) for n in artifact.MEMBERS}
    manifest = json.loads(members[artifact.MANIFEST])
    fast = settings(max_examples=int(sys.argv[2]), deadline=None, suppress_health_check=list(HealthCheck))

    def try_load(blob, signed_change):
        p = f"{tmp}/m.adntn"
        open(p, "wb").write(blob)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                got = adntn.load(p)(x)
        except AdntnError:
            return
        if not signed_change:  # an unsigned change that loads must not change the result
            assert np.array_equal(got, want), "a modified artifact loaded with another result"

    @fast
    @given(st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(1, 255)), min_size=1, max_size=8))
    def flips(edits):
        b = bytearray(data)
        for i, v in edits:
            b[i] ^= v
        try_load(bytes(b), False)

    @fast
    @given(st.integers(0, len(data)))
    def truncations(n):
        try_load(data[:n], False)

    def paths(d, prefix=()):
        if isinstance(d, dict):
            for k, v in d.items():
                yield from paths(v, prefix + (k,))
        elif isinstance(d, list):
            for k, v in enumerate(d[:4]):
                yield from paths(v, prefix + (k,))
        yield prefix

    fields = [p for p in paths(manifest) if p]
    values = st.one_of(st.none(), st.booleans(), st.integers(-3, 2**40), st.floats(allow_nan=True),
                       st.text(max_size=8), st.lists(st.integers(-2, 70), max_size=4), st.just({}))

    @fast
    @given(st.sampled_from(fields), values)
    def fields_resigned(where, value):
        m = json.loads(members[artifact.MANIFEST])
        d = m
        for k in where[:-1]:
            d = d[k]
        d[where[-1]] = value
        m["manifest_sha256"] = artifact._manifest_digest(m)
        mb = json.dumps(m).encode()
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            for n in artifact.MEMBERS:
                z.writestr(n, mb if n == artifact.MANIFEST else
                           json.dumps(signing.sign(mb)).encode() if n == artifact.SIGNATURE else members[n])
        try_load(buf.getvalue(), True)

    # model files
    import torch
    from torch import nn
    model = nn.Sequential(adntn.ADNTNLinear(adntn.ttn((8, 12), rank=2)), nn.ReLU(), nn.Linear(8, 3))
    mpath = adntn.save_model(model, f"{tmp}/model.safetensors")
    mdata = mpath.read_bytes()
    xt = torch.randn(2, 12)
    with torch.no_grad():
        mwant = model.eval()(xt)

    @fast
    @given(st.lists(st.tuples(st.integers(0, len(mdata) - 1), st.integers(1, 255)), min_size=1, max_size=4))
    def model_flips(edits):
        b = bytearray(mdata)
        for i, v in edits:
            b[i] ^= v
        p = f"{tmp}/mm.safetensors"
        open(p, "wb").write(bytes(b))
        try:
            m = adntn.load_model(p)
        except AdntnError:
            return
        with torch.no_grad():
            assert torch.equal(m(xt), mwant), "a modified model file loaded with another result"

    for f in (flips, truncations, fields_resigned, model_flips):
        f()
    print("fuzz ok")
''')


def test_fuzzed_artifacts_and_model_files_are_refused_cleanly(tmp_path):
    n = "60"
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), n], capture_output=True, text=True, cwd=REPO,
                         timeout=900)
    assert out.returncode == 0 and "fuzz ok" in out.stdout, out.stderr[-4000:]
