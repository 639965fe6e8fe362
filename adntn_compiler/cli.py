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
    e = sub.add_parser("explain", help="steps, flops and memory of each schedule of a generator")
    e.add_argument("arch")
    e.add_argument("--shape", type=int, nargs="+", required=True, help="O I, or Cout Cin kh kw")
    e.add_argument("--batch", type=int, default=1)
    e.add_argument("--budget", type=float, default=None, help="memory budget in bytes")
    e.add_argument("--json", action="store_true")
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


def explain(a) -> int:
    from . import make
    from .errors import AdntnError
    from .memory import fmt_bytes
    from .plan import SCHEDULES, plan

    try:
        gen = make(a.arch, a.shape, **{k: _value(v) for k, v in (kv.split("=", 1) for kv in a.set)})
        plans = {s: plan(gen, a.batch, s) for s in SCHEDULES}
        chosen = plan(gen, a.batch, "auto", None if a.budget is None else int(a.budget)).schedule
    except AdntnError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if a.json:
        out = {"generator": repr(gen), "ratio": gen.compression_ratio, "auto": chosen,
               "schedules": {s: {**p.summary(), "steps": [vars(st) for st in p.steps]} for s, p in plans.items()}}
        print(json.dumps(out, indent=1, default=list))
        return 0
    print(f"{gen!r}\n  {gen.num_params:,} parameters, {gen.compression_ratio:,.0f}x, batch {a.batch}")
    for s, p in plans.items():
        print(f"\n== {s}{'  (auto picks this)' if s == chosen else ''}")
        print(f"  {'where':<5} {'equation':<40} {'flops':>12} {'output':>12}  path")
        for st in p.steps:
            eq = st.equation if len(st.equation) <= 40 else st.equation[:37] + "..."
            print(f"  {st.where:<5} {eq:<40} {st.flops:>12.3g} {str(st.shape):>12}  {st.path}")
    print(f"\n{'schedule':<12} {'flops/call':>12} {'load flops':>12} {'resident':>12} {'peak/call':>12}")
    for s, p in plans.items():
        print(f"{s:<12} {p.flops_per_call:>12.3g} {p.load_flops:>12.3g} {fmt_bytes(p.resident_bytes):>12} "
              f"{fmt_bytes(p.peak_bytes):>12}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
