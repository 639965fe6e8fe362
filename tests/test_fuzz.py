"""Fuzzing what the package reads back (hypothesis, in a child process so that a crash fails the test instead of
killing the run): artifacts, C bundles (zip and manifest), tuning-record files, torch.compile cache entries and
model files. Reading raises only AdntnError with one line (a cache entry: any refusal, which means a rebuild),
never crashes or hangs, and never succeeds with a changed result from an unsigned change.

CI runs it derandomized (the same examples every run); `pytest --fuzz tests/test_fuzz.py` draws new ones (and
more of them): the lane for looking, not for gating."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("tvm", reason="apache-tvm is not installed")

REPO = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent('''
    import io, json, sys, types, warnings, zipfile
    import numpy as np
    from hypothesis import given, settings, HealthCheck, strategies as st
    import adntn_compiler as adntn
    from adntn_compiler.runtime import artifact, signing
    from adntn_compiler.errors import AdntnError

    tmp, n, randomized = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "random"
    fast = settings(max_examples=n, deadline=None, derandomize=not randomized, database=None,
                    suppress_health_check=list(HealthCheck))


    def refused(e):
        assert isinstance(e, AdntnError), f"{type(e).__name__} instead of an AdntnError: {e}"
        assert "\\n" not in str(e).strip(), f"a refusal of more than one line: {e}"


    def flips(data):
        return st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(1, 255)), min_size=1, max_size=8)


    def flipped(data, edits):
        b = bytearray(data)
        for i, v in edits:
            b[i] ^= v
        return bytes(b)


    def paths(d, prefix=()):
        if isinstance(d, dict):
            for k, v in d.items():
                yield from paths(v, prefix + (k,))
        elif isinstance(d, list):
            for k, v in enumerate(d[:4]):
                yield from paths(v, prefix + (k,))
        yield prefix


    def attempt(name, blob, load, same=None):
        """Write `blob` and read it back with `load`: a refusal must be one AdntnError line; what loads must
        satisfy `same` (None: a signed change, which may load with another result)."""
        p = f"{tmp}/{name}"
        open(p, "wb").write(blob)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                got = load(p)
        except Exception as e:
            return refused(e)
        if same is not None:
            assert same(got), f"a modified {name} loaded with another result"


    def set_field(d, where, value):
        for k in where[:-1]:
            d = d[k]
        d[where[-1]] = value


    values = st.one_of(st.none(), st.booleans(), st.integers(-3, 2**40), st.floats(allow_nan=True),
                       st.text(max_size=8), st.lists(st.integers(-2, 70), max_size=4), st.just({}), st.just([[[]]]))

    # ------------------------------------------------------------------ artifacts
    exe = adntn.compile(adntn.ttn((16, 24), rank=2, seed=1), batch_size=2)
    path = exe.save(f"{tmp}/a.adntn")
    data = path.read_bytes()
    x = np.random.default_rng(0).standard_normal((2, 24)).astype(np.float32)
    want = exe(x)
    members = {n: zipfile.ZipFile(path).read(n) for n in artifact.MEMBERS}
    manifest = json.loads(members[artifact.MANIFEST])

    def try_load(blob, signed_change):
        attempt("m.adntn", blob, lambda p: adntn.load(p)(x), None if signed_change else
                lambda got: np.array_equal(got, want))

    @fast
    @given(flips(data))
    def artifact_flips(edits):
        try_load(flipped(data, edits), False)

    @fast
    @given(st.integers(0, len(data)))
    def artifact_truncations(k):
        try_load(data[:k], False)

    @fast
    @given(st.sampled_from([p for p in paths(manifest) if p]), values)
    def artifact_fields_resigned(where, value):
        m = json.loads(members[artifact.MANIFEST])
        set_field(m, where, value)
        m["manifest_sha256"] = artifact._manifest_digest(m)
        mb = json.dumps(m).encode()
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            for k in artifact.MEMBERS:
                z.writestr(k, mb if k == artifact.MANIFEST else
                           json.dumps(signing.sign(mb)).encode() if k == artifact.SIGNATURE else members[k])
        try_load(buf.getvalue(), True)

    # ------------------------------------------------------------------ C bundles (read back, never built here)
    from adntn_compiler.runtime.bundle import Bundle
    bundle = adntn.compile(adntn.ttn((16, 24), rank=2, seed=1), target="cortex-m4")
    bzip = bundle.save(f"{tmp}/b.zip").read_bytes()
    bfiles = bundle._all_files()
    bmanifest = json.loads(bfiles["manifest.json"])

    def try_bundle(blob, signed_change):
        attempt("fz.zip", blob, Bundle.load, None if signed_change else lambda got: got.files == bundle.files)

    @fast
    @given(flips(bzip))
    def bundle_flips(edits):
        try_bundle(flipped(bzip, edits), False)

    @fast
    @given(st.sampled_from([p for p in paths(bmanifest) if p]), values)
    def bundle_fields_resigned(where, value):
        m = json.loads(bfiles["manifest.json"])
        set_field(m, where, value)
        mb = json.dumps(m).encode()
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            for k, v in bfiles.items():
                z.writestr(k, mb if k == "manifest.json" else json.dumps(signing.sign(mb)).encode()
                           if k == "signature.json" else v)
        try_bundle(buf.getvalue(), True)

    # ------------------------------------------------------------------ tuning records
    from adntn_compiler.tuning import Records, workload_key
    gen = adntn.ttn((64, 128), rank=3, seed=2)
    rec = dict(generator=repr(gen), rows=4, choice=dict(schedule="factored", objective="call", tree=0),
               tiles=[[4, 64, 128, 4, 16, 16, 1, -1]], default_s=1.0, tuned_s=0.5)
    records = Records({"cpu": "fuzz"}, {workload_key(gen, 4): rec}, {"flop_rate": 5e10, "byte_rate": 1e10}).to_dict()
    rtext = json.dumps(records).encode()

    def try_records(blob):
        attempt("r.json", blob, Records.load)

    @fast
    @given(flips(rtext))
    def records_flips(edits):
        try_records(flipped(rtext, edits))

    @fast
    @given(st.sampled_from([p for p in paths(records) if p]), values)
    def records_fields(where, value):
        d = json.loads(rtext)
        set_field(d, where, value)
        try_records(json.dumps(d).encode())

    # ------------------------------------------------------------------ torch.compile cache entries
    import torch
    from adntn_compiler import dynamo as torch_backend
    from adntn_compiler.targets import resolve
    m = torch.nn.Sequential(torch.nn.Linear(12, 6), torch.nn.Tanh()).eval()
    with torch.no_grad():
        torch.compile(m, backend="adntn", options={"fallback": "eager"})(torch.randn(3, 12))
    entry, = torch_backend.cache_dir().glob("*.zip")
    key, edata = entry.stem, entry.read_bytes()
    with zipfile.ZipFile(entry) as z:
        eprogs = json.loads(z.read("programs.json"))

    @fast
    @given(flips(edata))
    def cache_entry_flips(edits):
        p = entry.with_name("fz.zip")
        p.write_bytes(flipped(edata, edits))
        try:
            lib = torch_backend._read_entry(p, key, resolve("cpu"), types.SimpleNamespace(tensors=None))
        except Exception:
            return  # refused: _cached_build logs one line and rebuilds
        assert lib.program_dicts() == eprogs, "a modified cache entry loaded with other programs"

    # ------------------------------------------------------------------ model files
    from torch import nn
    model = nn.Sequential(adntn.ADNTNLinear(adntn.ttn((8, 12), rank=2)), nn.ReLU(), nn.Linear(8, 3))
    mpath = adntn.save_model(model, f"{tmp}/model.safetensors")
    mdata = mpath.read_bytes()
    xt = torch.randn(2, 12)
    with torch.no_grad():
        mwant = model.eval()(xt)

    @fast
    @given(flips(mdata))
    def model_flips(edits):
        with torch.no_grad():
            attempt("mm.safetensors", flipped(mdata, edits), adntn.load_model, lambda got: torch.equal(got(xt), mwant))

    for f in (artifact_flips, artifact_truncations, artifact_fields_resigned, bundle_flips, bundle_fields_resigned,
              records_flips, records_fields, cache_entry_flips, model_flips):
        f()
        print("ok", f.__name__, flush=True)
    print("fuzz ok")
''')


@pytest.mark.slow
def test_fuzzed_containers_are_refused_cleanly(tmp_path, request):
    randomized = request.config.getoption("--fuzz")
    n = "300" if randomized else "40"
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), n, "random" if randomized else "fixed"],
                         capture_output=True, text=True, cwd=REPO, timeout=3000,
                         env={**__import__("os").environ, "ADNTN_HOME": str(tmp_path / "home")})
    assert out.returncode == 0 and "fuzz ok" in out.stdout, out.stdout[-2000:] + out.stderr[-4000:]
