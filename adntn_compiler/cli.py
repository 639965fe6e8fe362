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
    a = p.parse_args(argv)
    if a.cmd == "demo":
        from .demo import main as demo

        return demo(a.batch)
    if a.cmd == "table":
        from .demo import compression_table, format_table

        rows = compression_table(tuple(a.arch))
        print(json.dumps(rows, indent=1, default=str) if a.json else format_table(rows))
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
