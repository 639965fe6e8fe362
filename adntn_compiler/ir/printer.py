"""One line per node; this text is what errors, golden tests and `adntn explain` show."""
from __future__ import annotations

from .graph import AxisAttrs, EinsumAttrs, Graph, MapAttrs, NameAttrs, Node, PadAttrs, PermAttrs, ShapeAttrs, SliceAttrs


def format_attrs(n: Node) -> str:
    a = n.attrs
    if isinstance(a, EinsumAttrs):
        return f"['{a.equation}'{'|' + a.epilogue if a.epilogue else ''}]"
    if isinstance(a, MapAttrs):
        return f"[{a.fn}]"
    if isinstance(a, NameAttrs):
        return f"['{a.name}']"
    if isinstance(a, ShapeAttrs):
        return f"[{a.shape}]"
    if isinstance(a, PermAttrs):
        return f"[{a.perm}]"
    if isinstance(a, PadAttrs):
        return f"[{a.pads}]"
    if isinstance(a, AxisAttrs):
        return f"[axis={a.axis}{', causal' if a.causal else ''}]"
    if isinstance(a, SliceAttrs):
        return f"[{a.starts}:{a.stops}]"
    fields = getattr(a, "__dataclass_fields__", {})
    return f"[{', '.join(f'{k}={getattr(a, k)}' for k in fields)}]" if fields else ""


def format_node(n: Node) -> str:
    args = ", ".join(str(v) for v in n.inputs)
    loc = f"  # {n.path}" if n.path else ""
    return f"{n.out} = {n.op.value}{format_attrs(n)}({args}) : {n.out.shape}{loc}"


def format_graph(g: Graph, around: int | None = None, radius: int = 10) -> str:
    """The whole graph, or the lines within `radius` of node index `around` (for error messages)."""
    lines = [format_node(n) for n in g.nodes]
    if around is None:
        return "\n".join(lines)
    lo, hi = max(0, around - radius), min(len(lines), around + radius + 1)
    return "\n".join(("> " if i == around else "  ") + lines[i] for i in range(lo, hi))
