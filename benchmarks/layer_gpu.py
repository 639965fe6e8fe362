"""The VGG-16 FC6 ADNTN layer (~18,000x) and the compressed VGG-16 head on a GPU at batch 1/32/256, one run,
variants interleaved: our compiled artifact (numpy `x` in, `y` out: the upload and download are counted) against
torch dense on cuBLAS, the ADNTN layer in torch eager and under torch.compile (their `x` already on the device).

    python benchmarks/layer_gpu.py --build DIR [--target cuda:sm_90]  # compile the artifacts (TVM + nvcc, no GPU)
    python benchmarks/layer_gpu.py --run DIR [--out ...json]          # time them on the GPU (needs no TVM)
    python benchmarks/layer_gpu.py --target opencl                    # both at once on an OpenCL device

The lent GPU machines cannot install TVM (its wheel is larger than what may travel), so the artifacts are built
here and run there; `scripts/gpu_check.sh` does that. Writes the table (.txt) and JSON.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import adntn_compiler as adntn

BATCHES = (1, 32, 256)


def fc6():
    return adntn.ttn((4096, 25088), rank=4, layout="interleaved", activation="tanh", seed=0)


def head():
    from adntn_compiler.apps.models import compressed_vgg16_head

    return compressed_vgg16_head().eval()


CASES = {"fc6": fc6, "vgg16_head": head}


def checks():
    """Small models whose GPU runs the `gpu` tests compare with the reference interpreter: (name, model, example x)."""
    import torch
    from torch import nn

    from adntn_compiler.apps.models import compressed_vit_block

    torch.manual_seed(0)
    conv = nn.Sequential(adntn.ADNTNConv2d(adntn.ttn((6, 3, 3, 3), rank=2, seed=1), padding=1), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Conv2d(6, 4, 2), nn.Flatten(), nn.Linear(36, 5)).eval()
    rng = np.random.default_rng(0)
    return [("ttn_gelu", adntn.ttn((256, 512), rank=4, activation="gelu", seed=3), rng.standard_normal((32, 512))),
            ("mera_tanh", adntn.mera((64, 128), rank=3, activation="tanh", seed=1), rng.standard_normal((8, 128))),
            ("convnet", conv, rng.standard_normal((2, 3, 8, 8))),
            ("vit_block", compressed_vit_block(ratio=20, dim=48, heads=4).eval(), rng.standard_normal((2, 5, 48)))]


def build_checks(folder: Path, target: str) -> list[dict]:
    import torch

    out = []
    for name, obj, x in checks():
        x = x.astype(np.float32)
        exe = adntn.compile(obj, target=target, example_inputs=(torch.from_numpy(x),)) if isinstance(
            obj, torch.nn.Module) else adntn.compile(obj, target=target, batch_size=x.shape[0])
        exe.save(folder / f"check_{name}.adntn")
        np.save(folder / f"check_{name}.npy", x)
        out.append(dict(name=name, file=f"check_{name}.adntn", x=f"check_{name}.npy"))
    return out


def build(folder: Path, target: str, batches) -> dict:
    from tqdm import tqdm

    from adntn_compiler.runtime import signing

    folder.mkdir(parents=True, exist_ok=True)
    cases = []
    for name, make in CASES.items():
        obj = make()
        for b in tqdm(batches, desc=f"compile {name} for {target}"):
            t = time.perf_counter()
            exe = adntn.compile(obj, target=target, batch_size=b, input_shape=None if name == "fc6" else (25088,))
            seconds = time.perf_counter() - t
            path = exe.save(folder / f"{name}_b{b}.adntn")
            flops = sum(lay.get("flops_per_call") or 2 * b * int(np.prod(lay.get("shape", (0,))))
                        for lay in exe.info()["layers"] if lay["kind"].startswith(("adntn", "linear")))
            cases.append(dict(name=name, batch=b, file=path.name, compile_s=seconds, flops=int(flops),
                              gpu=exe.manifest.get("gpu")))
    payload = dict(target=target, signer=signing.public_hex(signing.default_key()), cases=cases,
                   checks=build_checks(folder, target))
    (folder / "payload.json").write_text(json.dumps(payload, indent=1))
    return payload


def _torch_variants(name: str, b: int, device: str):
    """torch dense (cuBLAS on a GPU), the ADNTN model in eager torch and under torch.compile, on `device`."""
    import torch

    from adntn_compiler.apps.models import vgg16_head

    dense = torch.nn.Linear(25088, 4096, bias=False) if name == "fc6" else vgg16_head()
    model = adntn.ADNTNLinear(fc6(), bias=False) if name == "fc6" else head()
    dense, model = dense.to(device).eval(), model.to(device).eval()
    out = {"torch dense": dense, "torch eager adntn": model}
    try:
        out["torch.compile adntn"] = torch.compile(model)
    except Exception as e:  # recorded, not fatal: the table says why
        out["torch.compile adntn"] = e
    return out


def run(folder: Path, repeats: int) -> dict:
    import torch

    payload = json.loads((folder / "payload.json").read_text())
    device = "cuda" if payload["target"].startswith("cuda") else "cpu"
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    rows = []
    for case in payload["cases"]:
        exe = adntn.load(folder / case["file"], trusted_keys=[payload["signer"]])
        x = np.random.default_rng(0).standard_normal(exe.input_shape).astype(np.float32)
        err = float(np.abs(exe(x) - exe.reference(x)).max() / np.abs(exe.reference(x)).max())
        xt = torch.from_numpy(x).to(device)
        variants = {"compiled (ours)": lambda: exe(x)}
        notes = {}
        with torch.no_grad():
            for k, m in _torch_variants(case["name"], case["batch"], device).items():
                try:
                    if isinstance(m, Exception):
                        raise m
                    m(xt)  # warm-up (torch.compile compiles here)
                    sync()
                    variants[k] = (lambda m=m: (m(xt), sync()))
                except Exception as e:
                    notes[k] = f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
            for f in variants.values():
                f()
            times = {k: [] for k in variants}
            for _ in range(repeats):  # interleaved: every variant once per round
                for k, f in variants.items():
                    t = time.perf_counter()
                    f()
                    times[k].append(time.perf_counter() - t)
        med = {k: statistics.median(v) for k, v in times.items()}
        ours = med["compiled (ours)"]
        rows.append(dict(case=case["name"], batch=case["batch"], medians_s=med, notes=notes, rel_err=err,
                         flops=case["flops"], compiled_gflops=case["flops"] / ours / 1e9,
                         speedup_vs={k: v / ours for k, v in med.items() if k != "compiled (ours)"},
                         compile_s=case["compile_s"]))
    return dict(target=payload["target"], device=_device_name(device), torch=torch.__version__, repeats=repeats,
                rows=rows)


def _device_name(device: str) -> str:
    if device == "cuda":
        import torch

        return torch.cuda.get_device_name(0)
    import platform

    return f"OpenCL on {platform.processor() or platform.machine()} (torch on the CPU)"


def table(result: dict) -> str:
    names = ["compiled (ours)", "torch dense", "torch eager adntn", "torch.compile adntn"]
    lines = [f"{result['target']} on {result['device']}, torch {result['torch']}, medians of {result['repeats']} "
             f"interleaved rounds (ms; ratios = variant time / ours)",
             f"{'case':<11} {'batch':>5} " + " ".join(f"{n:>20}" for n in names) + f" {'GFLOP/s':>9} {'rel err':>8}"]
    for r in result["rows"]:
        cells = []
        for n in names:
            t = r["medians_s"].get(n)
            cells.append(f"{'n/a':>20}" if t is None else f"{1e3 * t:>11.3f} ({r['speedup_vs'].get(n, 1.0):>5.1f}x)")
        lines.append(f"{r['case']:<11} {r['batch']:>5} " + " ".join(cells) +
                     f" {r['compiled_gflops']:>9.1f} {r['rel_err']:>8.1e}")
        for k, why in r["notes"].items():
            lines.append(f"{'':<17} {k}: {why}")
    return "\n".join(lines)


def main(argv=None) -> dict | None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", type=Path, help="compile the artifacts into this folder")
    ap.add_argument("--run", type=Path, help="time the artifacts in this folder")
    ap.add_argument("--target", default="cuda:sm_90")
    ap.add_argument("--batches", type=int, nargs="+", default=list(BATCHES))
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/layer_gpu.json"))
    a = ap.parse_args(argv)
    if a.build:
        build(a.build, a.target, a.batches)
        if not a.run:
            return None
    with tempfile.TemporaryDirectory() as d:
        folder = a.run or Path(d)
        if not a.run:
            build(folder, a.target, a.batches)
        result = run(folder, a.repeats)
    text = table(result)
    print(text)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1))
    a.out.with_suffix(".txt").write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
