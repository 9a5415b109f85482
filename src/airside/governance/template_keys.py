"""Template keys: their names, the key ring file (JSON, 0600, written atomically) and its lock.

Keys come from ``AIRSIDE_TEMPLATE_KEY`` (hex; several comma-separated, the first one is
used for new data) or else from the key ring file, by default
``<data_dir>/keys/templates.keyring`` (or the secrets directory's: ``key_source.py``, where
it is read only). A key is named by a digest of its bytes, so a row
names exactly the key that sealed it and a replaced key ring is recognised as such.
(docs/template_protection.md)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import stat
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from airside.config import Settings
from airside.errors import AirsideError
from airside.governance.key_source import TEMPLATES, source_of
from airside.governance.secret_files import write_secret

log = logging.getLogger(__name__)

KEYRING_FILE = Path("keys") / TEMPLATES.file
ENV_VAR = "AIRSIDE_TEMPLATE_KEY"
KEY_BYTES = 32
_KEYRING_VERSION = 1


class TemplateKeyError(AirsideError):
    """A template (or a gallery's transform seed) cannot be read or written: its key is
    missing or wrong, or no key is configured. Nothing was changed."""

    code = "template_key"


# ---------------------------------------------------------------------------------------------
# keys


def key_id_of(key: bytes) -> str:
    """A key's name: ``k`` + 16 hex characters of a domain-separated SHA-256 of its bytes."""
    return "k" + hashlib.sha256(b"airside/template-key-id/v1\x00" + key).hexdigest()[:16]


def default_keyring_path(settings: Settings) -> Path:
    return source_of(settings, TEMPLATES).path


def parse_hex_keys(text: str) -> list[bytes]:
    """Keys written as 64 hex characters each, comma-separated (the first one is active)."""
    keys = []
    for part in text.split(","):
        part = part.strip()
        try:
            key = bytes.fromhex(part)
        except ValueError:
            key = b""
        if len(key) != KEY_BYTES:
            raise ValueError(
                f"a template key must be {2 * KEY_BYTES} hex characters ({KEY_BYTES} bytes); "
                "give several separated by commas"
            )
        keys.append(key)
    return keys


@dataclass(frozen=True)
class KeyRing:
    """The keys this installation holds; ``active`` seals new data."""

    keys: dict[str, bytes]
    active: str | None
    source: str  # said in error messages: where keys come from
    path: Path | None = None  # the file, when keys come from one (None: the environment)
    # A ring in a secrets directory is the secrets manager's: read (and re-read when it
    # changes), never written.
    read_only: bool = False

    @property
    def writable(self) -> bool:
        return self.path is not None and not self.read_only

    @classmethod
    def empty(cls, path: Path) -> KeyRing:
        return cls({}, None, f"the key ring {path} (which does not exist)", path)

    @classmethod
    def from_keys(cls, keys: Sequence[bytes], source: str, path: Path | None) -> KeyRing:
        ring = {key_id_of(k): k for k in keys}
        return cls(ring, key_id_of(keys[0]) if keys else None, source, path)

    def with_new_key(self, *, activate: bool = True) -> KeyRing:
        """This ring plus a fresh key (made active, or staged beside the active one)."""
        key = secrets.token_bytes(KEY_BYTES)
        kid = key_id_of(key)
        active = kid if activate or self.active is None else self.active
        return KeyRing({**self.keys, kid: key}, active, self._file_source(), self.path)

    def activate(self, key_id: str) -> KeyRing:
        assert key_id in self.keys
        return KeyRing(self.keys, key_id, self.source, self.path, self.read_only)

    def only_active(self) -> KeyRing:
        assert self.active is not None
        only = {self.active: self.keys[self.active]}
        return KeyRing(only, self.active, self.source, self.path, self.read_only)

    def _file_source(self) -> str:
        return f"the key ring {self.path}" if self.path else self.source

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": _KEYRING_VERSION,
                "active": self.active,
                "keys": {kid: key.hex() for kid, key in sorted(self.keys.items())},
            },
            indent=2,
        )


def read_keyring(path: Path, *, read_only: bool = False) -> KeyRing:
    """The key ring in ``path``; an empty ring when the file does not exist. ``read_only``:
    the ring is not Airside's to write (a secrets directory's)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        empty = KeyRing.empty(path)
        return KeyRing(empty.keys, None, empty.source, path, read_only)
    except OSError as e:
        raise TemplateKeyError(f"cannot read the template key ring {path}: {e}") from None
    mode = stat.S_IMODE(path.stat().st_mode)
    if os.name == "posix" and mode & 0o077:
        log.warning(
            "template key ring %s is readable by others (mode %o); it should be 0600", path, mode
        )
    try:
        data = json.loads(text)
        if data.get("version") != _KEYRING_VERSION:
            raise ValueError(f"unknown version {data.get('version')!r}")
        keys: dict[str, bytes] = {}
        for kid, hexkey in data["keys"].items():
            key = bytes.fromhex(hexkey)
            if len(key) != KEY_BYTES or key_id_of(key) != kid:
                raise ValueError(f"key {kid!r} is malformed or does not match its id")
            keys[kid] = key
        active = data["active"]
        if active not in keys:
            raise ValueError(f"the active key {active!r} is not in the ring")
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise TemplateKeyError(f"the template key ring {path} is damaged: {e}") from None
    return KeyRing(keys, active, f"the key ring {path}", path, read_only)


def write_keyring(ring: KeyRing, *, exclusive: bool = False) -> None:
    """Write ``ring`` to its file atomically, 0600 in a 0700 directory.

    ``exclusive``: only if no file exists yet (two processes creating the first key at
    once end up sharing one; neither silently replaces the other's)."""
    path = ring.path
    assert path is not None
    write_secret(path, ring.to_json().encode("utf-8"), exclusive=exclusive)


@contextmanager
def keyring_lock(path: Path) -> Iterator[None]:
    """Serialise read-modify-write of the key ring file between processes."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if os.name != "posix":
        yield
        return
    import fcntl

    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def keyring_stamp(path: Path) -> tuple[int, int, int] | None:
    """What tells a changed key ring file from the one read before (cheap: one stat)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)
