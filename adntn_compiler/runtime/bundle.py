"""Runtime-free C bundles for embedded targets (arm64 boards, Cortex-M microcontrollers), and running them under
qemu.

    bundle/
      manifest.json     target, shapes, layers, kernels, memory (arena, workspace, weight bytes), the board
                        budget, and the sha256 of every other file
      adntn_model.h     int adntn_model_run(const float *x, float *y): 0, or a negative code for a bad call
      adntn_model.c     the call sequence as straight-line C over a static arena (emit_c.py)
      adntn_weights.c   cores and resident tensors as const float arrays (flash)
      kernels.o         every kernel, an LLVM object for the target
      include/          the two tvm-ffi/dlpack headers that declare DLTensor and TVMFFIAny (types only)
      Makefile          `make` -> libadntn_model.a with the target's cross compiler; `make adntn_run` -> the
                        qemu test harness (harness/)

      signature.json    Ed25519 signature of manifest.json's bytes (as for artifacts: signing.py)

`compile(model, target="cortex-m7")` returns a `Bundle`: `save` it (a folder, or a .zip), call it on a numpy array
(built and run under the target's emulator), `size()` for flash and RAM of the linked code. A bundle read back
from disk is checked before anything in it is read whole, written, built or run: the sizes in the zip directory
or folder against the manifest's, the signature (by a trusted key, unless allow_unsigned), every file's sha256,
and the header's sizes and the Makefile's flags against the manifest's shapes and target. Building and emulating
run in a sandbox (sandbox.py) under the caller's timeout.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Callable

import numpy as np

from ..backends.tvm.program import Program
from ..errors import ConfigError, MemoryEstimateError, SerializationError
from ..memory import fmt_bytes, parse_bytes
from ..targets import Target
from . import jsonio, sandbox
from .artifact import INPUTS_SCHEMA, OUTPUTS_SCHEMA, CompiledModel
from .artifact import MANIFEST_SCHEMA as ARTIFACT_SCHEMA
from .container import Container, sha256, write_folder, write_zip

FORMAT, VERSION = "adntn-c-bundle", 3  # 2: signed, with every file's size; 3: inputs and outputs
MANIFEST, SIGNATURE = "manifest.json", "signature.json"
MANIFEST_MAX = 8 << 20
MAX_FILE = 96 << 20  # bytes of one bundle file read back (the weights' C text at MAX_WEIGHTS is ~60 MiB)
MAX_TOTAL = 160 << 20  # bytes of all of them
MAX_ELEMENTS = 1 << 26  # floats of a bundle's input or output (256 MiB): more is no microcontroller's
BUILD_OUTPUTS = {"adntn_model.o", "adntn_weights.o", "libadntn_model.a", "adntn_run", "input.bin", "output.bin"}
MAX_WEIGHTS = 16 << 20  # bytes of weights a bundle writes as C arrays (hex text is ~3.5x that)
ICOUNT_SHIFT = 5  # qemu -icount: 2**5 ns of virtual time per instruction
MPS2_TIMER_HZ = 25_000_000  # the MPS2 boards' peripheral clock (CMSDK APB timer 0)
_BOARDS_DIR = Path(__file__).parents[1] / "boards"


@dataclass(frozen=True)
class Board:
    """How a target's bundle is built and emulated here."""
    cross: str  # tool prefix: <cross>gcc, <cross>ar, <cross>size
    cflags: str
    harness_flags: str  # extra flags (and files) for linking the test harness
    emulator: tuple[str, ...]  # the command that runs the harness (its arguments follow)
    packages: str  # the Debian packages that provide all of it


_M_FLAGS = "-mthumb -mfloat-abi=hard"
_M_PACKAGES = "gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm"
_M_HARNESS = "-DADNTN_MPS2_TIMER --specs=rdimon.specs -T harness/mps2.ld -Wl,--gc-sections harness/cortex_m_startup.c"
BOARDS = {
    "arm64": Board("aarch64-linux-gnu-", "-O2", "-static", ("qemu-aarch64", "-L", "/usr/aarch64-linux-gnu"),
                   "gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user"),
    "cortex-m4": Board("arm-none-eabi-", f"-O2 -mcpu=cortex-m4 {_M_FLAGS} -mfpu=fpv4-sp-d16",
                       _M_HARNESS, ("qemu-system-arm", "-M", "mps2-an386"), _M_PACKAGES),
    "cortex-m7": Board("arm-none-eabi-", f"-O2 -mcpu=cortex-m7 {_M_FLAGS} -mfpu=fpv5-d16",
                       _M_HARNESS, ("qemu-system-arm", "-M", "mps2-an500"), _M_PACKAGES),
}


def board(target: Target) -> Board:
    base = target.name.partition(":")[0]
    if base not in BOARDS:
        raise ConfigError(f"target {target.name!r} does not deploy as a C bundle; bundle targets: {', '.join(BOARDS)}")
    return BOARDS[base]


# ---------------------------------------------------------------------------------------------- compiling
def _attempt(source, target, batch_size, schedule, memory_budget, input_shape, policy, planner=None, tuned=None):
    """Plan and lower one schedule (no code generated yet): (model graphs, program, kernels, memory, the policy).
    `planner` plans each layer instead of the cost model (a tuner's candidate); `tuned` (records) does where it
    has one, and adds its tiles and call-table choice to the policy."""
    from ..backends.tvm import lower_c
    from ..frontends.capture import model_graphs

    if tuned is not None and planner is None and schedule == "auto":
        planner = tuned.planner
    mg = model_graphs(source, batch_size, schedule, memory_budget, input_shape, target, planner=planner)
    if tuned is not None and planner == tuned.planner:
        policy = tuned.policy(policy)
    return (mg, *lower_c(mg.call, target, policy), policy)


def _fits(memory: dict, ram: int | None, flash: int | None) -> bool:
    return (ram is None or memory["ram_bytes"] <= ram) and (flash is None or memory["weight_bytes"] <= flash)


@dataclass
class BundlePlan:
    """The planned and lowered model of a C bundle (the schedule that fits the board chosen); `build` generates
    the kernels and the C."""
    graphs: Any  # frontends.torch_modules.ModelGraphs
    program: Program
    funcs: dict
    memory: dict
    target: Target
    schedule: str
    budget: dict
    tuning: dict | None = None  # the records used (their device and how many layers), for the manifest
    call_table: bool = False  # the kernels called in a loop over a table (the policy's choice)

    def build(self, say: Callable[[str], None] = lambda s: None) -> "Bundle":
        import tvm

        from ..backends.tvm import c_kernels
        from ..settings import VERSION as __version__

        mg, prog, target = self.graphs, self.program, self.target
        say("compiling kernels")
        kernels = c_kernels(self.funcs, target)
        say("emitting C")
        consts = _const_arrays(mg, prog)
        manifest = dict(format=FORMAT, version=VERSION, adntn_version=__version__, tvm_version=tvm.__version__,
                        target=target.to_dict(), batch_size=int(mg.input_shape[0]), schedule=self.schedule,
                        input_shape=list(mg.input_shape), output_shape=list(mg.output_shape), inputs=mg.inputs,
                        outputs=mg.outputs, layers=mg.layers, kernels=sorted({c["kernel"] for c in prog.calls}),
                        calls=len(prog.calls),
                        memory=self.memory, budget=self.budget, call_table=self.call_table,
                        **({"tuning": self.tuning} if self.tuning else {}))
        files = _emit(prog, consts, kernels, target, manifest, self.call_table)
        return Bundle(files, manifest, mg)


def plan_bundle(source, target: Target, batch_size: int = 1, schedule: str = "auto", memory_budget=None,
                input_shape=None, policy=None, ram_bytes=None, flash_bytes=None,
                say: Callable[[str], None] = lambda s: None, planner=None, tuned=None) -> BundlePlan:
    """The plan of a C bundle of `source` (a generator, or a model captured once: every schedule tried re-plans
    it) for an embedded `target`. With a board budget (`ram_bytes`, `flash_bytes`: ints or sizes like "256KiB"),
    the first schedule whose arena + workspace fits the RAM and whose weights fit the flash is chosen (auto's
    choice first, then factored, stream and recompute tiled to the RAM); if none does, MemoryEstimateError names
    what each needs, before any code is generated. `tuned`: the records of the target's emulator (a qemu
    runner's), whose choices and tiles the auto schedule uses; `planner`: each layer's plan, given (the tuner's)."""
    from ..backends.tvm.policy import default_policy

    ram = parse_bytes(ram_bytes, "ram_bytes") if ram_bytes is not None else None
    flash = parse_bytes(flash_bytes, "flash_bytes") if flash_bytes is not None else None
    policy = policy or default_policy(target)
    # The plan budgets resident + per-call bytes; on a board the resident tensors are flash, the per-call ones RAM.
    both = (ram or 0) + (flash or 0)
    tries = [(schedule, memory_budget)]
    if schedule == "auto" and (ram or flash):
        tries = [("auto", memory_budget or both), ("factored", None), ("stream", both or None),
                 ("recompute", both or None)]
    seen, tried = [], set()
    while tries:
        s, mb = tries.pop(0)
        say(f"planning ({s})")
        try:
            mg, prog, funcs, memory, used = _attempt(source, target, batch_size, s, mb, input_shape, policy, planner,
                                                     tuned)
        except MemoryEstimateError as e:  # the plan's own refusal: keep what it could reach
            m = re.search(r"smallest achievable is ([^;]+)", str(e))
            seen.append(f"{s}: at least {m.group(1) if m else e}")
            continue
        chosen = "/".join(sorted({layer["schedule"] for layer in mg.layers if "schedule" in layer})) or s
        if _fits(memory, ram, flash):
            break
        if (chosen, memory["ram_bytes"]) not in tried:
            seen.append(f"{chosen}: arena {fmt_bytes(memory['arena_bytes'])} + workspace "
                        f"{fmt_bytes(memory['workspace_bytes'])} = {fmt_bytes(memory['ram_bytes'])} of RAM, weights "
                        f"{fmt_bytes(memory['weight_bytes'])} of flash")
        tried.add((chosen, memory["ram_bytes"]))
        if s in ("stream", "recompute") and ram and (s, "retiled") not in tried:
            tried.add((s, "retiled"))
            tries.insert(0, (s, ram + memory["weight_bytes"]))  # tile the per-call part down to the RAM (once)
    else:
        raise MemoryEstimateError(
            f"the model does not fit the board budget of {fmt_bytes(ram) if ram else 'any'} RAM and "
            f"{fmt_bytes(flash) if flash else 'any'} flash on {target.name} ({'; '.join(seen)}); nothing was "
            f"built")
    if memory["weight_bytes"] > MAX_WEIGHTS:
        raise MemoryEstimateError(
            f"the {chosen} schedule keeps {fmt_bytes(memory['weight_bytes'])} of weights, more than a C bundle writes "
            f"as arrays ({fmt_bytes(MAX_WEIGHTS)}); give a board budget (flash_bytes=...) or schedule='stream' or "
            f"'recompute'")
    return BundlePlan(mg, prog, funcs, memory, target, schedule, dict(ram_bytes=ram, flash_bytes=flash),
                      tuned.manifest() if tuned is not None and tuned.used else None, used.call_table)


def _const_arrays(mg, prog) -> dict[str, np.ndarray]:
    """The call program's constant buffers, filled as the runner would (kernel layouts), from the model's tensors
    and the resident tensors its load graph makes (run here on the reference interpreter, in float64)."""
    from ..backends.reference import with_resident
    from ..backends.tvm.program import prepare_const  # (a value's method: the kernel layout of a constant)

    tensors = with_resident(mg.load, mg.tensors)
    out = {}
    for spec in prog.consts:
        a = np.zeros(prog.buffers[spec["buffer"]], np.float32)
        v = prepare_const(tensors[spec["tensor"]], spec)
        a[: v.size] = v
        out[spec["buffer"]] = a
    return out


def _makefile(target: Target, b: Board) -> str:
    return f"""# adntn C bundle for {target.name}. `make` builds libadntn_model.a: link it into your program with
# adntn_model.h (it needs memcpy/memset and libm from your libc, nothing else). `make adntn_run` builds the test
# harness that `adntn run` runs under qemu; `make size` prints flash (text + data) and RAM (data + bss).
CROSS ?= {b.cross}
CC := $(CROSS)gcc
AR := $(CROSS)ar
SIZE := $(CROSS)size
CFLAGS ?= {b.cflags}
CFLAGS += -std=c99 -Wall -Iinclude -I. -ffunction-sections -fdata-sections

all: libadntn_model.a

libadntn_model.a: adntn_model.o adntn_weights.o kernels.o
\t$(AR) rcs $@ $^

adntn_model.o: adntn_model.c adntn_model.h
\t$(CC) $(CFLAGS) -c $< -o $@

adntn_weights.o: adntn_weights.c adntn_model.h
\t$(CC) $(CFLAGS) -c $< -o $@

adntn_run: harness/harness.c libadntn_model.a
\t$(CC) $(CFLAGS) {b.harness_flags} harness/harness.c libadntn_model.a -lm -o $@

size: libadntn_model.a adntn_run
\t$(SIZE) -t libadntn_model.a
\t$(SIZE) adntn_run

clean:
\trm -f adntn_model.o adntn_weights.o libadntn_model.a adntn_run

.PHONY: all size clean
"""


def _harness_files(target: Target) -> dict[str, bytes]:
    """The test harness (and a Cortex-M board's start-up and linker script) a bundle for `target` carries."""
    names = {"harness/harness.c": "harness.c"}
    if target.device == "microcontroller":
        names |= {"harness/cortex_m_startup.c": "cortex_m_startup.c", "harness/mps2.ld": "mps2.ld"}
    return {k: (_BOARDS_DIR / v).read_bytes() for k, v in names.items()}


def _emit(prog, consts, kernels: bytes, target: Target, manifest: dict, call_table: bool = False) -> dict[str, bytes]:
    import tvm_ffi

    from ..backends.tvm import c_sources

    b = board(target)
    inc = Path(tvm_ffi.__file__).parent / "include"
    files = {**c_sources(prog, consts, target, manifest["inputs"], manifest["outputs"], manifest["memory"],
                         call_table), "Makefile": _makefile(target, b)}
    out = {k: v.encode() for k, v in files.items()} | _harness_files(target)
    out["kernels.o"] = kernels
    for h in ("dlpack/dlpack.h", "tvm/ffi/c_api.h"):
        out[f"include/{h}"] = (inc / h).read_bytes()
    return out


# ---------------------------------------------------------------------------------------------- the bundle
class Bundle(CompiledModel):
    """A C bundle in memory: `save` writes it; calling it builds it with the cross compiler and runs it under the
    target's emulator (one call at a time); `size()` reports the linked sizes next to the estimate."""

    def __init__(self, files: dict[str, bytes], manifest: dict, graphs=None):
        self.files, self.graphs = dict(files), graphs
        self.manifest = dict(manifest, files={k: sha256(v) for k, v in sorted(files.items())},
                             sizes={k: len(v) for k, v in sorted(files.items())})
        self.target = Target.from_dict(self.manifest["target"])
        self._build_dir: tempfile.TemporaryDirectory | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ on disk
    def save(self, path: str | os.PathLike, signing_key=None) -> Path:
        """A folder, or a .zip when `path` ends in .zip, signed with `signing_key` (an Ed25519 private key or a key
        file; default: this user's key); written to a temporary name and renamed into place, so a partial bundle
        never appears under `path`. An existing bundle folder there is replaced."""
        path = Path(path)
        files = self._all_files(signing_key)
        if path.suffix == ".zip":
            return write_zip(path, files)
        return write_folder(path, files, replaceable=lambda p: (p / MANIFEST).is_file())

    def _all_files(self, signing_key=None) -> dict[str, bytes]:
        from . import signing

        key = signing.load_private(signing_key) if isinstance(signing_key, (str, os.PathLike)) else signing_key
        mbytes = json.dumps(self.manifest, indent=1).encode()
        return {**self.files, MANIFEST: mbytes, SIGNATURE: json.dumps(signing.sign(mbytes, key)).encode()}

    @classmethod
    def load(cls, path: str | os.PathLike, trusted_keys=(), allow_unsigned: bool = False) -> "Bundle":
        """A bundle folder or .zip, checked before any file is read whole: the sizes of its files (zip directory
        or folder) against the manifest's and the limits, the signature (a trusted key's, unless `allow_unsigned`,
        which warns; a signature that does not match is refused always), the manifest's fields, then every file
        against its sha256, and the header and Makefile against the manifest's shapes and target."""
        path = Path(path)
        with Container(path, "bundle", folders=True, max_total=MAX_TOTAL, max_member=MAX_FILE,
                       uncounted=BUILD_OUTPUTS) as src:
            if MANIFEST not in src.sizes:
                raise SerializationError(f"{path}: no {MANIFEST}; not an adntn C bundle")
            mbytes = src.read(MANIFEST, MANIFEST_MAX)
            m = jsonio.loads(mbytes, f"{path}: {MANIFEST}")
            _check_manifest(m, path)  # (what it is, before who vouches for it: the clearer refusal first)
            src.signer(mbytes, SIGNATURE, trusted_keys, allow_unsigned)
            extra = sorted(set(src.sizes) - set(m["files"]) - {MANIFEST, SIGNATURE} - BUILD_OUTPUTS)
            if extra:
                raise SerializationError(f"{path}: files the manifest does not list: {', '.join(extra[:5])}")
            for name, n in m["sizes"].items():
                if name not in src.sizes:
                    raise SerializationError(f"{path}: the bundle lacks {name}")
                if src.sizes[name] != n:
                    raise SerializationError(f"{path}: {name} holds {src.sizes[name]:,} bytes; the manifest says {n:,}")
            files = {}
            for name, digest in m["files"].items():
                files[name] = src.read(name, m["sizes"][name])
                src.check_digest(name, files[name], digest)
        _check_built_from(files, m, path)
        return cls(files, {k: v for k, v in m.items() if k not in ("files", "sizes")})

    # ------------------------------------------------------------------ building and running here
    def _built(self, what: str = "adntn_run", timeout: float = 600.0) -> Path:
        """The bundle written to a private folder and built there with its own Makefile (once), in the sandbox."""
        b = board(self.target)
        tools = ["make", b.cross + "gcc", b.cross + "size", b.emulator[0]]
        missing = [t for t in tools if shutil.which(t) is None]
        if missing:
            raise ConfigError(f"running a {self.target.name} bundle here needs {', '.join(missing)}: install the "
                              f"Debian packages with `apt-get install --no-install-recommends {b.packages}`")
        if self._build_dir is None:
            d = tempfile.TemporaryDirectory(prefix="adntn-bundle-")
            _write_tree(Path(d.name), self._all_files())
            self._build_dir = d
        root = Path(self._build_dir.name)
        if not (root / what).exists():
            r = sandbox.run(["make", "-s", what], root, timeout, f"building the {self.target.name} bundle")
            if r.returncode != 0:
                raise ConfigError(f"building the {self.target.name} bundle failed:\n"
                                  f"{(r.stdout + r.stderr).decode(errors='replace')[-3000:]}")
        return root

    def _emulate_cmd(self, args: list[str], extra: tuple[str, ...] = ()) -> list[str]:
        b = board(self.target)
        if self.target.device == "microcontroller":  # semihosting: argv, host files and the exit status
            return [*b.emulator, *extra, "-nographic", "-monitor", "none", "-serial", "none", "-semihosting-config",
                    "enable=on,target=native," + ",".join(f"arg={a}" for a in ["adntn_run", *args]),
                    "-kernel", "adntn_run"]
        return [*b.emulator, *extra, "./adntn_run", *args]

    def _emulate(self, root: Path, args: list[str], timeout: float):
        return sandbox.run(self._emulate_cmd(args), root, timeout, f"the {self.target.name} emulator")

    def __call__(self, *xs: np.ndarray, timeout: float = 600.0):
        """Run the bundle on its inputs under the target's emulator (qemu-aarch64, or qemu-system-arm on the MPS2
        board of the core) and return its output (a tuple of them when there are several)."""
        flat = [np.ascontiguousarray(x, "<f4").reshape(-1) for x in self.checked_inputs(xs)]
        with self._lock:
            root = self._built(timeout=timeout)
            (root / "input.bin").write_bytes(np.concatenate(flat).tobytes())
            (root / "output.bin").unlink(missing_ok=True)
            r = self._emulate(root, ["input.bin", "output.bin"], timeout)
            if r.returncode != 0:
                raise ConfigError(f"the bundle failed on the {self.target.name} emulator (exit status "
                                  f"{r.returncode}): {(r.stdout + r.stderr).decode(errors='replace')[-2000:]}")
            y = np.fromfile(root / "output.bin", "<f4")
        if y.size != _floats(self.outputs):
            raise ConfigError(f"the bundle wrote {y.size} floats, expected {_floats(self.outputs)}")
        ends = np.cumsum([math.prod(o["shape"]) for o in self.outputs])
        return self.result({o["name"]: part.reshape(o["shape"]) for o, part in zip(self.outputs, np.split(y, ends))})

    def instructions(self, *xs: np.ndarray, exact: bool | None = None, timeout: float = 3600.0) -> int:
        """Instructions one inference executes on the emulated core (emulated, so no caches and no timing: the
        same every run).

        exact=True: qemu runs one instruction per translation block and logs each one executed; the count for
        two inferences minus that for one leaves start-up and file I/O out. Exact, but slow (a log line per
        instruction): the default for arm64. (Under host load qemu-system-arm once logged a block twice: +35 of
        7,141; qemu-aarch64 and the icount count never varied.) exact=False (the default on Cortex-M):
        `-icount shift=5` makes virtual time 32 ns per instruction, and the harness reads the board's 25 MHz
        timer around the inference: 0.8 ticks per instruction, within 0.2 % of the exact count (Thumb IT
        prefixes are not counted) at any size."""
        self(*xs, timeout=timeout)  # builds, writes input.bin, checks the run
        exact = self.target.device != "microcontroller" if exact is None else exact
        with self._lock:
            root = self._built(timeout=timeout)
            if exact:
                counts = [self._count(root, r, timeout) for r in (1, 2)]
                return counts[1] - counts[0]
            cmd = self._emulate_cmd(["input.bin", "output.bin"], ("-icount", f"shift={ICOUNT_SHIFT}"))
            r = sandbox.run(cmd, root, timeout, f"the {self.target.name} emulator (-icount)", text=True)
        ticks = [int(t) for t in re.findall(r"^ticks (\d+)$", r.stdout, re.M)]
        if r.returncode != 0 or len(ticks) != 1:
            raise ConfigError(f"counting instructions with qemu -icount failed (exit status {r.returncode}): "
                              f"{(r.stdout + r.stderr)[-500:]}")
        return round(ticks[0] * 1e9 / (MPS2_TIMER_HZ * 2 ** ICOUNT_SHIFT))

    def _count(self, root: Path, repeat: int, timeout: float) -> int:
        b = board(self.target)
        args = ["input.bin", "output.bin", "--repeat", str(repeat)]
        cmd = self._emulate_cmd(args, ("-singlestep", "-d", "nochain,exec", "-D", "/dev/stdout"))
        n, tail, deadline = 0, b"", time.monotonic() + timeout
        with subprocess.Popen(sandbox.command(cmd, root), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as p:
            for chunk in iter(lambda: p.stdout.read(1 << 20), b""):
                buf = tail + chunk
                n += buf.count(b"Trace ")
                tail = buf[-5:]  # (a marker split across chunks is counted once: "Trace " is 6 bytes)
                if time.monotonic() > deadline:
                    p.kill()
                    raise ConfigError(f"counting instructions on {b.emulator[0]} took more than {timeout:g} s")
            p.wait(max(1.0, deadline - time.monotonic()))
        if p.returncode != 0:
            raise ConfigError(f"counting instructions on {b.emulator[0]} failed (exit status {p.returncode})")
        return n

    def call_null(self, timeout: float = 120.0) -> str:
        """Call adntn_model_run with NULL pointers on the emulator; returns what the harness printed (it exits 0
        only when both calls returned a negative code)."""
        with self._lock:
            r = self._emulate(self._built(timeout=timeout), ["--null"], timeout)
        out = (r.stdout + r.stderr).decode(errors="replace")
        if r.returncode != 0:
            raise ConfigError(f"a NULL call was not refused cleanly (exit status {r.returncode}): {out[-500:]}")
        return out.strip()

    def size(self, timeout: float = 600.0) -> dict:
        """Flash (text + data) and RAM (data + bss) of the model's own code (libadntn_model.a) and of the linked
        test program, from the cross toolchain's `size`, next to the estimate the budget was checked against.
        Builds the bundle (in the sandbox) when it was not built yet."""
        with self._lock:
            root = self._built(timeout=timeout)
            tool = board(self.target).cross + "size"
            runs = [sandbox.run([tool, *args], root, timeout, tool, text=True) for args in (["-t", "libadntn_model.a"],
                                                                                              ["adntn_run"])]
        if any(r.returncode for r in runs):
            raise ConfigError(f"{tool} failed: {(runs[0].stderr + runs[1].stderr)[-500:]}")
        model, prog = _berkeley(runs[0].stdout, total=True), _berkeley(runs[1].stdout)
        m = self.manifest["memory"]
        return dict(model_flash_bytes=model[0] + model[1], model_ram_bytes=model[1] + model[2],
                    program_flash_bytes=prog[0] + prog[1], program_ram_bytes=prog[1] + prog[2],
                    estimate_weight_bytes=m["weight_bytes"], estimate_ram_bytes=m["ram_bytes"],
                    code_bytes=model[0] - m["weight_bytes"])

    def reference(self, *xs: np.ndarray):
        """The model on the numpy reference interpreter (float64); only for a bundle compiled in this process."""
        if self.graphs is None:
            raise ConfigError("a bundle read from disk carries no graphs; compare it with its source model")
        from ..backends.reference import run, with_resident

        t = with_resident(self.graphs.load, self.graphs.tensors)
        ys = run(self.graphs.call, [np.asarray(x, np.float64) for x in self.checked_inputs(xs)], t)
        return self.result(dict(zip([o["name"] for o in self.outputs], ys)))

    def info(self) -> dict:
        m = self.manifest
        return {k: m[k] for k in ("format", "version", "target", "batch_size", "schedule", "input_shape",
                                  "output_shape", "inputs", "outputs", "layers", "kernels", "calls", "memory",
                                  "budget")}


def _berkeley(text: str, total: bool = False) -> tuple[int, int, int]:
    """(text, data, bss) from GNU size's Berkeley output: the last line (the total, with -t) or the only one."""
    rows = [ln.split() for ln in text.strip().splitlines()[1:]]
    row = rows[-1] if total else rows[0]
    return int(row[0]), int(row[1]), int(row[2])


def _write_tree(root: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


_INT = {"type": "integer", "minimum": 0}
_SHAPE = {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 1, "maxItems": 16}
_MANIFEST_SCHEMA = {  # every field the code reads (info, run, size) is typed
    "type": "object",
    "required": ["format", "version", "target", "batch_size", "schedule", "input_shape", "output_shape", "inputs",
                 "outputs", "layers", "kernels", "calls", "memory", "budget", "files", "sizes"],
    "properties": {
        "format": {"const": FORMAT}, "version": {"const": VERSION}, "adntn_version": {"type": "string"},
        "tvm_version": {"type": "string"}, "target": ARTIFACT_SCHEMA["properties"]["target"],
        "batch_size": {"type": "integer", "minimum": 1},
        "schedule": {"type": "string"}, "input_shape": _SHAPE, "output_shape": _SHAPE,
        "inputs": INPUTS_SCHEMA, "outputs": OUTPUTS_SCHEMA,
        "layers": {"type": "array", "items": {"type": "object", "required": ["kind"],
                                              "properties": {"kind": {"type": "string"}}}},
        "kernels": {"type": "array", "items": {"type": "string"}}, "calls": _INT,
        "memory": {"type": "object", "required": ["arena_bytes", "workspace_bytes", "ram_bytes", "weight_bytes",
                                                  "unshared_bytes"],
                   "additionalProperties": _INT},
        "budget": {"type": "object", "additionalProperties": {"anyOf": [{"type": "null"}, _INT]}},
        "files": {"type": "object", "minProperties": 1,
                  "additionalProperties": {"type": "string", "pattern": "^[0-9a-f]{64}$"}},
        "sizes": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0, "maximum": MAX_FILE}},
    },
}
REQUIRED_FILES = ("Makefile", "adntn_model.h", "adntn_model.c", "adntn_weights.c", "kernels.o", "harness/harness.c")


def _check_manifest(m, path) -> None:
    import jsonschema

    if m.get("format") != FORMAT:
        raise SerializationError(f"{path}: not an adntn C bundle (format {m.get('format')!r})")
    if m.get("version") != VERSION:
        raise SerializationError(f"{path}: C bundle format version {m.get('version')!r} is not supported by this "
                                 f"adntn-compiler (it reads version {VERSION}); recompile the model")
    try:
        jsonschema.validate(m, _MANIFEST_SCHEMA)
    except jsonschema.ValidationError as e:
        where = "/".join(str(x) for x in e.absolute_path) or "the manifest"
        raise SerializationError(f"{path}: manifest field {where}: {e.message[:200]}") from None
    for name in m["files"]:
        p = PurePosixPath(name)
        if p.is_absolute() or ".." in p.parts or name in (MANIFEST, SIGNATURE) or name in BUILD_OUTPUTS \
                or name != p.as_posix():
            raise SerializationError(f"{path}: the manifest lists an unsafe file name {name!r}")
    if set(m["files"]) != set(m["sizes"]):
        raise SerializationError(f"{path}: the manifest's files and sizes list different files")
    missing = [f for f in REQUIRED_FILES if f not in m["files"]]
    if missing:
        raise SerializationError(f"{path}: the manifest lists no {', '.join(missing)}; not a whole bundle")
    for k in ("inputs", "outputs"):
        if _floats(m[k]) > MAX_ELEMENTS:
            raise SerializationError(f"{path}: manifest field {k}: {_floats(m[k]):,} floats in all, more than a "
                                     f"bundle takes ({MAX_ELEMENTS:,})")
        for s in m[k]:
            if s["shape"][0] != m["batch_size"]:
                raise SerializationError(f"{path}: manifest field {k}: {s['name']} {s['shape']} does not start with "
                                         f"batch_size {m['batch_size']}")
    if m["input_shape"] != m["inputs"][0]["shape"] or m["output_shape"] != m["outputs"][0]["shape"]:
        raise SerializationError(f"{path}: manifest fields input_shape and output_shape are not the first input's "
                                 f"and output's shapes")
    try:
        target = Target.from_dict(m["target"])
        board(target)
    except (ConfigError, TypeError, ValueError, KeyError, AttributeError) as e:
        raise SerializationError(f"{path}: manifest field target: {e}") from None


def _check_built_from(files: dict[str, bytes], m: dict, path) -> None:
    """The manifest's shapes and target are what the code was built for: the header's sizes and the Makefile's
    compiler and flags (an edited input_shape would feed the model a longer array; another target a core the
    code was not compiled for)."""
    from ..backends.tvm import C_HEADER

    h = files[C_HEADER].decode(errors="replace")
    for k, macro in (("inputs", "ADNTN_MODEL_INPUT_SIZE"), ("outputs", "ADNTN_MODEL_OUTPUT_SIZE")):
        got = re.search(rf"^#define {macro} (\d+)$", h, re.M)
        if not got or int(got.group(1)) != _floats(m[k]):
            raise SerializationError(f"{path}: manifest field {k} {m[k]} does not match the header's {macro} "
                                     f"({got.group(1) if got else 'missing'})")
    target = Target.from_dict(m["target"])
    if files["Makefile"].decode(errors="replace") != _makefile(target, board(target)):
        raise SerializationError(f"{path}: the Makefile is not the one adntn writes for target {target.name!r} "
                                 f"(another target's, or edited)")
    for name, want in _harness_files(target).items():  # the test harness is this package's, byte for byte
        if files.get(name) != want:
            raise SerializationError(f"{path}: {name} is not the test harness this adntn-compiler ships for "
                                     f"{target.name!r}")


def _floats(specs: list[dict]) -> int:
    return sum(math.prod(s["shape"]) for s in specs)


def is_bundle(path) -> bool:
    p = Path(path)
    if p.is_dir():
        return (p / MANIFEST).is_file()
    if p.suffix == ".zip" and p.is_file():
        try:
            with zipfile.ZipFile(p) as z:
                return MANIFEST in z.namelist()
        except (zipfile.BadZipFile, OSError):
            return False
    return False


__all__ = ["Bundle", "BundlePlan", "BOARDS", "is_bundle", "plan_bundle"]
