"""Compress a pretrained model by sensitivity, distill it, compile it, report: CRAFT's VGG16-BN text detector.

    pip install 'adntn-compiler[pretrained]'
    python examples/compress_pretrained.py [--table benchmarks/results/craft_sensitivity.json]
                                           [--layers basenet.slice4.37 ...] [--ratios 200 2000] [--threshold 0.95]
                                           [--crops 48] [--epochs 2] [--out craft_compressed.adntn] [--json r.json]

1. The sensitivity table: read from --table (benchmarks/craft_sensitivity.py writes it), or measured here for
   --layers at --ratios (adntn.sensitivity).
2. Each single layer is compressed at the highest ratio where the held-out --metric (region-score correlation,
   or box precision / recall) stayed at or above --threshold; the others stay dense.
3. The chosen layers together: data-aware initialisation on real inputs, then distillation end to end.
4. The dense and the compressed detector are compiled to artifacts and timed, interleaved, on one thread.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch

import adntn_compiler as adntn
from adntn_compiler.apps import craft as C
from adntn_compiler.training.sensitivity import init_from_data, record_inputs


def choose(rows: list[dict], threshold: float, metric: str = "corr") -> dict[str, float]:
    """Layer -> the highest target ratio whose `metric` is >= threshold (single layers only)."""
    best: dict[str, float] = {}
    for r in rows:
        if r["arch"] == "dense" or r.get("unreachable") or "+" in r["layers"] or r[metric] < threshold:
            continue
        best[r["layers"]] = max(best.get(r["layers"], 0), r["target"])
    return best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", help="a sensitivity JSON (benchmarks/craft_sensitivity.py); else measured here")
    ap.add_argument("--layers", nargs="+", default=["basenet.slice4.34", "basenet.slice4.37", "upconv1.conv.3"])
    ap.add_argument("--ratios", type=float, nargs="+", default=[200, 2000])
    ap.add_argument("--threshold", type=float, default=0.95)
    ap.add_argument("--metric", default="corr", choices=["corr", "precision", "recall"],
                    help="what a layer must keep: region-score correlation, or the boxes' precision / recall")
    ap.add_argument("--arch", default="ttn")
    ap.add_argument("--crops", type=int, default=48, help="192x192 calibration / distillation crops")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--long-side", type=int, default=384, help="the compiled input: the page image at this size")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default="craft_compressed.adntn")
    ap.add_argument("--json", help="write the report here")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)

    dense = C.craft(pretrained=True)
    data = C.calibration_crops(C.images("calibration"), a.crops, 192)
    metric = C.agreement(dense, C.images("eval"))
    if a.table:
        rows = json.loads(Path(a.table).read_text())["rows"]
    else:
        ratios = [int(r) if r == int(r) else r for r in a.ratios]
        rows = adntn.sensitivity(dense, a.layers, ratios, (a.arch,), data, metric, batch_size=2).rows
    chosen = choose(rows, a.threshold, a.metric)
    if not chosen:
        raise SystemExit(f"no layer keeps {a.metric} >= {a.threshold} at any measured ratio; lower --threshold")
    print("chosen:", ", ".join(f"{k} at {v:,}x" for k, v in chosen.items()))

    t = time.perf_counter()
    student = adntn.compress(copy.deepcopy(dense), {n: dict(arch=a.arch, ratio=r, seed=i)
                                                    for i, (n, r) in enumerate(chosen.items())})
    inputs = record_inputs(dense, set(chosen), list(data[:8].split(2)), 8192)
    init_from_data(student, dense, list(chosen), inputs)
    after_init = metric(student)
    res = adntn.train.distill(student, dense, data, epochs=a.epochs, batch_size=2, loss="mse", params="compressed",
                              train_mode=False)
    quality = metric(student)
    train_s = time.perf_counter() - t
    print(adntn.report(student))
    print(f"held out: after init {after_init}\n          distilled  {quality}  ({train_s:.0f} s)")

    x = C.preprocess(C.images("eval")["page"], a.long_side)
    t = time.perf_counter()
    exes = {"dense": adntn.compile(dense, example_inputs=(x,)),
            "compressed": adntn.compile(student, example_inputs=(x,))}
    compile_s = time.perf_counter() - t
    sizes = {}
    for name, exe in exes.items():
        path = exe.save(a.out if name == "compressed" else Path(a.out).with_name("craft_dense.adntn"))
        sizes[name] = path.stat().st_size
    xn = x.numpy()
    with torch.no_grad():
        want = student(x).numpy()
    err = float(abs(exes["compressed"](xn) - want).max() / abs(want).max())
    fns = {"dense artifact": lambda: exes["dense"](xn), "compressed artifact": lambda: exes["compressed"](xn),
           "dense torch eager": lambda: dense(x), "compressed torch eager": lambda: student(x)}
    times: dict[str, list[float]] = {k: [] for k in fns}
    with torch.no_grad():
        for f in fns.values():
            f()  # warm-up
        for _ in range(a.rounds):  # interleaved: this VM drifts
            for k, f in fns.items():
                t = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t)
    ms = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    gen = sum(m.gen.num_params for m in student.modules() if isinstance(m, adntn.ADNTNConv2d))
    replaced = sum(dict(dense.named_modules())[n].weight.numel() for n in chosen)
    report = dict(chosen=chosen, params_replaced=replaced, params_generated=gen, quality_init=after_init,
                  quality=quality, train_s=train_s, loss_curve=res.losses, compile_s=compile_s, artifact_bytes=sizes,
                  artifact_rel_error=err, input_shape=list(x.shape), ms=ms, rounds=a.rounds)
    print(f"artifacts: dense {sizes['dense'] / 1e6:.1f} MB, compressed {sizes['compressed'] / 1e6:.1f} MB "
          f"({sizes['dense'] / sizes['compressed']:.2f}x smaller); compressed artifact vs torch: {err:.1e}")
    print(f"input {tuple(x.shape)}, one thread, medians of {a.rounds} interleaved rounds: "
          + ", ".join(f"{k} {v:.0f} ms" for k, v in ms.items()))
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=1, default=str))
    return report


if __name__ == "__main__":
    main()
