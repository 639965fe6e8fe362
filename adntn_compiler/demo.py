"""The main job: compress the bundled VGG-16 head, print its compression table and check it against the
numpy reference interpreter. Later stages (compile, artifact) extend this."""
from __future__ import annotations

import time

import numpy as np

from .errors import ConfigError
from .generators import make
from .generators.search import config_for_ratio
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


def main(batch: int = 4) -> int:
    import torch

    from .backends.reference import run
    from .models import compressed_vgg16_head
    from .nn import ADNTNLinear, report
    from .trace import trace

    print("== Reference layers: configurations at 2,000x / 20,000x / 77,000x (n/a: not reachable at rank >= 2)")
    print(format_table(compression_table()))
    print()
    t = time.perf_counter()
    model = compressed_vgg16_head().eval()
    print(f"== Bundled example: VGG-16 classifier head, compressed (initialised in {time.perf_counter() - t:.1f} s)")
    print(report(model))
    print()
    print(f"== Correctness: torch backend (float32) against the numpy reference interpreter (float64), batch {batch}")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 25088))
    worst = 0.0
    h = torch.as_tensor(x, dtype=torch.float32)
    for name, m in model.named_children():
        with torch.no_grad():
            out = m(h)
        if isinstance(m, ADNTNLinear):
            cores = {k: v.detach().double().numpy() for k, v in m.cores.items()}
            g = trace(m.gen, "layer", batch_size=batch, structure_only=True)
            ref = run(g, [h.double().numpy()], cores)[0] + m.bias.detach().double().numpy()
            err = float(np.abs(out.double().numpy() - ref).max() / np.abs(ref).max())
            worst = max(worst, err)
            print(f"  layer {name}: {m.gen.arch:<5} ratio {m.gen.compression_ratio:>9,.0f}x  "
                  f"max relative error {err:.2e}")
        h = out
    ok = worst < 1e-4
    print(f"  {'OK' if ok else 'FAIL'}: worst relative error {worst:.2e} (float32 tolerance 1e-4)")
    return 0 if ok else 1
