"""Memory estimates, made from shapes alone before anything is allocated."""
from __future__ import annotations

import os

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


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


def peak_bytes(g: Graph, itemsize: int = 8, resident: bool = True) -> tuple[int, int]:
    """(peak live bytes when run node by node, index of the node where the peak occurs).

    resident=False leaves out PARAM/CONST values (counted elsewhere, as memory kept between calls)."""
    from .backends.reference import last_uses
    from .ir.graph import Op

    drop = last_uses(g)
    sizes = {n.out.id: n.out.size for n in g.nodes}
    live, peak, at = 0, 0, 0
    for i, n in enumerate(g.nodes):
        if not resident and n.op in (Op.PARAM, Op.CONST):
            sizes[n.out.id] = 0
        live += sizes[n.out.id]
        if live > peak:
            peak, at = live, i
        live -= sum(sizes[v] for v in drop.get(i, ()))
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
