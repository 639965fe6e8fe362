"""Ed25519 signatures for artifacts (the `cryptography` library).

The signature covers the exact bytes of manifest.json, which holds the sha256 of every other member: a signed
manifest vouches for the library, the tensors and the programs. What each check guarantees:
- the sha256 values (and the manifest's own digest) catch accidental damage only: anyone who edits a member can
  recompute them;
- the signature says who vouches for the manifest: an artifact is loaded only when a *trusted* key signed it.

Keys live in `$ADNTN_HOME` (default `~/.config/adntn`): `signing.key` (this user's private key, created on first
use, mode 0600), `signing.pub`, and `trusted/*.pub` (public keys whose artifacts this machine loads; this user's
own key is always trusted). A public key file holds the 64 hex digits of the raw Ed25519 key.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterable

from ..errors import ConfigError, SerializationError
from ..settings import config_dir

ALGORITHM = "ed25519"


def home() -> Path:
    return config_dir()


def _crypto():
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as e:
        raise ConfigError(f"signing artifacts needs the cryptography package ({e}): pip install cryptography") from None
    return ed25519, serialization, InvalidSignature


def fingerprint(public_hex: str) -> str:
    """A short name for a public key: the first 16 hex digits of its sha256."""
    return hashlib.sha256(bytes.fromhex(public_hex)).hexdigest()[:16]


def public_hex(private_key) -> str:
    _, serialization, _ = _crypto()
    raw = private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return raw.hex()


def keygen(directory: str | os.PathLike, overwrite: bool = False) -> tuple[Path, Path]:
    """Write a new key pair (`signing.key`, mode 0600, and `signing.pub`) into `directory`."""
    ed25519, serialization, _ = _crypto()
    d = Path(directory)
    key, pub = d / "signing.key", d / "signing.pub"
    if key.exists() and not overwrite:
        raise ConfigError(f"{key} exists; refusing to overwrite a signing key")
    d.mkdir(parents=True, exist_ok=True)
    k = ed25519.Ed25519PrivateKey.generate()
    pem = k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                          serialization.NoEncryption())
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    pub.write_text(public_hex(k) + "\n")
    return key, pub


def load_private(path: str | os.PathLike):
    ed25519, serialization, _ = _crypto()
    try:
        k = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as e:
        raise ConfigError(f"cannot read signing key {path}: {e}") from None
    if not isinstance(k, ed25519.Ed25519PrivateKey):
        raise ConfigError(f"signing key {path} is not an Ed25519 key")
    return k


def default_key():
    """This user's signing key, created (and so trusted here) on first use."""
    key = home() / "signing.key"
    if not key.exists():
        keygen(home())
    return load_private(key)


def read_public(key) -> str:
    """A public key as 64 hex digits, from a file path, hex text or a private key."""
    if hasattr(key, "public_key"):
        return public_hex(key)
    text = Path(key).read_text() if os.path.exists(str(key)) else str(key)
    text = text.strip()
    try:
        if len(bytes.fromhex(text)) == 32:
            return text.lower()
    except ValueError:
        pass
    raise ConfigError(f"{key!r} is not an Ed25519 public key (64 hex digits, as in signing.pub)")


def trusted(extra: Iterable = ()) -> set[str]:
    """Public keys this process trusts: this user's own, `trusted/*.pub`, and `extra`."""
    out = {read_public(k) for k in extra}
    own = home() / "signing.pub"
    for f in ([own] if own.exists() else []) + sorted((home() / "trusted").glob("*.pub")):
        out.add(read_public(f))
    return out


def trust(public_key) -> Path:
    """Add a public key to this machine's trusted keys."""
    hexkey = read_public(public_key)
    d = home() / "trusted"
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{fingerprint(hexkey)}.pub"
    path.write_text(hexkey + "\n")
    return path


def sign(data: bytes, private_key=None) -> dict:
    k = private_key if private_key is not None else default_key()
    return {"algorithm": ALGORITHM, "public_key": public_hex(k), "signature": k.sign(data).hex()}


def verify(data: bytes, record: dict, trusted_keys: set[str] | None) -> str:
    """The signer's public key (hex) when `record` is a valid signature of `data` by a trusted key (any key when
    `trusted_keys` is None); raises SerializationError naming what is wrong otherwise."""
    ed25519, _, InvalidSignature = _crypto()
    if not isinstance(record, dict) or record.get("algorithm") != ALGORITHM:
        raise SerializationError(f"the signature record must be an {ALGORITHM} signature")
    try:
        pub, sig = str(record["public_key"]), bytes.fromhex(str(record["signature"]))
        ed25519.Ed25519PublicKey.from_public_bytes(bytes.fromhex(pub)).verify(sig, data)
    except (KeyError, ValueError) as e:
        raise SerializationError(f"the signature record is malformed ({e})") from None
    except InvalidSignature:
        raise SerializationError("the signature does not match the manifest (the artifact was modified after "
                                 "it was signed)") from None
    if trusted_keys is not None and pub.lower() not in trusted_keys:
        raise SerializationError(f"the artifact is signed by key {fingerprint(pub)}, which this machine does not "
                                 f"trust; trust it with `adntn trust SIGNER.pub` or pass trusted_keys=")
    return pub.lower()
