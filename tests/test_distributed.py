"""Training under torchrun: two ranks (gloo, CPU) follow the same trajectory as one process with the same global
batch (distill with KL and MSE, train_classifier, fit_outputs), within float tolerance; sensitivity splits its
jobs across the ranks and returns the one-process table."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

JOB = Path(__file__).with_name("distributed_job.py")
ENV = dict(os.environ, OMP_NUM_THREADS="1", TVM_NUM_THREADS="1")


def _run(cmd: list[str], out: Path) -> dict:
    r = subprocess.run(cmd + [str(JOB), str(out)], capture_output=True, text=True, env=ENV, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.slow
def test_two_ranks_under_torchrun_follow_one_process(tmp_path):
    one = _run([sys.executable], tmp_path / "one.json")
    two = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"],
               tmp_path / "two.json")
    assert (one["size"], two["size"]) == (1, 2)
    for curve in ("kl", "mse", "ce", "fit"):
        assert len(one[curve]) == len(two[curve]) > 0
        np.testing.assert_allclose(two[curve], one[curve], rtol=2e-4, atol=1e-6, err_msg=curve)
    for model in ("kl_cores", "mse_cores", "ce_cores", "fit_cores"):
        assert one[model].keys() == two[model].keys()
        for k in one[model]:
            np.testing.assert_allclose(two[model][k], one[model][k], rtol=1e-3, atol=2e-5, err_msg=f"{model} {k}")
    # sensitivity: the jobs split across the ranks, one table, the same as one process's
    a, b = json.loads(json.dumps(one["sensitivity"])), two["sensitivity"]
    assert [(r["layers"], r["arch"]) for r in a] == [(r["layers"], r["arch"]) for r in b] and len(a) == 5
    for ra, rb in zip(a, b):
        assert ra.keys() == rb.keys()
        for k in ra:
            if isinstance(ra[k], float):
                assert rb[k] == pytest.approx(ra[k], rel=1e-4, abs=1e-6), (ra["layers"], ra["arch"], k)
            else:
                assert rb[k] == ra[k], (ra["layers"], ra["arch"], k)
    # the ranks split every global batch: 32 rows -> 16 + 16, the last 4 -> 2 + 2, for 2 epochs
    rows = [json.loads((tmp_path / f"two.json.rank{r}").read_text()) for r in (0, 1)]
    assert rows[0] == rows[1] == [16, 16, 16, 2] * 2
    assert json.loads((tmp_path / "one.json.rank0").read_text()) == [32, 32, 32, 4] * 2
