"""Key sets for several machines: a fresh set for a new installation, or the current
installation's keys copied out, each written to a directory a secrets manager takes over.

Every machine of one installation must use the same four keys (``governance/key_source.py``);
these are the only ways Airside writes them outside ``<data_dir>/keys``. A directory that
already holds any key of a set is refused: a set is never mixed from two installations,
and no key is ever overwritten. (docs/deployment.md)
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from airside.errors import AirsideError, ConflictError
from airside.governance import audit
from airside.governance.key_source import (
    PROBE_DIGEST,
    REGISTRY,
    SHARED,
    SIGNING,
    TEMPLATES,
    KeySpec,
    check_key_file,
)
from airside.governance.principals import Principal
from airside.governance.secret_files import fsync_dir, write_secret
from airside.governance.signing import Signer
from airside.governance.template_keys import KEY_BYTES, KeyRing
from airside.services.app import Airside
from airside.services.authz import authorize


@dataclass
class KeySetReport:
    """What was written (never the keys: only their public names)."""

    directory: str
    files: list[str]
    key_fingerprint: str  # the signing key's, as audit records name it
    template_key_ids: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def init_key_set(to: Path) -> KeySetReport:
    """Write a fresh, complete key set to ``to`` (0700; files 0600) for a new installation.
    Touches no installation: nothing is authorised or audited, since nothing exists yet
    that the keys protect."""
    signer = Signer.generate()
    template_key = secrets.token_bytes(KEY_BYTES)
    ring = KeyRing.from_keys([template_key], "a new key set", None)
    material = {
        SIGNING: signer.private_pem(),
        REGISTRY: secrets.token_bytes(32),
        PROBE_DIGEST: secrets.token_bytes(32),
        TEMPLATES: ring.to_json().encode("utf-8"),
    }
    files = write_key_set(to, material)
    return KeySetReport(str(to), files, signer.fingerprint, sorted(ring.keys))


def export_key_set(app: Airside, principal: Principal, to: Path) -> KeySetReport:
    """Copy the installation's keys to ``to`` (0700; files 0600), so that the first
    machine's keys can be handed to a secrets manager: an administrator's use-case,
    audited (``keys.export``) in the transaction in which the files are written; if it
    does not commit, the files are removed.

    A key this installation does not have yet is created first, in <data_dir>/keys, as its
    first use would (so the set is complete); from the environment, a key is exported as
    the file that holds the same key."""
    authorize(app, principal, "keys.export")
    written: list[str] = []
    try:
        with app.session() as s:
            ring = app.template_protector.ensure_ring()
            material = {
                SIGNING: app.signer.private_pem(),
                REGISTRY: app.installation_key(REGISTRY),
                PROBE_DIGEST: app.installation_key(PROBE_DIGEST),
                TEMPLATES: ring.to_json().encode("utf-8"),
            }
            written = write_key_set(to, material)
            report = KeySetReport(str(to), written, app.signer.fingerprint, sorted(ring.keys))
            audit.append(
                s,
                principal,
                "keys.export",
                decision="exported",
                result={
                    "to": str(to),
                    "files": written,
                    "key_fingerprint": report.key_fingerprint,
                    "template_key_ids": report.template_key_ids,
                },
            )
    except BaseException as e:
        for name in written:  # no set leaves without its record
            with contextlib.suppress(OSError):
                (to / name).unlink()
        if isinstance(e, AirsideError):
            app.audit_refusal(principal, "keys.export", e, extra={"to": str(to)})
        raise
    return report


def write_key_set(to: Path, material: Mapping[KeySpec, bytes]) -> list[str]:
    """Write one file per key in ``material`` to ``to``: a new folder (0700) or an empty
    one of this user's (tightened to 0700), each file 0600, and the result checked as a
    start would check it. Refused when ``to`` already holds a key, or anything else (a
    shared folder such as /tmp is never taken over); on failure, nothing is left."""
    assert set(material) == set(SHARED)
    if to.exists() and not to.is_dir():
        raise AirsideError(f"{to} exists and is not a directory", code="bad_request")
    present = [s.file for s in SHARED if os.path.lexists(to / s.file)]
    if present:
        raise ConflictError(
            f"{to} already holds keys ({', '.join(present)}); a key set is written only to "
            "a new or empty directory, so that no key is replaced and no set is mixed",
            code="keys_exist",
        )
    try:
        if to.is_dir():
            if any(to.iterdir()) or to.stat().st_uid != os.geteuid():
                raise AirsideError(
                    f"{to} is not an empty directory of this user's; a key set is written "
                    "only to a new or empty directory",
                    code="bad_request",
                )
        else:
            to.mkdir(mode=0o700, parents=True)
        if stat.S_IMODE(to.stat().st_mode) != 0o700:  # whatever the umask
            os.chmod(to, 0o700)
    except OSError as e:
        raise AirsideError(f"cannot prepare {to}: {e.strerror}", code="cannot_write") from None
    written: list[str] = []
    try:
        for spec in SHARED:
            if not write_secret(to / spec.file, material[spec], exclusive=True):
                raise ConflictError(
                    f"{to / spec.file} was created by someone else meanwhile", code="keys_exist"
                )
            written.append(spec.file)
        for name in written:
            check_key_file(to / name)
        fsync_dir(to)
    except BaseException as e:
        for name in written:
            with contextlib.suppress(OSError):
                (to / name).unlink()
        if isinstance(e, OSError):
            raise AirsideError(
                f"cannot write the key set to {to}: {e.strerror}", code="cannot_write"
            ) from None
        raise
    return written
