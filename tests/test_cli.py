import json
import subprocess
import sys

import pytest

from adntn_compiler.cli import main


def test_table_json(capsys):
    assert main(["table", "--json", "--arch", "ttn"]) == 0
    rows = json.loads(capsys.readouterr().out)
    fc6 = [r for r in rows if r["layer"] == "vgg16.fc6"]
    assert {r["target"] for r in fc6} == {2000, 20000, 77000}
    assert all(r["ratio"] >= r["target"] for r in fc6)


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path):
    art = tmp_path / "head.adntn"
    out = subprocess.run([sys.executable, "-m", "adntn_compiler.cli", "demo", "--batch", "2", "--out", str(art),
                          "--repeats", "3"], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr
    assert "OK (float32 tolerance 1e-4)" in out.stdout
    assert "import torch blocked there: True" in out.stdout
    assert "vgg16.fc6" in out.stdout and "total" in out.stdout and "classifier.0" in out.stdout
    assert "memory plan: arena" in out.stdout
    assert art.exists()


def test_explain_text_and_json(capsys):
    assert main(["explain", "ttn", "--shape", "64", "96", "--batch", "2", "--set", "rank=3", "layout=separated"]) == 0
    text = capsys.readouterr().out
    assert "== factored" in text and "== materialize" in text and "flops/call" in text
    assert main(["explain", "ttn", "--shape", "64", "96", "--json", "--set", "rank=3"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["auto"] in out["schedules"]
    for s in out["schedules"].values():
        assert s["flops_per_call"] == sum(st["flops"] for st in s["steps"] if st["where"] == "call")


def test_explain_bad_option_is_an_error(capsys):
    assert main(["explain", "ttn", "--shape", "64", "96", "--set", "layout=diagonal"]) == 2
    assert "unknown layout 'diagonal'" in capsys.readouterr().err


def test_explain_a_compressed_model(capsys):
    assert main(["explain", "--model", "tests.test_cli:small_model", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["layer"] for r in out] == ["0", "2"]
    assert all(set(r["schedules"]) == {"materialize", "factored", "stream", "recompute"} for r in out)
    assert main(["explain", "--model", "tests.test_cli:nothing"]) == 2
    assert "cannot load model" in capsys.readouterr().err


def small_model():
    from torch import nn

    import adntn_compiler as adntn

    return adntn.compress(nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10)),
                          {"0": dict(arch="ttn", rank=3), "2": dict(arch="mera", rank=2)})


def test_explain_backward(capsys):
    assert main(["explain", "ttn", "--shape", "32", "48", "--batch", "4", "--backward", "--json",
                 "--set", "rank=3"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["backward"]) == {"keep", "recompute"}
    assert all(c["flops"] > 0 and c["peak_bytes"] > 0 for c in out["backward"].values())


@pytest.mark.parametrize("args,msg", [
    (["run", "ART", "--repeats", "-3"], "--repeats: must be at least 0"),
    (["table", "--arch", "foo"], "invalid choice: 'foo'"),
    (["demo", "--batch", "0"], "--batch: must be at least 1"),
    (["run", "ART", "--output", "/nonexistent-dir/y.npy"], "does not exist"),
    (["compile", "adntn_compiler.apps.models:vgg16_head", "-o", "FOLDER"], "is a folder"),
    (["info", "/nonexistent.adntn"], "no such artifact"),
    (["explain", "ttn", "--shape", "8", "8", "--set", "rank"], "KEY=VALUE"),
])
def test_user_errors_are_one_line_with_rc_2(tmp_path, args, msg):
    """Never a traceback: one `error:` line and exit status 2 (argparse's own errors included)."""
    import adntn_compiler as adntn

    art = adntn.compile(adntn.ttn((8, 8), rank=2), batch_size=1).save(tmp_path / "a.adntn")
    args = [str(art) if x == "ART" else str(tmp_path) if x == "FOLDER" else x for x in args]
    out = subprocess.run([sys.executable, "-m", "adntn_compiler.cli", *args], capture_output=True, text=True)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr and msg in out.stderr
    assert [line for line in out.stderr.splitlines() if "error:" in line][0].startswith(("adntn: error:", "adntn "))
