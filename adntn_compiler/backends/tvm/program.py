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
    # the memory plan: {"size": elements, "offsets": {buffer: element offset}} of the buffers that share one arena
    # (constants keep their own memory); None: every buffer its own
    arena: dict | None = None

    def to_dict(self) -> dict:
        return dict(buffers=self.buffers, calls=self.calls, inputs=self.inputs, outputs=self.outputs,
                    consts=self.consts, **({"arena": self.arena} if self.arena else {}))

    def memory(self) -> dict:
        """Bytes of the arena and of the same buffers without reuse (what `adntn info` reports)."""
        planned = self.arena["offsets"] if self.arena else {b: 0 for b in arena_buffers(self)}
        unshared = 4 * sum(self.buffers[b] for b in planned)
        return {"arena_bytes": 4 * self.arena["size"] if self.arena else unshared, "unshared_bytes": unshared,
                "const_bytes": 4 * sum(self.buffers[c["buffer"]] for c in self.consts)}

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
        _no_floats(d, "")  # JSON Schema counts 1.0 as an integer; a program holds none
        p = cls(**{k: d[k] for k in ("buffers", "calls", "inputs", "outputs", "consts")}, arena=d.get("arena"))
        p.check(max_elements)
        return p

    def check_tensors(self, tensors) -> None:
        """Raise ConfigError naming the tensors the constants need that `tensors` lacks."""
        from ...errors import ConfigError

        missing = sorted({s["tensor"] for s in self.consts} - set(tensors))
        if missing:
            raise ConfigError(f"program needs tensors {', '.join(map(repr, missing))}, which are missing")

    def check(self, max_elements: int | None = None) -> None:
        total = sum(self.buffers.values())
        if max_elements is not None and total > max_elements:
            raise ValueError(f"buffers: {total:,} float32 elements in all, more than the limit {max_elements:,}")
        for what, named in (("inputs", self.inputs), ("outputs", self.outputs)):
            names = [n for n, _, _ in named]
            if "" in names or len(set(names)) != len(names):
                raise ValueError(f"{what}: names {names} must be non-empty and distinct")
        written = set()
        for k, (name, buf, shape) in enumerate(self.inputs):
            self._fits(f"inputs/{k} ({name})", buf, shape)
            written.add(buf)
        for k, c in enumerate(self.consts):
            self._check_const(k, c)
            written.add(c["buffer"])
        self._check_calls(written)
        for k, (name, buf, shape) in enumerate(self.outputs):
            self._fits(f"outputs/{k} ({name})", buf, shape)
            if buf not in written:
                raise ValueError(f"outputs/{k} ({name}): buffer {buf!r} is never written")
        if self.arena is not None:
            self._check_arena()

    def _fits(self, where: str, buf: str, shape) -> None:
        if buf not in self.buffers:
            raise ValueError(f"{where}: unknown buffer {buf!r}")
        if math.prod(shape) > self.buffers[buf]:
            raise ValueError(f"{where}: shape {tuple(shape)} does not fit buffer {buf!r} of "
                             f"{self.buffers[buf]:,} elements")

    def _check_const(self, k: int, c: dict) -> None:
        n = const_elements(c)
        self._fits(f"consts/{k} ({c['tensor']})", c["buffer"], (n,))
        if c["perm"] is not None and sorted(c["perm"]) != list(range(len(c["shape"]))):
            raise ValueError(f"consts/{k}: perm {c['perm']} is not a permutation of {len(c['shape'])} axes")
        if c.get("transform") == "winograd" and (len(c["shape"]) != 4 or c["shape"][2:] != [3, 3] or c["perm"]):
            raise ValueError(f"consts/{k}: a Winograd transform takes an (O, C, 3, 3) weight, not {c['shape']}")
        if c["pack"] is not None:
            bt, kk, j, jt = c["pack"]
            if bt * kk * j != n or j % jt:
                raise ValueError(f"consts/{k}: pack {c['pack']} does not match shape {c['shape']}")

    def _check_calls(self, written: set) -> None:
        """Each call's arguments fit, and it reads only buffers in `written` (which gains what it writes)."""
        for k, c in enumerate(self.calls):
            for a, (buf, shape) in enumerate(c["args"]):
                self._fits(f"calls/{k} ({c['kernel']}) argument {a}", buf, shape)
            for buf, _ in c["args"][:-1]:
                if buf not in written:
                    raise ValueError(f"calls/{k} ({c['kernel']}) reads buffer {buf!r} before anything writes it")
            written.add(c["args"][-1][0])

    def _check_arena(self) -> None:
        """Every planned buffer lies inside the arena, aligned, and shares memory only with buffers that are dead
        while it lives (or, in place, with an input of the call that writes it, dying at that call)."""
        size, offs = self.arena["size"], self.arena["offsets"]
        if not set(offs) <= set(arena_buffers(self)):
            raise ValueError(f"arena: {sorted(set(offs) - set(arena_buffers(self)))[:3]} are not arena buffers")
        live = lifetimes(self)
        spans = []
        for b, off in offs.items():
            if off % ARENA_ALIGN or off < 0 or off + self.buffers[b] > size:
                raise ValueError(f"arena: buffer {b!r} at {off} (+{self.buffers[b]}) is unaligned or outside the "
                                 f"arena of {size} elements")
            spans.append((off, off + self.buffers[b], b))
        inplace = {(b, c["args"][-1][0]) for k, c in enumerate(self.calls) for b, _ in c["args"][:-1]
                   if live.get(b, (0, -1))[1] == k}
        spans.sort()
        for i, (lo, hi, b) in enumerate(spans):
            for lo2, hi2, b2 in spans[i + 1:]:
                if lo2 >= hi:
                    break
                (s1, e1), (s2, e2) = live.get(b, (0, -1)), live.get(b2, (0, -1))  # (never touched: never live)
                if s1 <= e2 and s2 <= e1 and not (lo == lo2 and ((b, b2) in inplace or (b2, b) in inplace)):
                    raise ValueError(f"arena: buffers {b!r} and {b2!r} share memory while both are live")


def _no_floats(x, where: str) -> None:
    if isinstance(x, float):
        raise ValueError(f"{where or 'the program'}: {x!r} is not an integer")
    items = x.items() if isinstance(x, dict) else enumerate(x) if isinstance(x, list) else ()
    for k, v in items:
        _no_floats(v, f"{where}/{k}" if where else str(k))


ARENA_ALIGN = 16  # elements: 64 bytes, what TVM wants of a buffer's start


def arena_buffers(p: Program) -> list[str]:
    """The buffers a memory plan may place: everything but the constants (they persist across calls)."""
    consts = {c["buffer"] for c in p.consts}
    return [b for b in p.buffers if b not in consts]


def lifetimes(p: Program) -> dict[str, tuple[int, int]]:
    """buffer -> (first call that writes it, last call that touches it); inputs are born at -1, outputs live
    past the last call."""
    end = len(p.calls)
    live: dict[str, list[int]] = {b: [-1, -1] for _, b, _ in p.inputs}
    for k, c in enumerate(p.calls):
        for a, (b, _) in enumerate(c["args"]):
            span = live.setdefault(b, [k, k])
            span[1] = k
    for _, b, _ in p.outputs:
        live.setdefault(b, [end, end])[1] = end
    return {b: (s, e) for b, (s, e) in live.items()}


def plan_arena(p: Program, inplace: set[int] = frozenset()) -> dict:
    """Assign the non-constant buffers offsets in one arena: buffers whose lifetimes do not overlap share memory
    (greedy by size, lowest offset that fits: TFLite's arena planner), and the result of a call in `inplace`
    (elementwise kernels) takes the memory of an input of the same size that dies there."""
    live = lifetimes(p)
    names = [b for b in arena_buffers(p) if b in live]
    group = {b: b for b in names}  # in-place chains share one placement
    for k in sorted(inplace):
        c = p.calls[k]
        out = c["args"][-1][0]
        for b, _ in c["args"][:-1]:
            if b in group and out in group and group[out] == out and live[b][1] == k and live[out][0] == k \
                    and p.buffers[b] == p.buffers[out]:
                group[out] = group[b]
                break
    span: dict[str, list[int]] = {}
    for b, g in group.items():
        s = span.setdefault(g, [live[b][0], live[b][1], p.buffers[b]])
        s[0], s[1], s[2] = min(s[0], live[b][0]), max(s[1], live[b][1]), max(s[2], p.buffers[b])
    placed: list[tuple[int, int, int, int]] = []  # (offset, end, born, dies)
    where: dict[str, int] = {}
    for g in sorted(span, key=lambda g: (-span[g][2], span[g][0])):
        born, dies, size = span[g]
        off = 0
        for o, e, b2, d2 in sorted(x for x in placed if x[2] <= dies and born <= x[3]):
            if off + size <= o:
                break
            off = max(off, -(-e // ARENA_ALIGN) * ARENA_ALIGN)
        placed.append((off, off + size, born, dies))
        where[g] = off
    offsets = {b: where[g] for b, g in group.items()}
    total = max((o + p.buffers[b] for b, o in offsets.items()), default=0)
    return {"size": max(total, 1), "offsets": offsets}


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
        "outputs": {"type": "array", "items": _NAMED},  # a load program of a model without ADNTN layers has none
        "consts": {"type": "array", "items": {
            "type": "object", "required": ["buffer", "tensor", "shape", "perm", "pack"], "additionalProperties": False,
            "properties": {"buffer": {"type": "string"}, "tensor": {"type": "string"}, "shape": _SHAPE,
                           "perm": {"anyOf": [{"type": "null"}, {"type": "array", "items": {"type": "integer"}}]},
                           "pack": {"anyOf": [{"type": "null"}, {"type": "array", "items": {
                               "type": "integer", "minimum": 1}, "minItems": 4, "maxItems": 4}]},
                           "transform": {"enum": ["winograd"]}}}},
        "arena": {"type": "object", "required": ["size", "offsets"], "additionalProperties": False,
                  "properties": {"size": {"type": "integer", "minimum": 1},
                                 "offsets": {"type": "object", "additionalProperties": {"type": "integer",
                                                                                         "minimum": 0}}}},
    },
}


# Winograd F(2x2, 3x3) (Lavin and Gray 2016; the Cook-Toom points 0, -1, 1 of topi's winograd_util):
# Y = A^T [(G g G^T) * (B^T d B)] A for a 4 x 4 input tile d, a 3 x 3 filter g and a 2 x 2 output tile Y.
WINOGRAD_A = np.array([[1, 0], [1, -1], [1, 1], [0, 1]], np.float64)
WINOGRAD_B = np.array([[1, 0, 0, 0], [0, -1, 1, -1], [-1, 1, 1, 0], [0, 0, 0, 1]], np.float64)
WINOGRAD_G = np.array([[1, 0, 0], [0.5, -0.5, 0.5], [0.5, 0.5, 0.5], [0, 0, 1]], np.float64)


def const_elements(spec: dict) -> int:
    """Elements of a constant as a kernel reads it (a Winograd transform makes 16 of each 3 x 3 filter's 9)."""
    n = math.prod(spec["shape"])
    return n // 9 * 16 if spec.get("transform") == "winograd" else n


def prepare_const(t: np.ndarray, spec: dict) -> np.ndarray:
    """A constant in the layout a kernel wants (load time, numpy). A "winograd" transform turns an (O, C, 3, 3)
    conv weight into U = G g G^T, (16, C, O), in float64 before the cast."""
    if spec.get("transform") == "winograd":
        g = np.asarray(t, dtype=np.float64).reshape(spec["shape"])
        u = np.einsum("xa,ocab,yb->xyco", WINOGRAD_G, g, WINOGRAD_G)
        a = u.reshape(16, g.shape[1], g.shape[0]).astype(np.float32)
    else:
        a = np.asarray(t, dtype=np.float32).reshape(spec["shape"])
    if spec["perm"] is not None:
        a = a.transpose(spec["perm"])
    if spec["pack"] is not None:
        bt, k, j, jt = spec["pack"]
        a = a.reshape(bt, k, j // jt, jt).transpose(0, 2, 1, 3)
    return np.ascontiguousarray(a).reshape(-1)
