"""The deployment artifact (`.adntn`, a zip) and the executable that runs it. Backend-neutral: the backend
named in the manifest supplies the library (`build` -> `Library`, `load` from bytes) and runs its programs.

    manifest.json        format and version, backend, the Target it was built for (arch, ISA, lanes, TVM dict),
                         shapes, the layer list, the load and call graphs and programs, and the sha256 of every
                         other file (and of itself, minus that field)
    tensors.safetensors  cores, dense weights and biases (float32)
    lib.so               every kernel, compiled for the target

Loading needs numpy, safetensors and the TVM runtime only (no torch); nothing is unpickled. The library is
checked against its checksum, and its recorded Target against this machine, before it is loaded.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Mapping

import numpy as np

from .errors import ConfigError, SerializationError

FORMAT = "adntn-artifact"
VERSION = 3  # 2: program inputs carry their names; 3: the backend and the whole Target are recorded
MANIFEST, TENSORS, LIB = "manifest.json", "tensors.safetensors", "lib.so"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _manifest_digest(m: dict) -> str:
    body = {k: v for k, v in m.items() if k != "manifest_sha256"}
    return _sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())


class Executable:
    """A compiled model: call it on numpy arrays of shape `input_shape`; `save` writes the artifact."""

    def __init__(self, library, lib_bytes: bytes, tensors: Mapping[str, np.ndarray], manifest: dict):
        """`library`: the backend's Library (its `runner(name, tensors)` runs a program); `lib_bytes` its file."""
        self.manifest = manifest
        self.library = library
        self._lib_bytes = lib_bytes
        self._tensors = {k: np.array(v, dtype=np.float32, order="C") for k, v in tensors.items()}
        loaded = library.runner("load", self._tensors)()
        self._call = library.runner("call", {**self._tensors, **loaded})

    @property
    def target(self):
        return self.library.target

    @classmethod
    def from_build(cls, lib, mg, batch_size: int, schedule: str) -> "Executable":
        import tvm

        from . import __version__
        from .ir.serialize import to_dict

        manifest = dict(
            format=FORMAT, version=VERSION, adntn_version=__version__, tvm_version=tvm.__version__,
            backend=lib.backend, target=lib.target.to_dict(), batch_size=batch_size, schedule=schedule,
            input_shape=list(mg.input_shape), output_shape=list(mg.output_shape), layers=mg.layers,
            graphs={"load": _graph_dict(mg.load, to_dict), "call": _graph_dict(mg.call, to_dict)},
            programs=lib.program_dicts(),
        )
        return cls(lib, lib.to_bytes(), mg.tensors, manifest)

    # ---------------------------------------------------------------- running
    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.manifest["input_shape"])

    @property
    def output_shape(self) -> tuple[int, ...]:
        return tuple(self.manifest["output_shape"])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.shape != self.input_shape:
            raise ConfigError(f"this executable was compiled for input shape {self.input_shape} "
                              f"(batch_size={self.manifest['batch_size']}), got {x.shape}")
        return self._call(x)["y"]

    def reference(self, x: np.ndarray) -> np.ndarray:
        """The same model on the numpy reference interpreter (float64), from the graphs in the manifest."""
        from .backends.reference import run
        from .ir.graph import Op
        from .ir.serialize import from_dict

        t = {k: v.astype(np.float64) for k, v in self._tensors.items()}
        load = from_dict(self.manifest["graphs"]["load"], t)
        t.update(zip([n.attrs.name for n in load.nodes if n.op is Op.OUTPUT], run(load, [], t)))
        return run(from_dict(self.manifest["graphs"]["call"], t), [np.asarray(x, np.float64)], t)[0]

    # ---------------------------------------------------------------- the artifact
    def save(self, path: str | os.PathLike) -> Path:
        """Write the artifact atomically (a partial file never appears under `path`)."""
        from safetensors.numpy import save as st_save

        tensors = st_save(self._tensors) if self._tensors else st_save({"__empty__": np.zeros(1, np.float32)})
        manifest = dict(self.manifest, files={TENSORS: _sha256(tensors), LIB: _sha256(self._lib_bytes)})
        manifest["manifest_sha256"] = _manifest_digest(manifest)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as z:
                z.writestr(MANIFEST, json.dumps(manifest, indent=1))
                z.writestr(TENSORS, tensors)
                z.writestr(LIB, self._lib_bytes)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def info(self) -> dict:
        m = self.manifest
        return {k: m[k] for k in ("format", "version", "adntn_version", "tvm_version", "target", "batch_size",
                                  "schedule", "input_shape", "output_shape", "layers")} | {
            "kernels": sorted({c["kernel"] for p in m["programs"].values() for c in p["calls"]}),
            "tensor_params": int(sum(v.size for v in self._tensors.values())),
            "library_bytes": len(self._lib_bytes)}


def _graph_dict(g, to_dict) -> dict:
    d = to_dict(g)
    d["tensors"] = {}  # values live in tensors.safetensors
    return d


def read_manifest(path: str | os.PathLike) -> tuple[dict, zipfile.ZipFile]:
    """Open an artifact and check its manifest (format, version, self-checksum); returns (manifest, zip)."""
    try:
        z = zipfile.ZipFile(path)
        names = set(z.namelist())
    except FileNotFoundError:
        raise SerializationError(f"{path}: no such artifact") from None
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise SerializationError(f"{path}: not a valid .adntn artifact (corrupt or truncated zip: {e})") from None
    missing = [n for n in (MANIFEST, TENSORS, LIB) if n not in names]
    if missing:
        raise SerializationError(f"{path}: artifact is missing {', '.join(missing)}")
    try:
        m = json.loads(_read(z, path, MANIFEST))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SerializationError(f"{path}: manifest.json is not valid JSON ({e})") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise SerializationError(f"{path}: not an adntn artifact (format {m.get('format') if isinstance(m, dict) else m!r})")
    if m.get("version") != VERSION:
        raise SerializationError(f"{path}: artifact format version {m.get('version')!r} is not supported by this "
                                 f"adntn-compiler (it reads version {VERSION}); recompile the model")
    if m.get("manifest_sha256") != _manifest_digest(m):
        raise SerializationError(f"{path}: manifest.json checksum mismatch (the manifest was modified)")
    return m, z


def _read(z: zipfile.ZipFile, path, name: str) -> bytes:
    try:
        return z.read(name)
    except Exception as e:  # BadZipFile, OSError, EOFError, zlib.error: a damaged member
        raise SerializationError(f"{path}: cannot read {name} from the artifact (corrupt or truncated: {e})") from None


def load(path: str | os.PathLike) -> Executable:
    """Load an artifact written by `Executable.save`; refuses corrupt, tampered or foreign ones."""
    from safetensors.numpy import load as st_load

    from .backends import backends, get_backend
    from .targets import Target, check_runs_here

    m, z = read_manifest(path)
    with z:
        files = {n: _read(z, path, n) for n in (TENSORS, LIB)}
    for n, data in files.items():
        if _sha256(data) != m.get("files", {}).get(n):
            raise SerializationError(f"{path}: checksum mismatch for {n} (the file was modified or damaged)")
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
        library = get_backend(m["backend"]).load(files[LIB], programs, target)
    except SerializationError as e:
        raise SerializationError(f"{path}: {e}") from None
    return Executable(library, files[LIB], tensors, m)
