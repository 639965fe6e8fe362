"""`adntn rpc-server` (or `python -m adntn_compiler.tuning.server`): TVM's RPC server (`tvm.rpc.Server`, as
`python -m tvm.exec.rpc_server` starts it) plus one function, `adntn.device_facts`, by which the tuner's RPC runner
learns the fingerprint of the device it measures on (its CPU, machine, threads and ISA extensions) and which
server measured a candidate."""
from __future__ import annotations

import argparse
import json
import logging


def _register() -> None:
    """Runs in the server's process before it listens (TVM's `server_init_callback`); its sessions fork from it."""
    import os
    import socket

    from ..targets import device_facts, import_tvm

    tvm = import_tvm()  # (sets the pool's threads: `runtime_threads`)
    from tvm.rpc.server import PopenRPCServerState

    def facts() -> str:
        state = PopenRPCServerState.current
        port = state.port if state is not None else os.getpid()
        return json.dumps({**device_facts(), "server": f"{socket.gethostname()}:{port}"})

    tvm.register_global_func("adntn.device_facts", facts, override=True)


def serve(tracker: str, key: str, host: str = "0.0.0.0", port: int = 9090, port_end: int = 9199,
          silent: bool = False) -> None:
    """Register with the tracker at `tracker` (HOST:PORT) under `key` and serve until killed."""
    from tvm import rpc

    url, _, p = tracker.rpartition(":")
    if not url or not p.isdigit():
        raise SystemExit(f"--tracker must be HOST:PORT, got {tracker!r}")
    server = rpc.Server(host, port, port_end, key=key, tracker_addr=(url, int(p)), silent=silent,
                        server_init_callback=_register)
    server.proc.join()


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tracker", required=True, help="the RPC tracker's HOST:PORT (python -m tvm.exec.rpc_tracker)")
    p.add_argument("--key", required=True, help="the kind of device this is; the tuner asks for it by this key")
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (default all)")
    p.add_argument("--port", type=int, default=9090, help="first port to try (default 9090)")
    p.add_argument("--port-end", type=int, default=9199, help="last port to try (default 9199)")
    p.add_argument("--silent", action="store_true", help="no log lines")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="adntn rpc-server", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if a.silent else logging.INFO)
    serve(a.tracker, a.key, a.host, a.port, a.port_end, a.silent)


if __name__ == "__main__":
    main()
