"""Whole bundled networks on this CPU: each dense model and the same with its big layers compressed to ADNTN layers
(BIG_LAYERS, at RATIOS), 3 x --size x --size inputs (default 224), batch 1 and 8, 1 and 2 threads. The compiled
artifact (saved and loaded back) against torch eager and torch.compile (Inductor) of each model, and ONNX Runtime
and OpenVINO on the dense model (optional peers: the benchmark's own step installs `onnx onnxruntime openvino`;
absent, they are skipped with a note; never dependencies of the package). Variants interleaved round after round;
medians. Each row's GFLOP/s (dense: 2 x the conv/linear multiply-adds, counted by hooks; compressed: the einsum
flops of the compiled call graph) against a SGEMM peak measured in the same run at the same thread count, its max
relative error against torch eager, and the compile time; also the compiled model's time over ONNX Runtime's and
OpenVINO's, and its speed-up from 1 to 2 threads.

    python benchmarks/models_cpu.py [--models resnet18,vgg16_bn,alexnet,mobilenet_v2] [--size 224] [--batches 1,8]
        [--threads 1,2] [--rounds 7] [--no-inductor] [--no-peers] [--quick] [--out benchmarks/results/models_cpu.json]

Each thread count runs in its own process (TVM reads TVM_NUM_THREADS once, when its thread pool starts); the rows
are merged into one JSON, a table (.txt) and a plot (.png) beside it.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

RUN = dict(models="resnet18,vgg16_bn,alexnet,mobilenet_v2", size=224, batches="1,8", threads="1,2", rounds=7)
QUICK_RUN = dict(models="resnet18,mobilenet_v2", size=32, batches="1", threads="1", rounds=1)


def arguments(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # (None: the default in RUN, or --quick's in QUICK_RUN; a value given with --quick wins)
    ap.add_argument("--models", help=f"default {RUN['models']} (--quick: {QUICK_RUN['models']})")
    ap.add_argument("--size", type=int, help="input height and width; default 224 (--quick: 32)")
    ap.add_argument("--batches", help="default 1,8 (--quick: 1)")
    ap.add_argument("--threads", help="default 1,2 (--quick: 1)")
    ap.add_argument("--rounds", type=int, help="default 7 (--quick: 1)")
    ap.add_argument("--no-inductor", action="store_true")
    ap.add_argument("--no-peers", action="store_true", help="no ONNX Runtime, no OpenVINO")
    ap.add_argument("--quick", action="store_true", help="a smoke run: 32 x 32 inputs, batch 1, one thread, 1 round")
    ap.add_argument("--out", default="benchmarks/results/models_cpu.json")
    ap.add_argument("--_one-thread-count", type=int, help=argparse.SUPPRESS)  # (a child: measure at this count)
    a = ap.parse_args(argv)
    for k, v in (QUICK_RUN if a.quick else RUN).items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    return a


if __name__ == "__main__":  # TVM reads TVM_NUM_THREADS when its thread pool starts: set it before adntn loads
    os.environ["TVM_NUM_THREADS"] = str(arguments()._one_thread_count or 1)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from lm_cpu import compiled, inductor, plot, sgemm_rates, timed  # noqa: E402  (benchmarks/, this script's directory)
from tqdm import tqdm  # noqa: E402

from adntn_compiler.apps import models  # noqa: E402
from adntn_compiler.ir.graph import Op  # noqa: E402

RATIOS = {"alexnet": 2000, "vgg16_bn": 2000, "vgg16": 2000, "resnet18": 100, "mobilenet_v2": 100, "vit_block": 200}
PEERS = ("onnxruntime", "openvino")  # (run on the dense model only: the ADNTN custom ops have no ONNX form)


def example(name: str, batch: int, size: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(batch)
    shape = (batch, 197, 768) if name == "vit_block" else (batch, 3, size, size)
    return torch.randn(*shape, generator=g)


def call_flops(exe) -> int:
    """2 x the product of all label sizes of every einsum in the call graph (what the kernels compute; a conv is
    im2col + einsum there)."""
    from adntn_compiler.ir.serialize import from_dict

    g = from_dict(exe.manifest["graphs"]["call"], {k: v for k, v in exe._tensors.items()})
    total = 0
    for n in g.nodes:
        if n.op is Op.EINSUM:
            sizes = {c: s for t, v in zip(n.attrs.terms, n.inputs) for c, s in zip(t, v.shape)}
            total += 2 * math.prod(sizes.values())
    return total


def dense_flops(model: torch.nn.Module, x: torch.Tensor) -> int:
    """2 x the multiply-adds of every nn.Conv2d and nn.Linear in one forward of x (hooks see the shapes as run)."""
    macs = []

    def hook(m, inputs, out) -> None:
        per_output = m.in_channels // m.groups * math.prod(m.kernel_size) if isinstance(m, torch.nn.Conv2d) \
            else m.in_features
        macs.append(out.numel() * per_output)

    kinds = (torch.nn.Conv2d, torch.nn.Linear)
    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, kinds)]
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
    return 2 * sum(macs)


def build(name: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(dense, compressed): the compressed model's dense layers loaded into the dense one, so the two differ only
    in the compressed layers."""
    comp = models.compressed(name, RATIOS[name]).eval()
    torch.manual_seed(0)
    dense = models.BUILDERS[name]().eval()
    dense.load_state_dict({k: v for k, v in comp.state_dict().items() if k in dense.state_dict()}, strict=False)
    return dense, comp


def error(e: Exception, where: str = "") -> dict:
    return dict(error=f"{where}{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}")


def peer_modules(no_peers: bool) -> tuple[dict, list[str]]:
    """The importable peers by name, and a note for each one skipped."""
    if no_peers:
        return {}, ["--no-peers: ONNX Runtime and OpenVINO not run"]
    found, notes = {}, []
    for name in PEERS:
        try:
            found[name] = __import__(name)
        except ImportError:
            notes.append(f"{name} is not installed: skipped (an optional peer: `pip install onnx onnxruntime "
                         f"openvino` in the benchmark's own step, never a dependency)")
    return found, notes


def onnx_export(model, x, path: Path) -> dict:
    """The TorchScript exporter (dynamo=False: what works for these models here), static shapes like ours."""
    s = time.perf_counter()
    try:
        with warnings.catch_warnings():  # (its deprecation notice, on every export)
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(model, (x,), str(path), dynamo=False, input_names=["input"], output_names=["output"])
    except Exception as e:
        return error(e, "export: ")
    return dict(path=path, seconds=time.perf_counter() - s)


def onnxruntime_peer(ort, exported: dict, x, threads: int) -> dict:
    s = time.perf_counter()
    try:
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        sess = ort.InferenceSession(str(exported["path"]), so, providers=["CPUExecutionProvider"])
        feed = {sess.get_inputs()[0].name: x.numpy()}
        out = sess.run(None, feed)[0]
    except Exception as e:
        return error(e, "session: ")
    t = exported["seconds"] + time.perf_counter() - s  # (the export is part of what it takes to get there)
    return dict(fn=lambda: sess.run(None, feed), compile_s=t, out=out)


def openvino_peer(ov, exported: dict, x, threads: int) -> dict:
    """OpenVINO's CPU plugin on the same ONNX file; float32 asked for (else it may run bf16 where the CPU has it)."""
    s = time.perf_counter()
    try:
        core = ov.Core()
        cm = core.compile_model(core.read_model(str(exported["path"])), "CPU", {
            "INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"})
        req, xn = cm.create_infer_request(), x.numpy()
        out = np.array(req.infer({0: xn})[0])
    except Exception as e:
        return error(e, "compile: ")
    return dict(fn=lambda: req.infer({0: xn}), compile_s=exported["seconds"] + time.perf_counter() - s, out=out)


def peers(dense, x, threads: int, found: dict, path: Path) -> dict:
    """variant -> result of the peers on the dense model: one export, shared."""
    if not found:
        return {}
    exported = onnx_export(dense, x, path)
    if "error" in exported:
        return {k: exported for k in found}
    run = {"onnxruntime": onnxruntime_peer, "openvino": openvino_peer}
    return {k: run[k](m, exported, x, threads) for k, m in found.items()}


def run_group(a, threads: int, name: str, built: tuple, flops1: int, batch: int, found: dict, d: Path) -> list:
    """Every variant of the dense and the compressed model at one batch size, interleaved: one row each."""
    x = example(name, batch, a.size)
    torch._dynamo.reset()  # (the last group's Inductor graphs are done with: stay under Dynamo's recompile limit)
    fns, meta, got_exe = {}, {}, {}
    for form, model in zip(("dense", "compressed"), built):
        ref = model(x).numpy()
        got = {"compiled": compiled(model, x, d / f"{name}_{form}_{batch}.adntn"),
               "torch eager": dict(fn=lambda model=model: model(x), compile_s=None)}
        if not a.no_inductor:
            got["inductor"] = inductor(model, x)
        if form == "dense":
            got.update(peers(model, x, threads, found, d / f"{name}_{batch}.onnx"))
        exe = got["compiled"].get("exe")
        got_exe[form] = exe
        flops = flops1 * batch if form == "dense" else call_flops(exe) if exe else None
        base = dict(model=name, form=form, ratio=None if form == "dense" else RATIOS[name], threads=threads,
                    batch=batch, size=a.size, flops=flops, params=sum(p.numel() for p in model.parameters()))
        for v, p in got.items():
            row = dict(base, variant=v, compile_s=p.get("compile_s"), error=p.get("error"), max_rel_error=None)
            if "out" in p:  # (torch eager is the reference)
                row["max_rel_error"] = float(np.abs(np.asarray(p["out"]) - ref).max() / np.abs(ref).max())
            if v == "compiled" and exe:
                mem = exe.info()["memory"]["call"]
                # (the schedules say whether a plan ran its layer factored or rebuilt W at load and ran it dense)
                row.update(arena_bytes=mem["arena_bytes"], unshared_bytes=mem["unshared_bytes"],
                           call_graph_flops=call_flops(exe), adntn_schedules=sorted(
                               {lay["schedule"] for lay in exe.manifest["layers"] if lay["kind"] == "adntn"}))
            meta[(form, v)] = row
            if "fn" in p:
                fns[(form, v)] = p["fn"]
    med = timed(fns, a.rounds, f"{name} batch {batch}, {threads} thread(s): {a.rounds} rounds")
    for form in ("dense", "compressed"):
        if (form, "compiled") in fns:  # where the time goes: what a thread count speeds up, and what it does not
            meta[(form, "compiled")]["kernel_profile"] = kernel_profile(got_exe[form], x)
    if threads > 1:  # the speed-up from one thread, timed here, interleaved: drift between processes cannot fake it
        ups = thread_speedup({form: fns[(form, "compiled")] for form in ("dense", "compressed")
                              if (form, "compiled") in fns}, threads, a.rounds)
        for form, up in ups.items():
            meta[(form, "compiled")]["speedup_interleaved"] = up
    rows = []
    for key, r in meta.items():
        t = med.get(key)
        rows.append(dict(r, median_s=t, gflop_per_s=r["flops"] / t / 1e9 if t and r["flops"] else None))
    return rows


def thread_speedup(fns: dict, threads: int, rounds: int) -> dict[str, float]:
    """Each function's median time at one thread over its time at `threads`, the two alternating call by call in
    this process (TVM's thread pool resized in between: `runtime.config_threadpool`)."""
    import tvm

    pool = tvm.get_global_func("runtime.config_threadpool")
    ts: dict = {(k, n): [] for k in fns for n in (1, threads)}
    try:
        for _ in range(rounds):
            for k, f in fns.items():
                for n in (1, threads):
                    pool(1, n)
                    f()  # (the first call after a resize starts the pool's threads)
                    s = time.perf_counter()
                    f()
                    ts[(k, n)].append(time.perf_counter() - s)
    finally:
        pool(1, threads)
    return {k: statistics.median(ts[(k, 1)]) / statistics.median(ts[(k, threads)]) for k in fns}


def sgemm_speedup(threads: int, rounds: int = 7, n: int = 1024) -> float:
    """torch.mm's 1024^3 SGEMM at one thread over `threads`, alternating in this process: what the machine's cores
    give a compute-bound kernel right now (a second vCPU may share a physical core, or a busy host)."""
    a, b, c = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
    ts: dict[int, list[float]] = {1: [], threads: []}
    before = torch.get_num_threads()
    for _ in range(rounds):
        for k in (1, threads):
            torch.set_num_threads(k)
            torch.mm(a, b, out=c)
            s = time.perf_counter()
            for _ in range(5):
                torch.mm(a, b, out=c)
            ts[k].append(time.perf_counter() - s)
    torch.set_num_threads(before)
    return statistics.median(ts[1]) / statistics.median(ts[threads])


def kernel_profile(exe, x: torch.Tensor, repeats: int = 3) -> dict[str, float]:
    """Seconds per kernel kind of one call (conv, winograd_input, gemm, pool, ...), each kernel timed inside whole
    runs of the program (`ProgramRunner.profile`)."""
    runner = exe._call
    secs: dict[str, float] = {}
    for r in runner.profile(*exe.checked_inputs((x.numpy(),)), repeats=repeats):
        kind = re.sub(r"^call_|\d+$", "", r["kernel"])
        secs[kind] = secs.get(kind, 0.0) + r["seconds"]
    return dict(sorted(secs.items(), key=lambda kv: -kv[1]))


def child(a) -> None:
    """One thread count, in this process: every model, batch and variant; the rows and the SGEMM peak to --out."""
    n = a._one_thread_count
    torch.set_num_threads(n)
    torch.set_grad_enabled(False)  # inference only: eager, Inductor's graphs and the export all without autograd
    found, notes = peer_modules(a.no_peers)
    before = sgemm_rates(n)
    rows = []
    with tempfile.TemporaryDirectory(prefix="adntn-models-") as d:
        for name in tqdm(a.models.split(","), desc=f"models_cpu, {n} thread(s)"):
            built = build(name)
            flops1 = dense_flops(built[0], example(name, 1, a.size))  # (once per model and size: linear in batch)
            for batch in map(int, a.batches.split(",")):
                rows += run_group(a, n, name, built, flops1, batch, found, Path(d))
    after = sgemm_rates(n)
    sgemm_up = sgemm_speedup(n) if n > 1 else None
    peak = max(*before.values(), *after.values())  # the best: noise only ever slows a measurement down
    for r in rows:
        r["peak_fraction"] = r["gflop_per_s"] / peak if r["gflop_per_s"] else None
    versions = {k: getattr(m, "__version__", "?") for k, m in found.items()}
    Path(a.out).write_text(json.dumps(dict(threads=n, sgemm_gflop_per_s=peak, sgemm_speedup=sgemm_up,
                                           sgemm_before=before,
                                           sgemm_after=after, notes=notes, versions=versions, rows=rows), default=str))


def summaries(rows: list) -> tuple[list, list]:
    """(the compiled models' time over ONNX Runtime's and OpenVINO's per (model, threads, batch); the compiled
    models' speed-up from the fewest threads to each other count, per (model, form, batch))."""
    t = {(r["model"], r["form"], r["threads"], r["batch"], r["variant"]): r["median_s"] for r in rows if r["median_s"]}
    vs = []
    for m, th, b in dict.fromkeys((r["model"], r["threads"], r["batch"]) for r in rows):
        ratios = {f"{form} / {peer}": t[(m, form, th, b, "compiled")] / t[(m, "dense", th, b, peer)]
                  for form in ("dense", "compressed") for peer in PEERS
                  if (m, form, th, b, "compiled") in t and (m, "dense", th, b, peer) in t}
        if ratios:
            vs.append(dict(model=m, threads=th, batch=b, time_ratio=ratios))
    scale = []
    counts = sorted({r["threads"] for r in rows})
    for m, form, b in dict.fromkeys((r["model"], r["form"], r["batch"]) for r in rows):
        one = t.get((m, form, counts[0], b, "compiled"))
        up = {n: one / t[(m, form, n, b, "compiled")] for n in counts[1:] if one and (m, form, n, b, "compiled") in t}
        if up:
            scale.append(dict(model=m, form=form, batch=b, base_threads=counts[0], speedup=up))
    return vs, scale


def row_line(r: dict) -> str:
    ms = f"{1e3 * r['median_s']:>10.2f}" if r["median_s"] else f"{'failed':>10}"
    gf = f"{r['gflop_per_s']:>8.1f} {100 * r['peak_fraction']:>6.1f}%" if r["gflop_per_s"] else f"{'-':>8} {'-':>7}"
    err = f"{r['max_rel_error']:>11.1e}" if r["max_rel_error"] is not None else f"{'-':>11}"
    cs = f"{r['compile_s']:>9.1f}" if r["compile_s"] is not None else f"{'-':>9}"
    return f"{r['model']:<12} {r['form']:<10} {r['threads']:>7} {r['batch']:>5} {r['variant']:<11} {ms} {gf} {err} {cs}"


def table(res: dict) -> str:
    rows = res["rows"]
    peaks = ", ".join(f"{n} thread(s) {p:.1f}" for n, p in res["sgemm_gflop_per_s"].items())
    lines = [f"{res['config']}: 3 x {res['size']} x {res['size']} inputs, medians of {res['rounds']} interleaved "
             f"rounds; SGEMM peak (1024^3 float32, same run and thread count, best of torch.mm / numpy.matmul before "
             f"and after) {peaks} GFLOP/s"]
    head = (f"{'model':<12} {'form':<10} {'threads':>7} {'batch':>5} {'variant':<11} {'median ms':>10} {'GFLOP/s':>8} "
            f"{'% peak':>7} {'max rel err':>11} {'compile s':>9}")
    lines += [head, "-" * len(head)] + [row_line(r) for r in rows]
    lines.append("GFLOP/s: dense, 2 x the conv/linear multiply-adds; compressed, the compiled call graph's einsum "
                 "flops; the same count for every variant of a model. max rel err: max |y - eager| / max |eager|")
    lines += [f"{r['model']} {r['form']} {r['threads']} thread(s) batch {r['batch']} {r['variant']} failed: "
              f"{r['error']}" for r in rows if r["error"]]
    lines += [f"WARNING: {r['model']} {r['form']} {r['threads']} thread(s) batch {r['batch']} {r['variant']}: max rel "
              f"error {r['max_rel_error']:.1e} >= 1e-4" for r in rows if (r["max_rel_error"] or 0) >= 1e-4]
    if any((r["peak_fraction"] or 0) > 1 for r in rows):
        lines.append("a rate above 100% of the peak: that library's GEMM (which the peak measures) is not this core's "
                     "limit (or a Winograd/FFT conv does fewer flops than counted); the fractions are relative to it")
    if res["vs_peers"]:
        lines.append("\ncompiled model's median time / the peer's on the dense model (< 1: the compiled one is faster)")
        for s in res["vs_peers"]:
            lines.append(f"  {s['model']:<12} {s['threads']} thread(s) batch {s['batch']:>2}: " +
                         ", ".join(f"{k} {v:.2f}" for k, v in s["time_ratio"].items()))
    if res["thread_speedups"]:
        lines.append("\ncompiled model's speed-up with threads (median time at the fewest threads / at N): across the "
                     "two processes' runs, and interleaved call by call in one process (TVM's pool resized)")
        inter = {(r["model"], r["form"], r["batch"], r["threads"]): r["speedup_interleaved"] for r in rows
                 if r.get("speedup_interleaved")}
        for s in res["thread_speedups"]:
            lines.append(f"  {s['model']:<12} {s['form']:<10} batch {s['batch']:>2}: " + ", ".join(
                f"{n} threads / {s['base_threads']}: {v:.2f}x" + (
                    f" (interleaved {inter[(s['model'], s['form'], s['batch'], n)]:.2f}x)"
                    if (s['model'], s['form'], s['batch'], n) in inter else "") for n, v in s["speedup"].items()))
        if res.get("sgemm_speedup"):
            lines.append("  the machine's ceiling, a 1024^3 SGEMM (torch.mm) interleaved the same way: " + ", ".join(
                f"{n} threads / 1: {v:.2f}x" for n, v in res["sgemm_speedup"].items()))
    lines += profile_lines(rows)
    lines += res["notes"]
    return "\n".join(lines)


def profile_lines(rows: list) -> list[str]:
    """The compiled dense model's time per kernel kind at each thread count, and each kind's speed-up."""
    prof = {(r["model"], r["batch"], r["threads"]): r["kernel_profile"] for r in rows
            if r["variant"] == "compiled" and r["form"] == "dense" and r.get("kernel_profile")}
    counts = sorted({k[2] for k in prof})
    if not prof:
        return []
    lines = ["\ncompiled dense model, ms per kernel kind (kernels timed inside whole runs)" +
             (f"; speed-up {counts[-1]} threads / {counts[0]}" if len(counts) > 1 else "")]
    for m, b in dict.fromkeys((k[0], k[1]) for k in prof):
        base = prof.get((m, b, counts[0]), {})
        parts = []
        for kind, s in list(base.items())[:6]:
            ms = " / ".join(f"{1e3 * prof[(m, b, n)].get(kind, 0):.1f}" for n in counts if (m, b, n) in prof)
            last = prof.get((m, b, counts[-1]), {}).get(kind)
            parts.append(f"{kind} {ms}" + (f" ({s / last:.2f}x)" if len(counts) > 1 and last else ""))
        lines.append(f"  {m:<12} batch {b:>2}: " + ", ".join(parts))
    return lines


def parent(a) -> dict:
    """One child process per thread count (each with its own TVM thread pool), merged: JSON, table and plot."""
    parts, notes = [], []
    with tempfile.TemporaryDirectory(prefix="adntn-models-cpu-") as d:
        for n in map(int, a.threads.split(",")):
            part = Path(d) / f"threads_{n}.json"
            cmd = [sys.executable, str(Path(__file__).resolve()), "--_one-thread-count", str(n), "--models", a.models,
                   "--size", str(a.size), "--batches", a.batches, "--rounds", str(a.rounds), "--out", str(part)]
            cmd += [f for f, on in (("--no-inductor", a.no_inductor), ("--no-peers", a.no_peers)) if on]
            rc = subprocess.run(cmd, env=dict(os.environ, TVM_NUM_THREADS=str(n))).returncode
            if rc or not part.is_file():
                notes.append(f"{n} thread(s): its run failed (exit {rc}): no rows")
                continue
            parts.append(json.loads(part.read_text()))
    if not parts:
        raise SystemExit("no thread count's run finished: " + "; ".join(notes))
    rows = [r for p in parts for r in p["rows"]]
    vs, scale = summaries(rows)
    import tvm

    from adntn_compiler.targets import resolve

    res = dict(config=("quick: " if a.quick else "") + f"models {a.models}", size=a.size, threads=a.threads,
               rounds=a.rounds, sgemm_gflop_per_s={p["threads"]: p["sgemm_gflop_per_s"] for p in parts},
               sgemm={p["threads"]: dict(before=p["sgemm_before"], after=p["sgemm_after"]) for p in parts},
               sgemm_speedup={p["threads"]: p["sgemm_speedup"] for p in parts if p.get("sgemm_speedup")},
               notes=list(dict.fromkeys(notes + [x for p in parts for x in p["notes"]])),
               peers=parts[0]["versions"], torch=torch.__version__, tvm=tvm.__version__,
               python=sys.version.split()[0], target=resolve("cpu").to_dict(), rows=rows, vs_peers=vs,
               thread_speedups=scale)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    note = plot(rows, out.with_suffix(".png"), ("model", "threads", "batch"), ("form", "variant"),
                "bundled networks on CPU: the compiled artifact against torch eager, Inductor,\nand ONNX Runtime and "
                "OpenVINO on the dense model")
    if note:
        res["notes"].append(note)
    text = table(res)
    print(text)
    out.write_text(json.dumps(res, indent=1, default=str))
    out.with_suffix(".txt").write_text(text + "\n")
    return res


def main(argv=None) -> dict | None:
    a = arguments(argv)
    if a._one_thread_count:
        return child(a)
    return parent(a)


if __name__ == "__main__":
    main()
