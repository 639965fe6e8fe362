"""The initial scale of a generator: the std of the generated W, estimated without materialising W.

One interpreter over the weight graph in which every value is either exact (an array, while it is small) or a
random sample of its entries (`Sample`), so memory stays bounded whatever the layer's size:
- an einsum whose inputs are exact and whose output is small is computed; one with a large output is sampled
  *exactly*: SAMPLES random entries, each from the operands' slices at its indices (gathered), as long as those
  slices are small (ttn and a MERA's isometries on VGG-16 layers);
- an einsum that mixes a sampled value (attn's disentanglers over the tree's output, a MERA level) takes the
  mean and mean square of independent products (near-unitary mixers keep the norm) and continues with a
  Gaussian sample of those moments;
- an activation maps a sample entry by entry (exact on exact samples); shape ops keep the sample.
A small W is therefore computed exactly (as before, and as the tests check); a large one is estimated
(`Generator.calibration` says how). Only the IR builder and numpy are used: not the tracer.
"""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import opt_einsum

from .. import activations
from ..ir.builder import Builder
from ..ir.graph import Graph, Node, Op

EXACT_ELEMENTS = 1 << 23  # values up to 64 MiB (float64) are computed whole
SAMPLES = 1 << 16
GATHER_ELEMENTS = 1 << 22  # gathered operand slices (samples x the labels an entry sums over) stay under 32 MiB
MIN_SAMPLES = 2048


class Sample:
    """Entries of a value too large to hold, at random positions (not necessarily the same for every value)."""

    __slots__ = ("values", "exact")

    def __init__(self, values: np.ndarray, exact: bool):
        self.values, self.exact = values, exact  # exact: true entries; else drawn from estimated moments


def weight_graph(gen, cores: Mapping[str, np.ndarray]) -> tuple[Graph, list]:
    """The generator's weight in fine-axis form (scale left out) as a graph with one output, and its labels."""
    b = Builder()
    vals = {k: b.param(k, np.asarray(cores[k]), f"{gen.arch}.{k}") for k in gen.core_shapes if k != "scale"}
    w, labels = gen.emit(b, vals)
    b.output(w, "W")
    return b.build(), labels


def weight_std(gen, cores: Mapping[str, np.ndarray], seed: int = 0) -> tuple[float, str]:
    """(std of W without its scale, how it was obtained: "exact", "sampled" or "moments")."""
    g, labels = weight_graph(gen, cores)
    w, how = evaluate(g, np.random.default_rng([seed, 0x5ca1e]))
    if isinstance(w, Sample):
        return float(w.values.std()), how
    lg = gen.legs
    order = [labels.index(("f", f, None)) for f in range(len(lg.fine))]
    return float(w.transpose(order).reshape(lg.O_pad, lg.I_pad)[: gen.O, : gen.I].std()), how


def evaluate(g: Graph, rng: np.random.Generator):
    """(the output: an array or a Sample, the least exact method any value needed)."""
    from ..backends.reference import IMPL_NUMPY

    env: dict[int, object] = {}
    how = "exact"
    for n in g.nodes:
        ins = [env[v.id] for v in n.inputs]
        if n.op in (Op.PARAM, Op.CONST):
            out = np.asarray(g.tensors[n.attrs.name], dtype=np.float64)
        elif not any(isinstance(x, Sample) for x in ins) and (n.out.size <= EXACT_ELEMENTS or n.op is Op.OUTPUT):
            out = IMPL_NUMPY[n.op](n, *ins)
        elif n.op is Op.EINSUM:
            out = _einsum(n, ins, rng)
        elif n.op is Op.MAP:
            s = _sample(ins[0], rng)
            out = Sample(activations.get(n.attrs.fn).numpy(s.values), s.exact)
        elif n.op is Op.ADD:  # broadcasting: entries of both at independent positions
            a, b = (_sample(x, rng) for x in ins)
            out = Sample(a.values + b.values[rng.integers(0, b.values.size, a.values.size)], False)
        elif n.op is Op.PAD:
            s = _sample(ins[0], rng)
            keep = rng.random(s.values.size) < n.inputs[0].size / n.out.size
            out = Sample(np.where(keep, s.values, 0.0), s.exact)
        else:  # reshape, transpose, slice, concat, output: entries of the same values
            out = _sample(ins[0], rng)
        if isinstance(out, Sample):
            how = "sampled" if out.exact and how == "exact" else "moments" if not out.exact else how
        env[n.out.id] = out
    return env[g.outputs[0].id], how


def _sample(x, rng: np.random.Generator) -> Sample:
    if isinstance(x, Sample):
        return x
    flat = np.asarray(x).reshape(-1)
    return Sample(flat[rng.integers(0, flat.size, min(SAMPLES, flat.size))], True)


def _einsum(n: Node, ins: list, rng: np.random.Generator) -> Sample:
    a = n.attrs
    out = set(a.out)
    sizes = {c: s for t, v in zip(a.terms, n.inputs) for c, s in zip(t, v.shape)}
    if not any(isinstance(x, Sample) for x in ins):
        summed = max(math.prod(sizes[c] for c in t if c not in out) for t in a.terms)
        k = min(SAMPLES, GATHER_ELEMENTS // summed)
        if k >= MIN_SAMPLES:
            return _gathered(n, ins, sizes, k, rng)
    # the mean and mean square of a sum of independent products, then a Gaussian sample with those moments
    S = math.prod(s for c, s in sizes.items() if c not in out)
    vals = [x.values if isinstance(x, Sample) else np.asarray(x) for x in ins]
    m1 = math.prod(float(v.mean()) for v in vals)
    p2 = math.prod(float((v * v).mean()) for v in vals)
    mean, square = S * m1, S * (p2 - m1 * m1) + S * S * m1 * m1
    std = math.sqrt(max(square - mean * mean, 0.0))
    return Sample(mean + std * rng.standard_normal(SAMPLES), False)


def _gathered(n: Node, ins: list, sizes: dict[str, int], k: int, rng: np.random.Generator) -> Sample:
    """k true entries of einsum n at random positions: each operand gathered at those positions' indices."""
    a = n.attrs
    idx = {c: rng.integers(0, sizes[c], k) for c in a.out}
    s = next(chr(c) for c in range(0x4E00, 0x9FFF) if all(chr(c) not in t for t in a.terms))  # a free label
    operands, terms = [], []
    for x, t in zip(ins, a.terms):
        picked = [c for c in t if c in idx]
        if not picked:
            operands.append(x)
            terms.append(t)
            continue
        rest = [c for c in t if c not in idx]
        x = x.transpose([t.index(c) for c in picked + rest])
        operands.append(x[tuple(idx[c] for c in picked)])  # (k, *rest)
        terms.append(s + "".join(rest))
    return Sample(opt_einsum.contract(",".join(terms) + "->" + s, *operands), True)
