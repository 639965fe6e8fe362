"""The deployment artifact (`.adntn`, a zip) and the executable that runs it. Backend-neutral: the backend
named in the manifest supplies the library (`build` -> `Library`, `load` from bytes) and runs its programs.

    manifest.json        format and version, backend, the Target it was built for (arch, ISA, lanes, TVM dict),
                         shapes, the layer list, the load and call graphs and programs, and the sha256 of every
                         other file (and of itself, minus that field)
    tensors.safetensors  cores, dense weights and biases (float32)
    lib.so               every kernel, compiled for the target

    signature.json       Ed25519 signature of manifest.json's bytes (signing.py says what it and the sha256s guarantee)

Loading needs numpy, safetensors and the TVM runtime only (no torch); nothing is unpickled. The zip's layout, the
manifest, the signature (by a trusted key), the checksums, the recorded Target and the programs are all checked
before the library is written to disk or loaded.
"""
from __future__ import annotations

import json
import math
import os
import threading
from pathlib import Path
from typing import Mapping

import numpy as np

from ..errors import ConfigError, SerializationError
from ..memory import fmt_bytes
from .container import SIGNATURE_MAX, Container, check_schema, sha256, write_zip

FORMAT = "adntn-artifact"
VERSION = 4  # 2: program inputs carry their names; 3: the backend and the whole Target; 4: inputs and outputs
MANIFEST, TENSORS, LIB, SIGNATURE = "manifest.json", "tensors.safetensors", "lib.so", "signature.json"
MEMBERS = (MANIFEST, TENSORS, LIB, SIGNATURE)  # in this order; nothing else may be in the zip
MANIFEST_MAX = 8 << 20  # bytes: a manifest is a few hundred KB even for a whole VGG head
LIBRARY_MAX = 1 << 30
_SHAPE = {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 1, "maxItems": 64}
_SHA256 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
_NAME = {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]{0,63}$"}
INPUTS_SCHEMA = {"type": "array", "minItems": 1, "maxItems": 64, "items": {
    "type": "object", "required": ["name", "shape", "dtype"], "additionalProperties": False,
    "properties": {"name": _NAME, "shape": _SHAPE, "dtype": {"enum": ["float32", "int64"]},
                   "rows": {"type": "integer", "minimum": 1}}}}
OUTPUTS_SCHEMA = {"type": "array", "minItems": 1, "maxItems": 64, "items": {
    "type": "object", "required": ["name", "shape"], "additionalProperties": False,
    "properties": {"name": _NAME, "shape": _SHAPE}}}
_PAIR = {"type": "object", "required": ["load", "call"], "additionalProperties": False,
         "properties": {"load": {"type": "object"}, "call": {"type": "object"}}}
MANIFEST_SCHEMA = {  # the types of every field; the programs' own schema is the backend's (program.py)
    "type": "object",
    "required": ["format", "version", "adntn_version", "tvm_version", "backend", "target", "batch_size", "schedule",
                 "input_shape", "output_shape", "inputs", "outputs", "layers", "graphs", "programs", "files",
                 "manifest_sha256"],
    "properties": {
        "format": {"const": FORMAT}, "version": {"const": VERSION}, "adntn_version": {"type": "string"},
        "tvm_version": {"type": "string"}, "backend": {"type": "string"}, "schedule": {"type": "string"},
        "target": {"type": "object", "required": ["name", "tvm", "arch", "lanes", "threads", "isa"], "properties": {
            "name": {"type": "string"}, "tvm": {"type": "object"}, "arch": {"type": "string"},
            "lanes": {"type": "integer", "minimum": 1}, "threads": {"type": "integer", "minimum": 1},
            "isa": {"type": "array", "items": {"type": "string"}}}},
        "batch_size": {"type": "integer", "minimum": 1}, "input_shape": _SHAPE, "output_shape": _SHAPE,
        "inputs": INPUTS_SCHEMA, "outputs": OUTPUTS_SCHEMA, "layers": {"type": "array", "items": {"type": "object"}},
        "graphs": _PAIR, "programs": _PAIR,
        "files": {"type": "object", "required": [TENSORS, LIB], "properties": {
            TENSORS: _SHA256, LIB: _SHA256}},
        "manifest_sha256": {"type": "string"},
        "gpu": {"type": "object", "required": ["api"], "properties": {"api": {"enum": ["cuda", "opencl"]}}},
        "tuning": {"type": "object", "required": ["device", "fingerprint", "layers"], "properties": {
            "device": {"type": "string"}, "fingerprint": {"type": "object"}, "layers": {"type": "integer"}}},
    },
}


def _manifest_digest(m: dict) -> str:
    body = {k: v for k, v in m.items() if k != "manifest_sha256"}
    return sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())


class CompiledModel:
    """What every compiled form (an artifact's Executable, a C bundle) says of its inputs and outputs."""

    manifest: dict

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The first input's shape."""
        return tuple(self.manifest["input_shape"])

    @property
    def output_shape(self) -> tuple[int, ...]:
        """The first output's shape."""
        return tuple(self.manifest["output_shape"])

    @property
    def inputs(self) -> list[dict]:
        """{"name", "shape", "dtype" (float32 or int64), "rows" (integer ids index a table of this size)} each."""
        return self.manifest.get("inputs") or [{"name": "x", "shape": list(self.input_shape), "dtype": "float32"}]

    @property
    def outputs(self) -> list[dict]:
        return self.manifest.get("outputs") or [{"name": "y", "shape": list(self.output_shape)}]

    def checked_input(self, x) -> np.ndarray:
        return self.checked_inputs((x,))[0]

    def checked_inputs(self, xs) -> list[np.ndarray]:
        """The arguments of a call, checked against the inputs: their count, shapes and dtypes; integer inputs
        hold whole numbers a float32 carries exactly, token ids index inside their table (an id out of range is
        refused here, never read)."""
        from ..backends.reference import take_ids

        specs = self.inputs
        if len(xs) != len(specs):
            raise ConfigError(f"this {type(self).__name__.lower()} takes {len(specs)} input(s) "
                              f"({', '.join(s['name'] for s in specs)}), got {len(xs)}")
        out = []
        for x, s in zip(xs, specs):
            x = np.asarray(x)
            if x.dtype.kind not in "fiu":  # complex would lose its imaginary part
                raise ConfigError(f"input {s['name']!r} must be a float or integer array, got dtype {x.dtype}")
            if x.shape != tuple(s["shape"]):
                which = f"input {s['name']!r} of shape" if len(specs) > 1 else "input shape"
                raise ConfigError(f"this {type(self).__name__.lower()} was compiled for {which} {tuple(s['shape'])} "
                                  f"(batch_size={self.manifest['batch_size']}), got {x.shape}")
            if "rows" in s:
                take_ids(x, s["rows"], f"input {s['name']!r}")
            elif s["dtype"] == "int64":
                _whole(x, s["name"])
            out.append(x)
        return out

    def result(self, out: Mapping[str, np.ndarray]):
        """One output's array, or a tuple of them in order."""
        names = [o["name"] for o in self.outputs]
        return out[names[0]] if len(names) == 1 else tuple(out[n] for n in names)


def _whole(x: np.ndarray, name: str) -> None:
    """An integer input (a mask) holds whole numbers a float32 carries exactly (magnitude at most 2**24)."""
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(x) & (np.abs(x) <= 1 << 24) & (x == np.round(x))
    if not ok.all():
        k = np.unravel_index(np.flatnonzero(~ok)[0], x.shape)
        raise ConfigError(f"input {name!r} holds integers: {x[k].item()!r} at {tuple(int(v) for v in k)} is not a "
                          f"whole number of magnitude at most 2**24")


class Executable(CompiledModel):
    """A compiled model: call it on numpy arrays of shape `input_shape`; `save` writes the artifact."""

    def __init__(self, library, lib_bytes: bytes, tensors: Mapping[str, np.ndarray], manifest: dict):
        """`library`: the backend's Library (its `runner(name, tensors)` runs a program); `lib_bytes` its file."""
        self.manifest = manifest
        self.library = library
        self._lib_bytes = lib_bytes
        self._tensors = {k: np.array(v, dtype=np.float32, order="C") for k, v in tensors.items()}
        # The runner's buffers are shared: one call at a time. A lock (not per-thread buffers) keeps memory at
        # one copy; threads gain nothing from running the kernels concurrently anyway (they are parallel inside).
        self._lock = threading.Lock()
        from .host import check_runs_here

        try:  # a library for another machine (cpu:skylake-avx512 built here) is saved, never run here
            check_runs_here(library.target)
        except ConfigError as e:
            self._call, self._not_here = None, str(e)
            return
        loaded = library.runner("load", self._tensors)()
        self._call = library.runner("call", {**self._tensors, **loaded})

    @property
    def target(self):
        return self.library.target

    @classmethod
    def from_build(cls, lib, mg, batch_size: int, schedule: str, tuning: dict | None = None) -> "Executable":
        import tvm

        from ..ir.serialize import to_dict
        from ..settings import VERSION as __version__

        manifest = dict(
            format=FORMAT, version=VERSION, adntn_version=__version__, tvm_version=tvm.__version__,
            backend=lib.backend, target=lib.target.to_dict(), batch_size=batch_size, schedule=schedule,
            input_shape=list(mg.input_shape), output_shape=list(mg.output_shape), inputs=mg.inputs,
            outputs=mg.outputs, layers=mg.layers,
            graphs={"load": _graph_dict(mg.load, to_dict), "call": _graph_dict(mg.call, to_dict)},
            programs=lib.program_dicts(),
        )
        if lib.target.device == "gpu":
            manifest["gpu"] = lib.gpu_record()
        if tuning:
            manifest["tuning"] = tuning
        return cls(lib, lib.to_bytes(), mg.tensors, manifest)

    # ---------------------------------------------------------------- running
    def __call__(self, *xs: np.ndarray):
        """The model on its inputs (in order): its output, or a tuple of its outputs."""
        xs_ = self.checked_inputs(xs)
        if self._call is None:
            raise ConfigError(f"this executable cannot run on this machine ({self._not_here}); save it and run "
                              f"it on its target")
        with self._lock:
            return self.result(self._call(*xs_))

    def reference(self, *xs: np.ndarray):
        """The same model on the numpy reference interpreter (float64), from the graphs in the manifest."""
        from ..backends.reference import run, with_resident
        from ..ir.serialize import from_dict

        g = self.manifest["graphs"]
        t = with_resident(from_dict(g["load"], self._tensors) if g["load"]["nodes"] else None, self._tensors)
        ys = run(from_dict(g["call"], t), [np.asarray(x, np.float64) for x in self.checked_inputs(xs)], t)
        return self.result(dict(zip([o["name"] for o in self.outputs], ys)))

    # ---------------------------------------------------------------- the artifact
    def save(self, path: str | os.PathLike, signing_key=None) -> Path:
        """Write the artifact atomically (a partial file never appears under `path`), signed with `signing_key`
        (an Ed25519 private key or a key file; default: this user's key, created on first use)."""
        from safetensors.numpy import save as st_save

        from . import signing

        key = signing.load_private(signing_key) if isinstance(signing_key, (str, os.PathLike)) else signing_key
        tensors = st_save(self._tensors) if self._tensors else st_save({"__empty__": np.zeros(1, np.float32)})
        manifest = dict(self.manifest, files={TENSORS: sha256(tensors), LIB: sha256(self._lib_bytes)})
        manifest["manifest_sha256"] = _manifest_digest(manifest)
        mbytes = json.dumps(manifest, indent=1).encode()
        sig = json.dumps(signing.sign(mbytes, key)).encode()
        return write_zip(Path(path), {MANIFEST: mbytes, TENSORS: tensors, LIB: self._lib_bytes, SIGNATURE: sig})

    def info(self) -> dict:
        return _info(self.manifest) | {"tensor_params": int(sum(v.size for v in self._tensors.values())),
                                       "library_bytes": len(self._lib_bytes)}


def inspect(path: str | os.PathLike) -> dict:
    """What an artifact holds, from its manifest and zip directory alone: the library is never loaded (nor the
    signature trusted: `signer` and `signed_by_trusted_key` say who signed it)."""
    from . import signing

    m, mbytes, c = read_manifest(path)
    with c:
        signer, trusted = None, False
        if SIGNATURE in c.sizes:
            from . import jsonio

            try:
                signer = signing.verify(mbytes, jsonio.loads(c.read(SIGNATURE, SIGNATURE_MAX), "signature.json",
                                                             SIGNATURE_MAX), None)
            except SerializationError as e:
                raise SerializationError(f"{path}: {e}") from None
            trusted = signer in signing.trusted()
        sizes = dict(c.sizes)
        params = _safetensors_params(path, c)
    try:
        return _info(m) | {"tensor_params": params, "library_bytes": sizes[LIB],
                           "signer": signing.fingerprint(signer) if signer else None,
                           "signed_by_trusted_key": trusted}
    except (KeyError, TypeError, AttributeError) as e:
        raise SerializationError(f"{path}: the manifest lacks or mistypes {e}") from None


def _info(m: dict) -> dict:
    """The manifest's description of an artifact (what `info` and `adntn info` show)."""
    return {k: m[k] for k in ("format", "version", "adntn_version", "tvm_version", "target", "batch_size",
                              "schedule", "input_shape", "output_shape", "inputs", "outputs", "layers")} | {
        "kernels": sorted({c["kernel"] for p in m["programs"].values() for c in p["calls"]}),
        "memory": {k: _program_memory(p) for k, p in m["programs"].items()}} | (
        {"gpu": m["gpu"]} if "gpu" in m else {}) | ({"tuning": m["tuning"]} if "tuning" in m else {})


def _program_memory(d: dict) -> dict:
    from ..backends.tvm.program import Program

    fields = {k: d[k] for k in ("buffers", "calls", "inputs", "outputs", "consts")}
    return Program(**fields, arena=d.get("arena")).memory()


def _safetensors_params(path, c: Container) -> int:
    """Element count of the tensors, from the safetensors header only (8-byte length, then JSON)."""
    try:
        with c.open(TENSORS) as f:
            n = int.from_bytes(f.read(8), "little")
            if n > MANIFEST_MAX:
                raise ValueError(f"header of {n:,} bytes")
            header = json.loads(f.read(n))
        return int(sum(math.prod(v["shape"]) for k, v in header.items() if k not in ("__metadata__", "__empty__")))
    except Exception as e:
        raise SerializationError(f"{path}: tensors.safetensors has an unreadable header ({e})") from None


def _graph_dict(g, to_dict) -> dict:
    d = to_dict(g)
    d["tensors"] = {}  # values live in tensors.safetensors
    return d


def read_manifest(path: str | os.PathLike) -> tuple[dict, bytes, Container]:
    """Open an artifact and check its layout and manifest (format, version, self-checksum, schema, member sizes)
    from the zip's central directory and the manifest alone: no other member is read. Returns (manifest, manifest
    bytes, the open container)."""
    c = Container(path, "artifact", kind=".adntn artifact")
    try:
        c.expect(MEMBERS, (MANIFEST, TENSORS, LIB))
        if c.sizes[MANIFEST] > MANIFEST_MAX or c.sizes.get(SIGNATURE, 0) > SIGNATURE_MAX:
            raise SerializationError(f"{path}: manifest.json declares {c.sizes[MANIFEST]:,} bytes (limit "
                                     f"{MANIFEST_MAX:,})")
        mbytes = c.read(MANIFEST)
        m = _checked_manifest(path, mbytes)
        for n, limit in _member_limits(path, m).items():
            if c.sizes[n] > limit:
                raise SerializationError(f"{path}: {n} declares {fmt_bytes(c.sizes[n])}, more than the "
                                         f"{fmt_bytes(limit)} the manifest's programs and graphs can need")
    except BaseException:
        c.close()
        raise
    return m, mbytes, c


def _checked_manifest(path, mbytes: bytes) -> dict:
    """The manifest's format, version, self-checksum and schema, in that order (the clearest refusal first)."""
    from . import jsonio

    try:
        m = jsonio.loads(mbytes, "manifest.json", MANIFEST_MAX, kind=None)
    except SerializationError as e:
        raise SerializationError(f"{path}: {e}") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise SerializationError(f"{path}: not an adntn artifact (format "
                                 f"{m.get('format') if isinstance(m, dict) else m!r})")
    if m.get("version") != VERSION:
        raise SerializationError(f"{path}: artifact format version {m.get('version')!r} is not supported by this "
                                 f"adntn-compiler (it reads version {VERSION}); recompile the model")
    if m.get("manifest_sha256") != _manifest_digest(m):
        raise SerializationError(f"{path}: manifest.json checksum mismatch (the manifest was modified)")
    check_schema(m, MANIFEST_SCHEMA, path)
    return m


def _member_limits(path, m: dict) -> dict[str, int]:
    """The most bytes the tensors and the library can honestly hold, from the manifest's programs and graphs."""
    from ..memory import available_bytes

    try:
        _check_interface(m)
        return {TENSORS: min(available_bytes() // 2, tensor_bytes_bound(m)), LIB: library_bytes_bound(m)}
    except ValueError as e:
        raise SerializationError(f"{path}: the manifest's {e}") from None
    except (KeyError, TypeError, AttributeError) as e:
        raise SerializationError(f"{path}: the manifest's programs or graphs are malformed ({e!r})") from None


def _check_interface(m: dict) -> None:
    """The load program takes nothing; the call program takes the manifest's inputs and gives its outputs (names
    and shapes, in order: what `Executable.__call__` feeds and reads); input_shape and output_shape are the
    first of each."""
    load, call = m["programs"]["load"], m["programs"]["call"]
    if load.get("inputs"):
        raise ValueError(f"'load' program is malformed (it takes no inputs, got {load['inputs']!r:.100})")
    if m["input_shape"] != m["inputs"][0]["shape"] or m["output_shape"] != m["outputs"][0]["shape"]:
        raise ValueError("input_shape and output_shape are not those of the first input and output")
    for k in ("inputs", "outputs"):
        want = [[v["name"], v["shape"]] for v in m[k]]
        got = [[v[0], v[2]] for v in call.get(k, []) if isinstance(v, list) and len(v) == 3]
        if got != want or len(call.get(k, [])) != len(want):
            raise ValueError(f"'call' program is malformed (its {k} must be {want} (name, shape), got "
                             f"{call.get(k)!r:.200})")


SAFETENSORS_HEADER = 64 << 10  # bytes of a safetensors header beyond its per-tensor entries


def tensor_bytes_bound(m: dict) -> int:
    """The most bytes tensors.safetensors may hold: the float32 tensors the manifest's graphs (their params,
    constants and load results) and programs (their constants) name, with their shapes, plus a header."""
    elements: dict[str, int] = {}
    for g in m["graphs"].values():
        for nd in g["nodes"]:
            if nd["op"] in ("param", "const", "output"):
                name = nd["attrs"]["name"]
                elements[name] = max(elements.get(name, 0), math.prod(nd["out"]["shape"]))
    for p in m["programs"].values():
        for c in p["consts"]:
            elements[c["tensor"]] = max(elements.get(c["tensor"], 0), math.prod(c["shape"]))
    return 4 * sum(elements.values()) + SAFETENSORS_HEADER + 256 * len(elements) + 4  # (+ the __empty__ float)


def library_bytes_bound(m: dict) -> int:
    """The most bytes lib.so may hold: a fixed part (runtime, static cudart) plus a generous 1 MiB per kernel."""
    kernels = {c["kernel"] for p in m["programs"].values() for c in p["calls"]}
    return min(LIBRARY_MAX, (32 << 20) + (1 << 20) * len(kernels))


def check_signature(path, c: Container, mbytes: bytes, trusted_keys=(), allow_unsigned: bool = False):
    """The signer's public key (hex), or None for an unsigned artifact. `allow_unsigned` lets an unsigned or
    untrusted-signed artifact through with a warning; a signature that does not match is refused always."""
    return c.signer(mbytes, SIGNATURE, trusted_keys, allow_unsigned)


def read_checked(path, c: Container, m: dict) -> dict[str, bytes]:
    """The tensors and library members, each checked against its sha256 in the manifest."""
    files = {n: c.read(n) for n in (TENSORS, LIB)}
    for n, data in files.items():
        c.check_digest(n, data, m.get("files", {}).get(n))
    return files


def load(path: str | os.PathLike, trusted_keys=(), allow_unsigned: bool = False) -> Executable:
    """Load an artifact written by `Executable.save`. Refuses corrupt, tampered, foreign or untrusted ones before
    the library is written to disk or loaded: the signature must be by a trusted key (this user's own, one in
    `adntn trust`, or one of `trusted_keys`), unless `allow_unsigned` (which warns)."""
    from safetensors.numpy import load as st_load

    from ..backends import backends, get_backend
    from ..targets import Target
    from .host import check_runs_here

    m, mbytes, c = read_manifest(path)
    with c:
        check_signature(path, c, mbytes, trusted_keys, allow_unsigned)
        files = read_checked(path, c, m)
    if m.get("backend") not in backends():
        raise SerializationError(f"{path}: unknown backend {m.get('backend')!r} in the manifest")
    try:
        target = Target.from_dict(m.get("target") if isinstance(m.get("target"), dict) else {})
        check_runs_here(target)
    except ConfigError as e:
        raise SerializationError(f"{path}: {e}") from None
    try:
        tensors = st_load(files[TENSORS])
    except Exception as e:  # safetensors raises its own error type
        raise SerializationError(f"{path}: tensors.safetensors is unreadable ({e})") from None
    tensors.pop("__empty__", None)
    programs = m.get("programs")
    if not isinstance(programs, dict) or set(programs) != {"load", "call"}:
        raise SerializationError(f"{path}: the manifest must hold a 'load' and a 'call' program")
    try:
        library = get_backend(m["backend"]).load(files[LIB], programs, target, tensors)
    except SerializationError as e:
        raise SerializationError(f"{path}: {e}") from None
    return Executable(library, files[LIB], tensors, m)
