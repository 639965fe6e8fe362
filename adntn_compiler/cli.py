"""`adntn` command line."""
from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="adntn", description="Compiler for ADNTN weight generators")
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="compress the bundled VGG-16 head, print the tables and check correctness")
    d.add_argument("--batch", type=int, default=4)
    t = sub.add_parser("table", help="configurations of ttn/attn/mera for the AlexNet/VGG-16 layers at target ratios")
    t.add_argument("--json", action="store_true")
    t.add_argument("--arch", nargs="+", default=["ttn", "attn", "mera"])
    e = sub.add_parser("explain", help="steps, flops and memory of each schedule of a generator or a model's layers")
    e.add_argument("arch", nargs="?", help="generator architecture (ttn, attn, mera, ...)")
    e.add_argument("--shape", type=int, nargs="+", help="O I, or Cout Cin kh kw")
    e.add_argument("--model", help="module:function returning a compressed torch model (explains each ADNTN layer)")
    e.add_argument("--batch", type=int, default=1)
    e.add_argument("--budget", type=float, default=None, help="memory budget in bytes")
    e.add_argument("--json", action="store_true")
    e.add_argument("--backward", action="store_true",
                   help="also show a training step (forward + backward) with and without recomputation")
    e.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="generator options, e.g. rank=4 layout=interleaved activation=tanh")
    a = p.parse_args(argv)
    if a.cmd == "explain":
        return explain(a)
    if a.cmd == "demo":
        from .demo import main as demo

        return demo(a.batch)
    if a.cmd == "table":
        from .demo import compression_table, format_table

        rows = compression_table(tuple(a.arch))
        print(json.dumps(rows, indent=1, default=str) if a.json else format_table(rows))
        return 0
    return 2


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


def explain(a) -> int:
    from .errors import AdntnError, ConfigError

    try:
        if a.model:
            from .nn import _ADNTNBase

            gens = [(name, m.gen) for name, m in load_model(a.model).named_modules() if isinstance(m, _ADNTNBase)]
            if not gens:
                raise ConfigError(f"model {a.model!r} has no ADNTN layers")
        elif a.arch and a.shape:
            from . import make

            gens = [("", make(a.arch, a.shape, **{k: _value(v) for k, v in (kv.split("=", 1) for kv in a.set)}))]
        else:
            raise ConfigError("explain needs ARCH --shape ... or --model module:function")
        reports = [_explain_one(name, gen, a) for name, gen in gens]
    except AdntnError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if a.json:
        print(json.dumps(reports if a.model else reports[0], indent=1, default=list))
    return 0


def _explain_one(layer: str, gen, a) -> dict:
    from .memory import fmt_bytes
    from .plan import SCHEDULES, plan

    plans = {s: plan(gen, a.batch, s) for s in SCHEDULES}
    chosen = plan(gen, a.batch, "auto", None if a.budget is None else int(a.budget)).schedule
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
