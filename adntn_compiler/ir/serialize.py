"""Graphs as JSON (no pickle): nodes as plain objects, tensors as base64 of their raw bytes, so the
round trip is exact."""
from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np

from ..errors import SerializationError
from . import graph as G
from .verify import verify

FORMAT = "adntn-ir"
VERSION = 1

_ATTRS = {
    "name": G.NameAttrs, "einsum": G.EinsumAttrs, "map": G.MapAttrs, "shape": G.ShapeAttrs,
    "perm": G.PermAttrs, "pad": G.PadAttrs, "slice": G.SliceAttrs, "axis": G.AxisAttrs, "add": G.AddAttrs,
    "binary": G.BinaryAttrs, "conv": G.ConvAttrs, "pool": G.PoolAttrs, "adaptive_pool": G.AdaptivePoolAttrs,
    "norm": G.NormAttrs, "take": G.TakeAttrs,
}
_KIND = {cls: k for k, cls in _ATTRS.items()}
_DTYPES = {"float32", "float64"}


def _tuples(x: Any) -> Any:
    return tuple(_tuples(v) for v in x) if isinstance(x, list) else x


def tensor_to_dict(a: np.ndarray) -> dict:
    a = np.array(a, order="C")  # (ascontiguousarray would turn a 0-d scale into shape (1,))
    if a.dtype.name not in _DTYPES:
        raise SerializationError(f"tensor dtype {a.dtype} is not one of {sorted(_DTYPES)}")
    return {"dtype": a.dtype.name, "shape": list(a.shape),
            "data": base64.b64encode(a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()).decode()}


def tensor_from_dict(d: dict) -> np.ndarray:
    if d.get("dtype") not in _DTYPES:
        raise SerializationError(f"tensor dtype {d.get('dtype')!r} is not one of {sorted(_DTYPES)}")
    raw = base64.b64decode(d["data"], validate=True)
    shape = tuple(d["shape"])
    dt = np.dtype(d["dtype"]).newbyteorder("<")
    if len(raw) != int(np.prod(shape, dtype=np.int64)) * dt.itemsize:
        raise SerializationError(f"tensor data is {len(raw)} bytes, shape {shape} of {d['dtype']} needs more or fewer")
    return np.frombuffer(raw, dtype=dt).reshape(shape).astype(d["dtype"])


def to_dict(g: G.Graph) -> dict:
    nodes = []
    for n in g.nodes:
        attrs = {f: getattr(n.attrs, f) for f in n.attrs.__dataclass_fields__}
        nodes.append({
            "op": n.op.value, "inputs": [v.id for v in n.inputs],
            "out": {"id": n.out.id, "shape": list(n.out.shape), "dtype": n.out.dtype},
            "attrs": {"kind": _KIND[type(n.attrs)], **attrs}, "path": n.path,
        })
    return {"format": FORMAT, "version": VERSION, "nodes": nodes,
            "tensors": {k: tensor_to_dict(v) for k, v in g.tensors.items()}}


def from_dict(d: dict, tensors: dict[str, np.ndarray] | None = None) -> G.Graph:
    """The graph in `d`; `tensors` supplies values stored elsewhere (e.g. an artifact's safetensors)."""
    if d.get("format") != FORMAT:
        raise SerializationError(f"not an adntn IR graph (format {d.get('format')!r})")
    if d.get("version") != VERSION:
        raise SerializationError(f"unknown IR format version {d.get('version')!r}; this build reads {VERSION}")
    try:
        values: dict[int, G.Value] = {}
        nodes = []
        for nd in d["nodes"]:
            out = G.Value(nd["out"]["id"], tuple(nd["out"]["shape"]), nd["out"]["dtype"])
            a = dict(nd["attrs"])
            cls = _ATTRS[a.pop("kind")]
            attrs = cls(**{k: _tuples(v) for k, v in a.items()})
            inputs = tuple(values[i] for i in nd["inputs"])
            nodes.append(G.Node(G.Op(nd["op"]), inputs, out, attrs, nd.get("path", "")))
            values[out.id] = out
        stored = {k: tensor_from_dict(v) for k, v in d["tensors"].items()}
        if tensors is not None:
            names = {n.name for n in nodes if n.op in (G.Op.PARAM, G.Op.CONST)}
            stored.update({k: v for k, v in tensors.items() if k in names})
    except (KeyError, TypeError, ValueError) as e:
        raise SerializationError(f"malformed IR graph: {type(e).__name__}: {e}") from None
    return verify(G.Graph(tuple(nodes), stored))


def to_json(g: G.Graph) -> str:
    return json.dumps(to_dict(g), separators=(",", ":"))


def from_json(text: str) -> G.Graph:
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise SerializationError(f"IR graph is not valid JSON: {e}") from None
    return from_dict(d)
