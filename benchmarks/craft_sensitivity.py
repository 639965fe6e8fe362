"""Per-layer sensitivity of a real pretrained network: CRAFT's VGG16-BN text detector (EasyOCR's weights).

Each listed conv layer (and two groups) is replaced alone by a generator at ~200x / 2,000x / 20,000x, initialised
data-aware (fit_outputs on its real input patches) and briefly distilled end to end (only that layer trained,
MSE to the dense score maps), on random crops and flips of scikit-image's and scikit-learn's photographs; it is
evaluated on held-out images (text, page, logo, clock, china): correlation of the region-score map with the dense
model's, and the text boxes' precision / recall against the dense model's boxes at IoU 0.5.

    pip install 'adntn-compiler[pretrained]'
    python benchmarks/craft_sensitivity.py [--ratios 200 2000 20000] [--archs ttn] [--quick]
                                           [--out benchmarks/results/craft_sensitivity.json]

Writes the JSON, the table (.txt) and heat maps (.png: correlation; _recall.png).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import adntn_compiler as adntn
from adntn_compiler.apps import craft as C

# vgg16_bn's conv4_1..conv5_2 (512 channels) and the 512-input decoder conv, then the 256-channel ones
LAYERS_512 = ("basenet.slice3.24", "basenet.slice3.27", "basenet.slice4.30", "basenet.slice4.34",
              "basenet.slice4.37", "basenet.slice5.1", "upconv1.conv.3")
LAYERS_256 = ("basenet.slice2.14", "basenet.slice2.17", "basenet.slice3.20", "upconv2.conv.0")
GROUPS = (("basenet.slice4.34", "basenet.slice4.37"),
          ("basenet.slice3.27", "basenet.slice4.30", "basenet.slice4.34", "basenet.slice4.37"))


def setup(crops: int = 24, size: int = 192, seed: int = 0):
    """The pretrained detector, calibration crops and the held-out agreement metric."""
    model = C.craft(pretrained=True)
    data = C.calibration_crops(C.images("calibration"), crops, size, seed=seed)
    return model, data, C.agreement(model, C.images("eval"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ratios", type=float, nargs="+", default=[200, 2000, 20000])
    ap.add_argument("--archs", nargs="+", default=["ttn"])
    ap.add_argument("--crops", type=int, default=24,
                    help="calibration / distillation crops (192x192): one distillation epoch, batch 2")
    ap.add_argument("--fit-steps", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="two layers at 2,000x, few steps")
    ap.add_argument("--out", default="benchmarks/results/craft_sensitivity.json")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    layers = [*LAYERS_512, *LAYERS_256, *GROUPS] if not a.quick else ["basenet.slice4.37", "upconv2.conv.0"]
    ratios = a.ratios if not a.quick else [2000]
    t = time.perf_counter()
    model, data, metric = setup(a.crops if not a.quick else 4)
    setup_s = time.perf_counter() - t
    res = adntn.sensitivity(model, layers, [r if r != int(r) else int(r) for r in ratios], a.archs, data, metric,
                            fit_steps=a.fit_steps if not a.quick else 20, batch_size=2, calibration_batches=4,
                            loss="mse")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(setup_s=setup_s, crops=len(data), steps=len(data) // 2, fit_steps=a.fit_steps,
                                   threads=a.threads, rows=res.rows), indent=1, default=str))
    out.with_suffix(".txt").write_text(res.table() + "\n")
    res.plot(str(out.with_suffix(".png")), "corr")
    res.plot(str(out.parent / (out.stem + "_recall.png")), "recall")
    print(res.table())
    keep = res.keep("corr", 0.95, ratio=2000)
    print(f"\ncorrelation >= 0.95 at 2,000x: {', '.join(keep) or 'none'}")
    return res


if __name__ == "__main__":
    main()
