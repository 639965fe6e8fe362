"""The main job: compress the bundled VGG-16-BN (its FC6/FC7/FC8 as ADNTN layers, the conv trunk dense), compile
the whole network at 64x64 to a .adntn artifact, run that in a fresh process without torch, and check it against
the reference interpreter and torch eager."""
from __future__ import annotations

import time

import numpy as np

from ..errors import ConfigError
from ..generators import make
from ..generators.search import config_for_ratio
from .models import LAYER_SHAPES

TARGETS = (2000, 20000, 77000)


def compression_table(archs=("ttn", "attn", "mera")) -> list[dict]:
    """For each reference layer and architecture, the configuration chosen for each target ratio."""
    rows = []
    for layer, shape in LAYER_SHAPES.items():
        for arch in archs:
            for target in TARGETS:
                try:
                    cfg = config_for_ratio(shape, arch, target)
                except ConfigError:
                    rows.append(dict(layer=layer, shape=shape, arch=arch, target=target, ratio=None, params=None,
                                     config=None))
                    continue
                g = make(arch, shape, **cfg)
                rows.append(dict(layer=layer, shape=shape, arch=arch, target=target, ratio=g.compression_ratio,
                                 params=g.num_params, config=cfg))
    return rows


def format_table(rows: list[dict]) -> str:
    lines = [f"{'layer':<15} {'shape':<20} {'arch':<5} {'target':>8} {'ratio':>10} {'params':>8}  config",
             "-" * 100]
    for r in rows:
        if r["ratio"] is None:
            lines.append(f"{r['layer']:<15} {str(r['shape']):<20} {r['arch']:<5} {r['target']:>7}x {'n/a':>10}")
        else:
            cfg = ", ".join(f"{k}={v}" for k, v in r["config"].items())
            lines.append(f"{r['layer']:<15} {str(r['shape']):<20} {r['arch']:<5} {r['target']:>7}x "
                         f"{r['ratio']:>9,.0f}x {r['params']:>8,}  {cfg}")
    return "\n".join(lines)


def main(batch: int = 4, out: str = "build/vgg16_bn.adntn", repeats: int = 20, size: int = 64) -> int:
    """Compress the bundled VGG-16-BN, compile the whole network to an artifact, run the artifact in a fresh
    process (torch blocked there), and compare with the reference interpreter and with torch eager."""
    import json
    import os
    import subprocess
    import sys

    import torch

    from ..runtime.timing import median_time
    from ..stages import compile as compile_model
    from ..training.compress import report
    from .models import compressed_vgg16_bn, vgg16_bn

    torch.set_num_threads(1)  # one thread everywhere: this VM gives about one core
    print("== Reference layers: configurations at 2,000x / 20,000x / 77,000x (n/a: not reachable at rank >= 2)")
    print(format_table(compression_table()))
    print()
    t = time.perf_counter()
    model = compressed_vgg16_bn(ratio=None).eval()
    print(f"== Bundled example: VGG-16-BN at {size}x{size}, FC6/FC7/FC8 compressed, conv trunk dense "
          f"(initialised in {time.perf_counter() - t:.1f} s)")
    print(report(model))
    print()
    t = time.perf_counter()
    x = np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)
    exe = compile_model(model, target="cpu", example_inputs=(torch.from_numpy(x),), progress=True)
    path = exe.save(out)
    print(f"== Compiled for cpu ({exe.manifest['target']['tvm']}) in {time.perf_counter() - t:.1f} s: "
          f"{len(exe.info()['kernels'])} kernels -> {path} ({path.stat().st_size:,} bytes)")
    mem = exe.info()["memory"]["call"]
    print(f"  memory plan: arena {mem['arena_bytes'] / 2**20:.1f} MiB for the activations (without reuse "
          f"{mem['unshared_bytes'] / 2**20:.1f} MiB), constants {mem['const_bytes'] / 2**20:.1f} MiB")
    xin, yout = path.with_suffix(".x.npy"), path.with_suffix(".y.npy")
    np.save(xin, x)
    env = dict(os.environ, TVM_NUM_THREADS="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "adntn_compiler.cli", "run", str(path), "--input", str(xin), "--output", str(yout),
           "--repeats", str(repeats), "--check", "--json", "--no-torch"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        print(proc.stdout, proc.stderr)
        return 1
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    y = np.load(yout)
    with torch.no_grad():
        xt = torch.from_numpy(x)
        y_torch = model(xt).numpy()
        torch.manual_seed(0)
        dense = vgg16_bn().eval()  # the same conv trunk (seed 0), FC layers dense
        dense.load_state_dict({k: v for k, v in model.state_dict().items() if k in dense.state_dict()}, strict=False)
        t_dense = median_time(lambda: dense(xt), max(3, repeats // 4))
        t_eager = median_time(lambda: model(xt), repeats)
    err_torch = float(np.abs(y - y_torch).max() / np.abs(y_torch).max())
    dense_params = sum(p.numel() for p in dense.parameters())
    params = sum(p.numel() for p in model.parameters())
    print(f"== Artifact run in a fresh process (import torch blocked there: {not res['torch_imported']}), "
          f"batch {batch}")
    print(f"  compression, all parameters incl. biases: {dense_params:,} dense -> {params:,} "
          f"({dense_params / params:,.0f}x)")
    print(f"  max relative error against the reference interpreter (float64): {res['max_rel_error']:.2e}")
    print(f"  max relative error against the torch model: {err_torch:.2e}")
    print(f"  latency (1 thread, median): compiled {1e3 * res['median_s']:.3f} ms | torch dense model "
          f"{1e3 * t_dense:.2f} ms ({t_dense / res['median_s']:.1f}x) | torch eager ADNTN model "
          f"{1e3 * t_eager:.2f} ms ({t_eager / res['median_s']:.1f}x)")
    ok = res["max_rel_error"] < 1e-4 and err_torch < 1e-4 and not res["torch_imported"]
    print(f"  {'OK' if ok else 'FAIL'} (float32 tolerance 1e-4)")
    return 0 if ok else 1
