"""torch.compile backends on this CPU, one thread: eager, Inductor (the default), OpenVINO's backend (when the
`openvino` package is installed; inference only) and backend="adntn" on
(a) the FC6 ADNTN layer (VGG-16 FC6 as a rank-4 TTN) at batch 1/32/256, (b) the compressed VGG-16-BN at 64x64,
batch 1/8, (c) a training step (forward, backward, SGD) of the FC6 layer at batch 32. Cold compile (empty cache)
and warm compile (a fresh Dynamo, our cache filled) for backend="adntn". Variants interleaved; medians.

    python benchmarks/torch_compile.py [--rounds 7] [--out benchmarks/results/torch_compile.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TVM_NUM_THREADS", "1")
os.environ["ADNTN_HOME"] = tempfile.mkdtemp(prefix="adntn-home-")  # a cold cache for the cold compile times

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

import adntn_compiler as adntn  # noqa: E402
from adntn_compiler import dynamo as torch_backend  # noqa: E402
from adntn_compiler.apps import models  # noqa: E402


def fc6(seed: int = 0):
    torch.manual_seed(seed)
    return adntn.ADNTNLinear(adntn.ttn((4096, 25088), rank=4, layout="interleaved", seed=seed))


def first_call(fn, *args) -> float:
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


def timed(variants: dict, rounds: int) -> dict[str, float]:
    ts = {k: [] for k in variants}
    for f in variants.values():
        f()
    for _ in range(rounds):
        for k, f in variants.items():
            s = time.perf_counter()
            f()
            ts[k].append(time.perf_counter() - s)
    return {k: statistics.median(v) for k, v in ts.items()}


def has_openvino() -> bool:
    """OpenVINO's torch.compile backend, a real CPU peer, when `pip install openvino` was possible."""
    try:
        import openvino.torch  # noqa: F401
        return True
    except ImportError:
        return False


def inference_case(name: str, model, x, rounds: int) -> dict:
    row = dict(case=name, batch=int(x.shape[0]))
    with torch.no_grad():
        torch._dynamo.reset()
        ind = torch.compile(model, dynamic=False)
        row["inductor_compile_s"] = first_call(ind, x)
        ours = torch.compile(model, backend="adntn", dynamic=False)
        row["adntn_cold_compile_s"] = first_call(ours, x)
        torch._dynamo.reset()
        ours = torch.compile(model, backend="adntn", dynamic=False)
        row["adntn_warm_compile_s"] = first_call(ours, x)
        ind = torch.compile(model, dynamic=False)
        ind(x)
        row["adntn_report"] = {k: v for k, v in vars(torch_backend.last_report()).items() if k != "fallback_reasons"}
        row["max_rel_error"] = float((ours(x) - model(x)).abs().max() / model(x).abs().max())
        variants = {"eager": lambda: model(x), "inductor": lambda: ind(x), "adntn": lambda: ours(x)}
        if has_openvino():
            ov = torch.compile(model, backend="openvino", dynamic=False)
            try:
                row["openvino_compile_s"] = first_call(ov, x)
                variants["openvino"] = lambda: ov(x)
            except Exception as e:  # a peer's failure is a result too
                row["openvino_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        row["median_s"] = timed(variants, rounds)
    return row


def training_case(rounds: int, batch: int = 32) -> dict:
    row = dict(case="FC6 training step", batch=batch)
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(batch, 25088, generator=g), torch.randn(batch, 4096, generator=g)
    layers = {k: fc6() for k in ("eager", "inductor", "adntn")}
    fns = {"eager": layers["eager"], "inductor": torch.compile(layers["inductor"]),
           "adntn": torch.compile(layers["adntn"], backend="adntn")}
    opts = {k: torch.optim.SGD(m.parameters(), lr=1e-3) for k, m in layers.items()}

    def step(k):
        opts[k].zero_grad()
        torch.nn.functional.mse_loss(fns[k](x), t).backward()
        opts[k].step()

    torch._dynamo.reset()
    row["inductor_compile_s"] = first_call(step, "inductor")
    row["adntn_cold_compile_s"] = first_call(step, "adntn")
    row["median_s"] = timed({k: (lambda k=k: step(k)) for k in fns}, rounds)
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--out", default="benchmarks/results/torch_compile.json")
    a = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    layer = fc6().eval()
    vgg = models.compressed("vgg16_bn", 2000).eval()
    cases = [("FC6 layer", layer, (1, 25088)), ("FC6 layer", layer, (32, 25088)), ("FC6 layer", layer, (256, 25088)),
             ("VGG-16-BN", vgg, (1, 3, 64, 64)), ("VGG-16-BN", vgg, (8, 3, 64, 64))]
    for name, m, shape in tqdm(cases, desc="torch_compile"):
        rows.append(inference_case(name, m, torch.randn(*shape, generator=torch.Generator().manual_seed(0)), a.rounds))
    rows.append(training_case(a.rounds))
    head = (f"{'case':<18} {'batch':>5} {'eager ms':>9} {'inductor ms':>11} {'openvino ms':>11} {'adntn ms':>9} "
            f"{'vs inductor':>11} {'vs eager':>8} {'inductor compile':>16} {'adntn cold':>10} {'adntn warm':>10}")
    lines = [f"one thread, medians of {a.rounds} interleaved rounds", head, "-" * len(head)]
    for r in rows:
        m = r["median_s"]
        warm = f"{r['adntn_warm_compile_s']:>9.1f}s" if "adntn_warm_compile_s" in r else f"{'':>10}"
        ov = f"{1e3 * m['openvino']:>11.2f}" if "openvino" in m else f"{'failed' if 'openvino_error' in r else '-':>11}"
        lines.append(f"{r['case']:<18} {r['batch']:>5} {1e3 * m['eager']:>9.2f} {1e3 * m['inductor']:>11.2f} {ov} "
                     f"{1e3 * m['adntn']:>9.2f} {m['inductor'] / m['adntn']:>10.2f}x {m['eager'] / m['adntn']:>7.2f}x "
                     f"{r['inductor_compile_s']:>15.1f}s {r['adntn_cold_compile_s']:>9.1f}s {warm}")
    lines += [f"openvino failed on {r['case']} batch {r['batch']}: {r['openvino_error']}" for r in rows
              if "openvino_error" in r]
    text = "\n".join(lines)
    print(text)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(rows=rows), indent=1, default=str))
    out.with_suffix(".txt").write_text(text + "\n")


if __name__ == "__main__":
    main()
