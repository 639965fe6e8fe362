"""`adntn` command line: the parser; each command's work is in `commands`, its text in `render`."""
from __future__ import annotations

import argparse
import sys

from ..errors import AdntnError
from . import commands
from .commands import block_torch, load_model, resolve_model

__all__ = ["at_least", "block_torch", "build_parser", "load_model", "main", "positive", "resolve_model"]


def main(argv: list[str] | None = None) -> int:
    """Every user error is one line `adntn: error: ...` with rc 2; --debug shows the traceback instead."""
    a = build_parser().parse_args(argv)
    try:
        return a.func(a)
    except (AdntnError, OSError) as err:  # bad input or a file that cannot be read or written
        if a.debug:
            raise
        print(f"adntn: error: {err}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="adntn", description="Compiler for ADNTN weight generators")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = p.add_subparsers(dest="cmd", required=True)
    for add in (_add_demo, _add_table, _add_explain, _add_compile, _add_tune, _add_rpc_server, _add_run, _add_info,
                _add_keygen, _add_trust, _add_verify):  # the order `adntn --help` lists them in
        add(sub)
    return p


def at_least(minimum: int):
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


def positive(text: str) -> float:
    """An argparse type: a finite number > 0 (a learning rate, a scale)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < v < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return v


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


def _add_demo(sub) -> None:
    d = sub.add_parser("demo", help="compress the bundled VGG-16-BN, compile it whole, run it without torch, check it")
    d.add_argument("--batch", type=at_least(1), default=4)
    d.add_argument("--out", default="build/vgg16_bn.adntn", help="where the compiled artifact goes")
    d.add_argument("--repeats", type=at_least(1), default=20, help="timed calls per latency measurement")
    d.set_defaults(func=commands.cmd_demo)


def _add_table(sub) -> None:
    from ..generators import ARCHS

    t = sub.add_parser("table", help="configurations of ttn/attn/mera for the AlexNet/VGG-16 layers at target ratios")
    t.add_argument("--json", action="store_true")
    t.add_argument("--arch", nargs="+", default=["ttn", "attn", "mera"], choices=sorted(ARCHS))
    t.set_defaults(func=commands.cmd_table)


def _add_explain(sub) -> None:
    e = sub.add_parser("explain", help="steps, flops and memory of each schedule of a generator or a model's layers")
    e.add_argument("arch", nargs="?", help="generator architecture (ttn, attn, mera, ...)")
    e.add_argument("--shape", type=int, nargs="+", help="O I, or Cout Cin kh kw")
    e.add_argument("--model", help="module:function returning a compressed torch model (explains each ADNTN layer)")
    e.add_argument("--batch", type=at_least(1), default=1)
    e.add_argument("--budget", default=None, help="memory budget: bytes or a size like 64MiB")
    e.add_argument("--json", action="store_true")
    e.add_argument("--backward", action="store_true",
                   help="also show a training step (forward + backward) with and without recomputation")
    e.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="generator options, e.g. rank=4 layout=interleaved activation=tanh")
    e.set_defaults(func=commands.cmd_explain)


def _add_compile(sub) -> None:
    c = sub.add_parser("compile", help="compile a model (save_model file or module:function) to a .adntn artifact")
    c.add_argument("model", help="a file written by adntn.save_model, or module:function returning a model")
    c.add_argument("-o", "--output", required=True, help="artifact path (.adntn)")
    c.add_argument("--target", default="cpu")
    c.add_argument("--batch-size", type=at_least(1), default=1)
    c.add_argument("--schedule", default="auto", choices=["auto", "materialize", "factored", "stream", "recompute"])
    c.add_argument("--input-shape", type=int, nargs="+", help="per-sample input shape (needed when a model "
                   "starts with a conv layer), e.g. 3 32 32")
    c.add_argument("--ram", help="board RAM budget of an embedded target, e.g. 256KiB (arena + workspace)")
    c.add_argument("--flash", help="board flash budget of an embedded target, e.g. 1MiB (weights)")
    c.add_argument("--sign", metavar="KEY", help="sign with this private key (default: yours, made on first use)")
    c.set_defaults(func=commands.cmd_compile)


def _add_tune(sub) -> None:
    u = sub.add_parser("tune", help="measure each ADNTN layer's schedules, contraction trees and GEMM tiles on the "
                                    "device (this machine, RPC devices, or qemu), keep the winners (per device), "
                                    "compile the tuned model to an artifact (or C bundle)")
    u.add_argument("model", help="a file written by adntn.save_model, or module:function returning a model")
    u.add_argument("-o", "--output", required=True, help="artifact path (.adntn) of the tuned model")
    u.add_argument("--budget", type=_duration, default=300.0, help="tuning time, e.g. 5m, 90s, 1h (default 5m)")
    u.add_argument("--target", default="cpu")
    u.add_argument("--batch-size", type=at_least(1), default=1)
    u.add_argument("--input-shape", type=int, nargs="+", help="per-sample input shape (as for compile)")
    u.add_argument("--runner", default="local", help="where candidates are measured: local (this machine), "
                   "rpc://HOST:PORT/KEY (the devices of a TVM RPC tracker running `adntn rpc-server`), or qemu (an "
                   "embedded target's C bundles, by emulated instruction count)")
    u.add_argument("--ram", help="with --runner qemu: the board's RAM; a candidate over it never wins")
    u.add_argument("--flash", help="with --runner qemu: the board's flash; a candidate over it never wins")
    u.add_argument("--sign", metavar="KEY", help="sign with this private key (default: yours)")
    u.set_defaults(func=commands.cmd_tune)


def _add_rpc_server(sub) -> None:
    from ..tuning.server import add_arguments

    r = sub.add_parser("rpc-server", help="serve as a device for `adntn tune --runner rpc://...`: TVM's RPC server, "
                                          "registered with a tracker under a key, reporting its fingerprint")
    add_arguments(r)
    r.set_defaults(func=commands.cmd_rpc_server)


def _trust_option(p) -> None:
    p.add_argument("--trust", action="append", default=[], metavar="KEY.pub", help="also trust this signer's key")


def _add_run(sub) -> None:
    r = sub.add_parser("run", help="run an artifact on a .npy input (needs numpy and the TVM runtime, not torch), "
                                   "or a C bundle under its emulator (qemu)")
    r.add_argument("artifact")
    r.add_argument("--input", action="append", help=".npy file of the compiled input shape; once per model input, in "
                                                    "order (default: random normal floats, random token ids)")
    r.add_argument("--output", help="write the result here (.npy; a model with several outputs: .npz, by name)")
    r.add_argument("--repeats", type=at_least(0), default=0, help="time this many calls and print the median")
    r.add_argument("--check", action="store_true", help="compare with the reference interpreter (float64)")
    r.add_argument("--instructions", action="store_true", help="a C bundle: count the instructions one inference "
                                                                 "executes (qemu, exact)")
    r.add_argument("--json", action="store_true")
    r.add_argument("--no-torch", action="store_true", help="make `import torch` fail first (proves the run needs none)")
    _trust_option(r)
    r.add_argument("--allow-unsigned", action="store_true", help="load an unsigned or untrusted artifact (warns)")
    r.set_defaults(func=commands.cmd_run)


def _add_info(sub) -> None:
    i = sub.add_parser("info", help="what an artifact or C bundle holds: target, shapes, layers, kernels, memory "
                                    "(never loads or builds its code; --build: a bundle's linked sizes)")
    i.add_argument("artifact")
    i.add_argument("--json", action="store_true")
    i.add_argument("--build", action="store_true", help="a C bundle: build it (cross toolchain, in a sandbox) to "
                                                         "report its linked sizes; without it nothing is built")
    _trust_option(i)
    i.add_argument("--allow-unsigned", action="store_true", help="a C bundle: read an unsigned or untrusted one")
    i.set_defaults(func=commands.cmd_info)


def _add_keygen(sub) -> None:
    k = sub.add_parser("keygen", help="make an Ed25519 signing key pair (signing.key, signing.pub)")
    k.add_argument("--out", help="folder for the pair (default: $ADNTN_HOME, your own key)")
    k.set_defaults(func=commands.cmd_keygen)


def _add_trust(sub) -> None:
    tr = sub.add_parser("trust", help="trust artifacts signed by this public key (a signing.pub file)")
    tr.add_argument("public_key")
    tr.set_defaults(func=commands.cmd_trust)


def _add_verify(sub) -> None:
    v = sub.add_parser("verify", help="check an artifact's checksums and signature without loading its code")
    v.add_argument("artifact")
    _trust_option(v)
    v.set_defaults(func=commands.cmd_verify)
