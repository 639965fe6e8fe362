"""The initial scale of a generator: the std of the generated W, estimated without materialising W.

Three estimates, the first that fits:
- exact:   W's graph has a small peak (up to EXACT_BYTES): run it, take the std of the cropped W.
- sampled: everything before the last linear segment fits (up to SAMPLE_BYTES): run that part, then compute
           SAMPLES random entries of W from its operands by gathering (an entry of a multilinear contraction
           only needs the operands' slices at that entry's indices). ttn/attn on VGG-16 layers: ~1% error.
- moments: propagate mean and mean square through the graph (an einsum sums independent products, an
           activation of N(0, m2) by Gauss-Hermite quadrature). For structures whose nonlinear tensors are as
           large as W (a binary MERA at rank 4 on FC6: a 134 M-entry level tensor) this is the only estimate
           that stays within memory; it is the expectation over the cores' draw, not this draw's std.

Only the IR builder, the passes' `segment` and the numpy op table are used: the tracer is not (generators
must not depend on it).
"""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import opt_einsum

from .. import activations
from ..ir.builder import Builder
from ..ir.graph import Graph, NameAttrs, Node, Op, Value
from ..memory import peak_bytes

EXACT_BYTES = 64 << 20
SAMPLE_BYTES = 128 << 20
SAMPLES = 1 << 16


def weight_graph(gen, cores: Mapping[str, np.ndarray]) -> tuple[Graph, list]:
    """The generator's weight in fine-axis form (scale left out) as a graph with one output, and its labels."""
    b = Builder()
    vals = {k: b.param(k, np.asarray(cores[k]), f"{gen.arch}.{k}") for k in gen.core_shapes if k != "scale"}
    w, labels = gen.emit(b, vals)
    b.output(w, "W")
    return b.build(), labels


def weight_std(gen, cores: Mapping[str, np.ndarray], seed: int = 0) -> tuple[float, str]:
    """(std of W without its scale, the method used)."""
    g, labels = weight_graph(gen, cores)
    if peak_bytes(g, 8)[0] <= EXACT_BYTES:
        return _exact(gen, g, labels), "exact"
    from ..passes.segment import segment

    sg = segment(g)
    last = sg.producer()[sg.outputs[0].id]
    if last.op is Op.EINSUM:
        prefix = _prefix(sg, last)
        if peak_bytes(prefix, 8)[0] <= SAMPLE_BYTES:
            return _sampled(gen, prefix, last, labels, seed), "sampled"
    return _moments(g), "moments"


def _run(g: Graph) -> list[np.ndarray]:
    from ..backends.reference import run

    return run(g)


def _exact(gen, g: Graph, labels: list) -> float:
    w = _run(g)[0]
    lg = gen.legs
    order = [labels.index(("f", f, None)) for f in range(len(lg.fine))]
    return float(w.transpose(order).reshape(lg.O_pad, lg.I_pad)[: gen.O, : gen.I].std())


def _prefix(g: Graph, last: Node) -> Graph:
    """The part of `g` before node `last`, with last's operands as its outputs."""
    i = g.nodes.index(last)
    nodes = list(g.nodes[:i])
    nid = max(n.out.id for n in g.nodes) + 1
    for k, v in enumerate(last.inputs):
        nodes.append(Node(Op.OUTPUT, (v,), Value(nid + k, v.shape, v.dtype), NameAttrs(f"operand{k}")))
    return Graph(tuple(nodes), g.tensors)


def _sampled(gen, prefix: Graph, last: Node, labels: list, seed: int) -> float:
    lg = gen.legs
    rng = np.random.default_rng([seed, 0x5ca1e])
    n = min(SAMPLES, gen.O * gen.I)
    o, i = rng.integers(0, gen.O, n), rng.integers(0, gen.I, n)  # entries of the cropped W
    fine = np.unravel_index(o, lg.out_dims) + np.unravel_index(i, lg.in_dims)
    # last's output axis j is fine axis labels[j][1]: its index array per sample
    idx = {c: fine[labels[j][1]] for j, c in enumerate(last.attrs.out)}
    operands, terms = [], []
    for x, t in zip(_run(prefix), last.attrs.terms):
        picked = [c for c in t if c in idx]
        if not picked:
            operands.append(x)
            terms.append(t)
            continue
        rest = [c for c in t if c not in idx]
        x = x.transpose([t.index(c) for c in picked + rest])
        operands.append(x[tuple(idx[c] for c in picked)])  # (samples, *rest)
        terms.append("".join(["#", *rest]))
    s = opt_einsum.get_symbol(len({c for t in last.attrs.terms for c in t}) + 1)
    while any(s in t for t in last.attrs.terms):
        s = chr(ord(s) + 1)
    eq = ",".join(t.replace("#", s) for t in terms) + "->" + s
    return float(opt_einsum.contract(eq, *operands).std())


def _gauss(fn: str, m2: float) -> tuple[float, float]:
    """(E f(z), E f(z)^2) for z ~ N(0, m2)."""
    z, w = np.polynomial.hermite_e.hermegauss(64)
    fz = activations.get(fn).numpy(z * math.sqrt(max(m2, 0.0)))
    w = w / w.sum()
    return float(w @ fz), float(w @ fz**2)


def _moments(g: Graph) -> float:
    """Mean and mean square per value, propagated node by node (entries treated as independent)."""
    m: dict[int, tuple[float, float]] = {}
    for n in g.nodes:
        ins = [m[v.id] for v in n.inputs]
        if n.op in (Op.PARAM, Op.CONST):
            t = np.asarray(g.tensors[n.attrs.name], dtype=np.float64)
            m[n.out.id] = (float(t.mean()), float((t * t).mean())) if t.size else (0.0, 0.0)
        elif n.op is Op.EINSUM:
            sizes = {c: s for t, v in zip(n.attrs.terms, n.inputs) for c, s in zip(t, v.shape)}
            S = math.prod(s for c, s in sizes.items() if c not in n.attrs.out)
            m1, p2 = math.prod(a for a, _ in ins), math.prod(b for _, b in ins)
            m[n.out.id] = (S * m1, S * (p2 - m1 * m1) + S * S * m1 * m1)
        elif n.op is Op.MAP:
            m[n.out.id] = _gauss(n.attrs.fn, ins[0][1])
        elif n.op is Op.ADD:
            (a1, a2), (b1, b2) = ins
            m[n.out.id] = (a1 + b1, a2 + b2 + 2 * a1 * b1)
        elif n.op is Op.PAD:
            f = n.inputs[0].size / n.out.size
            m[n.out.id] = (ins[0][0] * f, ins[0][1] * f)
        elif n.op is Op.CONCAT:
            w = np.array([v.size for v in n.inputs], dtype=np.float64) / n.out.size
            m[n.out.id] = (float(w @ [a for a, _ in ins]), float(w @ [b for _, b in ins]))
        else:  # reshape, transpose, slice, output: the same entries
            m[n.out.id] = ins[0]
    m1, m2 = m[g.outputs[0].id]
    return math.sqrt(max(m2 - m1 * m1, 0.0))
