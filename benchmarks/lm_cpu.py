"""GPT-2-small layout (12 layers, 768 wide, random weights) on this CPU, --threads (default one): the dense model and
the same with every block's MLP compressed to ADNTN layers (~100x, ~1,000x), sequence 128, batch 1 and 8. The
compiled artifact (saved and loaded back) against torch eager of each model, torch.compile (Inductor) of each model
and ONNX Runtime on the dense model (an optional peer: the benchmark's own step installs `onnx onnxruntime`; absent,
it is skipped with a note). Variants interleaved round after round; medians. Each row's GFLOP/s (flops counted
analytically) against a SGEMM peak measured in the same run (torch.mm, numpy.matmul: 1024^3), and a per-kernel
profile of each compiled model: how far from that peak its GEMMs and its attention run.

    python benchmarks/lm_cpu.py [--ratios 100,1000] [--batches 1,8] [--seq 128] [--threads 1] [--no-inductor]
        [--no-ort] [--quick] [--out benchmarks/results/lm_cpu.json]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path


def arguments(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=12)
    # (None: the default below, or --quick's; a value given with --quick wins)
    ap.add_argument("--seq", type=int, help="default 128 (--quick: 16)")
    ap.add_argument("--batches", help="default 1,8 (--quick: 1)")
    ap.add_argument("--ratios", help="the MLPs' compression ratios; default 100,1000 (--quick: 20)")
    ap.add_argument("--rounds", type=int, help="default 5 (--quick: 1)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-inductor", action="store_true")
    ap.add_argument("--no-ort", action="store_true")
    ap.add_argument("--quick", action="store_true", help="a tiny GPT-2 (1 layer, 64 wide, vocab 100): a smoke run")
    ap.add_argument("--out", default="benchmarks/results/lm_cpu.json")
    return ap.parse_args(argv)


if __name__ == "__main__":  # TVM reads TVM_NUM_THREADS when its thread pool starts: set it before adntn loads
    os.environ["TVM_NUM_THREADS"] = str(arguments().threads)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

import adntn_compiler as adntn  # noqa: E402
from adntn_compiler.apps import models  # noqa: E402

SIZES = dict(n_layer=12, n_embd=768, n_head=12, vocab=50257, n_positions=1024)
QUICK = dict(n_layer=1, n_embd=64, n_head=4, vocab=100, n_positions=1024)
RUN = dict(seq=128, batches="1,8", ratios="100,1000", rounds=5)
QUICK_RUN = dict(seq=16, batches="1", ratios="20", rounds=1)
# what the profile's kernel classes are measured against (the flops they do)
CLASS_FLOPS = {"gemm (dense weights)": "dense", "gemm (ADNTN layers)": "adntn", "gemm (attention)": "attention",
               "attention (gemm + softmax)": "attention"}


def sgemm_rates(threads: int, repeats: int = 20, n: int = 1024) -> dict[str, float]:
    """GFLOP/s of an n x n float32 GEMM by torch.mm (MKL) and numpy.matmul (OpenBLAS, held to `threads` when
    threadpoolctl is there): the core's practical GEMM limit; two libraries, as either may be the weaker here."""
    g = torch.Generator().manual_seed(0)
    a, b, c = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g), torch.empty(n, n)

    def rate(f) -> float:
        ts = []
        for _ in range(repeats + 2):
            s = time.perf_counter()
            f()
            ts.append(time.perf_counter() - s)
        return 2 * n**3 / statistics.median(ts[2:]) / 1e9  # (two warm-up calls dropped)

    out = {"torch.mm": rate(lambda: torch.mm(a, b, out=c))}
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # (numpy's BLAS might use every core: not a one-core figure)
        return out
    an, bn, cn = a.numpy(), b.numpy(), c.numpy()
    with threadpool_limits(limits=threads, user_api="blas"):
        out["numpy.matmul"] = rate(lambda: np.matmul(an, bn, out=cn))
    return out


def model_flops(kw: dict, batch: int, seq: int, exe) -> dict[str, int]:
    """Flops of one forward: the dense weight GEMMs (attention projections, and the MLP where it is dense), the
    ADNTN layers (as their plans count them) and attention's two batched GEMMs (the full T x T, as computed)."""
    rows, d, layers = batch * seq, kw["n_embd"], kw["n_layer"]
    adntn_flops = sum(lay.get("flops_per_call", 0) for lay in exe.manifest["layers"] if lay["kind"] == "adntn")
    dense_mlp = any(lay["kind"] == "dense" and ".mlp." in lay["path"] for lay in exe.manifest["layers"])
    f = dict(dense=2 * rows * layers * (4 * d * d + (8 * d * d if dense_mlp else 0)), adntn=adntn_flops,
             attention=layers * 2 * 2 * batch * kw["n_head"] * seq * seq * (d // kw["n_head"]))
    return dict(f, total=sum(f.values()))


def kernel_class(call: dict, const_tensors: dict[str, str], kinds: dict[str, str]) -> str:
    """What a kernel call does: a GEMM with a weight (by the layer its constant belongs to), attention's GEMMs (no
    weight), or the kernel's kind (softmax, layer_norm, take, add, map: GELU, ...)."""
    kind = re.sub(r"^call_|\d+$", "", call["kernel"])
    if kind == "softmax":
        return "softmax (attention)"
    if kind != "gemm":
        return kind if kind in ("layer_norm", "take", "add", "map") else "other (layout)"
    weights = [const_tensors[b] for b, shape in call["args"] if b in const_tensors and int(np.prod(shape)) > 1]
    for t in weights:  # (scalar constants, e.g. attention's scale, are not weights)
        path = max((p for p in kinds if t.startswith(p + ".")), key=len, default=None)
        if path is not None:
            return "gemm (ADNTN layers)" if kinds[path] == "adntn" else "gemm (dense weights)"
    return "gemm (attention)"


def profile(exe, idsn: np.ndarray, flops: dict, peak: float, repeats: int) -> dict:
    """Seconds per kernel class of the compiled model (kernels timed inside whole runs), and the GFLOP/s and
    fraction of the SGEMM peak of the GEMM classes and of attention (its GEMMs + softmax)."""
    runner = getattr(exe, "_call", None)
    if not hasattr(runner, "profile"):
        return dict(error="this executable's runner has no profile()")
    try:
        timings = runner.profile(*exe.checked_inputs((idsn,)), repeats=repeats)
    except Exception as e:  # (a diagnostic: never lose the timings over it)
        return dict(error=f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}")
    prog = runner.program
    const_tensors = {c["buffer"]: c["tensor"] for c in prog.consts}
    kinds = {lay["path"]: lay["kind"] for lay in exe.manifest["layers"]}
    secs: dict[str, float] = {}
    for call, r in zip(prog.calls, timings):
        k = kernel_class(call, const_tensors, kinds)
        secs[k] = secs.get(k, 0.0) + r["seconds"]
    total = sum(secs.values())
    secs["attention (gemm + softmax)"] = secs.get("gemm (attention)", 0.0) + secs.get("softmax (attention)", 0.0)
    classes = {}
    for k, s in secs.items():
        c = dict(seconds=s, share=s / total)
        if k in CLASS_FLOPS and s > 0 and flops[CLASS_FLOPS[k]]:
            c["gflop_per_s"] = flops[CLASS_FLOPS[k]] / s / 1e9
            c["peak_fraction"] = c["gflop_per_s"] / peak
        classes[k] = c
    return dict(kernel_seconds=total, kernels=len(prog.calls), classes=classes)


def compiled(model, ids, path: Path) -> dict:
    """adntn.compile, then the artifact saved and loaded back (time what ships); its error string where it fails,
    so that the peers of that model are still measured."""
    try:
        s = time.perf_counter()
        exe = adntn.compile(model, example_inputs=(ids,))
        t = time.perf_counter() - s
        exe = adntn.load(exe.save(path))
        idsn = ids.numpy()
        return dict(fn=lambda: exe(idsn), compile_s=t, out=exe(idsn), exe=exe)
    except Exception as e:
        return dict(error=f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}")


def inductor(model, ids) -> dict:
    """torch.compile (default mode, static shapes like ours), warmed up; its error string where it fails."""
    try:
        s = time.perf_counter()
        ind = torch.compile(model, dynamic=False)
        out = ind(ids)
        t = time.perf_counter() - s
        ind(ids)
        return dict(fn=lambda: ind(ids), compile_s=t, out=out.numpy())
    except Exception as e:  # a peer's failure is a result too
        return dict(error=f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}")


def onnxruntime_peer(model, ids, threads: int, path: Path) -> dict:
    """The dense model exported by the TorchScript exporter (dynamo=False, as verified here; needs `onnx`) and run
    by ONNX Runtime's CPU provider at `threads` intra-op threads."""
    import onnxruntime as ort

    s = time.perf_counter()
    try:
        with warnings.catch_warnings():  # (the TorchScript exporter's deprecation notice, on every export)
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(model, (ids,), str(path), dynamo=False, input_names=["input_ids"])
    except Exception as e:
        return dict(error=f"export: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}")
    try:
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        feed = {sess.get_inputs()[0].name: ids.numpy()}
        out = sess.run(None, feed)[0]
    except Exception as e:
        return dict(error=f"session: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}")
    return dict(fn=lambda: sess.run(None, feed), compile_s=time.perf_counter() - s, out=out, version=ort.__version__)


def timed(variants: dict, rounds: int, desc: str) -> dict[str, float]:
    """Medians of `rounds` rounds, each running every variant once, in turn (drift hits them all alike)."""
    ts = {k: [] for k in variants}
    for f in variants.values():
        f()
    for _ in tqdm(range(rounds), desc=desc, leave=False):
        for k, f in variants.items():
            s = time.perf_counter()
            f()
            ts[k].append(time.perf_counter() - s)
    return {k: statistics.median(v) for k, v in ts.items()}


def build_models(kw: dict, ratios: list[float]) -> dict:
    """name -> (model, target ratio); seeded alike, so the dense and compressed models share all but the MLPs."""
    torch.manual_seed(0)
    out = {"dense": (models.gpt2(**kw).eval(), None)}
    for r in ratios:
        out[f"mlp {r:g}x"] = (models.compressed_gpt2(ratio=r, seed=0, **kw).eval(), r)
    return out


def run_batch(a, kw: dict, built: dict, batch: int, peak: float, ort_ok: bool, d: Path) -> tuple[list, list]:
    """Every model and variant at one batch size, interleaved: rows (model, variant) and the compiled profiles."""
    ids = torch.randint(0, kw["vocab"], (batch, a.seq), generator=torch.Generator().manual_seed(batch))
    idsn = ids.numpy()
    variants, meta, profiles = {}, {}, []
    torch._dynamo.reset()  # (the last batch's Inductor graphs are done with: stay under Dynamo's recompile limit)
    for name, (model, ratio) in tqdm(built.items(), desc=f"batch {batch}: compile", leave=False):
        ref = model(ids).numpy()

        def rel(y, ref=ref) -> float:
            return float(np.abs(np.asarray(y) - ref).max() / np.abs(ref).max())

        peers = {"compiled": compiled(model, ids, d / f"{name.replace(' ', '_')}_{batch}.adntn"),
                 "torch eager": dict(fn=lambda model=model: model(ids), compile_s=None, out=ref)}
        exe = peers["compiled"].get("exe")
        flops = model_flops(kw, batch, a.seq, exe) if exe else None  # (the ADNTN layers' flops come from exe)
        lays = [lay for lay in exe.manifest["layers"] if lay["kind"] == "adntn"] if exe else []
        # (the schedule says whether the plan ran the MLP factored or rebuilt W at load and ran it dense)
        base = dict(model=name, target_ratio=ratio, batch=batch, seq=a.seq, flops=flops,
                    mlp_ratio=statistics.mean(lay["ratio"] for lay in lays) if lays else None,
                    mlp_schedules=sorted({lay["schedule"] for lay in lays}),
                    params=sum(p.numel() for p in model.parameters()))
        if not a.no_inductor:
            peers["inductor"] = inductor(model, ids)
        if ratio is None and ort_ok:
            peers["onnxruntime"] = onnxruntime_peer(model, ids, a.threads, d / f"dense_{batch}.onnx")
        for v, p in peers.items():
            meta[(name, v)] = dict(base, variant=v, compile_s=p.get("compile_s"), error=p.get("error"),
                                   max_rel_error=rel(p["out"]) if "out" in p else None)
            if "fn" in p:
                variants[(name, v)] = p["fn"]
        if exe:
            profiles.append(dict(model=name, batch=batch, **profile(exe, idsn, flops, peak, max(3, a.rounds))))
    med = timed(variants, a.rounds, f"batch {batch}: {a.rounds} rounds")
    rows = []
    for key, m in meta.items():
        t = med.get(key)
        gf = m["flops"]["total"] / t / 1e9 if t and m["flops"] else None
        rows.append(dict(m, median_s=t, gflop_per_s=gf, peak_fraction=gf / peak if gf else None))
    return rows, profiles


def table(rows: list, profiles: list, res: dict) -> str:
    peak = res["sgemm_gflop_per_s"]
    each = ", ".join(f"{k} {when} {v:.1f}" for when in ("before", "after") for k, v in res[f"sgemm_{when}"].items())
    lines = [f"{res['config']}, seq {res['seq']}, {res['threads']} thread(s), medians of {res['rounds']} interleaved "
             f"rounds; SGEMM peak (1024^3 float32, same run, the best of {each}) {peak:.1f} GFLOP/s"]
    head = (f"{'model':<10} {'batch':>5} {'variant':<12} {'median ms':>10} {'GFLOP/s':>8} {'% peak':>7} "
            f"{'max rel err':>11} {'compile s':>9}")
    lines += [head, "-" * len(head)]
    for r in rows:
        ms = f"{1e3 * r['median_s']:>10.2f}" if r["median_s"] else f"{'failed':>10}"
        gf = f"{r['gflop_per_s']:>8.1f} {100 * r['peak_fraction']:>6.1f}%" if r["gflop_per_s"] else f"{'-':>8} {'-':>7}"
        err = f"{r['max_rel_error']:>11.1e}" if r["max_rel_error"] is not None else f"{'-':>11}"
        cs = f"{r['compile_s']:>9.1f}" if r["compile_s"] is not None else f"{'-':>9}"
        lines.append(f"{r['model']:<10} {r['batch']:>5} {r['variant']:<12} {ms} {gf} {err} {cs}")
    lines.append("GFLOP/s: the model's flops (weight GEMMs, ADNTN plans, attention's full T x T) / median time, "
                 "the same count for every variant of a model; max rel err: max |y - eager| / max |eager|")
    lines += [f"{r['model']} batch {r['batch']} {r['variant']} failed: {r['error']}" for r in rows if r["error"]]
    bad = [r for r in rows if r["max_rel_error"] is not None and r["max_rel_error"] >= 1e-4]
    lines += [f"WARNING: {r['model']} batch {r['batch']} {r['variant']}: max rel error {r['max_rel_error']:.1e} "
              f">= 1e-4" for r in bad]
    fractions = [r["peak_fraction"] or 0 for r in rows] + [c.get("peak_fraction", 0) for p in profiles
                                                           for c in p.get("classes", {}).values()]
    if max(fractions, default=0) > 1:
        lines.append("a rate above 100% of the peak: that library's GEMM (which the peak measures) is not this core's "
                     "limit; the fractions are relative to it")
    lines += res["notes"]
    lines.append("\nper-kernel profile of the compiled models (kernels timed inside whole runs; GFLOP/s of the classes "
                 "that do the counted flops)")
    for p in profiles:
        if "error" in p:
            lines.append(f"{p['model']} batch {p['batch']}: no profile ({p['error']})")
            continue
        sched = next((r["mlp_schedules"] for r in rows if r["model"] == p["model"] and r["batch"] == p["batch"]), [])
        lines.append(f"{p['model']} batch {p['batch']}: {p['kernels']} kernel calls, {1e3 * p['kernel_seconds']:.2f} "
                     f"ms in kernels" + (f"; ADNTN schedule(s): {', '.join(sched)}" if sched else ""))
        att = "attention (gemm + softmax)"  # (the sum of two classes: last, so the shares above add up to 100%)
        for k, c in sorted(p["classes"].items(), key=lambda kc: (kc[0] == att, -kc[1]["seconds"])):
            rate = (f" {c['gflop_per_s']:>8.1f} GFLOP/s {100 * c['peak_fraction']:>5.1f}% of peak"
                    if "gflop_per_s" in c else "")
            lines.append(f"  {k:<28} {1e3 * c['seconds']:>10.3f} ms {100 * c['share']:>5.1f}%{rate}")
    return "\n".join(lines)


def plot(rows: list, path: Path, group=("model", "batch"), key=("variant",),
         title="GPT-2 layout on CPU: compiled vs torch eager, Inductor, ONNX Runtime") -> str | None:
    """Median latency of every variant (the row fields `key`), in groups of the row fields `group`; None, or a note
    why there is no plot. models_cpu plots with it too."""
    try:
        import matplotlib
    except ImportError:
        return "matplotlib is not installed: no plot"
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(dict.fromkeys(tuple(r[f] for f in group) for r in rows))
    keys = list(dict.fromkeys(tuple(r[f] for f in key) for r in rows))
    med = {(*(r[f] for f in group), *(r[f] for f in key)): r["median_s"] for r in rows if r["median_s"]}
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(groups) + 2), 4.5))
    w = 0.8 / len(keys)
    for i, k in enumerate(keys):
        xs = [j for j, g in enumerate(groups) if (*g, *k) in med]
        ax.bar([j + i * w for j in xs], [1e3 * med[(*groups[j], *k)] for j in xs], w, label=" ".join(map(str, k)))
    ax.set_xticks([j + 0.4 - w / 2 for j in range(len(groups))],
                  ["\n".join(f"{f} {v}" if f != "model" else str(v) for f, v in zip(group, g)) for g in groups],
                  fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("ms per forward (median)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return None


def main(argv=None) -> dict:
    a = arguments(argv)
    kw = dict(QUICK) if a.quick else dict(SIZES, n_layer=a.layers)
    for k, v in (QUICK_RUN if a.quick else RUN).items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    os.environ["TVM_NUM_THREADS"] = str(a.threads)  # (run as a script, already set before adntn was imported)
    torch.set_num_threads(a.threads)
    torch.set_grad_enabled(False)  # inference only: eager, Inductor's graphs and the export all without autograd
    notes = []
    ort_ok = not a.no_ort
    if ort_ok:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            ort_ok = False
            notes.append("onnxruntime is not installed: ONNX Runtime skipped (an optional peer: `pip install onnx "
                         "onnxruntime` in the benchmark's own step, never a dependency)")
    before = sgemm_rates(a.threads)
    built = build_models(kw, [float(r) for r in a.ratios.split(",")])
    rows, profiles = [], []
    with tempfile.TemporaryDirectory(prefix="adntn-lm-") as d:
        for batch in tqdm([int(b) for b in a.batches.split(",")], desc="lm_cpu batches"):
            r, p = run_batch(a, kw, built, batch, max(before.values()), ort_ok, Path(d))
            rows += r
            profiles += p
    after = sgemm_rates(a.threads)
    peak = max(*before.values(), *after.values())  # the best: noise only ever slows a measurement down
    for r in rows:
        r["peak_fraction"] = r["gflop_per_s"] / peak if r["gflop_per_s"] else None
    for p in profiles:
        for c in p.get("classes", {}).values():
            if "gflop_per_s" in c:
                c["peak_fraction"] = c["gflop_per_s"] / peak
    import tvm

    from adntn_compiler.targets import resolve

    config = ("quick: " if a.quick else "") + (f"GPT-2 layout, {kw['n_layer']} layers, {kw['n_embd']} wide, "
                                               f"{kw['n_head']} heads, vocab {kw['vocab']}")
    res = dict(config=config, model=kw, seq=a.seq, threads=a.threads, rounds=a.rounds, sgemm_gflop_per_s=peak,
               sgemm_before=before, sgemm_after=after, notes=notes, torch=torch.__version__, tvm=tvm.__version__,
               python=sys.version.split()[0], target=resolve("cpu").to_dict(), rows=rows, profiles=profiles)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    note = plot(rows, out.with_suffix(".png"))
    if note:
        notes.append(note)
    text = table(rows, profiles, res)
    print(text)
    out.write_text(json.dumps(res, indent=1, default=str))
    out.with_suffix(".txt").write_text(text + "\n")
    return res


if __name__ == "__main__":
    main()
