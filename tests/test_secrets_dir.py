"""Several machines, one installation: keys from a secrets directory (AIRSIDE_SECRETS_DIR) or
the environment, shared by every machine on one store; key files others could read or
replace are refused at start; a key set is written only by ``keys init`` / ``keys export``;
the audit witness stays on each machine (docs/deployment.md)."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import SecretStr, ValidationError
from sqlalchemy import select
from tests.conftest import jpeg_bytes, png_bytes
from typer.testing import CliRunner

from airside.config import Settings
from airside.errors import AccessDenied, AirsideError
from airside.governance import audit
from airside.governance.consent import BasisInput
from airside.governance.key_source import SHARED, TEMPLATES
from airside.governance.principals import Principal
from airside.governance.secret_files import write_secret
from airside.governance.signing import fingerprint
from airside.governance.template_keys import KeyRing, TemplateKeyError, key_id_of
from airside.governance.witness import SignedHead, Witness
from airside.services import audit_service, enrolment, galleries, matching
from airside.services.app import Airside
from airside.services.key_sets import init_key_set
from airside.services.principal_admin import (
    add_principal,
    authenticate,
    ensure_local_admin,
    issue_key,
)
from airside.services.template_keys import rotate_keys
from airside.store.tables import AuditRecord, Template
from airside.vision.analyzer import FaceAnalyzer

KEY_FILES = sorted(spec.file for spec in SHARED)
Machine = Callable[..., Airside]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every entry of ``folder`` (links followed): its bytes and mode."""
    return {p.name: (p.read_bytes(), mode(p)) for p in sorted(folder.iterdir()) if p.is_file()}


def cli(*args: str, env: dict[str, str] | None = None) -> Any:
    from airside.cli.main import app as airside_cli

    return CliRunner().invoke(airside_cli, list(args), env=env)


@pytest.fixture
def keyset(tmp_path: Path) -> Path:
    """A complete key set, as a secrets manager would mount it."""
    folder = tmp_path / "secrets"
    init_key_set(folder)
    return folder


@pytest.fixture
def machines(
    tmp_path: Path, store_url: str, keyset: Path, analyzer: FaceAnalyzer
) -> Iterator[Machine]:
    """``machine(name, **settings)``: an installation on its own data directory, on the
    one shared store, with the shared secrets directory unless ``settings`` say otherwise."""
    opened: list[Airside] = []

    def machine(name: str, **settings: Any) -> Airside:
        given: dict[str, Any] = {"data_dir": tmp_path / name, "database_url": store_url,
                                 "secrets_dir": keyset, **settings}  # fmt: skip
        app = Airside(Settings(**given), analyzer_factory=lambda _s: analyzer)
        opened.append(app)
        return app

    yield machine
    for app in opened:
        app.close()


def enrol_astronaut(app: Airside, astronaut: np.ndarray) -> Principal:
    admin = ensure_local_admin(app)
    galleries.create_gallery(app, admin, "boarding", "boarding")
    enrolment.enrol(app, admin, "boarding", "S-1", [png_bytes(astronaut)], BasisInput("consent"))
    return admin


# ---------------------------------------------------------------------------------------------
# two machines, one store, one secrets directory


def test_a_record_signed_on_one_machine_verifies_on_the_other(machines: Machine) -> None:
    a, b = machines("a"), machines("b")
    admin = ensure_local_admin(a)
    with a.session() as s:
        signed_by = audit.append(s, admin, "identify", decision="no_match").key_fingerprint

    assert signed_by == b.signer.fingerprint
    report = audit_service.verify_chain(b, ensure_local_admin(b))
    assert report.ok, report.problems
    assert report.signed_records == report.records


def test_a_machine_with_its_own_signing_key_does_not_verify_the_others_records(
    machines: Machine,
) -> None:
    a = machines("a")
    admin = ensure_local_admin(a)
    with a.session() as s:
        audit.append(s, admin, "identify", decision="no_match")
    forked = machines("c", secrets_dir=None)  # keys of its own, in its data directory

    with forked.session(readonly=True) as s:
        report = audit_service.verify_in(forked, s)

    assert not report.ok and report.signed_records == 0


def test_each_machine_keeps_its_own_witness_in_its_data_directory(
    machines: Machine, keyset: Path
) -> None:
    before = snapshot(keyset)
    a, b = machines("a"), machines("b")
    admin = ensure_local_admin(a)
    for app in (a, b, a):
        with app.session() as s:
            audit.append(s, admin, "identify", decision="no_match")

    heads = [Witness(app.settings.data_dir / "keys" / "audit_witness.json").read()
             for app in (a, b)]  # fmt: skip
    assert heads[0] is not None and heads[1] is not None
    assert heads[0].seq > heads[1].seq  # each holds the newest head its own machine wrote
    assert snapshot(keyset) == before  # nothing is written to the secrets directory
    for app in (a, b):
        assert audit_service.verify_chain(app, admin).ok


def test_a_template_enrolled_on_one_machine_is_identified_on_the_other(
    machines: Machine, astronaut: np.ndarray
) -> None:
    a, b = machines("a"), machines("b")
    admin = enrol_astronaut(a, astronaut)

    res = matching.identify(b, admin, "boarding", jpeg_bytes(astronaut, 80))

    assert res.match and res.candidates[0].subject == "S-1"
    other_key = machines("c", template_key=SecretStr(secrets.token_hex(32)))
    with pytest.raises(TemplateKeyError):
        matching.identify(other_key, admin, "boarding", jpeg_bytes(astronaut, 80))


def test_an_api_key_issued_on_one_machine_authenticates_on_the_other(machines: Machine) -> None:
    a, b = machines("a"), machines("b")
    admin = ensure_local_admin(a)
    add_principal(a, admin, "cam-1", "camera", [("*", "*")])
    issued = issue_key(a, admin, "cam-1")

    assert authenticate(b, issued.secret) == Principal("cam-1", "camera")
    other_seal = machines("c", registry_key=SecretStr(secrets.token_hex(32)))
    with pytest.raises(AccessDenied) as e:
        authenticate(other_seal, issued.secret)
    assert e.value.code == "registry_tampered"


# ---------------------------------------------------------------------------------------------
# refused at start


@pytest.mark.parametrize("missing", KEY_FILES)
def test_a_secrets_dir_missing_a_key_is_refused_at_start_and_nothing_is_created(
    tmp_path: Path, store_url: str, keyset: Path, missing: str
) -> None:
    (keyset / missing).unlink()
    before = snapshot(keyset)
    data = tmp_path / "a"

    with pytest.raises(AirsideError) as e:
        Airside(Settings(data_dir=data, database_url=store_url, secrets_dir=keyset))

    assert e.value.code == "missing_secret"
    assert str(keyset / missing) in str(e.value)
    assert snapshot(keyset) == before
    assert not data.exists()


def test_the_cli_refuses_a_missing_key_naming_the_file(
    tmp_path: Path, store_url: str, keyset: Path
) -> None:
    (keyset / "registry.key").unlink()
    env = {"AIRSIDE_SECRETS_DIR": str(keyset), "AIRSIDE_DATABASE_URL": store_url}

    res = cli("--data-dir", str(tmp_path / "a"), "audit", "verify", "--json", env=env)

    assert res.exit_code == 1
    assert json.loads(res.stdout)["error"] == "missing_secret"
    assert str(keyset / "registry.key") in json.loads(res.stdout)["message"]
    assert not (keyset / "registry.key").exists()


@pytest.mark.parametrize("bad_mode", [0o644, 0o640, 0o604, 0o620], ids="{:04o}".format)
@pytest.mark.parametrize("where", ["secrets dir", "data dir"])
def test_a_key_file_others_can_read_or_write_is_refused_naming_it_and_its_mode(
    tmp_path: Path, store_url: str, keyset: Path, where: str, bad_mode: int
) -> None:
    settings = Settings(data_dir=tmp_path / "a", database_url=store_url,
                        secrets_dir=keyset if where == "secrets dir" else None)  # fmt: skip
    if where == "data dir":
        first = Airside(settings)
        assert first.registry_seal is not None  # the key is created on first use
        first.close()
    key = (keyset if where == "secrets dir" else tmp_path / "a" / "keys") / "registry.key"
    os.chmod(key, bad_mode)

    with pytest.raises(AirsideError) as e:
        Airside(settings)

    assert e.value.code == "insecure_key_file"
    message = str(e.value)
    assert str(key) in message and f"mode {bad_mode:04o}" in message and "0600" in message


@pytest.mark.parametrize("bad_mode", [0o770, 0o777, 0o720], ids="{:04o}".format)
def test_a_key_directory_others_can_write_is_refused(
    tmp_path: Path, store_url: str, keyset: Path, bad_mode: int
) -> None:
    os.chmod(keyset, bad_mode)

    with pytest.raises(AirsideError) as e:
        Airside(Settings(data_dir=tmp_path / "a", database_url=store_url, secrets_dir=keyset))

    assert e.value.code == "insecure_key_file"
    assert str(keyset) in str(e.value) and f"mode {bad_mode:04o}" in str(e.value)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_a_key_file_owned_by_another_user_is_refused(
    tmp_path: Path, store_url: str, keyset: Path
) -> None:
    os.chown(keyset / "probe_digest.key", 65534, 65534)

    with pytest.raises(AirsideError) as e:
        Airside(Settings(data_dir=tmp_path / "a", database_url=store_url, secrets_dir=keyset))

    assert e.value.code == "insecure_key_file"
    assert str(keyset / "probe_digest.key") in str(e.value) and "uid 65534" in str(e.value)


def _kubernetes_volume(tmp_path: Path) -> tuple[Path, Path]:
    """A Kubernetes secret volume: a sticky world-writable mount, the files in a timestamped
    folder, ``..data`` linking to it, and one link per key through ``..data``."""
    volume = tmp_path / "volume"
    volume.mkdir()
    os.chmod(volume, 0o1777)
    stamped = volume / "..2024_06_01_12_00_00.000000001"
    init_key_set(stamped)
    os.chmod(stamped, 0o755)
    for spec in SHARED:
        os.chmod(stamped / spec.file, 0o400)
    (volume / "..data").symlink_to(stamped.name)
    for spec in SHARED:
        (volume / spec.file).symlink_to(Path("..data") / spec.file)
    return volume, stamped


def test_the_kubernetes_secret_volume_layout_is_accepted(machines: Machine, tmp_path: Path) -> None:
    volume, _ = _kubernetes_volume(tmp_path)
    a, b = machines("a", secrets_dir=volume), machines("b", secrets_dir=volume)
    admin = ensure_local_admin(a)
    with a.session() as s:
        audit.append(s, admin, "identify", decision="no_match")

    assert audit_service.verify_chain(b, ensure_local_admin(b)).ok


def test_a_link_to_a_key_file_others_can_read_is_refused_naming_both(
    tmp_path: Path, store_url: str
) -> None:
    volume, stamped = _kubernetes_volume(tmp_path)
    os.chmod(stamped / "registry.key", 0o444)  # Kubernetes' default mode would be 0644

    with pytest.raises(AirsideError) as e:
        Airside(Settings(data_dir=tmp_path / "a", database_url=store_url, secrets_dir=volume))

    assert e.value.code == "insecure_key_file"
    assert str(volume / "registry.key") in str(e.value) and "mode 0444" in str(e.value)
    assert "registry.key" in str(e.value).split("a link to", 1)[1]


_SETPRIV = shutil.which("setpriv")


@pytest.mark.skipif(os.geteuid() != 0 or _SETPRIV is None, reason="needs root and setpriv")
@pytest.mark.parametrize(("file_mode", "accepted"), [(0o440, True), (0o444, False)])
def test_a_root_owned_key_is_accepted_readable_by_its_group_only(
    tmp_path: Path, file_mode: int, accepted: bool
) -> None:
    """Secrets managers hand keys out root-owned and group-readable (Kubernetes with an
    fsGroup, 0440); a process of another user accepts that, as PostgreSQL does its TLS
    key, and still refuses a key anyone may read."""
    folder = Path(os.environ.get("TMPDIR", "/tmp")) / f"airside-keys-{secrets.token_hex(4)}"
    folder.mkdir(mode=0o755)
    try:
        os.chmod(folder, 0o755)
        key = folder / "registry.key"
        key.write_bytes(secrets.token_bytes(32))
        os.chown(key, 0, 65534)
        os.chmod(key, file_mode)
        code = ("import sys; from pathlib import Path; from airside.governance.key_source "
                "import check_key_file; check_key_file(Path(sys.argv[1]))")  # fmt: skip
        assert _SETPRIV is not None
        res = subprocess.run(
            [_SETPRIV, "--reuid=65534", "--regid=65534", "--clear-groups", "--",
             sys.executable, "-c", code, str(key)],
            capture_output=True, text=True, timeout=60, cwd=folder,
        )  # fmt: skip
    finally:
        shutil.rmtree(folder)
    assert (res.returncode == 0) == accepted, res.stderr[-2000:]
    if not accepted:
        assert "insecure_key_file" in res.stderr or "mode 0444" in res.stderr


# ---------------------------------------------------------------------------------------------
# keys from the environment


def _env_keys() -> tuple[dict[str, str], Ed25519PrivateKey]:
    signing = Ed25519PrivateKey.generate()
    raw = signing.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return {
        "AIRSIDE_SIGNING_KEY": raw.hex(),
        "AIRSIDE_REGISTRY_KEY": secrets.token_hex(32),
        "AIRSIDE_PROBE_DIGEST_KEY": secrets.token_hex(32),
        "AIRSIDE_TEMPLATE_KEY": secrets.token_hex(32),
    }, signing


def test_keys_from_the_environment_take_precedence_over_the_secrets_dir(
    machines: Machine, monkeypatch: pytest.MonkeyPatch
) -> None:
    env, signing = _env_keys()
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    a = machines("a")

    assert a.signer.fingerprint == fingerprint(signing.public_key())
    probe = bytes.fromhex(env["AIRSIDE_PROBE_DIGEST_KEY"])
    assert a.probe_digest("ab" * 32) == hmac.new(probe, b"ab" * 32, hashlib.sha256).hexdigest()
    ring = a.template_protector.ring
    assert ring.source == "AIRSIDE_TEMPLATE_KEY"
    assert ring.active == key_id_of(bytes.fromhex(env["AIRSIDE_TEMPLATE_KEY"]))
    admin = ensure_local_admin(a)
    add_principal(a, admin, "cam-1", "camera", [("*", "*")])
    issued = issue_key(a, admin, "cam-1")
    from_file = machines("b", registry_key=None)  # the secrets directory's registry key
    with pytest.raises(AccessDenied):
        authenticate(from_file, issued.secret)


def test_with_every_key_in_the_environment_an_empty_secrets_dir_is_enough(
    machines: Machine, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env, _ = _env_keys()
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    empty = tmp_path / "empty"
    empty.mkdir(mode=0o700)

    a = machines("a", secrets_dir=empty)
    admin = ensure_local_admin(a)
    with a.session() as s:
        audit.append(s, admin, "identify", decision="no_match")

    assert list(empty.iterdir()) == []


def test_the_signing_key_may_be_given_as_its_pem(
    machines: Machine, monkeypatch: pytest.MonkeyPatch
) -> None:
    signing = Ed25519PrivateKey.generate()
    pem = signing.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    monkeypatch.setenv("AIRSIDE_SIGNING_KEY", pem)

    assert machines("a").signer.fingerprint == fingerprint(signing.public_key())


def test_keys_from_the_environment_never_appear_in_output_logs_or_errors(
    tmp_path: Path, store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    keys, signing = _env_keys()
    pem = signing.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    empty = tmp_path / "empty"
    empty.mkdir(mode=0o700)
    env = {**keys, "AIRSIDE_SECRETS_DIR": str(empty), "AIRSIDE_DATABASE_URL": store_url}
    data = tmp_path / "d"
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    for args in (
        ["keys", "export", "--to", str(tmp_path / "out"), "--json"],
        ["keys", "export", "--to", str(tmp_path / "out")],  # refused: it holds keys now
        ["keys", "rotate"],
        ["keys", "rotate", "--retire-old"],  # refused: keys from the environment
        ["audit", "verify"],
    ):
        res = cli("--data-dir", str(data), "-v", *args, env=env)
        seen += [res.output, getattr(res, "stderr", "") or ""]
    bad = {**env, "AIRSIDE_REGISTRY_KEY": keys["AIRSIDE_REGISTRY_KEY"][:-2]}
    refused = cli("--data-dir", str(data), "audit", "verify", env=bad)
    seen += [refused.output, getattr(refused, "stderr", "") or ""]
    with pytest.raises(ValidationError) as e:
        Settings(registry_key=keys["AIRSIDE_REGISTRY_KEY"][:-2])
    seen += [str(e.value), repr(Settings(**{k.removeprefix("AIRSIDE_").lower(): v
                                            for k, v in keys.items()}))]  # fmt: skip
    log = data / "logs" / "errors.log"
    seen += [caplog.text, log.read_text() if log.exists() else ""]

    assert refused.exit_code == 2 and "registry_key" in refused.output
    text = "\n".join(seen)
    assert "keys_exist" in text and "AIRSIDE_TEMPLATE_KEY" in text  # the refusals were seen
    for value in [*keys.values(), *(v[:-2] for v in keys.values())]:
        assert value not in text and value.upper() not in text
    body = pem.splitlines()[1]
    assert body not in text


# ---------------------------------------------------------------------------------------------
# keys init, keys export


def test_keys_init_writes_a_complete_private_set_a_new_installation_opens(
    tmp_path: Path, store_url: str, analyzer: FaceAnalyzer, astronaut: np.ndarray
) -> None:
    folder = tmp_path / "new-set"
    unused = tmp_path / "unused"

    res = cli("--data-dir", str(unused), "keys", "init", "--to", str(folder), "--json")

    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert sorted(rep["files"]) == KEY_FILES == sorted(p.name for p in folder.iterdir())
    assert mode(folder) == 0o700 and {mode(folder / f) for f in KEY_FILES} == {0o600}
    assert not unused.exists()  # it touches no installation
    before = snapshot(folder)
    settings = Settings(data_dir=tmp_path / "a", database_url=store_url, secrets_dir=folder)
    app = Airside(settings, analyzer_factory=lambda _s: analyzer)
    try:
        enrol_astronaut(app, astronaut)
        assert app.signer.fingerprint == rep["key_fingerprint"]
        with app.session(readonly=True) as s:
            assert set(s.scalars(select(Template.key_id))) == set(rep["template_key_ids"])
    finally:
        app.close()
    assert snapshot(folder) == before  # used, never written


def test_keys_init_refuses_a_directory_holding_keys_or_anything_else(
    tmp_path: Path, keyset: Path
) -> None:
    before = snapshot(keyset)
    other = tmp_path / "other"
    other.mkdir(mode=0o755)
    (other / "notes.txt").write_text("not a key")
    os.chmod(other, 0o755)

    taken = cli("keys", "init", "--to", str(keyset), "--json")
    busy = cli("keys", "init", "--to", str(other), "--json")

    assert taken.exit_code == 1 and json.loads(taken.stdout)["error"] == "keys_exist"
    assert snapshot(keyset) == before
    assert busy.exit_code == 1 and json.loads(busy.stdout)["error"] == "bad_request"
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"] and mode(other) == 0o755


def test_keys_export_hands_the_first_machines_keys_to_the_next(
    tmp_path: Path, store_url: str, analyzer: FaceAnalyzer, astronaut: np.ndarray
) -> None:
    first = Airside(Settings(data_dir=tmp_path / "a", database_url=store_url),
                    analyzer_factory=lambda _s: analyzer)  # fmt: skip
    try:
        admin = enrol_astronaut(first, astronaut)
        add_principal(first, admin, "cam-1", "camera", [("*", "*")])
        issued = issue_key(first, admin, "cam-1")
    finally:
        first.close()
    out = tmp_path / "exported"
    env = {"AIRSIDE_DATABASE_URL": store_url}

    res = cli("--data-dir", str(tmp_path / "a"), "keys", "export", "--to", str(out), "--json",
              env=env)  # fmt: skip

    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == KEY_FILES
    assert mode(out) == 0o700 and {mode(out / f) for f in KEY_FILES} == {0o600}
    own = tmp_path / "a" / "keys"
    assert {f: (out / f).read_bytes() for f in KEY_FILES} == {
        f: (own / f).read_bytes() for f in KEY_FILES
    }
    second = Airside(Settings(data_dir=tmp_path / "b", database_url=store_url, secrets_dir=out),
                     analyzer_factory=lambda _s: analyzer)  # fmt: skip
    try:
        assert matching.identify(second, admin, "boarding", jpeg_bytes(astronaut, 80)).match
        assert authenticate(second, issued.secret).name == "cam-1"
        assert audit_service.verify_chain(second, admin).ok
        with second.session(readonly=True) as s:
            rows = s.scalars(select(AuditRecord).where(AuditRecord.action == "keys.export"))
            exported = [(r.actor, r.decision, r.result) for r in rows]
    finally:
        second.close()
    assert [(actor, decision) for actor, decision, _ in exported] == [(admin.name, "exported")]
    registry_hex = (own / "registry.key").read_bytes().hex()
    assert registry_hex not in json.dumps(exported[0][2])


# ---------------------------------------------------------------------------------------------
# template key rotation across machines


def _write_ring(folder: Path, keys: list[bytes]) -> None:
    """What the secrets manager does: replace the ring (the first key is active)."""
    ring = KeyRing.from_keys(keys, "test", None)
    write_secret(folder / TEMPLATES.file, ring.to_json().encode(), exclusive=False)


def test_rotating_with_a_secrets_dir_ring_writes_nothing_there(
    machines: Machine, keyset: Path, astronaut: np.ndarray
) -> None:
    a = machines("a")
    admin = enrol_astronaut(a, astronaut)
    before = snapshot(keyset)

    rep = rotate_keys(a, admin)
    with pytest.raises(TemplateKeyError):
        rotate_keys(a, admin, retire_old=True)

    assert not rep.created and rep.key_id == a.template_protector.ring.active
    assert snapshot(keyset) == before and sorted(os.listdir(keyset)) == KEY_FILES


def test_the_documented_rotation_across_machines_keeps_every_machine_working(
    machines: Machine, keyset: Path, astronaut: np.ndarray, hopper: np.ndarray
) -> None:
    """docs/deployment.md: each step is handed to every machine before the next one."""
    a, b = machines("a"), machines("b")
    admin = enrol_astronaut(a, astronaut)
    assert matching.identify(b, admin, "boarding", jpeg_bytes(astronaut, 80)).match
    ring = a.template_protector.ring
    assert ring.active is not None
    old, new = ring.keys[ring.active], secrets.token_bytes(32)

    _write_ring(keyset, [old, new])  # 1. the new key joins the ring; the old one still seals
    enrolment.enrol(b, admin, "boarding", "S-2", [png_bytes(hopper)], BasisInput("consent"))
    _write_ring(keyset, [new, old])  # 2. the new key seals
    rotate_keys(a, admin)  # 3. once, on any machine: every row under the new key
    _write_ring(keyset, [new])  # 4. the old key leaves the ring

    with b.session(readonly=True) as s:
        assert set(s.scalars(select(Template.key_id))) == {key_id_of(new)}
    for app in (a, b, machines("c")):  # c: a machine that never held the old key
        assert matching.identify(app, admin, "boarding", jpeg_bytes(astronaut, 80)).match


# ---------------------------------------------------------------------------------------------
# the witness: per machine, never torn

_WRITER = """
import sys
from pathlib import Path
from airside.governance.witness import SignedHead, Witness
w = Witness(Path(sys.argv[1]))
start, stop = int(sys.argv[2]), int(sys.argv[3])
for seq in range(start, stop, 2):
    w.record(SignedHead(seq, "h" * 64, "s" * 128, "f" * 16, "2024-01-01T00:00:00+00:00"))
"""


def test_two_processes_writing_the_witness_at_once_never_tear_it(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "audit_witness.json"
    Witness(path).record(SignedHead(0, "h" * 64, "s" * 128, "f" * 16, "2024-01-01T00:00:00"))
    n = 300
    writers = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(path), str(start), str(n)])
        for start in (1, 2)
    ]
    seen = []
    reader = Witness(path)
    while any(w.poll() is None for w in writers):
        head = reader.read()  # a torn or half-written file raises bad_witness
        assert head is not None
        seen.append(head.seq)
    assert [w.wait(timeout=60) for w in writers] == [0, 0]

    final = reader.read()
    assert final is not None and final.seq == n - 1
    assert seen == sorted(seen)  # it only moves forward
    assert mode(path) == 0o600
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []
