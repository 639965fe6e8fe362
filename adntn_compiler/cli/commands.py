"""The work of each `adntn` command: `cmd_<name>(args) -> exit status`; what they print is in `render`."""
from __future__ import annotations

import json
import sys

from . import render


def cmd_demo(a) -> int:
    from ..apps.demo import main as demo

    return demo(a.batch, a.out, a.repeats)


def cmd_table(a) -> int:
    from ..apps.demo import compression_table, format_table

    rows = compression_table(tuple(a.arch))
    print(json.dumps(rows, indent=1, default=str) if a.json else format_table(rows))
    return 0


def _budget(text: str) -> int:
    from ..memory import parse_bytes

    return parse_bytes(int(text) if text.isdigit() else text, "--budget")


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def load_model(spec: str):
    """`module:function` -> the model that function returns."""
    import importlib

    from ..errors import ConfigError

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

    from ..errors import ConfigError

    if Path(spec).exists():
        from ..training.modelio import load_model as load_file

        return load_file(spec)
    if ":" in spec:
        return load_model(spec)
    raise ConfigError(f"model {spec!r} is neither an existing file (adntn.save_model) nor module:function")


def cmd_compile(a) -> int:
    import time
    from pathlib import Path

    from ..errors import ConfigError
    from ..stages import compile as compile_model
    from ..targets import resolve

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


def cmd_tune(a) -> int:
    import time

    from ..errors import ConfigError
    from ..stages import compile as compile_model
    from ..targets import resolve
    from ..tuning import tune

    target = resolve(a.target)
    model = resolve_model(a.model)
    shape = tuple(a.input_shape) if a.input_shape else None
    runner = a.runner
    if runner == "qemu" and (a.ram or a.flash):
        from ..tuning.emulated import QemuRunner

        runner = QemuRunner(a.ram, a.flash)
    elif a.ram or a.flash:
        raise ConfigError("--ram and --flash are a board's budget for --runner qemu")
    t = time.perf_counter()
    recs = tune(model, target, a.batch_size, a.budget, input_shape=shape, runner=runner)
    print(f"tuned {a.model} for {target.name} at batch {a.batch_size} in {time.perf_counter() - t:.1f} s "
          f"(device {recs.device_id}; records in {_records_file(recs)})")
    exe = compile_model(model, target=target, batch_size=a.batch_size, input_shape=shape, records=recs,
                        ram_bytes=a.ram, flash_bytes=a.flash)
    gains = render.tuned_layers(exe.manifest["layers"], recs.rates, recs.unit, recs.program)
    if gains:
        print(gains)
    path = exe.save(a.output, signing_key=a.sign)
    print(f"wrote {path} ({path.stat().st_size:,} bytes)")
    return 0


def cmd_rpc_server(a) -> int:
    from ..tuning.server import serve

    serve(a.tracker, a.key, a.host, a.port, a.port_end, a.silent)
    return 0


def _records_file(recs) -> str:
    from ..tuning import records_dir

    return str(records_dir() / f"{recs.device_id}.json")


def cmd_run(a) -> int:
    import numpy as np

    from ..errors import ConfigError
    from ..runtime.artifact import load as load_artifact
    from ..runtime.bundle import Bundle, is_bundle
    from ..runtime.timing import median_time

    if a.no_torch:
        block_torch()
    bundle = is_bundle(a.artifact)
    exe = (Bundle.load if bundle else load_artifact)(a.artifact, trusted_keys=a.trust, allow_unsigned=a.allow_unsigned)
    if bundle and (a.check or a.repeats):
        raise ConfigError(f"{'--check' if a.check else '--repeats'} does not apply to a C bundle: it carries no "
                          f"reference graphs, and emulated time means nothing (use --instructions)")
    if a.instructions and not bundle:
        raise ConfigError("--instructions counts the instructions of a C bundle under qemu; this is an artifact")
    xs = _run_inputs(exe, a.input or [])
    y = exe(*xs)
    ys = y if isinstance(y, tuple) else (y,)
    out = {"input_shape": list(xs[0].shape), "output_shape": list(ys[0].shape),
           "inputs": [list(x.shape) for x in xs], "outputs": [list(v.shape) for v in ys]}
    if a.instructions:
        out["instructions"] = exe.instructions(*xs)
    if a.output:
        from pathlib import Path

        if not Path(a.output).parent.is_dir():
            raise ConfigError(f"--output {a.output}: the folder {Path(a.output).parent} does not exist")
        if len(ys) == 1:
            np.save(a.output, ys[0])
        else:
            np.savez(a.output, **{o["name"]: v for o, v in zip(exe.outputs, ys)})
    if a.repeats:
        out["median_s"] = median_time(lambda: exe(*xs), a.repeats, warmup=0)  # the call above warmed it up
    if a.check:
        refs = exe.reference(*xs)
        refs = refs if isinstance(refs, tuple) else (refs,)
        out["max_abs_error"] = max(float(np.abs(v - r).max()) for v, r in zip(ys, refs))
        out["max_rel_error"] = max(float(np.abs(v - r).max() / max(np.abs(r).max(), 1e-30)) for v, r in zip(ys, refs))
    out["torch_imported"] = "torch" in sys.modules
    if a.json:
        print(json.dumps(out))
    else:  # only a C bundle counts instructions, and only it is asked for its target here
        print(render.run_report(a.artifact, out, output=a.output, repeats=a.repeats,
                                target=exe.target.name if "instructions" in out else None))
    return 0


def _run_inputs(exe, paths: list[str]) -> list:
    """The arrays `adntn run` feeds: the --input files, one per model input; with none, random ones (normal
    floats; token ids in their table; other integers 1, as an all-ones mask)."""
    import numpy as np

    from ..errors import ConfigError

    if paths and len(paths) != len(exe.inputs):
        raise ConfigError(f"the model takes {len(exe.inputs)} inputs ({', '.join(i['name'] for i in exe.inputs)}); "
                          f"got {len(paths)} --input file(s)")
    xs = []
    for k, spec in enumerate(exe.inputs):
        if paths:
            try:
                xs.append(np.load(paths[k], allow_pickle=False))
            except (OSError, ValueError) as e:
                raise ConfigError(f"cannot read input {paths[k]!r} as a .npy array: {e}") from None
            continue
        rng = np.random.default_rng(k)
        if spec["dtype"] == "int64":
            xs.append(rng.integers(0, spec["rows"], spec["shape"]) if "rows" in spec else np.ones(spec["shape"], int))
        else:
            xs.append(rng.standard_normal(spec["shape"]).astype(np.float32))
    return xs


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


def cmd_info(a) -> int:
    from ..runtime.artifact import inspect
    from ..runtime.bundle import is_bundle

    if is_bundle(a.artifact):
        return _bundle_info(a)
    info = inspect(a.artifact)  # the manifest only: the library is never loaded to look at it
    if a.json:
        print(json.dumps(info, indent=1))
        return 0
    mismatch = _tuning_mismatch(info["tuning"]) if "tuning" in info else None
    print(render.artifact_info(a.artifact, info, mismatch))
    return 0


def _tuning_mismatch(t: dict) -> str | None:
    """Why this machine is not the device the artifact was tuned on (its fingerprint here), or None if it is."""
    from ..errors import AdntnError
    from ..tuning import Records

    try:
        return Records(t["fingerprint"]).mismatch(t["fingerprint"]["target"]["name"])
    except (AdntnError, KeyError, TypeError) as e:  # a target this build does not know, say
        return str(e)


def _bundle_info(a) -> int:
    from ..errors import ConfigError
    from ..runtime.bundle import Bundle

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
    print(render.bundle_info(a.artifact, info))
    return 0


def cmd_keygen(a) -> int:
    from ..runtime import signing

    key, pub = signing.keygen(a.out or signing.home())
    print(f"wrote {key} (private, mode 0600) and {pub} (public key {signing.fingerprint(pub.read_text().strip())});"
          f" others trust your artifacts with: adntn trust {pub}")
    return 0


def cmd_trust(a) -> int:
    from ..runtime import signing

    path = signing.trust(a.public_key)
    print(f"trusted key {path.stem}: artifacts it signs now load here ({path})")
    return 0


def cmd_verify(a) -> int:
    """Checksums of every member and the signature; nothing is loaded or run."""
    from ..runtime import signing
    from ..runtime.artifact import check_signature, read_checked, read_manifest

    m, mbytes, z = read_manifest(a.artifact)
    with z:
        pub = check_signature(a.artifact, z, mbytes, a.trust)
        read_checked(a.artifact, z, m)
    print(f"{a.artifact}: checksums match; signed by trusted key {signing.fingerprint(pub)}")
    return 0


def cmd_explain(a) -> int:
    from ..errors import ConfigError

    if a.model:
        from ..nn.layers import _ADNTNBase

        gens = [(name, m.gen) for name, m in load_model(a.model).named_modules() if isinstance(m, _ADNTNBase)]
        if not gens:
            raise ConfigError(f"model {a.model!r} has no ADNTN layers")
    elif a.arch and a.shape:
        from .. import make

        sets = [kv.split("=", 1) for kv in a.set]
        if any(len(kv) != 2 for kv in sets):
            raise ConfigError(f"--set takes KEY=VALUE pairs, got {a.set}")
        gens = [("", make(a.arch, a.shape, **{k: _value(v) for k, v in sets}))]
    else:
        raise ConfigError("explain needs ARCH --shape ... or --model module:function")
    reports = []
    for name, gen in gens:
        reports.append(_explain_one(name, gen, a))
        if not a.json:  # each layer as soon as it is planned
            print(render.explain(reports[-1], gen.num_params, a.batch, steps=not a.model))
    if a.json:
        print(json.dumps(reports if a.model else reports[0], indent=1, default=list))
    return 0


def _explain_one(layer: str, gen, a) -> dict:
    from ..plan import SCHEDULES, plan

    plans = {s: plan(gen, a.batch, s) for s in SCHEDULES}
    chosen = plan(gen, a.batch, "auto", None if a.budget is None else _budget(a.budget)).schedule
    train = None
    if a.backward:
        from ..plan import training_costs

        train = training_costs(gen, a.batch)
    return {"layer": layer, **({"backward": train} if train else {}), "generator": repr(gen),
            "ratio": gen.compression_ratio, "auto": chosen,
            "schedules": {s: {**p.summary(), "steps": [vars(st) for st in p.steps]} for s, p in plans.items()}}
