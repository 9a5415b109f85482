"""Backups of a running installation's store, and restoring one (docs/backup.md).

A backup is a folder: the snapshot (``airside.db``, a SQLite file taken with SQLite's online
backup API; or ``airside.dump``, ``pg_dump --format=custom`` of a PostgreSQL store) and
``manifest.json`` (format version, engine, schema revision, when, rows per table, the audit
head, the SHA-256 of the snapshot, and the ids of the keys it needs). The ``store.backup``
record is appended before the snapshot is taken, so every backup holds its own record.

Key material is never in the backup: a stolen backup holds templates, seeds and crops
sealed under keys it does not contain. The keys go, on request, to a folder of their own
(0700, files 0600) that the operator keeps elsewhere (offline, or in a secrets manager).

A restore checks the snapshot against its manifest (size and SHA-256, on a private copy it
then restores from) and checks that this installation holds the keys the backup needs,
before anything is touched. It refuses a store that holds data unless told to replace it,
and keeps whatever it replaces as a backup of its own under ``<data_dir>/replaced/``. After
restoring it verifies: the audit chain (and that it ends at the manifest's head), the row
counts, every template, gallery seed, event crop and webhook secret decrypting under the
keys present, and every principal's and API key's seal. The ``store.restore`` record is
appended to the restored log; it names the head of the log it replaced, and the witness
(the newest signed head kept outside the database) starts again from it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

import airside
from airside.errors import AirsideError
from airside.governance import audit
from airside.governance.key_source import PROBE_DIGEST, REGISTRY
from airside.governance.principals import Principal
from airside.governance.secret_files import fsync_dir
from airside.governance.template_protection import StoredTemplate, event_crop_aad, seed_aad
from airside.governance.witness import SignedHead
from airside.private_files import private_dir
from airside.services.app import Airside
from airside.services.authz import authorize
from airside.services.key_sets import export_key_set
from airside.services.webhooks import secret_aad
from airside.store import snapshot as snap
from airside.store import transfer
from airside.store.tables import (
    ApiKey,
    AuditHead,
    Event,
    Gallery,
    PrincipalRecord,
    Template,
    Webhook,
)

BACKUP = "store.backup"
RESTORE = "store.restore"
MANIFEST = "manifest.json"
FORMAT = "airside-backup"
FORMAT_VERSION = 1
DUMP_FILE = {"sqlite": "airside.db", "postgresql": "airside.dump"}
REPLACED_DIR = "replaced"
# What opening an installation writes by itself (the first run registers the local
# administrator, and the log records it): a store holding only that holds no data.
_FIRST_RUN_TABLES = frozenset({"principals", "audit_log", "audit_head", "audit_checkpoints"})
_CHUNK = 1 << 20
_CHECK_BATCH = 2000


@dataclass
class BackupReport:
    path: str
    dump: str
    engine: str
    bytes: int
    sha256: str
    revision: str | None
    tables: dict[str, int]
    audit_head_seq: int
    created_at: str
    keys_to: str | None = None
    key_files: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class RestoreReport:
    source: str
    engine: str
    backup_created_at: str
    tables: dict[str, int]
    audit_records: int
    templates: int
    gallery_seeds: int
    event_crops: int
    webhook_secrets: int
    kept_aside: str | None
    # The head of the log the restore replaced, as the witness had it (None: none kept).
    replaced_head_seq: int | None
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


# ---------------------------------------------------------------------------------------------
# keys


def installation_key_id(key: bytes) -> str:
    """A name for a 32-byte installation key that does not reveal it (a manifest records
    it, a restore compares it with the key it holds)."""
    return hashlib.sha256(b"airside/installation-key-id/v1\x00" + key).hexdigest()[:16]


def _installation_keys(app: Airside) -> tuple[bytes, bytes]:
    """(registry key, probe digest key), from wherever the installation reads them."""
    return app.installation_key(REGISTRY), app.installation_key(PROBE_DIGEST)


def _key_ids(app: Airside, inv: transfer.Inventory) -> dict[str, Any]:
    registry, probe = _installation_keys(app)
    return {
        "audit_signing": app.signer.fingerprint,
        "registry": installation_key_id(registry),
        "probe_digest": installation_key_id(probe),
        "template_key_ids": inv.template_key_ids,
        "audit_key_fingerprints": inv.audit_key_fingerprints,
    }


# ---------------------------------------------------------------------------------------------
# files


def _require_empty_folder(path: Path, what: str, field_name: str) -> None:
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise AirsideError(
            f"the {what} {path} already exists and is not an empty folder; give a new one",
            code="destination_not_empty",
            details={"field": field_name},
        )


def _sha256(path: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Written whole or not at all (temporary file, fsync, rename)."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------------------
# backup


def _snapshot_into(
    app: Airside, folder: Path, on_progress: transfer.Progress | None
) -> tuple[dict[str, Any], Path]:
    """Snapshot the store into ``folder`` (which exists) and write its manifest."""
    engine = app.db.dialect
    dump = folder / DUMP_FILE[engine]
    pg_version = None
    if engine == "sqlite":

        def pages(done: int, total: int) -> None:
            if on_progress is not None:
                on_progress("snapshot", done, total)

        inv = snap.snapshot_sqlite(app.db.engine, dump, pages)
    else:
        inv, tool = snap.snapshot_postgres(app.db.engine, dump)
        pg_version = tool.version
    size, digest = _sha256(dump)
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "engine": engine,
        "alembic_revision": inv.revision,
        "created_at": _now(),
        "airside_version": airside.__version__,
        "dump": {"file": dump.name, "bytes": size, "sha256": digest},
        "tables": inv.counts,
        "audit_head": {"seq": inv.audit_head_seq, "hash": inv.audit_head_hash},
        "keys": _key_ids(app, inv),
        "keys_included": False,
    }
    if pg_version is not None:
        manifest["pg_dump_version"] = pg_version
    _write_json(folder / MANIFEST, manifest)
    return manifest, dump


def _check_engine(app: Airside) -> str:
    engine = app.db.dialect
    if engine not in DUMP_FILE:
        raise AirsideError(f"a {engine} store cannot be backed up", code="unsupported_store")
    if engine == "postgresql":  # before anything is written: the tool is there
        snap.find_pg_tool("pg_dump", snap.server_major(app.db.engine))
    return engine


def backup(
    app: Airside,
    principal: Principal,
    dest: Path,
    *,
    keys_to: Path | None = None,
    on_progress: transfer.Progress | None = None,
) -> BackupReport:
    """Snapshot the running store into the new folder ``dest``; with ``keys_to``, write the
    installation's keys into that (new, separate) folder. Administrators only; audited as
    ``store.backup`` (the record is in the snapshot)."""
    authorize(app, principal, BACKUP)
    try:
        return _backup(app, principal, dest, keys_to, on_progress)
    except AirsideError as e:
        app.audit_refusal(principal, BACKUP, e, extra={"path": str(dest)})
        raise


def _backup(
    app: Airside,
    principal: Principal,
    dest: Path,
    keys_to: Path | None,
    on_progress: transfer.Progress | None,
) -> BackupReport:
    started = time.monotonic()
    dest = dest.expanduser().absolute()
    _require_empty_folder(dest, "backup folder", "dest")
    if keys_to is not None:
        keys_to = keys_to.expanduser().absolute()
        if keys_to == dest or keys_to.is_relative_to(dest) or dest.is_relative_to(keys_to):
            raise AirsideError(
                "the keys must not travel with the backup: give a folder for them that is "
                "neither the backup folder nor inside it (nor around it)",
                code="keys_with_backup",
                details={"field": "keys_to"},
            )
        _require_empty_folder(keys_to, "key folder", "keys_to")
    engine = _check_engine(app)
    with app.session() as s:
        audit.append(
            s,
            principal,
            BACKUP,
            decision="snapshot",
            result={"path": str(dest), "engine": engine, "keys_exported": keys_to is not None},
        )
    existed = {p: p.exists() for p in (dest, keys_to) if p is not None}
    try:
        private_dir(dest)
        # The installation's one way of handing its keys out (audited as keys.export).
        written = export_key_set(app, principal, keys_to).files if keys_to is not None else []
        manifest, dump = _snapshot_into(app, dest, on_progress)
    except BaseException as e:
        for folder, was_there in existed.items():  # leave them as they were: absent, or empty
            if not was_there:
                shutil.rmtree(folder, ignore_errors=True)
            elif folder.is_dir():
                for entry in folder.iterdir():
                    if entry.is_dir():
                        shutil.rmtree(entry, ignore_errors=True)
                    else:
                        entry.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise AirsideError(
                f"cannot write the backup: {e.strerror or e}; nothing was kept",
                code="cannot_write",
            ) from None
        raise
    return BackupReport(
        path=str(dest),
        dump=str(dump),
        engine=engine,
        bytes=manifest["dump"]["bytes"],
        sha256=manifest["dump"]["sha256"],
        revision=manifest["alembic_revision"],
        tables=manifest["tables"],
        audit_head_seq=manifest["audit_head"]["seq"],
        created_at=manifest["created_at"],
        keys_to=str(keys_to) if keys_to is not None else None,
        key_files=written,
        seconds=round(time.monotonic() - started, 3),
    )


# ---------------------------------------------------------------------------------------------
# restore


def _invalid(src: Path, why: str) -> AirsideError:
    return AirsideError(f"{src} is not a complete Airside backup: {why}", code="backup_invalid")


def read_manifest(src: Path) -> dict[str, Any]:
    """The backup's manifest, checked for the fields a restore relies on."""
    path = src / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _invalid(src, f"it has no {MANIFEST}") from None
    except (OSError, ValueError) as e:
        raise _invalid(src, f"its {MANIFEST} cannot be read ({e})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise _invalid(src, f"its {MANIFEST} is not an Airside backup manifest")
    if data.get("version") != FORMAT_VERSION:
        raise AirsideError(
            f"the backup {src} is of format version {data.get('version')!r}; this version "
            f"of Airside restores version {FORMAT_VERSION}",
            code="backup_too_new",
        )
    try:
        dump = data["dump"]
        ok = (
            data["engine"] in DUMP_FILE
            and dump["file"] == DUMP_FILE[data["engine"]]
            and isinstance(dump["bytes"], int)
            and isinstance(dump["sha256"], str)
            and isinstance(data["tables"], dict)
            and isinstance(data["audit_head"]["seq"], int)
            and isinstance(data["keys"]["template_key_ids"], list)
            and isinstance(data["keys"]["audit_signing"], str)
            and isinstance(data["keys"]["registry"], str)
        )
    except (KeyError, TypeError):
        ok = False
    if not ok:
        raise _invalid(src, f"its {MANIFEST} lacks fields a restore needs")
    return data


def _stage(src: Path, manifest: dict[str, Any], staged: Path, progress: transfer.Progress) -> None:
    """Copy the snapshot to ``staged`` (0600) while hashing it; refuse it unless its size and
    SHA-256 are the manifest's. The restore then reads that private copy, exactly the bytes
    that were checked."""
    dump = src / manifest["dump"]["file"]
    want_size, want = manifest["dump"]["bytes"], manifest["dump"]["sha256"]
    h = hashlib.sha256()
    size = 0
    try:
        f = dump.open("rb")
    except FileNotFoundError:
        raise _invalid(src, f"its snapshot {dump.name} is missing") from None
    except OSError as e:
        raise _invalid(src, f"its snapshot {dump.name} cannot be read ({e.strerror})") from None
    try:
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with f, os.fdopen(fd, "wb") as out:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
                out.write(chunk)
                size += len(chunk)
                progress("checking the backup", size, want_size)
            out.flush()
            os.fsync(out.fileno())
    except OSError as e:
        raise AirsideError(
            f"cannot copy the snapshot {dump} into {staged.parent}: {e.strerror or e}. "
            "Nothing was changed",
            code="cannot_write",
        ) from None
    if size != want_size:
        raise AirsideError(
            f"the snapshot {dump} is {size} bytes, its manifest says {want_size}: it was "
            "truncated or altered. Nothing was changed",
            code="backup_corrupt",
        )
    if h.hexdigest() != want:
        raise AirsideError(
            f"the snapshot {dump} does not match the SHA-256 in its manifest: it was altered "
            "or damaged. Nothing was changed",
            code="backup_corrupt",
        )


def _check_keys(app: Airside, manifest: dict[str, Any]) -> list[str]:
    """Refuse unless this installation holds the keys the backup's rows need; returns
    warnings about keys that are only inconvenient to lack."""
    keys = manifest["keys"]
    missing = []
    ring = app.template_protector.reload()
    lacking = [k for k in keys["template_key_ids"] if k not in ring.keys]
    if lacking:
        missing.append(
            f"the templates were sealed with key id {', '.join(lacking)} which this "
            f"installation does not have (its template keys: {ring.source})"
        )
    own = app.signer.fingerprint
    if keys["audit_signing"] != own:
        missing.append(
            f"the audit log was signed with key {keys['audit_signing']}, and this "
            f"installation's audit signing key is {own}"
        )
    registry, probe = _installation_keys(app)
    if keys["registry"] != installation_key_id(registry):
        missing.append(
            f"principals and API keys were sealed with registry key {keys['registry']}, "
            f"and this installation's registry key is {installation_key_id(registry)}"
        )
    if missing:
        raise AirsideError(
            "the backup cannot be restored with this installation's keys: "
            + "; ".join(missing)
            + ". Nothing was changed. Restore into an installation that reads the key files "
            f"kept with the backup ({app.settings.data_dir / 'keys'}, unless it reads them "
            "from a secrets directory), put in place before anything else ran on it: start "
            "again from an empty data directory (and an empty database) if something did",
            code="restore_keys_missing",
            details={"missing_template_keys": lacking},
        )
    if keys.get("probe_digest") not in (None, installation_key_id(probe)):
        return [
            "the backup's probe digest key is not this installation's: searches made from "
            "now on are recorded under digests that do not match the earlier ones"
        ]
    return []


def _holds_data(counts: dict[str, int]) -> bool:
    return counts.get("principals", 0) > 1 or any(
        n for t, n in counts.items() if t not in _FIRST_RUN_TABLES
    )


def _keep_aside(app: Airside, progress: transfer.Progress | None) -> Path:
    """Snapshot the store about to be replaced into ``<data_dir>/replaced/<UTC time>/``."""
    base = private_dir(app.settings.data_dir / REPLACED_DIR)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    folder = base / stamp
    n = 1
    while folder.exists():
        n += 1
        folder = base / f"{stamp}-{n}"
    private_dir(folder)
    _snapshot_into(app, folder, progress)
    return folder


def restore(
    app: Airside,
    principal: Principal,
    src: Path,
    *,
    replace: bool = False,
    on_progress: transfer.Progress | None = None,
) -> RestoreReport:
    """Restore the backup in folder ``src`` into the installation's store (see the module
    docstring). Administrators only; audited as ``store.restore``."""
    authorize(app, principal, RESTORE)
    try:
        return _restore(app, principal, src.expanduser().absolute(), replace, on_progress)
    except AirsideError as e:
        app.audit_refusal(principal, RESTORE, e, extra={"source": str(src)})
        raise


def _restore(
    app: Airside,
    principal: Principal,
    src: Path,
    replace: bool,
    on_progress: transfer.Progress | None,
) -> RestoreReport:
    started = time.monotonic()

    def progress(stage: str, done: int, total: int) -> None:
        if on_progress is not None:
            on_progress(stage, done, total)

    manifest = read_manifest(src)
    engine = app.db.dialect
    if manifest["engine"] != engine:
        raise AirsideError(
            f"the backup is of a {manifest['engine']} store and this installation's store is "
            f"{engine}: restore it into a {manifest['engine']} store (a SQLite one can then "
            "be moved to PostgreSQL)",
            code="backup_engine_mismatch",
        )
    revision = manifest.get("alembic_revision")
    if not isinstance(revision, str) or not transfer.known_revision(revision):
        raise AirsideError(
            f"the backup's schema revision {revision!r} is unknown to this version of "
            "Airside (a newer one made it): restore it with that version",
            code="backup_too_new",
        )
    for stale in app.settings.data_dir.glob(".restore-*"):  # a restore killed while staging
        shutil.rmtree(stale, ignore_errors=True)
    staging = private_dir(app.settings.data_dir / f".restore-{secrets.token_hex(6)}")
    try:
        staged = staging / manifest["dump"]["file"]
        _stage(src, manifest, staged, progress)
        warnings = _check_keys(app, manifest)
        with app.session(readonly=True) as s:
            before = transfer.row_counts(s.connection())
        if _holds_data(before) and not replace:
            held = {t: n for t, n in before.items() if n}
            raise AirsideError(
                "the installation's store already holds data "
                f"({', '.join(f'{t} {n}' for t, n in sorted(held.items()))}); nothing was "
                "changed. Replacing it keeps a copy of it aside first",
                code="store_not_empty",
                details={"field": "replace"},
            )
        with app.session() as s:
            audit.append(
                s,
                principal,
                RESTORE,
                decision="replacing",
                result={
                    "source": str(src),
                    "backup_created_at": manifest.get("created_at"),
                    "backup_head_seq": manifest["audit_head"]["seq"],
                },
            )
        aside = _keep_aside(app, on_progress)
        try:
            replaced = app.witness.read()
        except AirsideError:
            replaced = None  # unreadable: the restore starts it again either way
        app.db.dispose()  # no pooled connection holds the old store open
        progress("restoring", 0, 1)
        if engine == "sqlite":
            snap.restore_sqlite(staged, app.db.engine)
        else:
            archive = snap.archive_major(str(manifest.get("pg_dump_version", "0")))
            snap.restore_postgres(staged, app.db.engine, archive, revision)
        progress("restoring", 1, 1)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    fresh = Airside(app.settings)  # opens the restored store (bringing it to the head)
    try:
        counts, records, opened = _verify_restored(fresh, manifest, progress)
        report = RestoreReport(
            source=str(src),
            engine=engine,
            backup_created_at=str(manifest.get("created_at")),
            tables=counts,
            audit_records=records,
            templates=opened.templates,
            gallery_seeds=opened.gallery_seeds,
            event_crops=opened.event_crops,
            webhook_secrets=opened.webhook_secrets,
            kept_aside=str(aside),
            replaced_head_seq=replaced.seq if replaced is not None else None,
            warnings=warnings,
        )
        _record_restore(fresh, principal, report, replaced)
    finally:
        fresh.close()
    report.seconds = round(time.monotonic() - started, 3)
    return report


@dataclass
class _Opened:
    """How many sealed values of each kind decrypted, and what did not."""

    templates: int = 0
    gallery_seeds: int = 0
    event_crops: int = 0
    webhook_secrets: int = 0
    problems: list[str] = field(default_factory=list)


def _verify_restored(
    app: Airside, manifest: dict[str, Any], progress: transfer.Progress
) -> tuple[dict[str, int], int, _Opened]:
    """Row counts, audit chain and head, sealed values and registry seals of the restored
    store; raises ``restore_unverified`` naming every problem found."""
    problems: list[str] = []
    with app.session(readonly=True) as s:
        counts = transfer.row_counts(s.connection())
        wrong = {t: (n, counts.get(t)) for t, n in manifest["tables"].items() if counts.get(t) != n}
        if wrong:
            problems.append(f"row counts (manifest, restored) differ: {wrong}")
        chain = audit.verify(s, public_keys=[app.signer.public_pem])
        if not chain.ok:
            first = chain.problems[0]
            problems.append(
                f"the audit chain does not verify (record {first['seq']}: {first['detail']})"
            )
        head = manifest["audit_head"]
        row = s.get(AuditHead, 1)
        restored_head = (row.seq, row.hash) if row is not None else (0, None)
        if restored_head != (head["seq"], head["hash"]):
            problems.append(
                f"the audit log ends at record {restored_head[0]}, the manifest's at "
                f"record {head['seq']}"
            )
        opened = _open_everything(app, s, progress)
        problems.extend(opened.problems)
        problems.extend(_registry_problems(app, s))
    if problems:
        raise AirsideError(
            "the restored store does not verify: " + "; ".join(problems),
            code="restore_unverified",
            details={"problems": problems},
        )
    return counts, chain.records, opened


def _aad(kind: str, ident: Any, key_id: str) -> bytes:
    if kind == "gallery_seeds":
        return seed_aad(int(ident), key_id)
    if kind == "event_crops":
        return event_crop_aad(int(ident), key_id)
    return secret_aad(str(ident), key_id)


def _open_everything(app: Airside, s: Session, progress: transfer.Progress) -> _Opened:
    """Decrypt every sealed value (templates, gallery seeds, event crops, webhook secrets)
    under the keys present."""
    prot = app.template_protector
    prot.reload()
    opened = _Opened()
    total = int(s.scalar(select(func.count()).select_from(Template)) or 0)
    last = 0
    while len(opened.problems) < 5:
        rows = [
            StoredTemplate(*r)
            for r in s.execute(
                select(*StoredTemplate.columns())
                .where(Template.id > last)
                .order_by(Template.id)
                .limit(_CHECK_BATCH)
            )
        ]
        if not rows:
            break
        for r in rows:
            if r.key_id is not None:
                try:
                    prot.open(r.key_id, r.vector, r.aad(r.key_id), f"template {r.id}")
                except AirsideError as e:
                    opened.problems.append(str(e))
            opened.templates += 1
        last = rows[-1].id
        progress("checking templates", opened.templates, total)
    others: list[tuple[str, Any]] = [
        ("gallery_seeds", select(Gallery.id, Gallery.transform_seed, Gallery.transform_key_id)
         .where(Gallery.transform_seed.is_not(None))),
        ("event_crops", select(Event.id, Event.evidence, Event.evidence_key_id)
         .where(Event.evidence.is_not(None))),
        ("webhook_secrets", select(Webhook.name, Webhook.secret, Webhook.secret_key_id)),
    ]  # fmt: skip
    for kind, stmt in others:
        for ident, blob, kid in s.execute(stmt):
            if kid is None:
                continue
            what = f"the {kind.replace('_', ' ').removesuffix('s')} of {ident}"
            try:
                prot.open(kid, blob, _aad(kind, ident, kid), what)
            except AirsideError as e:
                opened.problems.append(str(e))
            setattr(opened, kind, getattr(opened, kind) + 1)
    return opened


def _registry_problems(app: Airside, s: Session) -> list[str]:
    seal = app.registry_seal
    bad = [p.name for p in s.scalars(select(PrincipalRecord)) if not seal.principal_ok(p)]
    names = {pid: name for pid, name in s.execute(select(PrincipalRecord.id, PrincipalRecord.name))}
    bad_keys = []
    for k in s.scalars(select(ApiKey)):
        try:
            seal.check_key(k, names.get(k.principal_id, ""))
        except AirsideError:
            bad_keys.append(k.key_id)
    out = []
    if bad:
        out.append(f"the seals of principals {', '.join(bad)} do not verify under the registry key")
    if bad_keys:
        out.append(f"the seals of API keys {', '.join(bad_keys)} do not verify")
    return out


def _record_restore(
    app: Airside, principal: Principal, report: RestoreReport, replaced: SignedHead | None
) -> None:
    """Append ``store.restore`` to the restored log, and start the witness again from it
    (the witness is forgotten inside the transaction: a crash before the commit leaves no
    witness, never one ahead of the log)."""
    with app.session() as s:
        audit.append(
            s,
            principal,
            RESTORE,
            decision="restored",
            result={
                "source": report.source,
                "backup_created_at": report.backup_created_at,
                "kept_aside": report.kept_aside,
                "replaced_head": None
                if replaced is None
                else {"seq": replaced.seq, "hash": replaced.hash},
                "rows": sum(report.tables.values()),
                "templates": report.templates,
            },
        )
        app.witness.discard()
