"""Autotuning: candidates are real builds checked against the reference, records are keyed by the device, and
compile() uses only this device's."""
import json
import subprocess
import sys
import warnings

import numpy as np
import pytest

import adntn_compiler as adntn
from adntn_compiler.errors import SerializationError
from adntn_compiler.targets import resolve
from adntn_compiler.tuning.measure import (
    TOLERANCE,
    Candidate,
    Records,
    _Bench,
    _plan_candidates,
    calibrate,
    tune,
    tune_layer,
    workload_key,
)


@pytest.fixture(autouse=True)
def own_records(tmp_path, monkeypatch):
    """Each test tunes into its own records folder (compile() reads it by default)."""
    monkeypatch.setenv("ADNTN_TUNING", str(tmp_path / "tuning"))


def _reference(gen, x):
    return x.astype(np.float64) @ adntn.materialize(gen).reshape(gen.O, gen.I).T


def _close(y, ref):
    return np.linalg.norm(y - ref) / np.linalg.norm(ref) <= TOLERANCE


@pytest.mark.parametrize("gen,rows", [(adntn.ttn((64, 128), rank=3, seed=1), 4),
                                      (adntn.mera((32, 64), rank=2, seed=2), 3)])
@pytest.mark.slow
def test_every_candidate_equals_the_reference(gen, rows):
    """Each plan candidate (schedule x objective x tree) and the first tile candidates of its GEMMs is a real
    build whose output matches the float64 reference."""
    from adntn_compiler.backends.tvm.lower import gemm_shapes
    from adntn_compiler.frontends.capture import model_graphs

    target = resolve("cpu")
    bench = _Bench(gen, rows, target)
    plans = _plan_candidates(gen, rows, None, adntn.plan(gen, rows).rates, target)
    assert len({p.schedule for p in plans}) >= 2
    for p in plans:
        assert bench.measure(Candidate(p, {}), min_seconds=0).error <= TOLERANCE, p.choice
    mg = model_graphs(gen, rows, target=target, planner=lambda g, r: (plans[0], {}))
    for shape in gemm_shapes(mg.call, target, bench.base):
        for t in bench.base.tile_candidates(*shape)[:4]:
            c = bench.measure(Candidate(plans[0], {shape: t}), min_seconds=0)
            assert c.error <= TOLERANCE and c.cost < np.inf, (shape, t)


def test_a_wrong_candidate_never_wins(monkeypatch):
    """A candidate whose output is wrong gets no time, however fast it is."""
    gen, rows = adntn.ttn((64, 128), rank=3, seed=4), 4
    build = _Bench.build

    def broken(self, c):
        lib, tensors = build(self, c)
        return (lib, tensors) if c.plan.choice["tree"] == 0 and not c.tiles else \
            (lib, {k: v * np.float32(1.01) for k, v in tensors.items()})

    monkeypatch.setattr(_Bench, "build", broken)
    rec = tune_layer(gen, rows, resolve("cpu"), budget_s=10.0)  # (room to reach the broken candidates under load)
    assert rec["choice"]["tree"] == 0 and rec["tiles"] == []
    assert any("wrong" in label for label, _, _ in rec["trials"])
    assert all(s is None for label, s, _ in rec["trials"] if "wrong" in label)


def test_tune_with_a_tiny_budget_returns_records_that_compile_uses(tmp_path):
    gen, rows = adntn.ttn((128, 256), rank=3, seed=5), 8
    recs = tune(gen, batch_size=rows, budget_s=6.0, progress=False)  # (room for a second candidate under load)
    key = workload_key(gen, rows)
    rec = recs.layers[key]
    assert rec["rows"] == rows and rec["candidates"] >= 2 and rec["tuned_s"] <= rec["default_s"] * 1.0001
    assert Records.for_device("cpu").layers[key] == rec  # saved in the cache
    exe = adntn.compile(gen, batch_size=rows)  # records="auto": this device's
    assert exe.manifest["tuning"]["device"] == recs.device_id
    assert exe.manifest["layers"][0]["tuned"]["gain"] == pytest.approx(rec["default_s"] / rec["tuned_s"])
    x = np.random.default_rng(0).standard_normal((rows, gen.I)).astype(np.float32)
    assert _close(exe(x), _reference(gen, x))
    assert "tuning" not in adntn.compile(gen, batch_size=rows, records=None).manifest


def test_records_of_another_device_are_ignored_with_the_reason(tmp_path):
    gen, rows = adntn.ttn((64, 128), rank=2, seed=6), 2
    recs = tune(gen, batch_size=rows, budget_s=2.0, progress=False, save=False)
    d = recs.to_dict()
    d["fingerprint"]["cpu"] = "Some Other CPU 9000"
    f = tmp_path / "other.json"
    f.write_text(json.dumps(d))
    with pytest.warns(UserWarning, match="for another device.*cpu: recorded 'Some Other CPU 9000'"):
        exe = adntn.compile(gen, batch_size=rows, records=f)
    assert "tuning" not in exe.manifest and "tuned" not in exe.manifest["layers"][0]
    # the same records planted in this device's cache file are refused too: the file name proves nothing
    other = Records.from_dict(d)
    other_path = recs.save()  # this device's file name ...
    other_path.write_text(json.dumps(other.to_dict()))  # ... holding another device's records
    with pytest.warns(UserWarning, match="for another device"):
        assert "tuning" not in adntn.compile(gen, batch_size=rows).manifest


@pytest.mark.parametrize("edit,msg", [
    (lambda d: d.pop("fingerprint"), "'fingerprint' is a required property"),
    (lambda d: d.update(format="pickle"), "format"),
    (lambda d: next(iter(d["layers"].values()))["choice"].update(schedule="fastest"), "schedule"),
    (lambda d: next(iter(d["layers"].values())).update(tuned_s=-1.0), "tuned_s"),
    (lambda d: next(iter(d["layers"].values())).update(tiles=[[64, 128, 32, 4, 7, 16, 4, -1]]), "do not fit"),
])
def test_malformed_records_are_refused(edit, msg):
    d = Records({"cpu": "x"}, {"k": dict(generator="g", rows=4, choice=dict(schedule="factored", objective="call",
                                                                            tree=0), tiles=[], default_s=1.0,
                                         tuned_s=1.0)}).to_dict()
    Records.from_dict(json.loads(json.dumps(d)))  # the unedited records are fine
    edit(d)
    with pytest.raises(SerializationError, match=msg):
        Records.from_dict(d)


def test_a_damaged_cache_warns_and_compiles_with_the_defaults():
    gen = adntn.ttn((32, 64), rank=2, seed=7)
    path = Records.for_device("cpu").save()
    path.write_text("{not json")
    with pytest.warns(UserWarning, match="not JSON"):
        exe = adntn.compile(gen, batch_size=1)
    assert "tuning" not in exe.manifest


@pytest.mark.parametrize("shape", [(512, 256, 3584), (7, 48, 28), (1, 16, 4096), (28672, 64, 28)])
def test_tile_candidates_fit_their_gemm(shape):
    from adntn_compiler.backends.tvm.policy import default_policy

    I, J, K = shape
    pol = default_policy(resolve("cpu"))
    cands = pol.tile_candidates(I, J, K)
    assert cands[0] == pol.gemm_tiles(I, J, K) and len(set(cands)) == len(cands) > 1
    for t in cands:
        assert J % t.jt == 0 and t.jt % t.vec == 0 and K % t.kt == 0 and 1 <= t.rows <= max(I, 1)
        assert t.kblock in (None, 0) or (K % t.kblock == 0 and K > t.kblock)


def test_calibrate_recovers_the_rates_of_a_roofline():
    from adntn_compiler.plan import Rates

    F, B = 80e9, 12e9
    t0 = 3e-6  # a per-call overhead: it must not be mistaken for a slow flop rate
    samples = [(f, b, t0 + f / F + b / B) for f, b in [(1e9, 1e6), (1e7, 4e8), (5e8, 2e8), (2e6, 1e7), (1e5, 1e4)]]
    r = calibrate(samples, Rates())
    assert r["flop_rate"] == pytest.approx(F, rel=1e-3) and r["byte_rate"] == pytest.approx(B, rel=1e-3)
    assert r["overhead_s"] == pytest.approx(t0, rel=1e-2)
    only_flops = calibrate([(f, 0, f / F) for f in (1e8, 2e8, 3e8, 4e8)], Rates(byte_rate=7e9))
    assert only_flops["flop_rate"] == pytest.approx(F) and only_flops["byte_rate"] == 7e9
    assert calibrate(samples[:3], Rates()) is None


@pytest.mark.slow
def test_cli_tune_writes_an_artifact_that_runs_in_a_fresh_process(tmp_path):
    """`adntn tune` on a saved model, then `adntn info` (tuned layers, this machine) and `adntn run --check`,
    each a fresh process."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(adntn.ADNTNLinear(adntn.ttn((64, 128), rank=3, seed=8)), torch.nn.ReLU(),
                                torch.nn.Linear(64, 10))
    adntn.save_model(model, tmp_path / "m.adntn-model")
    cli = [sys.executable, "-m", "adntn_compiler.cli"]
    out = subprocess.run([*cli, "tune", str(tmp_path / "m.adntn-model"), "-o", str(tmp_path / "t.adntn"),
                          "--budget", "4s", "--batch-size", "4"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "tuned" in out.stdout and "ms ->" in out.stdout
    info = subprocess.run([*cli, "info", str(tmp_path / "t.adntn")], capture_output=True, text=True)
    assert info.returncode == 0, info.stderr
    assert "tuned for this machine" in info.stdout and "over the default" in info.stdout
    run = subprocess.run([*cli, "run", str(tmp_path / "t.adntn"), "--check", "--no-torch"], capture_output=True,
                         text=True)
    assert run.returncode == 0, run.stderr
    bad = subprocess.run([*cli, "tune", str(tmp_path / "m.adntn-model"), "-o", str(tmp_path / "u.adntn"),
                          "--budget", "5 min"], capture_output=True, text=True)
    assert bad.returncode == 2 and "is not a duration" in bad.stderr
    bad = subprocess.run([*cli, "tune", str(tmp_path / "m.adntn-model"), "-o", str(tmp_path / "u.adntn"),
                          "--runner", "ssh://board"], capture_output=True, text=True)
    assert bad.returncode != 0 and "unknown runner 'ssh://board'" in bad.stderr
    serve = subprocess.run([*cli, "rpc-server", "--help"], capture_output=True, text=True)
    assert serve.returncode == 0 and "--tracker" in serve.stdout and "--key" in serve.stdout


def test_tune_refuses_what_does_not_run_here():
    from adntn_compiler.errors import ConfigError

    gen = adntn.ttn((32, 64), rank=2)
    with pytest.raises(ConfigError, match="C bundle"):
        tune(gen, target="cortex-m4", budget_s=1)
    with pytest.raises(ConfigError, match="budget_s"):
        tune(gen, budget_s=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        adntn.compile(gen, batch_size=1)  # no records: no warning


def test_compress_prefer_speed_picks_the_fastest_measured_configuration():
    import torch

    from adntn_compiler.errors import ConfigError

    m = torch.nn.Sequential(torch.nn.Linear(512, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))
    adntn.compress(m, {"0": dict(arch="ttn", ratio=100, prefer="speed", batch_size=8)})
    t = m[0].timing
    measured = [c for c in t["candidates"] if c["how"] == "measured"]
    assert len(measured) >= 2 and t["how"] == "measured" and t["batch_size"] == 8
    assert t["seconds"] == min(c["seconds"] for c in measured)
    assert all(100 <= c["ratio"] <= 200 and c["config"].get("rank") != 1 for c in t["candidates"])
    assert m[0].gen.compression_ratio >= 100 and m[0].gen.rank_bound() == 256
    text = str(adntn.report(m))
    assert "ms/call" in text and "@8 meas" in text
    for spec, msg in [(dict(ratio=100, prefer="fast"), "prefer must be"),
                      (dict(ratio=100, batch_size=8), "prefer='speed'"),
                      (dict(rank=2, prefer="speed"), "give ratio=")]:
        with pytest.raises(ConfigError, match=msg):
            adntn.compress(torch.nn.Sequential(torch.nn.Linear(64, 32)), {"0": spec})
    with pytest.raises(ConfigError, match="Linear layer"):
        adntn.compress(torch.nn.Sequential(torch.nn.Conv2d(8, 8, 3)), {"0": dict(ratio=4, prefer="speed")})


def test_torch_compile_uses_records(tmp_path):
    """options={"records": ...} was refused ("no `adntn tune`"); it now plans the layers from the records (a
    Records or a file), and the records are part of the cache key (no hit on an untuned entry)."""
    import torch

    from adntn_compiler.dynamo import last_report

    gen, rows = adntn.ttn((64, 128), rank=3, seed=7), 4
    recs = tune(gen, batch_size=rows, budget_s=2.0, progress=False, save=False)
    f = tmp_path / "records.json"
    f.write_text(json.dumps(recs.to_dict()))
    layer = adntn.ADNTNLinear(gen)
    x = torch.randn(rows, 128)
    with torch.no_grad():
        want = layer(x)
        for records, tuned in ((None, 0), (recs, 1), (str(f), 1)):
            torch._dynamo.reset()
            y = torch.compile(layer, backend="adntn", dynamic=False,
                              options={"records": records, "fallback": "eager", "strict": True})(x)
            rep = last_report()
            assert rep.tuned_layers == tuned and rep.partitions == 1
            torch.testing.assert_close(y, want, rtol=1e-4, atol=1e-5)


def _tiled_records(gen, rows, tiles) -> Records:
    """This device's records for `gen` with `tiles` as the winning GEMM tiles (what a damaged or hostile cache
    holds)."""
    fp = Records.for_device("cpu").fingerprint
    rec = dict(generator=repr(gen), rows=rows, choice=dict(schedule="factored", objective="call", tree=0),
               tiles=tiles, default_s=1.0, tuned_s=0.5)
    return Records(fp, {workload_key(gen, rows): rec})


@pytest.mark.parametrize("rows_tile, msg", [(10**7, "rows = 10000000 is outside 1..64"),
                                            (10**5, "rows = 100000 is outside 1..64")])
def test_a_register_tile_outside_the_candidates_is_refused_with_one_line(rows_tile, msg, tmp_path):
    """_tiles_from_list checked that jt, kt and vec divide, not rows: 10^7 rows aborted the process (bad_alloc)."""
    gen, rows = adntn.ttn((32, 48), rank=2, seed=1), 2
    d = _tiled_records(gen, rows, [[2, 32, 48, rows_tile, 16, 8, 1, -1]]).to_dict()
    with pytest.raises(SerializationError, match=msg):
        Records.from_dict(d)
    f = tmp_path / "r.json"
    f.write_text(json.dumps(d))
    with pytest.raises(SerializationError, match=msg):
        adntn.compile(gen, batch_size=rows, records=f)  # an explicit file: refused
    (Records.for_device("cpu").save().write_text(json.dumps(d)))  # planted in the cache: a warning, the defaults
    with pytest.warns(UserWarning, match=msg):
        assert "tuning" not in adntn.compile(gen, batch_size=rows).manifest


def test_tiles_within_bounds_but_not_this_policys_are_not_used():
    """A tile the policy would never propose (vec 4 on a 16-lane target, 3 x 8 vectors = 24 accumulators of the
    wrong width) is left out with a note, whatever the record says."""
    from adntn_compiler.backends.tvm.lower import gemm_shapes
    from adntn_compiler.backends.tvm.policy import default_policy
    from adntn_compiler.frontends.capture import model_graphs
    from adntn_compiler.tuning import applied

    gen, rows = adntn.ttn((64, 128), rank=3, seed=2), 4
    target = resolve("cpu")
    mg = model_graphs(gen, rows, target=target)
    base = default_policy(target)
    shape = next(iter(gemm_shapes(mg.call, target, base)))
    weird = [*shape, 1, 4, 4, 1, -1] if base.lanes != 4 else [*shape, 1, 8, 8, 1, -1]
    tuned = applied(_tiled_records(gen, rows, [weird]), target, "auto", None)
    model_graphs(gen, rows, target=target, planner=tuned.planner)
    pol = tuned.policy(base)
    assert shape not in pol.tiles or pol.tiles[shape] == base.tiles.get(shape)
    assert any("not among what this target's policy proposes" in n for n in tuned.notes)


@pytest.mark.parametrize("text, msg", [
    ('{"format": "adntn-tuning", "version": 1, "fingerprint": {}, "rates": {"flop_rate": NaN, "byte_rate": 1e9},'
     ' "layers": {}}', "NaN is not a finite number"),
    ('{"format": "adntn-tuning", "version": 1, "fingerprint": {}, "rates": {"flop_rate": 1e999, "byte_rate": 1e9},'
     ' "layers": {}}', "1e999 is not a finite number"),
    ("[" * 100000 + "]" * 100000, "nested more than"),
    ("[1, 2]", "must be an object"),
])
def test_records_files_refuse_non_finite_numbers_and_deep_nesting_with_one_line(tmp_path, text, msg):
    """NaN passed `exclusiveMinimum: 0`; deep nesting gave a raw RecursionError that broke every compile."""
    f = tmp_path / "r.json"
    f.write_text(text)
    with pytest.raises(SerializationError, match=msg):
        Records.load(f)
    Records.for_device("cpu").save().write_text(text)
    with pytest.warns(UserWarning, match=msg):
        adntn.compile(adntn.ttn((16, 24), rank=2), batch_size=1)  # a damaged cache never stops a compile


def test_non_finite_rates_in_a_dict_and_tiny_times_are_refused():
    d = Records({"cpu": "x"}, {}, {"flop_rate": float("nan"), "byte_rate": 1e9}).to_dict()
    with pytest.raises(SerializationError, match="rates/flop_rate: nan is not a finite number"):
        Records.from_dict(d)
    d = _tiled_records(adntn.ttn((16, 24), rank=2), 1, []).to_dict()
    next(iter(d["layers"].values()))["tuned_s"] = 1e-320
    with pytest.raises(SerializationError, match="tuned_s"):
        Records.from_dict(d)


def test_a_fifo_at_the_records_path_never_blocks_a_compile(tmp_path):
    import os

    path = Records.for_device("cpu").save()
    path.unlink()
    os.mkfifo(path)
    with pytest.warns(UserWarning, match="not a regular file"):
        adntn.compile(adntn.ttn((16, 24), rank=2), batch_size=1)
    with pytest.raises(SerializationError, match="not a regular file"):
        Records.load(path)


def test_torch_compile_refuses_a_records_file_it_cannot_read(tmp_path):
    """A missing records file was only logged by the failing partition, which then ran on the fallback."""
    import torch

    from adntn_compiler.dynamo import Options
    from adntn_compiler.errors import ConfigError

    missing = str(tmp_path / "none.json")
    with pytest.raises(ConfigError, match=r"options\['records'\]: .*none.json: cannot read it"):
        Options.parse({"records": missing})
    layer = adntn.ADNTNLinear(adntn.ttn((16, 24), rank=2))
    with pytest.raises(Exception, match=r"options\['records'\]: .*none.json"):  # (Dynamo wraps backend errors)
        torch.compile(layer, backend="adntn", options={"records": missing})(torch.randn(2, 24))


def test_the_tuner_exports_a_model_once_whatever_it_tries(monkeypatch):
    """Every candidate of every layer re-plans the captured graph; torch.export runs once per tune() of a model,
    and a Captured from adntn.capture plans again (tuned records or not) without exporting."""
    import torch

    import adntn_compiler as adntn

    calls = []
    real = torch.export.export
    monkeypatch.setattr(torch.export, "export", lambda *a, **k: calls.append(1) or real(*a, **k))
    model = torch.nn.Sequential(adntn.ADNTNLinear(adntn.ttn((16, 24), rank=2)), torch.nn.ReLU(),
                                adntn.ADNTNLinear(adntn.ttn((8, 16), rank=2)))
    recs = tune(model, batch_size=2, budget_s=2.0, progress=False, save=False)
    assert len(calls) == 1 and len(recs.layers) == 2
    captured = adntn.capture(model, example_inputs=(torch.zeros(2, 24),))
    for records in (None, recs):
        exe = captured.plan("cpu", records=records).build()
        x = np.random.default_rng(0).standard_normal((2, 24)).astype(np.float32)
        np.testing.assert_allclose(exe(x), model(torch.from_numpy(x)).detach().numpy(), rtol=1e-4, atol=1e-5)
    assert len(calls) == 2


def test_bundles_tune_the_tiling_of_the_tiled_schedules_and_a_tiled_choice_rebuilds_its_plan():
    from adntn_compiler.plan import Rates, plan_choice

    gen = adntn.ttn((64, 128), rank=3, seed=1)
    tiled = [p for p in _plan_candidates(gen, 1, None, Rates(), resolve("cortex-m7")) if p.tile_size is not None]
    assert {p.schedule for p in tiled} == {"stream", "recompute"} and any(not p.share for p in tiled)
    for p in tiled:
        q = plan_choice(gen, 1, p.choice)
        assert q.choice == p.choice and q.flops_per_call == p.flops_per_call and q.peak_bytes == p.peak_bytes
    assert Records.from_dict({**Records({}).to_dict(), "layers": {"k": dict(
        generator="g", rows=1, choice=tiled[0].choice, tiles=[], default_s=2.0, tuned_s=1.0)}}).layers
    assert all(p.tile_size is None for p in _plan_candidates(gen, 1, None, Rates(), resolve("cpu")))


def test_fastest_config_puts_the_rank_bound_before_rank_one():
    # tt on 4096x4096 at 77,000x: separated rank 2 (W of rank <= 2) or an interleaved rank-1 Kronecker product
    # (full rank): the full rank wins, as in config_for_ratio (estimated only: arm64 does not run here)
    cfg, facts = adntn.tuning.fastest_config((4096, 4096), "tt", 77000, target="arm64", progress=False)
    assert cfg["layout"] == "interleaved" and cfg["rank"] == 1 and facts["how"] == "estimated"
    assert all(adntn.make("tt", (4096, 4096), **c["config"]).rank_bound() == 4096 for c in facts["candidates"])
