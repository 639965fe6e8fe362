"""The one interpreter loop, shared by the numpy reference and the torch backend: each supplies its table of op
implementations and how it binds inputs and tensors. A failing op is re-raised with the node's printed line
and the user's path (fx's "While executing ..." is the model)."""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from ..errors import AdntnError
from .graph import Graph, Node, Op
from .printer import format_node

Impl = Mapping[Op, Callable[..., Any]]


class InterpretError(AdntnError):
    """An op failed while a graph was executed; the message names the node and its path."""


def last_uses(g: Graph) -> dict[int, list[int]]:
    """node index -> value ids whose last use is that node (outputs are never freed)."""
    last: dict[int, int] = {}
    for i, n in enumerate(g.nodes):
        for v in n.inputs:
            last[v.id] = i
    keep = {v.id for v in g.outputs}
    out: dict[int, list[int]] = {}
    for vid, i in last.items():
        if vid not in keep:
            out.setdefault(i, []).append(vid)
    return out


def interpret(g: Graph, args: Sequence[Any], impl: Impl, bind_input: Callable[[Node, Any], Any],
              bind_tensor: Callable[[Node], Any], backend: str) -> list[Any]:
    """Execute `g`: inputs bound from `args` in order, PARAM/CONST nodes by `bind_tensor`, every other node by
    `impl[node.op]`. Values are freed after their last use."""
    n_in = sum(1 for n in g.nodes if n.op is Op.INPUT)
    if len(args) != n_in:
        raise InterpretError(f"graph takes {n_in} inputs, got {len(args)}")
    inputs = iter(args)
    env: dict[int, Any] = {}
    drop = last_uses(g)
    for i, n in enumerate(g.nodes):
        try:
            if n.op is Op.INPUT:
                env[n.out.id] = bind_input(n, next(inputs))
            elif n.op in (Op.PARAM, Op.CONST):
                env[n.out.id] = bind_tensor(n)
            elif n.op not in impl:
                raise InterpretError(f"the {backend} backend has no implementation of op {n.op.value}")
            else:
                env[n.out.id] = impl[n.op](n, *(env[v.id] for v in n.inputs))
        except AdntnError as e:
            if isinstance(e, InterpretError) and str(e).startswith("while executing"):
                raise
            raise type(e)(f"while executing {format_node(n)}{_at(n)} ({backend}): {e}") from e
        except Exception as e:  # a raw numpy/torch error: say which node it came from
            raise InterpretError(f"while executing {format_node(n)}{_at(n)} ({backend}): "
                                 f"{type(e).__name__}: {e}") from e
        for vid in drop.get(i, ()):
            del env[vid]
    return [env[v.id] for v in g.outputs]


def _at(n: Node) -> str:
    return f" at {n.path}" if n.path else ""
