"""The one container under every file adntn writes and reads back: the `.adntn` artifact, the C bundle (a folder
or a zip), the torch.compile cache entry and the model file. Each format declares only its members, its limits and
its manifest's schema; this module does the rest the same way for all of them:

- reading: `Container(path, what)` is a zip file (or, where allowed, a folder) whose members' sizes come from the
  zip directory or the folder up front; `expect` checks the member set, `read(name, limit)` never inflates more
  than `limit`; `check_digest` (sha256), `check_schema` (JSON Schema), `signer` (Ed25519 over the manifest);
- writing: `write_atomic` (a temporary name renamed into place), `write_zip` (fixed order and timestamps: the same
  members give a byte-identical file), `write_folder` (a whole folder renamed into place).
A regular-file check comes before anything is opened: a FIFO would block a reader forever.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path
from typing import Callable, Iterable, Mapping

from ..errors import ConfigError, SerializationError
from ..memory import fmt_bytes

ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed member timestamps: byte-reproducible containers
SIGNATURE_MAX = 4096  # bytes of a signature record


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _an(what: str) -> str:
    return f"{'an' if what[0] in 'aeiou' else 'a'} {what}"


# ---------------------------------------------------------------- reading


def check_regular(path, what: str) -> os.stat_result:
    """`path`'s stat when it is a regular file; else one SerializationError line (stat, not open: opening a FIFO
    blocks)."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise SerializationError(f"{what}: cannot read it ({e.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise SerializationError(f"{what}: not a regular file (a folder, FIFO or device is never read)")
    return st


def read_regular(path, what: str, limit: int) -> bytes:
    """A regular file's bytes, at most `limit`."""
    if check_regular(path, what).st_size > limit:
        raise SerializationError(f"{what}: {os.stat(path).st_size:,} bytes, more than the limit {limit:,}")
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise SerializationError(f"{what}: more than the limit of {limit:,} bytes")
    return data


class Container:
    """A zip file (or a folder, with `folders=True`) opened for checking: `sizes` holds every member's size before
    any member is read. `max_total` bounds all members together (`uncounted`: names left out of the sum, e.g. a
    bundle's build outputs), `max_member` each one. `kind`: what a file that is no zip is not (default `what`)."""

    def __init__(self, path, what: str, folders: bool = False, max_total: int | None = None,
                 max_member: int | None = None, uncounted: Iterable[str] = (), kind: str | None = None):
        self.path, self.what, self.kind, self.zip = Path(path), what, kind or what, None
        self.max_member = max_member
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise SerializationError(f"{path}: no such {what}") from None
        except OSError as e:
            raise SerializationError(f"{path}: cannot read the {what} ({e})") from None
        if folders and stat.S_ISDIR(st.st_mode):
            self.sizes = self._folder_sizes()
        elif stat.S_ISREG(st.st_mode):
            self.sizes = self._zip_sizes()
        else:
            raise SerializationError(f"{path}: not a regular file{' or folder' if folders else ''} (a "
                                     f"{'' if folders else 'folder, '}FIFO or device is never read)")
        total = sum(n for k, n in self.sizes.items() if k not in set(uncounted))
        if max_total is not None and total > max_total:
            self.close()
            raise SerializationError(f"{path}: its files hold {fmt_bytes(total)}, more than {_an(what)} may "
                                     f"({fmt_bytes(max_total)})")

    def _folder_sizes(self) -> dict[str, int]:
        sizes = {}
        for f in sorted(self.path.rglob("*")):
            name = f.relative_to(self.path).as_posix()
            if f.is_symlink() or not (f.is_file() or f.is_dir()):
                raise SerializationError(f"{self.path}: {name} is a link or special file; {_an(self.what)} holds "
                                         f"regular files only")
            if f.is_file():
                sizes[name] = f.stat().st_size
        return sizes

    def _zip_sizes(self) -> dict[str, int]:
        try:
            self.zip = zipfile.ZipFile(self.path)
            infos = [i for i in self.zip.infolist() if not i.is_dir()]
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
            raise SerializationError(f"{self.path}: not a valid {self.kind} (corrupt or truncated zip: {e})") from None
        names = [i.filename for i in infos]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            self.close()
            raise SerializationError(f"{self.path}: duplicate members {dupes}")
        return {i.filename: i.file_size for i in infos}

    def expect(self, allowed: Iterable[str], required: Iterable[str]) -> None:
        """Exactly a layout: no member outside `allowed`, every one of `required`."""
        extra = sorted(set(self.sizes) - set(allowed))
        missing = [n for n in required if n not in self.sizes]
        if extra or missing:
            self.close()
            raise SerializationError(f"{self.path}: unexpected members {extra}" if extra else
                                     f"{self.path}: {self.what} is missing {', '.join(missing)}")

    def read(self, name: str, limit: int | None = None) -> bytes:
        """One member's bytes, refusing more than `limit` (and `max_member`): the declared size is checked first,
        and no more than the limit is ever inflated or read."""
        limit = min(x for x in (limit, self.max_member, 1 << 62) if x is not None)
        if self.sizes[name] > limit:
            raise SerializationError(f"{self.path}: {name} holds {self.sizes[name]:,} bytes, more than {limit:,}")
        try:
            with self.open(name) as f:
                data = f.read(limit + 1)
        except Exception as e:  # BadZipFile, OSError, EOFError, zlib.error: a damaged member
            raise SerializationError(f"{self.path}: cannot read {name} from the {self.what} (corrupt or truncated: "
                                     f"{e})") from None
        if len(data) > limit:
            raise SerializationError(f"{self.path}: {name} is larger than {limit:,} bytes")
        return data

    def open(self, name: str):
        """A member as a binary file object (read it bounded: see `read`)."""
        return self.zip.open(name) if self.zip else (self.path / name).open("rb")

    def check_digest(self, name: str, data: bytes, digest) -> None:
        if sha256(data) != digest:
            raise SerializationError(f"{self.path}: checksum mismatch for {name} (the file was modified or damaged)")

    def signer(self, mbytes: bytes, name: str = "signature.json", trusted_keys=(), allow_unsigned: bool = False):
        """The signer of the manifest bytes `mbytes` by the signature member `name` (see `signer`)."""
        sig = self.read(name, SIGNATURE_MAX) if name in self.sizes else None
        return signer(self.path, mbytes, sig, trusted_keys, allow_unsigned, self.what)

    def close(self) -> None:
        if self.zip:
            self.zip.close()

    def __enter__(self) -> "Container":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def check_schema(doc, schema: dict, path, what: str = "manifest") -> None:
    """`doc` against a JSON Schema; a violation names the field: "<path>: manifest field a/b: ..."."""
    import jsonschema

    try:
        jsonschema.validate(doc, schema)
    except jsonschema.ValidationError as e:
        where = "/".join(str(x) for x in e.absolute_path) or f"the {what}"
        raise SerializationError(f"{path}: {what} field {where}: {e.message[:200]}") from None


def signer(path, mbytes: bytes, sig: bytes | None, trusted_keys=(), allow_unsigned: bool = False,
           what: str = "artifact"):
    """The signer (public key, hex) of manifest bytes `mbytes` given the signature record's bytes (None: unsigned):
    a trusted key's, else refused unless `allow_unsigned` (which warns). A signature that does not match is refused
    always."""
    import warnings

    from . import jsonio, signing

    if sig is None:
        if not allow_unsigned:
            raise SerializationError(f"{path}: the {what} is not signed, so nothing vouches for its native code; "
                                     f"pass allow_unsigned=True only for {_an(what)} you trust")
        warnings.warn(f"{path}: loading an unsigned {what} (allow_unsigned=True)", stacklevel=4)
        return None
    try:
        record = jsonio.loads(sig, "signature.json", SIGNATURE_MAX)
        pub = signing.verify(mbytes, record, None)  # valid at all?
        if pub not in signing.trusted(trusted_keys):
            if not allow_unsigned:
                signing.verify(mbytes, record, signing.trusted(trusted_keys))  # raises, naming the key
            warnings.warn(f"{path}: loading {_an(what)} signed by untrusted key {signing.fingerprint(pub)} "
                          f"(allow_unsigned=True)", stacklevel=4)
        return pub
    except SerializationError as e:
        raise SerializationError(f"{path}: {e}") from None


# ---------------------------------------------------------------- writing


def umask() -> int:
    """The process umask, read without changing it where /proc says (os.umask can only set it, which would race
    with other threads creating files)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def write_atomic(path, write: Callable[[str], None]) -> Path:
    """`write(tmp)` into a temporary file named after `path`, then renamed onto it: a partial file never appears
    under `path`, and the temporary one is removed on any error. The file gets the mode the umask allows (mkstemp
    alone gives 0600); the folder is created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir():
        raise ConfigError(f"{path} is a folder; give the file's name")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_zip(path, members: Mapping[str, bytes]) -> Path:
    """`members` in their order with fixed timestamps and modes (byte-reproducible), written atomically."""
    def write(tmp: str) -> None:
        with zipfile.ZipFile(tmp, "w") as z:
            for name, data in members.items():
                info = zipfile.ZipInfo(name, ZIP_TIME)
                info.compress_type, info.external_attr = zipfile.ZIP_DEFLATED, 0o644 << 16
                z.writestr(info, data, compresslevel=1)  # float weights barely compress: level 6 only costs time

    return write_atomic(path, write)


def write_folder(path, files: Mapping[str, bytes], replaceable: Callable[[Path], bool]) -> Path:
    """`files` (relative posix names) as a folder written under a temporary name and renamed into place, so a
    partial folder never appears under `path`. An existing folder there is replaced only if `replaceable(path)`."""
    path = Path(path)
    if path.exists() and not replaceable(path):
        raise ConfigError(f"{path} exists and is not a bundle folder; give a new path")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        for name, data in files.items():
            p = tmp / name
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path
