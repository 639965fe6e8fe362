"""Runtime-free C bundles for arm64 and Cortex-M: what they hold, what they refuse, and (under qemu) that every
kernel kind, architecture and activation computes what the reference interpreter does."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("tvm", reason="apache-tvm is not installed")

import adntn_compiler as adntn  # noqa: E402
from adntn_compiler.errors import ConfigError, MemoryEstimateError, SerializationError  # noqa: E402
from adntn_compiler.runtime.bundle import Bundle  # noqa: E402
from adntn_compiler.targets import resolve  # noqa: E402

from .corpus import GENERATOR_ACTIVATIONS, generators  # noqa: E402

TARGETS = ("arm64", "cortex-m4", "cortex-m7")
qemu = pytest.mark.qemu


def rel_error(y, ref) -> float:
    return float(np.abs(y - ref).max() / max(np.abs(ref).max(), 1e-30))


@pytest.fixture(scope="module")
def small():
    gen = adntn.ttn((24, 40), rank=3, activation="tanh", seed=0, legs=4)  # (legs=2 would leave tanh no level)
    return adntn.compile(gen, target="cortex-m4", batch_size=2)


def test_embedded_targets_are_values():
    a72, m4, m7 = resolve("arm64:cortex-a72"), resolve("cortex-m4"), resolve("cortex-m7")
    assert a72.tvm["mtriple"] == "aarch64-linux-gnu" and a72.tvm["mcpu"] == "cortex-a72" and a72.lanes == 4
    assert m4.tvm == {"kind": "llvm", "mtriple": "thumbv7em-none-eabihf", "mcpu": "cortex-m4", "mfloat-abi": "hard",
                      "vector-width": 32}
    assert (m4.lanes, m4.threads, m4.schedules, m7.tvm["mcpu"]) == (1, 1, "micro", "cortex-m7")
    assert all(resolve(t).runtime == "c-bundle" for t in TARGETS)
    with pytest.raises(ConfigError, match="unknown arm64 core 'cortex-z9'.*cortex-a72"):
        resolve("arm64:cortex-z9")


def test_bundle_holds_the_model_and_its_memory_plan(small, tmp_path):
    m = small.manifest
    assert m["format"] == "adntn-c-bundle" and m["target"]["name"] == "cortex-m4"
    assert m["input_shape"] == [2, 40] and m["output_shape"] == [2, 24]
    mem = m["memory"]
    assert mem["ram_bytes"] == mem["arena_bytes"] + mem["workspace_bytes"]
    assert mem["arena_bytes"] < mem["unshared_bytes"]
    src = small.files["adntn_model.c"].decode()
    assert "malloc" not in src and "static float adntn_arena[" in src and "int adntn_model_run(" in src
    assert src.count("if (call(__tvm_ffi_") == m["calls"]  # straight-line: one statement per kernel call
    weights = small.files["adntn_weights.c"].decode()
    assert weights.count("const float adntn_w_") >= 1 and "0x" in weights  # hex literals: exact
    assert small.files["kernels.o"][:4] == b"\x7fELF"
    for path in (tmp_path / "b", tmp_path / "b.zip"):
        small.save(path)
        back = Bundle.load(path)
        assert back.files == small.files and back.manifest == small.manifest


def test_a_tampered_or_padded_bundle_is_refused(small, tmp_path):
    d = small.save(tmp_path / "b")
    (d / "adntn_weights.c").write_text((d / "adntn_weights.c").read_text().replace(" 0x", "-0x", 1))  # same size
    with pytest.raises(SerializationError, match="checksum mismatch for adntn_weights.c"):
        Bundle.load(d)
    (d / "adntn_weights.c").write_text((d / "adntn_weights.c").read_text().replace("0x", "-0x", 1))
    with pytest.raises(SerializationError, match="adntn_weights.c holds .* bytes; the manifest says"):
        Bundle.load(d)  # (refused from its size, before it is read)
    d = small.save(tmp_path / "c")
    (d / "extra.c").write_text("int evil;")
    with pytest.raises(SerializationError, match="files the manifest does not list: extra.c"):
        Bundle.load(d)
    m = json.loads((d / "manifest.json").read_text())
    m["files"]["../../etc/passwd"] = "0" * 64
    z = tmp_path / "bad.zip"
    with zipfile.ZipFile(z, "w") as f:
        f.writestr("manifest.json", json.dumps(m))
    with pytest.raises(SerializationError, match="unsafe file name"):
        Bundle.load(z)
    with pytest.raises(SerializationError, match="not an adntn C bundle"):
        (tmp_path / "n").mkdir()
        (tmp_path / "n" / "manifest.json").write_text('{"format": "other"}')
        Bundle.load(tmp_path / "n")


@pytest.mark.slow
def test_a_budget_too_small_is_refused_before_any_build(monkeypatch):
    import tvm

    def no_build(*a, **k):
        raise AssertionError("tvm.compile ran although the budget was refused")

    monkeypatch.setattr(tvm, "compile", no_build)
    gen = adntn.ttn((256, 512), rank=4, activation="tanh", seed=0)
    with pytest.raises(MemoryEstimateError) as e:
        adntn.compile(gen, target="cortex-m4", ram_bytes="1KiB", flash_bytes="2KiB")
    msg = str(e.value)
    assert "1.0 KiB RAM and 2.0 KiB flash on cortex-m4" in msg and "nothing was built" in msg
    assert "arena" in msg and "weights" in msg and "stream" in msg  # what each schedule needs
    with pytest.raises(ConfigError, match="ram_bytes must be a positive number"):
        adntn.compile(gen, target="cortex-m4", ram_bytes="lots")
    with pytest.raises(ConfigError, match="board budgets of the embedded targets"):
        adntn.compile(gen, target="cpu", ram_bytes="1MiB")


def test_a_fitting_budget_picks_a_schedule_that_fits():
    gen = adntn.ttn((256, 512), rank=4, activation="tanh", seed=0)
    dense = adntn.compile(gen, target="cortex-m4", schedule="materialize").manifest["memory"]
    flash = dense["weight_bytes"] // 4  # W itself no longer fits the flash
    b = adntn.compile(gen, target="cortex-m4", ram_bytes="1MiB", flash_bytes=flash)
    assert b.manifest["memory"]["weight_bytes"] <= flash and b.manifest["memory"]["ram_bytes"] <= 1 << 20
    assert {lay["schedule"] for lay in b.manifest["layers"]} != {"materialize"}


def test_weights_too_large_for_c_arrays_are_refused_before_building():
    fc6 = adntn.ttn((4096, 25088), rank=4, seed=0)
    with pytest.raises(MemoryEstimateError, match="392.0 MiB of weights, more than a C bundle writes"):
        adntn.compile(fc6, target="arm64", schedule="materialize")


def test_missing_toolchain_names_the_debian_packages(small, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda tool: None)
    with pytest.raises(ConfigError, match="apt-get install --no-install-recommends gcc-arm-none-eabi "
                                          "libnewlib-arm-none-eabi qemu-system-arm"):
        small(np.zeros((2, 40), np.float32))


def test_bundles_do_not_load_as_artifacts_and_artifact_options_refuse():
    with pytest.raises(ConfigError, match="deploys as a C bundle"):
        from adntn_compiler.runtime.host import check_runs_here

        t = resolve("cortex-m4")
        check_runs_here(t.__class__(**{**t.to_dict(), "arch": __import__("platform").machine(), "isa": ()}))


# ---------------------------------------------------------------------------------------------- under qemu
def _every_arch_and_activation(seed: int = 0):
    """One model through every generator architecture and activation: tree generators with each activation,
    then the linear ones, with a hardsigmoid module between (its kernel on its own)."""
    from torch import nn

    acts = list(GENERATOR_ACTIVATIONS)
    specs = [(arch, acts[(2 * k + j) % len(acts)]) for k, arch in enumerate(("ttn", "attn", "mera", "brickwall"))
             for j in range(2)]
    specs += [(arch, None) for arch in ("tt", "tucker", "cp", "lowrank", "dense")]
    dims = [24, 20, 16, 18, 12, 16, 20, 14, 16, 12, 18, 16, 20, 10]
    layers = []
    for k, (arch, act) in enumerate(specs):
        kw = dict(seed=seed + k, **({"activation": act} if act else {}))
        kw.update(depth=2) if arch == "brickwall" else kw.update(rank=2) if arch != "dense" else None
        layers.append(adntn.ADNTNLinear(adntn.make(arch, (dims[k + 1], dims[k]), **kw), bias=True))
        if k == 6:
            layers.append(nn.Hardsigmoid())
    return nn.Sequential(*layers).eval()


def _mlp():
    import torch
    from torch import nn

    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(40, 256), nn.ReLU(), nn.Linear(256, 256), nn.GELU(), nn.Linear(256, 10))
    return adntn.compress(mlp, {"2": dict(arch="ttn", ratio=20, seed=0)}).eval()


@qemu
@pytest.mark.slow
@pytest.mark.parametrize("target", TARGETS)
def test_every_architecture_activation_and_an_mlp_match_the_reference(target):
    rng = np.random.default_rng(0)
    for model, batch in ((_every_arch_and_activation(), 2), (_mlp(), 3)):
        import torch

        x = rng.standard_normal((batch, model[0].in_features)).astype(np.float32)
        b = adntn.compile(model, target=target, example_inputs=(torch.from_numpy(x),))
        y = b(x)
        assert y.shape == b.output_shape and rel_error(y, b.reference(x)) < 1e-4
    assert b.call_null().startswith("adntn_model_run(NULL, y) = -1, adntn_model_run(x, NULL) = -1")
    size = b.size()
    assert size["model_flash_bytes"] >= b.manifest["memory"]["weight_bytes"] > 0
    assert size["model_ram_bytes"] >= b.manifest["memory"]["arena_bytes"]


@qemu
@pytest.mark.slow
@pytest.mark.parametrize("target", TARGETS)
@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                                 HealthCheck.function_scoped_fixture])
@given(gen=generators(conv=False), batch=st.integers(1, 3),
       schedule=st.sampled_from(["auto", "stream", "factored", "materialize", "recompute"]))
def test_random_generators_match_the_reference_on_the_emulator(target, gen, batch, schedule):
    b = adntn.compile(gen, target=target, batch_size=batch, schedule=schedule)
    x = np.random.default_rng(1).standard_normal(b.input_shape).astype(np.float32)
    assert rel_error(b(x), b.reference(x)) < 1e-4


@qemu
@pytest.mark.slow
def test_the_vgg16_head_runs_on_an_emulated_cortex_m7(tmp_path):
    from adntn_compiler.apps.models import compressed_vgg16_head

    # An STM32H7-class budget: what no dense VGG layer fits (FC6 alone is 411 MB); only recompute does here.
    b = adntn.compile(compressed_vgg16_head(), target="cortex-m7", ram_bytes="512KiB", flash_bytes="1MiB")
    assert [lay["schedule"] for lay in b.manifest["layers"] if lay["kind"] == "adntn"] == ["recompute"] * 3
    mem = b.manifest["memory"]
    assert mem["ram_bytes"] <= 512 << 10 and mem["weight_bytes"] <= 1 << 20
    x = np.random.default_rng(0).standard_normal((1, 25088)).astype(np.float32)
    assert rel_error(b(x), b.reference(x)) < 1e-4
    size = b.size()  # the linked code, not the estimate
    assert size["model_ram_bytes"] <= 512 << 10 and size["model_flash_bytes"] <= 1 << 20
    assert b.call_null().endswith("= -1")


@qemu
@pytest.mark.parametrize("target", ["cortex-m4", "arm64"])
def test_instruction_counts_are_repeatable_and_the_fast_count_matches_the_exact_one(small, target):
    b = small if target == "cortex-m4" else adntn.compile(adntn.ttn((24, 40), rank=3, seed=0), target=target,
                                                          batch_size=2)
    x = np.random.default_rng(0).standard_normal(b.input_shape).astype(np.float32)
    exact = b.instructions(x, exact=True)
    assert exact > 1000
    if target == "arm64":
        assert b.instructions(x, exact=True) == exact
    else:  # icount + the board timer: the same every run, within 1 % of the trace count (IT prefixes not counted)
        fast = b.instructions(x)
        assert fast == b.instructions(x) and abs(fast - exact) <= 0.01 * exact


@qemu
@pytest.mark.slow
def test_cli_compiles_runs_and_sizes_a_bundle(tmp_path):
    out = tmp_path / "m4"
    adntn.save_model(_mlp(), tmp_path / "mlp.adntn-model")
    cli = [sys.executable, "-m", "adntn_compiler.cli"]
    r = subprocess.run([*cli, "compile", str(tmp_path / "mlp.adntn-model"), "-o", str(out), "--target", "cortex-m4",
                        "--ram", "64KiB", "--flash", "512KiB"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "C bundle" in r.stdout and (out / "Makefile").is_file()
    x = np.random.default_rng(0).standard_normal((1, 40)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    r = subprocess.run([*cli, "run", str(out), "--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / "y.npy"),
                        "--instructions", "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["output_shape"] == [1, 10] and res["instructions"] > 1000
    ref = adntn.compile(adntn.load_model(tmp_path / "mlp.adntn-model"), target="cpu", input_shape=(40,))(x)
    assert rel_error(np.load(tmp_path / "y.npy"), ref) < 1e-4
    r = subprocess.run([*cli, "info", str(out), "--build"], capture_output=True, text=True)  # info alone never builds
    assert r.returncode == 0 and "linked (libadntn_model.a): flash" in r.stdout, r.stdout + r.stderr
    r = subprocess.run(["make", "-s", "-C", str(out)], capture_output=True, text=True)  # the bundle's own Makefile
    assert r.returncode == 0 and (out / "libadntn_model.a").is_file(), r.stderr
    files = json.loads((out / "manifest.json").read_text())["files"]
    assert Bundle.load(out).manifest["files"] == files  # built: still loads


def test_the_board_budget_loop_exports_the_model_once(monkeypatch):
    """The loop tried up to 5 schedules and ran torch.export on the whole model for each; and compile() of a
    model exports once."""
    import torch

    calls = []
    real = torch.export.export
    monkeypatch.setattr(torch.export, "export", lambda *a, **k: calls.append(1) or real(*a, **k))
    model = torch.nn.Sequential(adntn.ADNTNLinear(adntn.ttn((16, 24), rank=2)), torch.nn.ReLU(),
                                torch.nn.Linear(16, 4))
    with pytest.raises(MemoryEstimateError):  # nothing fits: every schedule is tried
        adntn.compile(model, target="cortex-m4", ram_bytes=64, flash_bytes=256)
    assert len(calls) == 1
    adntn.compile(model)
    assert len(calls) == 2
