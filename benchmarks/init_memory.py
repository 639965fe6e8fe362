"""Initialising a generator of a VGG-16 layer: peak resident memory and seconds, each case in a fresh process
(import cost measured apart), against the 411 MB (float32) dense FC6 weight it replaces.

    python benchmarks/init_memory.py [--out benchmarks/results/init_memory.json]

Each case builds `make(arch, shape, rank=4)` with the architecture's default layout and reads `.cores` (which
calibrates the scale). Peak RSS is the whole process (Python, numpy, the package); "import" is a process that
only imports the package.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from tqdm import tqdm

CASE = """
import json, resource, sys, time
t0 = time.perf_counter()
import adntn_compiler as adntn
t1 = time.perf_counter()
arch = sys.argv[1]
if arch != "import":
    g = adntn.make(arch, (int(sys.argv[2]), int(sys.argv[3])), rank=4)
    g.cores
t2 = time.perf_counter()
print(json.dumps(dict(import_s=t1 - t0, init_s=t2 - t1,
                      peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      layout=None if arch == "import" else g.config.get("layout"),
                      params=None if arch == "import" else g.num_params,
                      calibration=None if arch == "import" else g.calibration)))
"""
CASES = [("import", 0, 0)] + [(a, *s) for a in ("ttn", "attn", "mera") for s in ((4096, 25088), (4096, 4096))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="benchmarks/results/init_memory.json")
    a = ap.parse_args()
    rows = []
    for arch, o, i in tqdm(CASES, desc="init_memory"):
        out = subprocess.run([sys.executable, "-c", CASE, arch, str(o), str(i)], capture_output=True, text=True,
                             check=True)
        rows.append(dict(arch=arch, shape=[o, i], **json.loads(out.stdout)))
    lines = [f"{'arch':<7} {'shape':<14} {'layout':<12} {'params':>7} {'init s':>7} {'peak RSS MB':>12}  calibration"]
    for r in rows:
        lines.append(f"{r['arch']:<7} {str(tuple(r['shape'])) if r['arch'] != 'import' else '':<14} "
                     f"{r['layout'] or '':<12} {r['params'] or '':>7} {r['init_s']:>7.2f} {r['peak_mb']:>12.0f}  "
                     f"{r['calibration'] or '(import only: ' + format(r['import_s'], '.2f') + ' s)'}")
    text = "\n".join(lines)
    print(text)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(rows, indent=1))
    Path(a.out).with_suffix(".txt").write_text(text + "\n")


if __name__ == "__main__":
    main()
