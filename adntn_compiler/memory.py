"""Memory estimates, made from shapes alone before anything is allocated."""
from __future__ import annotations

import os

import numpy as np

from .errors import MemoryEstimateError
from .ir.graph import Graph


def available_bytes() -> int:
    """MemAvailable from /proc/meminfo, else total physical memory; ADNTN_MEMORY_LIMIT overrides."""
    if "ADNTN_MEMORY_LIMIT" in os.environ:
        return int(float(os.environ["ADNTN_MEMORY_LIMIT"]))
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_bytes(value, what: str = "memory_budget") -> int:
    """A byte count from an int or a string like "64MiB", "1 GB", "512kb" (decimal kB/MB/GB, binary KiB/MiB/GiB)."""
    import re

    from .errors import ConfigError

    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value > 0:
        return int(value)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", value) if isinstance(value, str) else None
    if m and m.group(2).lower() in _UNITS and float(m.group(1)) > 0:
        return int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    raise ConfigError(f"{what} must be a positive number of bytes or a size like '64MiB' or '1GB', got {value!r}")


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


VIEW_OPS = ("reshape", "slice", "output")  # no new memory: they alias their input


def peak_bytes(g: Graph, itemsize: int = 8, resident: bool = True) -> tuple[int, int]:
    """(peak live bytes when run node by node, index of the node where the peak occurs).

    A reshape or slice aliases its input (the input stays alive while the view is used). An einsum may
    also copy its operands into BLAS order (numpy's tensordot does): that transient workspace counts.
    resident=False leaves out PARAM/CONST values (counted elsewhere, as memory kept between calls)."""
    from .ir.graph import Op

    root: dict[int, int] = {}  # value -> the allocation it lives in
    last: dict[int, int] = {}  # allocation -> index of its last use (through any alias)
    keep = {v.id for v in g.outputs}
    for i, n in enumerate(g.nodes):
        root[n.out.id] = root[n.inputs[0].id] if n.op.value in VIEW_OPS else n.out.id
        for v in n.inputs:
            last[root[v.id]] = i
    for v in keep:
        last[root[v]] = len(g.nodes)
    live, peak, at = 0, 0, 0
    freed_at: dict[int, list[int]] = {}
    for vid, i in last.items():
        freed_at.setdefault(i, []).append(vid)
    size = {n.out.id: n.out.size for n in g.nodes}
    for i, n in enumerate(g.nodes):
        if root[n.out.id] == n.out.id and (resident or n.op not in (Op.PARAM, Op.CONST)):
            live += size[n.out.id]
        else:
            size[n.out.id] = 0
        work = sum(v.size for v in n.inputs if v.shape) if n.op is Op.EINSUM else 0
        if live + work > peak:
            peak, at = live + work, i
        live -= sum(size.get(v, 0) for v in freed_at.get(i, ()))
    return peak * itemsize, at


def check_fits(g: Graph, itemsize: int = 8, what: str = "program") -> None:
    peak, at = peak_bytes(g, itemsize)
    avail = available_bytes()
    if peak > avail:
        n = g.nodes[at]
        raise MemoryEstimateError(
            f"{what} would need about {fmt_bytes(peak)} of memory at its peak, at node %{n.out.id} "
            f"({n.op.value}, output shape {n.out.shape}{', ' + n.path if n.path else ''}); "
            f"{fmt_bytes(avail)} is available. Lower the rank or use more legs."
        )
