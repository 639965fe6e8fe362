"""Autotuning on this CPU, one thread: the VGG-16 FC6 layer as a rank-4 TTN (~18,000x) at batch 1/32/256 and
the compressed VGG-16-BN (64x64 inputs), untuned (`compile(records=None)`) against tuned (`adntn.tune`, then
`compile(records=...)`), with torch dense, torch eager (our plan; and naive: W generated each call, then a
matmul), torch.compile (Inductor) of our plan, and
TensorLy-Torch's block-TT layer at equal parameters (eager and torch.compile) as the peer. Every variant is
timed round after round, interleaved (this VM drifts); medians. Also the tuning time per layer, what tuning
chose, the calibrated rates, and how far the tuned layer is from this core's flop limit (a large one-thread
torch GEMM).

    pip install --no-deps tensorly tensorly-torch   # the peer, in the benchmark's environment only
    python benchmarks/tune.py [--budget 90] [--batches 1 32 256] [--model-batches 1 8] [--rounds 7]
Writes benchmarks/results/tune.{json,txt,png}.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ["TVM_NUM_THREADS"] = "1"  # before the TVM runtime starts its pool; the records are keyed by it
os.environ.setdefault("ADNTN_TUNING", tempfile.mkdtemp(prefix="adntn-bench-tuning-"))  # not the user's records

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

import adntn_compiler as adntn  # noqa: E402
from adntn_compiler.apps import models  # noqa: E402


def block_tt(params: int, seed: int = 0):
    """TensorLy-Torch's block-TT FC6 (25088 -> 4096) with the rank whose parameter count is nearest `params`;
    its factors re-initialised so that W has the variance of a dense layer's init: tltorch's default init (and
    its `weight.normal_`) gives outputs of std ~6e-8 for unit inputs, a numeric range no trained layer has."""
    import tltorch

    best = None
    for r in range(1, 65):
        m = tltorch.FactorizedLinear((8, 8, 8, 7, 7), (8, 8, 8, 8, 1), bias=False, factorization="blocktt", rank=r)
        n = sum(p.numel() for p in m.parameters())
        if best is None or abs(n - params) < abs(best[1] - params):
            best = (r, n)
        if n > 2 * params:
            break
    torch.manual_seed(seed)
    m = tltorch.FactorizedLinear((8, 8, 8, 7, 7), (8, 8, 8, 8, 1), bias=False, factorization="blocktt", rank=best[0])
    factors = m.weight.factors
    bonds = math.prod(f.shape[0] for f in factors[1:])  # the rank paths summed in every element of W
    with torch.no_grad():  # Var W = bonds * s^(2 x cores) = 1 / fan_in
        for f in factors:
            f.normal_(0, (1 / 25088 / bonds) ** (1 / (2 * len(factors))))
    return m.eval(), best[0], best[1]


def interleaved(variants: dict, rounds: int) -> dict:
    """Median seconds per variant; each round calls every variant (medians of a few calls), in turn."""
    for f in variants.values():
        f()
    times = {k: [] for k in variants}
    for _ in range(rounds):
        for k, f in variants.items():
            n, ts = 0, []
            while n < 3 or (sum(ts) < 0.05 and n < 50):
                s = time.perf_counter()
                f()
                ts.append(time.perf_counter() - s)
                n += 1
            times[k].append(statistics.median(ts))
    return {k: statistics.median(v) for k, v in times.items()}


def flop_limit() -> float:
    """This core's practical float32 flop rate: a 2048^3 one-thread torch GEMM (oneDNN/MKL)."""
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    t = interleaved({"gemm": lambda: a @ b}, 5)["gemm"]
    return 2 * 2048 ** 3 / t


def layer_rows(a, bar) -> tuple[list[dict], dict]:
    gen = adntn.ttn((4096, 25088), rank=4, layout="interleaved", activation="tanh", seed=0)
    layer = adntn.ADNTNLinear(gen, bias=False).eval()
    dense = torch.nn.Linear(25088, 4096, bias=False).eval()
    peer, peer_rank, peer_params = block_tt(gen.num_params)
    peer_c = torch.compile(peer, dynamic=False)
    rows, records = [], None
    for b in a.batches:
        bar.set_description(f"fc6 batch {b}: tuning")
        t = time.perf_counter()
        records = adntn.tune(gen, batch_size=b, budget_s=a.budget, progress=False)
        tuning_s = time.perf_counter() - t
        rec = next(r for r in records.layers.values() if r["rows"] == b and r["generator"] == repr(gen))
        bar.set_description(f"fc6 batch {b}: compiling")
        untuned = adntn.compile(gen, batch_size=b, records=None)
        tuned = adntn.compile(gen, batch_size=b, records=records)
        with tempfile.TemporaryDirectory() as d:  # time what ships
            untuned, tuned = (adntn.load(e.save(Path(d) / f"{k}.adntn")) for k, e in (("u", untuned), ("t", tuned)))
        x = torch.randn(b, 25088, generator=torch.Generator().manual_seed(b))
        xn = x.numpy()
        p = adntn.plan(gen, batch_size=b)
        eager = p.torch_callable(torch.float32)
        inductor = torch.compile(eager, dynamic=False)
        with torch.no_grad():
            ref = x.double() @ torch.from_numpy(adntn.materialize(gen).reshape(4096, 25088)).T
            err = {k: float(np.linalg.norm(f(xn) - ref.numpy()) / np.linalg.norm(ref.numpy()))
                   for k, f in (("untuned", untuned), ("tuned", tuned))}
            bar.set_description(f"fc6 batch {b}: timing")
            med = interleaved({"untuned": lambda: untuned(xn), "tuned": lambda: tuned(xn), "dense": lambda: dense(x),
                               "eager": lambda: eager(x),
                               "naive": lambda: torch.nn.functional.linear(x, layer.weight),
                               "torch.compile": lambda: inductor(x),
                               "block-TT": lambda: peer(x), "block-TT torch.compile": lambda: peer_c(x)}, a.rounds)
        best_peer = min(med["block-TT"], med["block-TT torch.compile"])
        flops = tuned.manifest["layers"][0]["flops_per_call"]
        rows.append(dict(batch=b, median_s=med, tuned_vs_untuned=med["untuned"] / med["tuned"],
                         tuned_vs_peer=best_peer / med["tuned"], tuned_vs_dense=med["dense"] / med["tuned"],
                         default=tuned.manifest["layers"][0].get("tuned", {}), choice=rec["choice"],
                         tiles=rec["tiles"], candidates=rec["candidates"], layer_tuning_s=rec["tuning_s"],
                         tune_call_s=tuning_s, rel_error=err, flops_per_call=flops,
                         gflop_per_s=flops / med["tuned"] / 1e9, trials=rec.get("trials")))
        bar.update()
    facts = dict(generator=repr(gen), params=gen.num_params, ratio=gen.compression_ratio, peer_rank=peer_rank,
                 peer_params=peer_params, rates=records.rates if records else None,
                 device=records.device_id if records else None)
    return rows, facts


def model_rows(a, bar) -> list[dict]:
    comp = models.compressed_vgg16_bn(2000).eval()
    rows = []
    for b in a.model_batches:
        x = torch.randn(b, 3, 64, 64, generator=torch.Generator().manual_seed(0))
        bar.set_description(f"vgg16_bn batch {b}: tuning")
        t = time.perf_counter()
        recs = adntn.tune(comp, batch_size=b, budget_s=a.model_budget, example_inputs=(x,), progress=False)
        tuning_s = time.perf_counter() - t
        bar.set_description(f"vgg16_bn batch {b}: compiling")
        untuned = adntn.compile(comp, example_inputs=(x,), records=None)
        tuned = adntn.compile(comp, example_inputs=(x,), records=recs)
        xn = x.numpy()
        with torch.no_grad():
            ref = comp(x).numpy()
            err = float(np.abs(tuned(xn) - ref).max() / np.abs(ref).max())
            bar.set_description(f"vgg16_bn batch {b}: timing")
            med = interleaved({"untuned": lambda: untuned(xn), "tuned": lambda: tuned(xn),
                               "eager (compressed)": lambda: comp(x)}, a.rounds)
        layers = [dict(path=lay["path"], schedule=lay["schedule"], **lay.get("tuned", {}))
                  for lay in tuned.manifest["layers"] if lay["kind"] == "adntn"]
        rows.append(dict(batch=b, median_s=med, tuned_vs_untuned=med["untuned"] / med["tuned"], rel_error=err,
                         tune_call_s=tuning_s, layers=layers))
        bar.update()
    return rows


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ["untuned", "tuned", "block-TT", "block-TT torch.compile", "eager", "torch.compile", "dense"]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    w = 0.8 / len(keys)
    for i, k in enumerate(keys):
        ax.bar([j + i * w for j in range(len(rows))], [1e3 * r["median_s"][k] for r in rows], w, label=k)
    ax.set_xticks([j + 0.4 - w / 2 for j in range(len(rows))], [f"batch {r['batch']}" for r in rows])
    ax.set_yscale("log")
    ax.set_ylabel("ms per call (median, 1 thread)")
    ax.set_title("VGG-16 FC6 as a rank-4 TTN: untuned vs tuned vs TensorLy-Torch block-TT (equal params)")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=90.0, help="tuning seconds per FC6 batch size")
    ap.add_argument("--model-budget", type=float, default=120.0, help="tuning seconds per VGG-16-BN batch size")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32, 256])
    ap.add_argument("--model-batches", type=int, nargs="*", default=[1, 8])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--out", default="benchmarks/results/tune.json")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    with tqdm(total=len(a.batches) + len(a.model_batches), desc="tune benchmark") as bar:
        peak = flop_limit()
        rows, facts = layer_rows(a, bar)
        mrows = model_rows(a, bar) if a.model_batches else []
    lines = [f"{facts['generator']}: {facts['ratio']:,.0f}x, {facts['params']:,} params; block-TT rank "
             f"{facts['peer_rank']}, {facts['peer_params']:,} params. One thread, medians of {a.rounds} interleaved "
             f"rounds (ms). Flop limit (1-thread torch GEMM): {peak / 1e9:.1f} GFLOP/s",
             f"{'batch':>5} {'untuned':>9} {'tuned':>9} {'tuned/unt':>9} {'block-TT':>9} {'bTT comp':>9} "
             f"{'vs peer':>8} {'eager':>9} {'naive':>9} {'t.compile':>9} {'dense':>9} {'GFLOP/s':>8} {'of limit':>8} "
             f"{'tuning s':>8}  choice"]
    for r in rows:
        m = r["median_s"]
        lines.append(f"{r['batch']:>5} {1e3 * m['untuned']:>9.3f} {1e3 * m['tuned']:>9.3f} "
                     f"{r['tuned_vs_untuned']:>8.2f}x {1e3 * m['block-TT']:>9.3f} "
                     f"{1e3 * m['block-TT torch.compile']:>9.3f} {r['tuned_vs_peer']:>7.2f}x {1e3 * m['eager']:>9.3f} "
                     f"{1e3 * m['naive']:>9.2f} "
                     f"{1e3 * m['torch.compile']:>9.3f} {1e3 * m['dense']:>9.2f} {r['gflop_per_s']:>8.1f} "
                     f"{r['gflop_per_s'] * 1e9 / peak:>7.0%} {r['layer_tuning_s']:>8.1f}  "
                     f"{r['choice']['schedule']}/{r['choice']['objective']}/tree{r['choice']['tree']}"
                     f"{' +%d tiles' % len(r['tiles']) if r['tiles'] else ''} ({r['candidates']} candidates)")
    if facts["rates"]:
        lines.append(f"calibrated cost model of this device: {facts['rates']['flop_rate'] / 1e9:.1f} GFLOP/s, "
                     f"{facts['rates']['byte_rate'] / 1e9:.1f} GB/s, overhead "
                     f"{1e6 * facts['rates'].get('overhead_s', 0):.1f} us (nominal: 50 GFLOP/s, 10 GB/s)")
    for r in mrows:
        m = r["median_s"]
        lines.append(f"compressed vgg16_bn batch {r['batch']} (64x64): untuned {1e3 * m['untuned']:.2f} ms, tuned "
                     f"{1e3 * m['tuned']:.2f} ms ({r['tuned_vs_untuned']:.2f}x), torch eager "
                     f"{1e3 * m['eager (compressed)']:.2f} ms; tuning {r['tune_call_s']:.0f} s; layers "
                     + ", ".join(f"{lay['path']} {lay['schedule']}"
                                 + (f" {lay['gain']:.2f}x" if "gain" in lay else "") for lay in r["layers"]))
    text = "\n".join(lines)
    print(text)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from adntn_compiler.targets import resolve

    result = dict(facts, flop_limit=peak, rows=rows, model_rows=mrows, rounds=a.rounds, budget_s=a.budget,
                  target=resolve("cpu").to_dict(), torch=torch.__version__)
    out.write_text(json.dumps(result, indent=1, default=str))
    out.with_suffix(".txt").write_text(text + "\n")
    plot(rows, out.with_suffix(".png"))
    return result


if __name__ == "__main__":
    main()
