"""Tuning on other devices: a TVM RPC tracker with two `adntn rpc-server`s on loopback (started and stopped here),
and an embedded target's bundles under qemu, ranked by their emulated instruction counts."""
import os
import signal
import socket
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest

import adntn_compiler as adntn
from adntn_compiler.errors import ConfigError
from adntn_compiler.tuning import Records, tune, workload_key
from adntn_compiler.tuning.runners import parse_rpc, runner_for


@pytest.fixture(autouse=True)
def own_records(tmp_path, monkeypatch):
    monkeypatch.setenv("ADNTN_TUNING", str(tmp_path / "tuning"))


def _reference(gen, x):
    return x.astype(np.float64) @ adntn.materialize(gen).reshape(gen.O, gen.I).T


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args, env=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, **(env or {})}, start_new_session=True)  # a group: kill them all


@pytest.fixture(scope="module")
def tracker():
    """A tracker, two adntn servers under key "dev" (each reporting one thread) and a plain TVM server under key
    "plain", all on 127.0.0.1; yields the tracker's port once all three are registered (at most 180 s)."""
    import tvm

    port = _free_port()
    procs = [_start(["tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", str(port), "--port-end",
                     str(port + 1), "--silent"])]
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:  # (a server that starts first retries only every 5 s)
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        for module, key in [("adntn_compiler.tuning.server", "dev"),
                                           ("adntn_compiler.tuning.server", "dev"), ("tvm.exec.rpc_server", "plain")]:
            lo = _free_port()
            procs.append(_start([module, "--tracker", f"127.0.0.1:{port}", "--key", key, "--host", "127.0.0.1",
                                 "--port", str(lo), "--port-end", str(lo + 50), "--silent"],
                                {"TVM_NUM_THREADS": "1"}))
        servers = []
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                servers = tvm.rpc.connect_tracker("127.0.0.1", port).summary()["server_info"]
            except (RuntimeError, OSError, ValueError):
                servers = []
            if len(servers) == 3:
                break
            assert all(p.poll() is None for p in procs), "an RPC process exited"
            time.sleep(0.5)
        assert len(servers) == 3, f"the tracker lists {servers}"
        yield port
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(30)


@pytest.mark.slow
def test_rpc_tuning_measures_on_both_servers_and_its_records_compile(tracker):
    gen, rows = adntn.ttn((64, 128), rank=3, seed=11), 4
    url = f"rpc://127.0.0.1:{tracker}/dev"
    recs = tune(gen, batch_size=rows, budget_s=8.0, progress=False, runner=url)
    rec = recs.layers[workload_key(gen, rows)]
    assert recs.fingerprint["measured"] == "rpc" and recs.fingerprint["threads"] == 1  # the servers' TVM_NUM_THREADS
    where = {w for _, s, w in rec["trials"] if s is not None}
    assert len(where) == 2, rec["trials"]  # both servers timed candidates
    assert rec["candidates"] >= 3 and rec["tuned_s"] <= rec["default_s"] * 1.0001
    assert Records.for_fingerprint(recs.fingerprint).layers == recs.layers  # saved under the remote's fingerprint
    exe = adntn.compile(gen, batch_size=rows, records=recs)  # the same target, built here: the records are used
    assert exe.manifest["tuning"]["device"] == recs.device_id
    x = np.random.default_rng(1).standard_normal((rows, gen.I)).astype(np.float32)
    y, ref = exe(x), _reference(gen, x)
    assert np.linalg.norm(y - ref) / np.linalg.norm(ref) < 1e-4
    with pytest.warns(UserWarning, match="another device"):  # never for another target
        adntn.compile(gen, target="cpu:x86-64", batch_size=rows, records=recs)
    assert "tuning" not in adntn.compile(gen, batch_size=rows).manifest  # "auto": this machine's records only


@pytest.mark.slow
def test_rpc_tuning_times_a_models_convs_on_the_servers(tracker):
    """A dense conv net tuned over RPC: each distinct conv's candidates (Winograd on / off, register tiles) are built
    here, run and checked on the servers; compile() applies the records and still equals torch."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 8, 1)).eval()
    x = torch.randn(1, 8, 10, 10)
    recs = tune(net, example_inputs=(x,), budget_s=6.0, progress=False, runner=f"rpc://127.0.0.1:{tracker}/dev")
    assert recs.fingerprint["measured"] == "rpc" and len(recs.convs) == 2
    for r in recs.convs.values():
        assert r["candidates"] >= 2 and r["where"] and "local" not in r["where"], r
        assert r["tuned_s"] <= r["default_s"] * 1.0001
    exe = adntn.compile(net, example_inputs=(x,), records=recs)
    with torch.no_grad():
        np.testing.assert_allclose(exe(x.numpy()), net(x).numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_rpc_runner_refusals_name_what_is_wrong(tracker):
    with pytest.raises(ConfigError, match="no device under key 'nobody'.*adntn rpc-server"):
        runner_for(f"rpc://127.0.0.1:{tracker}/nobody")
    with pytest.raises(ConfigError, match="does not report its fingerprint.*adntn rpc-server"):
        tune(adntn.ttn((32, 64), rank=2), budget_s=1, progress=False, runner=f"rpc://127.0.0.1:{tracker}/plain")
    with pytest.raises(ConfigError, match="times CPU libraries"):
        tune(adntn.ttn((32, 64), rank=2), target="cortex-m4", budget_s=1, runner=f"rpc://127.0.0.1:{tracker}/dev")


def test_runner_names_are_checked():
    assert parse_rpc("rpc://10.0.0.2:9190/rk3399") == ("10.0.0.2", 9190, "rk3399")
    for bad in ("rpc://host/key", "rpc://host:0/key", "rpc://host:9190/", "rpc://h:99999/k"):
        with pytest.raises(ConfigError, match="rpc://HOST:PORT/KEY"):
            parse_rpc(bad)
    with pytest.raises(ConfigError, match="unknown runner 'ssh'"):
        runner_for("ssh")
    with pytest.raises(ConfigError, match=f"no RPC tracker answers at 127.0.0.1:{(p := _free_port())}"):
        runner_for(f"rpc://127.0.0.1:{p}/dev")
    with pytest.raises(ConfigError, match="qemu runner counts the instructions of C bundles"):
        tune(adntn.ttn((32, 64), rank=2), budget_s=1, runner="qemu")


@pytest.mark.qemu
@pytest.mark.slow
def test_qemu_tuning_ranks_bundles_by_instructions_and_compile_uses_them_for_that_target_only():
    gen = adntn.ttn((32, 64), rank=2, seed=3)
    recs = tune(gen, target="cortex-m7", budget_s=20.0, progress=False, runner="qemu")
    p = recs.program  # the whole program, both ways: a call table costs a few instructions per call, saves code
    assert p["table"]["flash_bytes"] < p["inline"]["flash_bytes"]
    assert p["inline"]["instructions"] < p["table"]["instructions"]
    assert p["call_table"] == (p["table"]["instructions"] <= 1.01 * p["inline"]["instructions"])  # (no --flash)
    rec = recs.layers[workload_key(gen, 1)]
    assert recs.unit == "instructions" and recs.fingerprint["measured"] == "qemu" and recs.rates is None
    assert "QEMU" in recs.fingerprint["emulator"] and recs.fingerprint["cc"]
    counted = [s for _, s, _ in rec["trials"] if s is not None]
    assert len(counted) >= 3 and rec["tuned_s"] == min(counted) <= rec["default_s"]  # exact counts: the minimum
    b = adntn.compile(gen, target="cortex-m7")  # records="auto": the emulator's, from the cache
    assert b.manifest["tuning"]["device"] == recs.device_id and b.manifest["call_table"] == p["call_table"]
    x = np.random.default_rng(0).standard_normal((1, gen.I)).astype(np.float32)  # (the tuner's input: libm's
    assert b.instructions(x) == p["table" if p["call_table"] else "inline"]["instructions"]  # tanh branches)
    assert p["inline"]["instructions"] == rec["tuned_s"]  # the same layer, the same count
    y, ref = b(x), _reference(gen, x)
    assert np.linalg.norm(y - ref) / np.linalg.norm(ref) < 1e-4
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert "tuning" not in adntn.compile(gen, target="cortex-m4").manifest  # another target: never these
    with pytest.warns(UserWarning, match="another device"):
        adntn.compile(gen, target="cortex-m4", records=recs)


@pytest.mark.qemu
@pytest.mark.slow
def test_qemu_tuning_counts_a_models_convs_as_one_conv_bundles():
    import torch

    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3)).eval()
    x = torch.randn(1, 4, 10, 10)
    recs = tune(m, target="arm64", example_inputs=(x,), budget_s=8.0, progress=False, runner="qemu")
    assert len(recs.convs) == 2 and recs.unit == "instructions"
    for key, r in recs.convs.items():
        assert r["where"] == ["qemu:arm64"] and r["candidates"] >= 3, key
        assert 0 < r["tuned_s"] <= r["default_s"]  # exact counts: the least, never worse than the default
    counts = {}
    for name, rec in (("tuned", "auto"), ("default", None)):  # "auto": the emulator's records, from the cache
        b = adntn.compile(m, target="arm64", example_inputs=(x,), records=rec)
        y, ref = b(x.numpy()), b.reference(x.numpy())
        assert np.linalg.norm(y - ref) / np.linalg.norm(ref) < 1e-4, name
        counts[name] = b.instructions(x.numpy())
    gained = sum(r["default_s"] - r["tuned_s"] for r in recs.convs.values())
    saved = counts["default"] - counts["tuned"]  # in the whole model: each conv's saving (its bias and ReLU, fused
    assert gained > 0 and abs(saved - gained) <= 0.02 * gained  # into the write-back, add a few instructions)
