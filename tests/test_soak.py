"""Soak: one Executable called 20,000 times from 4 threads, 50 compiles and 8 torch.compile rebuilds in one
process; resident memory stays flat (within 10 % after warm-up) and the partition registry does not grow."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("tvm", reason="apache-tvm is not installed")

REPO = Path(__file__).resolve().parents[1]

SCRIPT = r'''
import gc, json, threading
import numpy as np
import torch
import adntn_compiler as adntn
from adntn_compiler import dynamo as torch_backend


def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


out = {}
exe = adntn.compile(adntn.ttn((64, 96), rank=2, seed=1), batch_size=4)
x = np.random.default_rng(0).standard_normal((4, 96)).astype(np.float32)
want = exe(x)
bad = []


def calls(n):
    for _ in range(n):
        if not np.array_equal(exe(x), want):
            bad.append(1)


samples = []
for _ in range(5):  # 5 rounds x 4 threads x 1,000 calls = 20,000
    ts = [threading.Thread(target=calls, args=(1000,)) for _ in range(4)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    samples.append(rss_mb())
out["calls"] = dict(rss=samples, wrong=len(bad))

samples = []
for i in range(50):
    e = adntn.compile(adntn.ttn((16, 24), rank=2, seed=i % 7), batch_size=2, records=None)
    del e
    if i % 5 == 4:
        gc.collect()
        samples.append(rss_mb())
out["compiles"] = dict(rss=samples)

layer = adntn.ADNTNLinear(adntn.ttn((16, 24), rank=2, seed=3)).eval()
xt = torch.randn(2, 24)
samples, sizes = [], []
with torch.no_grad():
    for i in range(8):
        torch._dynamo.reset()
        f = torch.compile(layer, backend="adntn", dynamic=False, options={"fallback": "eager", "cache": False})
        f(xt)
        del f
        gc.collect()
        sizes.append(len(torch_backend._PARTITIONS))
        samples.append(rss_mb())
out["torch_compile"] = dict(rss=samples, partitions=sizes)
print("SOAK " + json.dumps(out))
'''


def _flat(rss: list[float], warm: int) -> bool:
    return max(rss[warm:]) <= 1.10 * rss[warm]


@pytest.mark.slow
def test_memory_stays_flat_under_calls_and_compiles(tmp_path):
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, cwd=REPO, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("SOAK ")[1])
    assert out["calls"]["wrong"] == 0
    assert _flat(out["calls"]["rss"], 1), out["calls"]
    assert _flat(out["compiles"]["rss"], 1), out["compiles"]
    assert _flat(out["torch_compile"]["rss"], 2), out["torch_compile"]
    assert max(out["torch_compile"]["partitions"]) <= 2, out["torch_compile"]  # it grew by one per rebuild
