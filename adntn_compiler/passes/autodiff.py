"""autodiff: build the backward graph of a forward graph in the same IR, from per-op VJP rules.

The result takes the forward inputs and one cotangent per output (input `ct.<name>`), and returns the
forward outputs and one gradient per param (output `grad.<name>`). It is an ordinary graph: it prints,
verifies, is optimised by the other passes and runs on every backend.

An einsum's VJP is an einsum (STYLE.md item 5): the cotangent contracted with the other operands. Labels
that only the differentiated operand has come back by broadcasting against a ones vector; a repeated
label ("aa") comes back through an identity matrix. An einsum with an activation epilogue first recomputes
its pre-activation. With `recompute=True` only params, consts, inputs and outputs are kept from the
forward pass; every other forward value the backward pass needs is recomputed where it is used.
"""
from __future__ import annotations

from typing import Callable, Hashable

import numpy as np

from ..activations import DERIV_PREFIX
from ..errors import AdntnError
from ..ir.builder import Builder
from ..ir.graph import AxisAttrs, EinsumAttrs, Graph, MapAttrs, Node, Op, PadAttrs, PermAttrs, SliceAttrs, Value


class AutodiffError(AdntnError):
    pass


class _Diff:
    def __init__(self, g: Graph, recompute: bool):
        self.g, self.recompute = g, recompute
        self.b = Builder()
        self.b.tensors = dict(g.tensors)
        self.fmap: dict[int, Value] = {}  # forward value id -> value in the new graph
        self.again: dict[int, Value] = {}  # recomputed values (recompute=True)
        self.pre_ct: dict[int, Value] = {}  # epilogue einsum -> cotangent of its pre-activation
        self.producer = g.producer()
        self.keep = {v.id for v in g.outputs} | {n.out.id for n in g.nodes
                                                  if n.op in (Op.INPUT, Op.PARAM, Op.CONST)}

    def fwd(self, v: Value) -> Value:
        """The forward value `v`, as the backward pass may use it (kept, or recomputed here)."""
        if not self.recompute or v.id in self.keep:
            return self.fmap[v.id]
        if v.id not in self.again:
            n = self.producer[v.id]
            self.again[v.id] = self.b.node(n.op, tuple(self.fwd(u) for u in n.inputs), n.attrs, n.path + ".recompute")
        return self.again[v.id]

    def const(self, name: str, value: np.ndarray) -> Value:
        if name not in self.b.tensors:
            return self.b.param(name, value, "autodiff", const=True)
        return next(n.out for n in self.b.nodes if n.op is Op.CONST and n.name == name)

    def total(self, cts: list[Value]) -> Value:
        """Sum of the cotangent contributions (stacked, then summed by an einsum)."""
        if len(cts) == 1:
            return cts[0]
        shape = cts[0].shape
        stacked = self.b.concat([self.b.reshape(c, (1,) + shape, "autodiff.sum") for c in cts], 0, "autodiff.sum")
        labels: list[Hashable] = list(range(len(shape)))
        return self.b.contract([(stacked, ["sum", *labels])], labels, "autodiff.sum")

    def times(self, ct: Value, other: Value, path: str) -> Value:
        labels = list(range(len(ct.shape)))
        return self.b.contract([(ct, labels), (other, labels)], labels, path)


def _vjp_einsum(d: _Diff, n: Node, ct: Value, wrt: int) -> Value:
    a, b = n.attrs_as(EinsumAttrs), d.b
    path = f"{n.path}.vjp{wrt}"
    if a.epilogue:  # the cotangent of the pre-activation, shared by every operand's VJP
        if n.out.id not in d.pre_ct:
            z = b.node(Op.EINSUM, tuple(d.fwd(v) for v in n.inputs), type(a)(a.terms, a.out), n.path + ".pre")
            d.pre_ct[n.out.id] = d.times(ct, b.map(DERIV_PREFIX + a.epilogue, z, path), path)
        ct = d.pre_ct[n.out.id]
    ops: list[tuple[Value, list]] = [(ct, list(a.out))]
    ops += [(d.fwd(v), list(t)) for j, (v, t) in enumerate(zip(n.inputs, a.terms)) if j != wrt]
    seen: set = set()
    target: list = []
    size = dict(zip(a.terms[wrt], n.inputs[wrt].shape))
    for k, c in enumerate(a.terms[wrt]):
        if c in seen:  # repeated label: the cotangent lands on the diagonal
            target.append(("dup", k))
            ops.append((d.const(f"autodiff.eye{size[c]}", np.eye(size[c])), [c, ("dup", k)]))
        else:
            target.append(c)
            seen.add(c)
    present = {l for _, ls in ops for l in ls}
    for c in dict.fromkeys(a.terms[wrt]):
        if c not in present:  # summed away by this operand alone: broadcast back
            ops.append((d.const(f"autodiff.ones{size[c]}", np.ones(size[c])), [c]))
    return b.contract(ops, target, path)


def _vjp_map(d: _Diff, n: Node, ct: Value, wrt: int) -> Value:
    return d.times(ct, d.b.map(DERIV_PREFIX + n.attrs_as(MapAttrs).fn, d.fwd(n.inputs[0]), n.path), f"{n.path}.vjp")


def _vjp_concat(d: _Diff, n: Node, ct: Value, wrt: int) -> Value:
    ax = n.attrs_as(AxisAttrs).axis
    start = sum(v.shape[ax] for v in n.inputs[:wrt])
    shape = n.inputs[wrt].shape
    lo = [0] * len(shape)
    lo[ax] = start
    hi = list(ct.shape)
    hi[ax] = start + shape[ax]
    return d.b.slice(ct, lo, hi, f"{n.path}.vjp")


def _vjp_bias(d: _Diff, n: Node, ct: Value) -> Value:
    """Sum the cotangent over the axes the bias was broadcast along."""
    a, bshape = n.inputs[0].shape, n.inputs[1].shape
    off = len(a) - len(bshape)
    labels = list(range(len(a)))
    keep = [off + k for k, s in enumerate(bshape) if s != 1]
    return d.b.reshape(d.b.contract([(ct, labels)], keep, f"{n.path}.vjp"), bshape, f"{n.path}.vjp")


def _vjp_pad(d: _Diff, n: Node, ct: Value, wrt: int) -> Value:
    pads = n.attrs_as(PadAttrs).pads
    return d.b.slice(ct, [lo for lo, _ in pads], [lo + s for (lo, _), s in zip(pads, n.inputs[0].shape)],
                     f"{n.path}.vjp")


def _vjp_slice(d: _Diff, n: Node, ct: Value, wrt: int) -> Value:
    a = n.attrs_as(SliceAttrs)
    return d.b.pad(ct, [(lo, s - hi) for lo, hi, s in zip(a.starts, a.stops, n.inputs[0].shape)], f"{n.path}.vjp")


VJP: dict[Op, Callable[[_Diff, Node, Value, int], Value]] = {
    Op.EINSUM: _vjp_einsum,
    Op.MAP: _vjp_map,
    Op.RESHAPE: lambda d, n, ct, k: d.b.reshape(ct, n.inputs[0].shape, f"{n.path}.vjp"),
    Op.TRANSPOSE: lambda d, n, ct, k: d.b.transpose(ct, list(np.argsort(n.attrs_as(PermAttrs).perm)),
                                                    f"{n.path}.vjp"),
    Op.PAD: _vjp_pad,
    Op.SLICE: _vjp_slice,
    Op.CONCAT: _vjp_concat,
    Op.ADD: lambda d, n, ct, k: ct if k == 0 else _vjp_bias(d, n, ct),
}


def autodiff(g: Graph, recompute: bool = False, inputs: bool = False) -> Graph:
    """With `inputs=True` the graph also returns `grad.<name>` for each forward input (to backpropagate
    into earlier layers)."""
    d = _Diff(g, recompute)
    b = d.b
    for n in g.nodes:  # the forward pass, unchanged
        if n.op is not Op.OUTPUT:
            d.fmap[n.out.id] = b.node(n.op, tuple(d.fmap[v.id] for v in n.inputs), n.attrs, n.path,
                                      n.out.shape if n.op in (Op.INPUT, Op.PARAM, Op.CONST) else None)
    needs: set[int] = set()  # values that depend on a param: only they need a cotangent
    wrt = (Op.PARAM, Op.INPUT) if inputs else (Op.PARAM,)
    for n in g.nodes:
        if n.op in wrt or any(v.id in needs for v in n.inputs):
            needs.add(n.out.id)
    cts: dict[int, list[Value]] = {}
    outs = [n for n in g.nodes if n.op is Op.OUTPUT]
    for n in outs:
        cts.setdefault(n.inputs[0].id, []).append(b.input(f"ct.{n.name}", n.out.shape, "autodiff.seed"))
    for n in reversed(g.nodes):
        if n.op is Op.OUTPUT or n.out.id not in cts or not n.inputs:
            continue
        if n.op not in VJP:
            raise AutodiffError(f"no VJP rule for op {n.op.value} (node %{n.out.id} at {n.path})")
        ct = d.total(cts[n.out.id])
        for k, v in enumerate(n.inputs):
            if v.id in needs:
                cts.setdefault(v.id, []).append(VJP[n.op](d, n, ct, k))
    for n in outs:
        b.output(d.fmap[n.inputs[0].id], n.name)
    for n in g.nodes:
        if n.op in wrt:
            grad = d.total(cts[n.out.id]) if n.out.id in cts else \
                d.const(f"autodiff.zeros.{n.name}", np.zeros(n.out.shape))
            b.output(grad, f"grad.{n.name}")
    return b.build()


_LEAF = (Op.PARAM, Op.CONST)


def _cotangent_dependent(bg: Graph) -> set[int]:
    """Ids of the values that depend on a cotangent input (`ct.<name>`)."""
    late: set[int] = set()
    for n in bg.nodes:
        if (n.op is Op.INPUT and n.name.startswith("ct.")) or any(v.id in late for v in n.inputs):
            late.add(n.out.id)
    return late


def _forward_program(bg: Graph, late: set[int]) -> tuple[Builder, dict[int, Value]]:
    """The nodes that depend on no cotangent, and the forward outputs; with the map of their values."""
    fb = Builder()
    fmap: dict[int, Value] = {}
    for n in bg.nodes:
        if n.op is Op.OUTPUT:
            if n.inputs[0].id in late or n.name.startswith("grad."):
                continue
            fb.output(fmap[n.inputs[0].id], n.name)
        elif n.out.id not in late:
            shape = n.out.shape if n.op in (Op.INPUT, *_LEAF) else None
            fmap[n.out.id] = fb.node(n.op, tuple(fmap[v.id] for v in n.inputs), n.attrs, n.path, shape)
    return fb, fmap


def _backward_program(bg: Graph, late: set[int]) -> tuple[Builder, list[Value]]:
    """The nodes that depend on a cotangent, and the gradient outputs; with the forward values they read
    (inputs `saved.<k>`, in that order). Params and consts are read directly."""
    bb = Builder()
    bmap: dict[int, Value] = {}
    saved: list[Value] = []
    producer = bg.producer()

    def bval(v: Value) -> Value:
        if v.id not in bmap:
            p = producer[v.id]
            if p.op in _LEAF:
                bmap[v.id] = bb.node(p.op, (), p.attrs, p.path, v.shape)
            else:  # a forward value: saved by the forward program
                bmap[v.id] = bb.input(f"saved.{len(saved)}", v.shape, p.path)
                saved.append(v)
        return bmap[v.id]

    for n in bg.nodes:
        if n.op is Op.INPUT and n.out.id in late:
            bmap[n.out.id] = bb.input(n.name, n.out.shape, n.path)
    for n in bg.nodes:
        if n.op is Op.OUTPUT:
            if n.name.startswith("grad."):
                bb.output(bval(n.inputs[0]), n.name)
        elif n.out.id in late and n.op is not Op.INPUT:
            bmap[n.out.id] = bb.node(n.op, tuple(bval(v) for v in n.inputs), n.attrs, n.path)
    return bb, saved


def _build_with_tensors(b: Builder, tensors: dict[str, np.ndarray]) -> Graph:
    """`b`'s graph with the tensors its params and consts name."""
    b.tensors = {k: t for k, t in tensors.items() if any(n.op in _LEAF and n.name == k for n in b.nodes)}
    return b.build()


def split_training(bg: Graph) -> tuple[Graph, Graph]:
    """Split an autodiff graph at the cotangent inputs into the forward program (outputs: the forward
    outputs, then `saved.<k>` for each forward value the backward part reads) and the backward program
    (inputs: the cotangents, then `saved.<k>`; outputs: the gradients). A training step runs the first in
    the forward pass and the second when the cotangent arrives, so nothing is computed twice."""
    late = _cotangent_dependent(bg)
    fb, fmap = _forward_program(bg, late)
    bb, saved = _backward_program(bg, late)
    for k, v in enumerate(saved):
        fb.output(fmap[v.id], f"saved.{k}")
    tensors = dict(bg.tensors)
    return _build_with_tensors(fb, tensors), _build_with_tensors(bb, tensors)
