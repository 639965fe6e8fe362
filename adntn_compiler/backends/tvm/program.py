"""A lowered program: kernel calls over named flat float32 buffers, as plain JSON-able data (no TVM needed)."""
from __future__ import annotations

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
    def from_dict(cls, d: dict) -> "Program":
        """Raises ValueError naming what is malformed."""
        try:
            p = cls(**{k: d[k] for k in ("buffers", "calls", "inputs", "outputs", "consts")})
            ok = (all(len(e) == 3 for e in p.inputs + p.outputs)
                  and all(set(c) == {"kernel", "args"} and all(len(a) == 2 for a in c["args"]) for c in p.calls)
                  and all({"buffer", "tensor", "shape", "perm", "pack"} <= set(c) for c in p.consts))
        except (KeyError, TypeError) as e:
            raise ValueError(f"missing or mistyped field {e}") from None
        if not ok:
            raise ValueError("an input, output, call or constant entry has the wrong form")
        return p


def prepare_const(t: np.ndarray, spec: dict) -> np.ndarray:
    """A constant in the layout a kernel wants (load time, numpy)."""
    a = np.asarray(t, dtype=np.float32).reshape(spec["shape"])
    if spec["perm"] is not None:
        a = a.transpose(spec["perm"])
    if spec["pack"] is not None:
        bt, k, j, jt = spec["pack"]
        a = a.reshape(bt, k, j // jt, jt).transpose(0, 2, 1, 3)
    return np.ascontiguousarray(a).reshape(-1)
