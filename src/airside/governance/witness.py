"""The newest signed audit head, kept outside the database.

Every audit record is signed as it is appended (``governance/audit.py``), so nobody without
the key can change, add or rewrite one. But cutting records off the end, or putting the
whole database back to an earlier copy, leaves a log whose every record still verifies.
The witness is how that is found: after each commit the newest signed head
(sequence number, hash, signature) is written to a file beside the keys, outside the
database, and ``audit verify`` fails when the log no longer reaches it or no longer holds
it (``rolled_back``, ``forked``). Optionally each head is also sent to syslog, so a copy
lives on another machine that whoever holds this one cannot rewrite.

The file only moves forward: concurrent processes take an exclusive ``flock`` and write a
head only when it is newer than the one recorded. It is written after the commit, so a
crash in between leaves the witness one commit behind the log (normal: the log may be
ahead of its witness), never ahead of it (which would be reported as a rollback).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import logging.handlers
import os
import socket
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from airside.errors import AirsideError
from airside.governance.secret_files import write_secret

log = logging.getLogger(__name__)

WITNESS_FILE = Path("keys") / "audit_witness.json"


@dataclass(frozen=True)
class SignedHead:
    """The chain head after record ``seq``, signed over ``f"{seq}:{hash}"``."""

    seq: int
    hash: str
    signature: str
    key_fingerprint: str
    ts: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def default_witness_path(data_dir: Path) -> Path:
    return data_dir / WITNESS_FILE


class Witness:
    """The witness file of one installation, and the optional syslog copy."""

    def __init__(self, path: Path, syslog_address: str | None = None) -> None:
        self.path = path
        self._lock_path = path.with_name(path.name + ".lock")
        self._syslog = _syslog_handler(syslog_address) if syslog_address else None

    def exists(self) -> bool:
        return self.path.exists()

    def read(self) -> SignedHead | None:
        """The recorded head, or None when there is none yet. A file that cannot be read
        as a head is an error, never silently ignored: that would hide a rollback."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise AirsideError(
                f"cannot read the audit witness {self.path}: {e.strerror}", code="bad_witness"
            ) from None
        try:
            obj = json.loads(raw)
            return SignedHead(
                seq=int(obj["seq"]),
                hash=str(obj["hash"]),
                signature=str(obj["signature"]),
                key_fingerprint=str(obj["key_fingerprint"]),
                ts=str(obj["ts"]),
            )
        except (ValueError, KeyError, TypeError):
            raise AirsideError(
                f"the audit witness {self.path} is not a signed head; restore it from backup",
                code="bad_witness",
            ) from None

    def record(self, head: SignedHead) -> None:
        """Remember ``head`` if it is newer than the one recorded (after its commit)."""
        try:
            with self._locked():
                current = self.read()
                if current is None or head.seq > current.seq:
                    data = json.dumps(head.as_dict(), sort_keys=True).encode()
                    write_secret(self.path, data, exclusive=False)
        except (OSError, AirsideError) as e:
            # The effect has committed and its record is signed in the log; a witness that
            # could not be moved forward is reported, and ``audit verify`` still checks the
            # older head it holds.
            log.error("audit witness not updated to record %d: %s", head.seq, e)
        if self._syslog is not None:
            self._send(head)

    def discard(self) -> None:
        """Forget the recorded head, so that the next head recorded starts the witness
        again. Only for a restore, which puts an earlier log back on purpose and names the
        head it replaced in its own audit record (``services/backup.py``): anything else
        that winds the log back must go on being reported."""
        with self._locked():
            self.path.unlink(missing_ok=True)

    def _send(self, head: SignedHead) -> None:
        msg = "airside-audit-head " + json.dumps(head.as_dict(), sort_keys=True)
        record = logging.LogRecord("airside.audit", logging.INFO, __file__, 0, msg, None, None)
        assert self._syslog is not None
        self._syslog.emit(record)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self._lock_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def close(self) -> None:
        if self._syslog is not None:
            self._syslog.close()


def _syslog_handler(address: str) -> logging.handlers.SysLogHandler:
    """``udp://host:port``, ``tcp://host:port`` or a Unix socket path such as /dev/log."""
    if address.startswith(("udp://", "tcp://")):
        scheme, rest = address.split("://", 1)
        host, _, port = rest.rpartition(":")
        if not host or not port.isdigit():
            raise AirsideError(
                f"audit witness syslog address {address!r} must be udp://HOST:PORT, "
                "tcp://HOST:PORT or a socket path",
                code="bad_setting",
            )
        kind = socket.SOCK_DGRAM if scheme == "udp" else socket.SOCK_STREAM
        return logging.handlers.SysLogHandler(
            address=(host, int(port)),
            facility=logging.handlers.SysLogHandler.LOG_AUTH,
            socktype=kind,
        )
    return logging.handlers.SysLogHandler(
        address=address, facility=logging.handlers.SysLogHandler.LOG_AUTH
    )
