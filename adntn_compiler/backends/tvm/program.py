"""A lowered program: kernel calls over named flat float32 buffers, as plain JSON-able data (no TVM needed)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Program:
    """A graph lowered to kernel calls. Buffers are named; `consts` say how to fill constant buffers from
    named tensors (axis permutation, then optional packing of B into (BT, J/jt, K, jt) panels)."""
    buffers: dict[str, int] = field(default_factory=dict)  # name -> number of float32 elements
    calls: list[dict] = field(default_factory=list)  # {"kernel": name, "args": [[buffer, shape], ...]}
    inputs: list[list] = field(default_factory=list)  # [name, buffer, shape] per graph input
    outputs: list[list] = field(default_factory=list)  # [name, buffer, shape] per graph output
    consts: list[dict] = field(default_factory=list)  # {"buffer", "tensor", "shape", "perm", "pack"}

    def to_dict(self) -> dict:
        return dict(buffers=self.buffers, calls=self.calls, inputs=self.inputs, outputs=self.outputs,
                    consts=self.consts)

    @classmethod
    def from_dict(cls, d: dict, max_elements: int | None = None) -> "Program":
        """A program from its JSON form, checked: the schema (types), then that every buffer an argument, input,
        output or constant names exists and is large enough, that the buffers stay within `max_elements` in all,
        and that every call reads only buffers written before it (an input, a constant or an earlier call's
        result; a call's last argument is what it writes). Raises ValueError naming the field."""
        import jsonschema

        try:
            jsonschema.validate(d, PROGRAM_SCHEMA)
        except jsonschema.ValidationError as e:
            where = "/".join(str(x) for x in e.absolute_path) or "the program"
            raise ValueError(f"{where}: {e.message[:200]}") from None
        p = cls(**{k: d[k] for k in ("buffers", "calls", "inputs", "outputs", "consts")})
        p.check(max_elements)
        return p

    def check(self, max_elements: int | None = None) -> None:
        total = sum(self.buffers.values())
        if max_elements is not None and total > max_elements:
            raise ValueError(f"buffers: {total:,} float32 elements in all, more than the limit {max_elements:,}")

        def fits(where: str, buf: str, shape) -> None:
            if buf not in self.buffers:
                raise ValueError(f"{where}: unknown buffer {buf!r}")
            if math.prod(shape) > self.buffers[buf]:
                raise ValueError(f"{where}: shape {tuple(shape)} does not fit buffer {buf!r} of "
                                 f"{self.buffers[buf]:,} elements")

        written = set()
        for k, (name, buf, shape) in enumerate(self.inputs):
            fits(f"inputs/{k} ({name})", buf, shape)
            written.add(buf)
        for k, c in enumerate(self.consts):
            fits(f"consts/{k} ({c['tensor']})", c["buffer"], c["shape"])
            if c["perm"] is not None and sorted(c["perm"]) != list(range(len(c["shape"]))):
                raise ValueError(f"consts/{k}: perm {c['perm']} is not a permutation of {len(c['shape'])} axes")
            if c["pack"] is not None:
                bt, kk, j, jt = c["pack"]
                if bt * kk * j != math.prod(c["shape"]) or j % jt:
                    raise ValueError(f"consts/{k}: pack {c['pack']} does not match shape {c['shape']}")
            written.add(c["buffer"])
        for k, c in enumerate(self.calls):
            for a, (buf, shape) in enumerate(c["args"]):
                fits(f"calls/{k} ({c['kernel']}) argument {a}", buf, shape)
            for buf, _ in c["args"][:-1]:
                if buf not in written:
                    raise ValueError(f"calls/{k} ({c['kernel']}) reads buffer {buf!r} before anything writes it")
            written.add(c["args"][-1][0])
        for k, (name, buf, shape) in enumerate(self.outputs):
            fits(f"outputs/{k} ({name})", buf, shape)
            if buf not in written:
                raise ValueError(f"outputs/{k} ({name}): buffer {buf!r} is never written")


_SHAPE = {"type": "array", "items": {"type": "integer", "minimum": 1}, "maxItems": 64}
_NAMED = {"type": "array", "prefixItems": [{"type": "string"}, {"type": "string"}, _SHAPE], "minItems": 3,
          "maxItems": 3}
PROGRAM_SCHEMA = {
    "type": "object",
    "required": ["buffers", "calls", "inputs", "outputs", "consts"],
    "properties": {
        "buffers": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 1}},
        "calls": {"type": "array", "items": {
            "type": "object", "required": ["kernel", "args"], "additionalProperties": False,
            "properties": {"kernel": {"type": "string"}, "args": {"type": "array", "minItems": 1, "items": {
                "type": "array", "prefixItems": [{"type": "string"}, _SHAPE], "minItems": 2, "maxItems": 2}}}}},
        "inputs": {"type": "array", "items": _NAMED},
        "outputs": {"type": "array", "items": _NAMED, "minItems": 1},
        "consts": {"type": "array", "items": {
            "type": "object", "required": ["buffer", "tensor", "shape", "perm", "pack"], "additionalProperties": False,
            "properties": {"buffer": {"type": "string"}, "tensor": {"type": "string"}, "shape": _SHAPE,
                           "perm": {"anyOf": [{"type": "null"}, {"type": "array", "items": {"type": "integer"}}]},
                           "pack": {"anyOf": [{"type": "null"}, {"type": "array", "items": {
                               "type": "integer", "minimum": 1}, "minItems": 4, "maxItems": 4}]}}}},
    },
}


def prepare_const(t: np.ndarray, spec: dict) -> np.ndarray:
    """A constant in the layout a kernel wants (load time, numpy)."""
    a = np.asarray(t, dtype=np.float32).reshape(spec["shape"])
    if spec["perm"] is not None:
        a = a.transpose(spec["perm"])
    if spec["pack"] is not None:
        bt, k, j, jt = spec["pack"]
        a = a.reshape(bt, k, j // jt, jt).transpose(0, 2, 1, 3)
    return np.ascontiguousarray(a).reshape(-1)
