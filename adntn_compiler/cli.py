"""`adntn` command line."""
from __future__ import annotations

import argparse
import json
import sys


def _count(minimum: int):
    """An argparse type: an integer of at least `minimum` (argparse then says what was wrong, rc 2)."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if v < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {v}")
        return v
    return parse


def _duration(text: str) -> float:
    """An argparse type: seconds, from "300", "90s", "5m" or "1h"."""
    unit = {"s": 1, "m": 60, "h": 3600}.get(text[-1:].lower())
    try:
        v = float(text[:-1] if unit else text) * (unit or 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (e.g. 300, 90s, 5m, 1h)") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
    return v


def main(argv: list[str] | None = None) -> int:
    """Every user error is one line `adntn: error: ...` with rc 2; --debug shows the traceback instead."""
    from .errors import AdntnError

    p = argparse.ArgumentParser(prog="adntn", description="Compiler for ADNTN weight generators")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="compress the bundled VGG-16-BN, compile it whole, run it without torch, check it")
    d.add_argument("--batch", type=_count(1), default=4)
    d.add_argument("--out", default="build/vgg16_bn.adntn", help="where the compiled artifact goes")
    d.add_argument("--repeats", type=_count(1), default=20, help="timed calls per latency measurement")
    t = sub.add_parser("table", help="configurations of ttn/attn/mera for the AlexNet/VGG-16 layers at target ratios")
    t.add_argument("--json", action="store_true")
    from .generators import ARCHS

    t.add_argument("--arch", nargs="+", default=["ttn", "attn", "mera"], choices=sorted(ARCHS))
    e = sub.add_parser("explain", help="steps, flops and memory of each schedule of a generator or a model's layers")
    e.add_argument("arch", nargs="?", help="generator architecture (ttn, attn, mera, ...)")
    e.add_argument("--shape", type=int, nargs="+", help="O I, or Cout Cin kh kw")
    e.add_argument("--model", help="module:function returning a compressed torch model (explains each ADNTN layer)")
    e.add_argument("--batch", type=_count(1), default=1)
    e.add_argument("--budget", default=None, help="memory budget: bytes or a size like 64MiB")
    e.add_argument("--json", action="store_true")
    e.add_argument("--backward", action="store_true",
                   help="also show a training step (forward + backward) with and without recomputation")
    e.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="generator options, e.g. rank=4 layout=interleaved activation=tanh")
    c = sub.add_parser("compile", help="compile a model (save_model file or module:function) to a .adntn artifact")
    c.add_argument("model", help="a file written by adntn.save_model, or module:function returning a model")
    c.add_argument("-o", "--output", required=True, help="artifact path (.adntn)")
    c.add_argument("--target", default="cpu")
    c.add_argument("--batch-size", type=_count(1), default=1)
    c.add_argument("--schedule", default="auto", choices=["auto", "materialize", "factored", "stream", "recompute"])
    c.add_argument("--input-shape", type=int, nargs="+", help="per-sample input shape (needed when a model "
                   "starts with a conv layer), e.g. 3 32 32")
    c.add_argument("--ram", help="board RAM budget of an embedded target, e.g. 256KiB (arena + workspace)")
    c.add_argument("--flash", help="board flash budget of an embedded target, e.g. 1MiB (weights)")
    u = sub.add_parser("tune", help="measure each ADNTN layer's schedules, contraction trees and GEMM tiles on this "
                                    "machine, keep the winners (per device), compile the tuned model to an artifact")
    u.add_argument("model", help="a file written by adntn.save_model, or module:function returning a model")
    u.add_argument("-o", "--output", required=True, help="artifact path (.adntn) of the tuned model")
    u.add_argument("--budget", type=_duration, default=300.0, help="tuning time, e.g. 5m, 90s, 1h (default 5m)")
    u.add_argument("--target", default="cpu")
    u.add_argument("--batch-size", type=_count(1), default=1)
    u.add_argument("--input-shape", type=int, nargs="+", help="per-sample input shape (as for compile)")
    u.add_argument("--sign", metavar="KEY", help="sign with this private key (default: yours)")
    r = sub.add_parser("run", help="run an artifact on a .npy input (needs numpy and the TVM runtime, not torch), "
                                   "or a C bundle under its emulator (qemu)")
    r.add_argument("artifact")
    r.add_argument("--input", help=".npy file of the compiled input shape (default: random normal)")
    r.add_argument("--output", help="write the result here (.npy)")
    r.add_argument("--repeats", type=_count(0), default=0, help="time this many calls and print the median")
    r.add_argument("--check", action="store_true", help="compare with the reference interpreter (float64)")
    r.add_argument("--instructions", action="store_true", help="a C bundle: count the instructions one inference "
                                                                 "executes (qemu, exact)")
    r.add_argument("--json", action="store_true")
    r.add_argument("--no-torch", action="store_true", help="make `import torch` fail first (proves the run needs none)")
    r.add_argument("--trust", action="append", default=[], metavar="KEY.pub", help="also trust this signer's key")
    r.add_argument("--allow-unsigned", action="store_true", help="load an unsigned or untrusted artifact (warns)")
    c.add_argument("--sign", metavar="KEY", help="sign with this private key (default: yours, made on first use)")
    i = sub.add_parser("info", help="what an artifact or C bundle holds: target, shapes, layers, kernels, memory "
                                    "(never loads or builds its code; --build: a bundle's linked sizes)")
    i.add_argument("artifact")
    i.add_argument("--json", action="store_true")
    i.add_argument("--build", action="store_true", help="a C bundle: build it (cross toolchain, in a sandbox) to "
                                                         "report its linked sizes; without it nothing is built")
    i.add_argument("--trust", action="append", default=[], metavar="KEY.pub", help="also trust this signer's key")
    i.add_argument("--allow-unsigned", action="store_true", help="a C bundle: read an unsigned or untrusted one")
    k = sub.add_parser("keygen", help="make an Ed25519 signing key pair (signing.key, signing.pub)")
    k.add_argument("--out", help="folder for the pair (default: $ADNTN_HOME, your own key)")
    tr = sub.add_parser("trust", help="trust artifacts signed by this public key (a signing.pub file)")
    tr.add_argument("public_key")
    v = sub.add_parser("verify", help="check an artifact's checksums and signature without loading its code")
    v.add_argument("artifact")
    v.add_argument("--trust", action="append", default=[], metavar="KEY.pub")
    a = p.parse_args(argv)
    try:
        return _dispatch(a)
    except (AdntnError, OSError) as err:  # bad input or a file that cannot be read or written
        if a.debug:
            raise
        print(f"adntn: error: {err}", file=sys.stderr)
        return 2


def _dispatch(a) -> int:
    cmds = {"compile": compile_cmd, "run": run_cmd, "info": info_cmd, "keygen": keygen_cmd, "trust": trust_cmd,
            "verify": verify_cmd, "explain": explain, "tune": tune_cmd}
    if a.cmd in cmds:
        return cmds[a.cmd](a)
    if a.cmd == "demo":
        from .apps.demo import main as demo

        return demo(a.batch, a.out, a.repeats)
    from .apps.demo import compression_table, format_table

    rows = compression_table(tuple(a.arch))
    print(json.dumps(rows, indent=1, default=str) if a.json else format_table(rows))
    return 0


def _budget(text: str) -> int:
    from .memory import parse_bytes

    return parse_bytes(int(text) if text.isdigit() else text, "--budget")


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def load_model(spec: str):
    """`module:function` -> the model that function returns."""
    import importlib

    from .errors import ConfigError

    module, _, fn = spec.partition(":")
    if not fn:
        raise ConfigError(f"--model must be module:function, got {spec!r}")
    try:
        return getattr(importlib.import_module(module), fn)()
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"cannot load model {spec!r}: {e}") from None


def resolve_model(spec: str):
    """A save_model file, or module:function."""
    from pathlib import Path

    from .errors import ConfigError

    if Path(spec).exists():
        from .training.modelio import load_model as load_file

        return load_file(spec)
    if ":" in spec:
        return load_model(spec)
    raise ConfigError(f"model {spec!r} is neither an existing file (adntn.save_model) nor module:function")


def compile_cmd(a) -> int:
    import time
    from pathlib import Path

    from .errors import ConfigError
    from .stages import compile as compile_model
    from .targets import resolve

    target = resolve(a.target)
    bundle = target.runtime == "c-bundle"
    if Path(a.output).is_dir() and not bundle:  # before any work
        raise ConfigError(f"-o {a.output} is a folder; give the artifact's file name")
    t = time.perf_counter()
    model = resolve_model(a.model)
    exe = compile_model(model, target=target, batch_size=a.batch_size, schedule=a.schedule,
                        input_shape=tuple(a.input_shape) if a.input_shape else None, progress=True,
                        ram_bytes=a.ram, flash_bytes=a.flash)
    if bundle:
        path = exe.save(a.output)
        m = exe.manifest["memory"]
        print(f"compiled {a.model} for {target.describe()} in {time.perf_counter() - t:.1f} s: C bundle, "
              f"{len(exe.manifest['kernels'])} kernels, {exe.manifest['calls']} calls, RAM {m['ram_bytes']:,} bytes "
              f"(arena {m['arena_bytes']:,} + workspace {m['workspace_bytes']:,}), weights {m['weight_bytes']:,} bytes")
        print(f"wrote {path}/ (build it with `make -C {path}`; run it here with `adntn run {path}`)")
        return 0
    path = exe.save(a.output, signing_key=a.sign)
    info = exe.info()
    print(f"compiled {a.model} for {a.target} ({exe.target.describe()}) in {time.perf_counter() - t:.1f} s: "
          f"{len(info['kernels'])} kernels, input {tuple(info['input_shape'])} -> output {tuple(info['output_shape'])}")
    print(f"wrote {path} ({path.stat().st_size:,} bytes)")
    return 0


def tune_cmd(a) -> int:
    import time

    from .stages import compile as compile_model
    from .targets import resolve
    from .tuning import tune

    target = resolve(a.target)
    model = resolve_model(a.model)
    shape = tuple(a.input_shape) if a.input_shape else None
    t = time.perf_counter()
    recs = tune(model, target, a.batch_size, a.budget, input_shape=shape)
    print(f"tuned {a.model} for {target.name} at batch {a.batch_size} in {time.perf_counter() - t:.1f} s "
          f"(device {recs.device_id}; records in {_records_file(recs)})")
    exe = compile_model(model, target=target, batch_size=a.batch_size, input_shape=shape, records=recs)
    for lay in exe.manifest["layers"]:
        if "tuned" in lay:
            tu = lay["tuned"]
            print(f"  {lay['path']:<14} {lay['schedule']:<11} default {1e3 * tu['default_s']:.3f} ms -> tuned "
                  f"{1e3 * tu['tuned_s']:.3f} ms ({tu['gain']:.2f}x)")
    if recs.rates:
        print(f"  calibrated cost model: {recs.rates['flop_rate'] / 1e9:.1f} GFLOP/s, "
              f"{recs.rates['byte_rate'] / 1e9:.1f} GB/s")
    path = exe.save(a.output, signing_key=a.sign)
    print(f"wrote {path} ({path.stat().st_size:,} bytes)")
    return 0


def _records_file(recs) -> str:
    from .tuning import records_dir

    return str(records_dir() / f"{recs.device_id}.json")


def run_cmd(a) -> int:
    import numpy as np

    from .errors import ConfigError
    from .runtime.artifact import load as load_artifact
    from .runtime.bundle import Bundle, is_bundle
    from .runtime.timing import median_time

    if a.no_torch:
        block_torch()
    bundle = is_bundle(a.artifact)
    exe = (Bundle.load if bundle else load_artifact)(a.artifact, trusted_keys=a.trust, allow_unsigned=a.allow_unsigned)
    if bundle and (a.check or a.repeats):
        raise ConfigError(f"{'--check' if a.check else '--repeats'} does not apply to a C bundle: it carries no "
                          f"reference graphs, and emulated time means nothing (use --instructions)")
    if a.instructions and not bundle:
        raise ConfigError("--instructions counts the instructions of a C bundle under qemu; this is an artifact")
    if a.input:
        try:
            x = np.load(a.input, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise ConfigError(f"cannot read input {a.input!r} as a .npy array: {e}") from None
    else:
        x = np.random.default_rng(0).standard_normal(exe.input_shape).astype(np.float32)
    y = exe(x)
    out = {"input_shape": list(x.shape), "output_shape": list(y.shape)}
    if a.instructions:
        out["instructions"] = exe.instructions(x)
    if a.output:
        from pathlib import Path

        if not Path(a.output).parent.is_dir():
            raise ConfigError(f"--output {a.output}: the folder {Path(a.output).parent} does not exist")
        np.save(a.output, y)
    if a.repeats:
        out["median_s"] = median_time(lambda: exe(x), a.repeats, warmup=0)  # the call above warmed it up
    if a.check:
        ref = exe.reference(x)
        out["max_abs_error"] = float(np.abs(y - ref).max())
        out["max_rel_error"] = float(np.abs(y - ref).max() / max(np.abs(ref).max(), 1e-30))
    out["torch_imported"] = "torch" in sys.modules
    if a.json:
        print(json.dumps(out))
    else:
        print(f"ran {a.artifact}: input {tuple(x.shape)} -> output {tuple(y.shape)}"
              + (f", wrote {a.output}" if a.output else ""))
        if "instructions" in out:
            print(f"  {out['instructions']:,} instructions per inference on the emulated {exe.target.name}")
        if "median_s" in out:
            print(f"  median latency {1e3 * out['median_s']:.3f} ms over {a.repeats} calls")
        if "max_abs_error" in out:
            print(f"  against the reference interpreter: max abs error {out['max_abs_error']:.2e}, "
                  f"max relative error {out['max_rel_error']:.2e}")
    return 0


class _NoTorch:
    """A meta-path finder that makes every `import torch...` fail."""

    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError(f"import of {name} blocked (adntn run --no-torch)")
        return None


def block_torch() -> None:
    if "torch" in sys.modules:
        raise RuntimeError("torch is already imported")
    sys.meta_path.insert(0, _NoTorch())


def info_cmd(a) -> int:
    from .runtime.artifact import inspect
    from .runtime.bundle import is_bundle

    if is_bundle(a.artifact):
        return _bundle_info(a)
    info = inspect(a.artifact)  # the manifest only: the library is never loaded to look at it
    if a.json:
        print(json.dumps(info, indent=1))
        return 0
    print(f"{a.artifact}: {info['format']} v{info['version']} (adntn {info['adntn_version']}, tvm {info['tvm_version']})")
    t = info["target"]
    print(f"  target {t['name']}: {t['device']} {t['arch']}, {t['lanes']} float32 lanes, TVM {t['tvm']}; "
          f"needs {', '.join(t['isa']) or 'no ISA extensions'}")
    if "gpu" in info:
        print("  " + _gpu_line(info["gpu"]))
    print(f"  batch {info['batch_size']}, input {tuple(info['input_shape'])} -> output {tuple(info['output_shape'])}, "
          f"{info['tensor_params']:,} stored parameters, library {info['library_bytes']:,} bytes, "
          f"{len(info['kernels'])} kernels")
    print(f"  signed by {info['signer'] or 'nobody'}"
          + (" (trusted here)" if info["signed_by_trusted_key"] else " (NOT trusted here)" if info["signer"] else ""))
    for name, mem in info["memory"].items():
        print(f"  {name} program: arena {mem['arena_bytes']:,} bytes (without reuse {mem['unshared_bytes']:,}), "
              f"constants {mem['const_bytes']:,} bytes")
    if "tuning" in info:
        print("  " + _tuning_line(info["tuning"]))
    for lay in info["layers"]:
        if lay["kind"].startswith("adntn"):
            tu = lay.get("tuned")
            print(f"  {lay['path']:<14} {lay['generator']}  {lay['ratio']:,.0f}x, {lay['params']:,} params, "
                  f"schedule {lay['schedule']}{' + bias' if lay.get('bias') else ''}"
                  + (f", tuned: {tu['gain']:.2f}x over the default ({1e3 * tu['tuned_s']:.3f} ms)" if tu else ""))
        elif "shape" in lay:
            print(f"  {lay['path']:<14} {lay['kind']} {tuple(lay['shape'])}")
        else:
            print(f"  {lay['path']:<14} {lay['kind']} {lay.get('fn', lay.get('into', ''))}")
    return 0


def _tuning_line(t: dict) -> str:
    """Which device the artifact was tuned on, and whether that is this machine (its fingerprint here)."""
    from .errors import AdntnError
    from .tuning import Records

    try:
        why = Records(t["fingerprint"]).mismatch(t["fingerprint"]["target"]["name"])
    except (AdntnError, KeyError, TypeError) as e:  # a target this build does not know, say
        why = str(e)
    where = "this machine" if why is None else f"another device ({why}); recompile here to use this device's records"
    return f"tuned on device {t['device']}: {t['layers']} layer(s) from tuning records; tuned for {where}"


def _gpu_line(g: dict) -> str:
    if g["api"] == "opencl":
        return f"GPU: OpenCL C, {g['kernels']} kernels ({g['launches']} device launches), built at load time"
    px = (g.get("ptxas") or {}).values()
    return (f"GPU: CUDA {g['arch']} cubin (nvcc {g.get('cuda_version')}), {g['kernels']} kernels; ptxas: at most "
            f"{max((r['registers'] for r in px), default=0)} registers and {max((r['smem'] for r in px), default=0):,} "
            f"bytes of shared memory per kernel, {sum(r['spill_stores'] + r['spill_loads'] for r in px)} bytes spilled")


def _bundle_info(a) -> int:
    from .errors import ConfigError
    from .runtime.bundle import Bundle

    b = Bundle.load(a.artifact, trusted_keys=a.trust, allow_unsigned=a.allow_unsigned)
    info = b.info()
    info["size"], info["size_unavailable"] = None, "not built; pass --build to build it and read its linked sizes"
    if a.build:
        try:
            info["size"] = b.size()
        except ConfigError as e:  # no cross toolchain here: the estimate only
            info["size_unavailable"] = str(e)
    if a.json:
        print(json.dumps(info, indent=1))
        return 0
    t, m = info["target"], info["memory"]
    print(f"{a.artifact}: {info['format']} v{info['version']}, target {t['name']} ({t['device']} {t['arch']}, "
          f"TVM {t['tvm']})")
    print(f"  batch {info['batch_size']}, input {tuple(info['input_shape'])} -> output {tuple(info['output_shape'])}, "
          f"{len(info['kernels'])} kernels, {info['calls']} calls")
    print(f"  estimate: RAM {m['ram_bytes']:,} bytes (arena {m['arena_bytes']:,}, without reuse {m['unshared_bytes']:,}; "
          f"workspace {m['workspace_bytes']:,}), weights {m['weight_bytes']:,} bytes (flash)")
    budget = info["budget"] or {}
    if budget.get("ram_bytes") or budget.get("flash_bytes"):
        print(f"  board budget: RAM {budget.get('ram_bytes') or 'any'}, flash {budget.get('flash_bytes') or 'any'}")
    sz = info["size"]
    if sz:
        print(f"  linked (libadntn_model.a): flash {sz['model_flash_bytes']:,} bytes (weights {m['weight_bytes']:,} + "
              f"code {sz['code_bytes']:,}), RAM {sz['model_ram_bytes']:,} bytes; test program: flash "
              f"{sz['program_flash_bytes']:,}, RAM {sz['program_ram_bytes']:,} (static, without stack and heap)")
    else:
        print(f"  linked sizes: unavailable ({info['size_unavailable']})")
    for lay in info["layers"]:
        if lay["kind"].startswith("adntn"):
            print(f"  {lay['path']:<14} {lay['generator']}  {lay['ratio']:,.0f}x, {lay['params']:,} params, "
                  f"schedule {lay['schedule']}")
    return 0


def keygen_cmd(a) -> int:
    from .runtime import signing

    key, pub = signing.keygen(a.out or signing.home())
    print(f"wrote {key} (private, mode 0600) and {pub} (public key {signing.fingerprint(pub.read_text().strip())});"
          f" others trust your artifacts with: adntn trust {pub}")
    return 0


def trust_cmd(a) -> int:
    from .runtime import signing

    path = signing.trust(a.public_key)
    print(f"trusted key {path.stem}: artifacts it signs now load here ({path})")
    return 0


def verify_cmd(a) -> int:
    """Checksums of every member and the signature; nothing is loaded or run."""
    from .runtime import signing
    from .runtime.artifact import check_signature, read_checked, read_manifest

    m, mbytes, z = read_manifest(a.artifact)
    with z:
        pub = check_signature(a.artifact, z, mbytes, a.trust)
        read_checked(a.artifact, z, m)
    print(f"{a.artifact}: checksums match; signed by trusted key {signing.fingerprint(pub)}")
    return 0


def explain(a) -> int:
    from .errors import ConfigError

    if a.model:
        from .nn.layers import _ADNTNBase

        gens = [(name, m.gen) for name, m in load_model(a.model).named_modules() if isinstance(m, _ADNTNBase)]
        if not gens:
            raise ConfigError(f"model {a.model!r} has no ADNTN layers")
    elif a.arch and a.shape:
        from . import make

        sets = [kv.split("=", 1) for kv in a.set]
        if any(len(kv) != 2 for kv in sets):
            raise ConfigError(f"--set takes KEY=VALUE pairs, got {a.set}")
        gens = [("", make(a.arch, a.shape, **{k: _value(v) for k, v in sets}))]
    else:
        raise ConfigError("explain needs ARCH --shape ... or --model module:function")
    reports = [_explain_one(name, gen, a) for name, gen in gens]
    if a.json:
        print(json.dumps(reports if a.model else reports[0], indent=1, default=list))
    return 0


def _explain_one(layer: str, gen, a) -> dict:
    from .memory import fmt_bytes
    from .plan import SCHEDULES, plan

    plans = {s: plan(gen, a.batch, s) for s in SCHEDULES}
    chosen = plan(gen, a.batch, "auto", None if a.budget is None else _budget(a.budget)).schedule
    train = None
    if a.backward:
        from .plan import training_costs

        train = training_costs(gen, a.batch)
    if a.json:
        return {"layer": layer, **({"backward": train} if train else {}), "generator": repr(gen), "ratio": gen.compression_ratio, "auto": chosen,
                "schedules": {s: {**p.summary(), "steps": [vars(st) for st in p.steps]} for s, p in plans.items()}}
    print(f"{'layer ' + layer + ': ' if layer else ''}{gen!r}\n  {gen.num_params:,} parameters, "
          f"{gen.compression_ratio:,.0f}x, batch {a.batch}")
    for s, p in plans.items() if not a.model else ():
        print(f"\n== {s}{'  (auto picks this)' if s == chosen else ''}")
        print(f"  {'where':<5} {'equation':<40} {'flops':>12} {'output':>12}  path")
        for st in p.steps:
            eq = st.equation if len(st.equation) <= 40 else st.equation[:37] + "..."
            print(f"  {st.where:<5} {eq:<40} {st.flops:>12.3g} {str(st.shape):>12}  {st.path}")
    print(f"\n{'schedule':<12} {'flops/call':>12} {'bytes/call':>12} {'load flops':>12} {'resident':>12} "
          f"{'peak/call':>12}")
    for s, p in plans.items():
        print(f"{s:<12} {p.flops_per_call:>12.3g} {fmt_bytes(p.bytes_per_call):>12} {p.load_flops:>12.3g} "
              f"{fmt_bytes(p.resident_bytes):>12} "
              f"{fmt_bytes(p.peak_bytes):>12}{'  <- auto' if s == chosen else ''}")
    if train:
        print(f"\ntraining step (forward + backward), batch {a.batch}:")
        for k, c in train.items():
            print(f"  {k:<10} {c['flops']:>12.3g} flops  peak {fmt_bytes(c['peak_bytes']):>12}  ({c['nodes']} nodes)")
    print()
    return {}


if __name__ == "__main__":
    sys.exit(main())
