"""The qemu runner: an embedded target's candidates (arm64, Cortex-M) built as C bundles and run under the target's
emulator. The cost is the count of instructions one inference executes there (`Bundle.instructions`: exact and the
same every run, which wall-clock time on a board is not), and a candidate whose linked code and data exceed the
board's RAM or flash never wins. Its records carry the emulator's fingerprint, so `compile(target=...)` uses them
for that target only."""
from __future__ import annotations

import functools
import math
import shutil
import subprocess

import numpy as np

from ..errors import ConfigError
from ..memory import parse_bytes
from ..runtime.bundle import board
from ..targets import Target
from ..targets import fingerprint as host_fingerprint
from .runners import Loaded


@functools.lru_cache(maxsize=8)
def _version(cmd: tuple[str, ...]) -> str:
    try:
        r = subprocess.run(list(cmd), capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (r.stdout.strip().splitlines() or [""])[0] if r.returncode == 0 else ""


def fingerprint(target: Target) -> dict:
    """The emulated device: the target and the compiler (as on this machine), the emulator and the cross compiler
    (their versions decide the count), not this machine's CPU (the count does not depend on it)."""
    b = board(target)
    return {**host_fingerprint(target), "cpu": f"{b.emulator[0]} {' '.join(b.emulator[1:])}".strip(),
            "machine": target.arch, "threads": 1, "measured": "qemu",
            "emulator": _version((b.emulator[0], "--version")), "cc": _version((b.cross + "gcc", "-dumpversion"))}


class QemuRunner:
    name, unit, workers = "qemu", "instructions", 1

    def __init__(self, ram_bytes=None, flash_bytes=None):
        """`ram_bytes`, `flash_bytes`: the board's budget (ints or sizes like "256KiB"), checked on the linked
        program (`Bundle.size`)."""
        self.ram = parse_bytes(ram_bytes, "ram_bytes") if ram_bytes is not None else None
        self.flash = parse_bytes(flash_bytes, "flash_bytes") if flash_bytes is not None else None
        # what a layer's plans may keep, resident (flash) and per call (RAM): the tuner plans within it
        self.budget = (self.ram or 0) + (self.flash or 0) or None

    def check(self, target: Target) -> None:
        if target.runtime != "c-bundle":
            raise ConfigError(f"the qemu runner counts the instructions of C bundles (arm64, cortex-m4, cortex-m7); "
                              f"target {target.name!r} is not one: use runner='local' or 'rpc://HOST:PORT/KEY'")
        b = board(target)
        missing = [t for t in ("make", b.cross + "gcc", b.cross + "size", b.emulator[0]) if shutil.which(t) is None]
        if missing:
            raise ConfigError(f"the qemu runner for {target.name} needs {', '.join(missing)}: install the Debian "
                              f"packages with `apt-get install --no-install-recommends {b.packages}`")

    def fingerprint(self, target: Target) -> dict:
        return fingerprint(target)

    def load(self, bundle, x: np.ndarray) -> Loaded:
        def cost(_repeats: int) -> float:
            if self.ram is not None or self.flash is not None:
                size = bundle.size()  # the model's own code and data, linked (what the board budget bounds)
                if (self.ram is not None and size["model_ram_bytes"] > self.ram) or \
                        (self.flash is not None and size["model_flash_bytes"] > self.flash):
                    return math.inf  # over the board: never a winner
            return float(bundle.instructions(x))

        return Loaded(lambda: bundle(x), cost, f"qemu:{bundle.target.name}")

    def close(self) -> None:
        pass

    def program(self, source, target: Target, batch_size: int, recs) -> dict:
        """The whole model's choice between straight-line calls and a loop over a call table: both built with the
        records' plans and tiles and counted. The table wins unless it costs more than TABLE_SLACK more
        instructions (flash is what a board lacks; the loop adds a few instructions per call) or does not fit the
        board's flash where the straight-line code does."""
        from dataclasses import replace

        from ..backends.tvm.policy import default_policy
        from ..runtime.bundle import plan_bundle
        from .records import Applied

        tuned = Applied(recs, "auto", self.budget, target)
        seen = {}
        for table in (False, True):
            b = plan_bundle(source, target, batch_size, policy=replace(default_policy(target), call_table=table),
                            ram_bytes=self.ram, flash_bytes=self.flash, tuned=tuned).build()
            x = np.random.default_rng(0).standard_normal(b.input_shape).astype(np.float32)
            loaded, ref = self.load(b, x), b.reference(x)
            err = float(np.linalg.norm(loaded.run() - ref) / max(np.linalg.norm(ref), 1e-30))
            if not err <= 1e-4:
                raise ConfigError(f"the {target.name} bundle with {'a call table' if table else 'straight-line calls'}"
                                  f" differs from the reference by {err:.2e} (relative)")
            seen["table" if table else "inline"] = dict(instructions=int(loaded.cost(1)),
                                                         flash_bytes=int(b.size()["model_flash_bytes"]))
        inline, table = seen["inline"], seen["table"]
        fits = lambda r: self.flash is None or r["flash_bytes"] <= self.flash  # noqa: E731
        use = fits(table) and (not fits(inline) or table["instructions"] <= inline["instructions"] * TABLE_SLACK)
        return dict(call_table=bool(use), **seen)


TABLE_SLACK = 1.01  # the call table may cost this much more instructions than straight-line calls
