"""Runners: where the tuner's candidates run and are timed, and so whose fingerprint the records carry (STYLE 14: a
runner is the only thing that knows where a candidate is timed). The candidates are built on this machine
(`measure._Bench`); a runner loads one built candidate with its input and returns a `Loaded`: `run()` gives the
output (checked against the reference), `cost(repeats)` its cost in the runner's `unit`.

- `LocalRunner` ("local"): this machine, wall-clock seconds (what `tune` always did).
- `RPCRunner` ("rpc://HOST:PORT/KEY"): the devices a TVM RPC tracker hands out under KEY, each an `adntn rpc-server`
  (TVM's server plus the function that reports its fingerprint); every device under the key measures candidates at
  once; seconds as `time_evaluator` measures them on the device.
- `QemuRunner` ("qemu"): embedded targets (arm64, Cortex-M) as C bundles under qemu; the cost is the exact,
  repeatable count of instructions one inference executes.
"""
from __future__ import annotations

import json
import queue
import re
import threading
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from ..errors import ConfigError
from ..runtime.host import check_runs_here
from ..targets import Target, fingerprint


@dataclass
class Loaded:
    """One built candidate loaded where it runs: `run()` -> output, `cost(repeats)` -> cost of one run."""
    run: Callable[[], np.ndarray]
    cost: Callable[[int], float]
    where: str = ""  # the device that measured it (a server, for RPC)
    release: Callable[[], None] = lambda: None  # the device may measure another candidate meanwhile (RPC)


class Runner(Protocol):
    name: str
    unit: str  # "s" or "instructions"
    workers: int  # candidates measured at once

    def check(self, target: Target) -> None: ...
    def fingerprint(self, target: Target) -> dict: ...
    def load(self, built, x: np.ndarray) -> Loaded: ...
    def close(self) -> None: ...


def _median(fn: Callable, repeats: int) -> float:
    from ..runtime.timing import median_time

    return median_time(fn, repeats, warmup=0)


class LocalRunner:
    name, unit, workers = "local", "s", 1

    def check(self, target: Target) -> None:
        if target.runtime != "tvm":
            raise ConfigError(f"target {target.name!r} deploys as a C bundle, which does not run here: tune it with "
                              f"runner='qemu' (emulated) or on the board")
        try:
            check_runs_here(target)
        except ConfigError as e:
            raise ConfigError(f"the local runner measures on this machine, and target {target.name!r} does not run "
                              f"here ({e}); use runner='rpc://HOST:PORT/KEY' for a device that does") from None

    def fingerprint(self, target: Target) -> dict:
        return fingerprint(target)

    def load(self, built, x: np.ndarray) -> Loaded:
        lib, tensors = built
        loaded = lib.runner("load", tensors)() if "load" in lib.programs else {}  # (a one-conv program has none)
        call = lib.runner("call", {**tensors, **loaded})
        run = lambda: call(x)["y"]  # noqa: E731
        return Loaded(run, lambda n: _median(run, n), "local")

    def close(self) -> None:
        pass


# ---------------------------------------------------------------- TVM RPC

FACTS = "adntn.device_facts"  # the global function an `adntn rpc-server` registers (tuning/server.py)
SESSION_S = 600  # an RPC session's lifetime: the server ends one that runs longer


def parse_rpc(url: str) -> tuple[str, int, str]:
    m = re.fullmatch(r"rpc://([^:/\s]+):(\d{1,5})/([\w.\-]+)", url)
    if m is None or not 0 < int(m.group(2)) < 65536:
        raise ConfigError(f"runner {url!r}: an RPC runner is rpc://HOST:PORT/KEY (the tracker's address and the "
                          f"devices' key), e.g. rpc://127.0.0.1:9190/x86")
    return m.group(1), int(m.group(2)), m.group(3)


class RPCRunner:
    unit = "s"

    def __init__(self, url: str):
        import socket

        from ..targets import import_tvm

        self.name = url
        self.host, self.port, self.key = parse_rpc(url)
        tvm = import_tvm()
        try:  # (TVM's own connect retries a refused connection for a minute)
            socket.create_connection((self.host, self.port), timeout=10).close()
            self.tracker = tvm.rpc.connect_tracker(self.host, self.port)
            summary = self.tracker.summary()
        except (RuntimeError, OSError, ValueError) as e:
            raise ConfigError(f"runner {url!r}: no RPC tracker answers at {self.host}:{self.port} "
                              f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
        servers = [s for s in summary.get("server_info", []) if str(s.get("key", "")).split(":")[-1] == self.key]
        self.workers = len(servers)
        if not servers:
            raise ConfigError(f"runner {url!r}: the tracker has no device under key {self.key!r} (start one with: "
                              f"adntn rpc-server --tracker {self.host}:{self.port} --key {self.key})")
        self._free: queue.Queue = queue.Queue()  # sessions not measuring now (each holds one device)
        self._made = 0
        self._lock = threading.Lock()
        self.facts: dict | None = None

    def _acquire(self) -> "_Session":
        """A session no other thread is measuring with: a new one while the key has more devices (so that every
        device measures, also when building takes longer than measuring), else the next to be released. (A tracker
        queues a request until a device is free: more sessions than devices would wait for one of ours to end.)"""
        with self._lock:
            make = self._made < self.workers
            self._made += make
        if not make:
            return self._free.get(timeout=SESSION_S)
        try:
            sess = self.tracker.request(self.key, priority=1, session_timeout=SESSION_S, max_retry=3)
        except (RuntimeError, OSError) as e:
            raise ConfigError(f"runner {self.name!r}: no device under key {self.key!r} could be had "
                              f"({type(e).__name__})") from None
        s = _Session(sess, _facts(sess, self.name), threading.Lock())
        with self._lock:
            if self.facts is None:
                self.facts = s.facts
            elif any(s.facts[k] != self.facts[k] for k in ("cpu", "machine", "threads")):
                raise ConfigError(f"runner {self.name!r}: the devices under key {self.key!r} differ ({s.facts} "
                                  f"against {self.facts}); one key is one kind of device")
        return s

    def check(self, target: Target) -> None:
        if target.runtime != "tvm" or target.device != "cpu":
            raise ConfigError(f"runner {self.name!r} times CPU libraries (TVM runtime); target {target.name!r} is "
                              f"a {target.device} {target.runtime} target")
        s = self._acquire()
        self._free.put(s)
        facts = s.facts
        missing = sorted(set(target.isa) - set(facts["isa"]))
        if facts["machine"] != target.arch or missing:
            raise ConfigError(f"target {target.name!r} ({target.arch}, {', '.join(target.isa) or 'no'} ISA "
                              f"extensions) does not run on the devices under key {self.key!r} ({facts['machine']}, "
                              f"{facts['cpu']}{'; it lacks ' + ', '.join(missing) if missing else ''})")

    def fingerprint(self, target: Target) -> dict:
        """The target and the compiler's facts from here, the device's from the device; `measured` says how."""
        if self.facts is None:
            self._free.put(self._acquire())
        facts = self.facts
        assert facts is not None
        return {**fingerprint(target), "cpu": facts["cpu"], "machine": facts["machine"], "threads": facts["threads"],
                "measured": "rpc"}

    def load(self, built, x: np.ndarray) -> Loaded:
        lib, tensors = built
        s = self._acquire()
        try:
            with s.lock:
                remote = lib.remote(s.session)
                loaded = remote.runner("load", tensors)() if "load" in lib.programs else {}
                call = remote.runner("call", {**tensors, **loaded})
        except BaseException:
            self._free.put(s)
            raise

        def run() -> np.ndarray:
            with s.lock:
                return call(x)["y"]

        def cost(n: int) -> float:
            with s.lock:
                return call.time_calls(max(1, n))

        return Loaded(run, cost, s.facts["server"], lambda: self._free.put(s))

    def close(self) -> None:
        while not self._free.empty():  # (the sessions end when the last reference goes)
            self._free.get_nowait()


@dataclass
class _Session:
    session: object
    facts: dict
    lock: threading.Lock


def _facts(session, url: str) -> dict:
    try:
        f = session.get_function(FACTS)
    except (AttributeError, RuntimeError, ValueError):
        f = None
    if f is None:
        raise ConfigError(f"runner {url!r}: the device does not report its fingerprint: start it with `adntn "
                          f"rpc-server` (TVM's server plus {FACTS}), not `python -m tvm.exec.rpc_server`")
    facts = json.loads(f())
    if not isinstance(facts, dict) or not {"cpu", "machine", "threads", "isa", "server"} <= set(facts):
        raise ConfigError(f"runner {url!r}: the device's report is malformed: {str(facts)[:200]}")
    return facts


def runner_for(spec: "str | Runner | None") -> Runner:
    """A runner from its name: "local" (or None), "rpc://HOST:PORT/KEY", "qemu"; a Runner as it is."""
    if spec is None or spec == "local":
        return LocalRunner()
    if isinstance(spec, str) and spec.startswith("rpc://"):
        return RPCRunner(spec)
    if spec == "qemu":
        from .emulated import QemuRunner

        return QemuRunner()
    if isinstance(spec, str):
        raise ConfigError(f"unknown runner {spec!r}; runners: local, rpc://HOST:PORT/KEY, qemu")
    return spec
