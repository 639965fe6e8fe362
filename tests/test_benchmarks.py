"""Smoke run of the quality benchmark (--quick): it trains, writes its JSON, table and plot, and merges."""
import json
import runpy
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).parent.parent / "benchmarks"


@pytest.mark.slow
def test_quality_quick(tmp_path, monkeypatch):
    monkeypatch.setenv("ADNTN_CACHE", str(tmp_path / "cache"))  # the +kd rows' teacher logits
    torch.set_num_threads(1)
    main = runpy.run_path(str(BENCH / "quality.py"), run_name="quality")["main"]
    out = tmp_path / "q.json"
    summary = main(["--quick", "--out", str(out)])
    assert {s["arch"] for s in summary} == {"dense", "ttn", "ttn+kd", "lowrank", "narrow"}
    assert out.with_suffix(".png").stat().st_size > 0 and "ttn" in out.with_suffix(".txt").read_text()
    runs = json.loads(out.read_text())["runs"]
    ttn = next(r for r in runs if r["arch"] == "ttn")
    assert ttn["ratio"] >= 2000 and ttn["accuracy"] > 0.15 and ttn["losses"][0] < 2.3  # trained, off chance
    kd = next(r for r in runs if r.get("kd"))
    assert kd["arch"] == "ttn" and kd["accuracy"] > 0.15 and kd["test_accuracy"][-1] == kd["accuracy"]

    # a run done elsewhere merges in, and is not trained again
    other = tmp_path / "other.json"
    extra = dict(ttn, arch="frozen", target=1, ratio=None, layer_params=0, accuracy=0.5)
    other.write_text(json.dumps({"recipe": {}, "runs": [extra]}))
    merged = main(["--quick", "--out", str(out), "--merge", str(other)])
    assert next(s for s in merged if s["arch"] == "frozen")["acc_mean"] == 0.5
    assert len(json.loads(out.read_text())["runs"]) == len(runs) + 1


@pytest.mark.slow
@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").is_file(),
                    reason="Debian's dataset-fashion-mnist is not installed (.ci/run installs it)")
def test_distributed_train_quick():
    """The torchrun benchmark's smoke run: one process and two, the same epoch loss (the same trajectory)."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, str(BENCH / "distributed_train.py"), "--quick"], capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [line.split() for line in r.stdout.splitlines()[2:]]
    assert [row[1] for row in rows] == ["1", "2"] and rows[0][4] == rows[1][4]
