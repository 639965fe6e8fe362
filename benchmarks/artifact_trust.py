"""What the artifact checks cost: load with the signature verified against `allow_unsigned` on an unsigned copy
(the checks that remain), and a call with the thread lock against the runner called directly. Variants
interleaved, round after round; medians. One thread.

    python benchmarks/artifact_trust.py [--out benchmarks/results/artifact_trust.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import warnings
import zipfile
from pathlib import Path

os.environ.setdefault("TVM_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

import adntn_compiler as adntn  # noqa: E402
from adntn_compiler.runtime import artifact  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="benchmarks/results/artifact_trust.json")
    ap.add_argument("--rounds", type=int, default=15)
    a = ap.parse_args()
    gen = adntn.ttn((4096, 25088), rank=4, layout="interleaved", seed=0)  # VGG-16 FC6
    exe = adntn.compile(gen, batch_size=1)
    d = Path(tempfile.mkdtemp())
    signed = exe.save(d / "signed.adntn")
    with zipfile.ZipFile(signed) as zin, zipfile.ZipFile(d / "unsigned.adntn", "w") as zout:
        for n in zin.namelist():
            if n != artifact.SIGNATURE:
                zout.writestr(n, zin.read(n))
    x = np.random.default_rng(0).standard_normal((1, 25088)).astype(np.float32)
    t = {k: [] for k in ("load signed", "load unsigned (no signature check)", "call with lock", "call, no lock")}
    warnings.simplefilter("ignore")
    for _ in tqdm(range(a.rounds), desc="artifact_trust"):
        for name, f in (("load signed", lambda: adntn.load(signed)),
                        ("load unsigned (no signature check)", lambda: adntn.load(d / "unsigned.adntn",
                                                                                  allow_unsigned=True))):
            s = time.perf_counter()
            f()
            t[name].append(time.perf_counter() - s)
        for name, f in (("call with lock", lambda: exe(x)), ("call, no lock", lambda: exe._call(x))):
            for _ in range(20):
                s = time.perf_counter()
                f()
                t[name].append(time.perf_counter() - s)
    med = {k: statistics.median(v) for k, v in t.items()}
    lines = [f"{k:<38} {1e3 * v:9.3f} ms" for k, v in med.items()]
    lines.append(f"signature check: {1e3 * (med['load signed'] - med['load unsigned (no signature check)']):+.3f} ms "
                 f"per load; lock: {1e6 * (med['call with lock'] - med['call, no lock']):+.1f} us per call")
    text = "\n".join(lines)
    print(text)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(med, indent=1))
    Path(a.out).with_suffix(".txt").write_text(text + "\n")


if __name__ == "__main__":
    main()
