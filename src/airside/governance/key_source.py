"""Where each installation key comes from, and the checks a key file must pass to be used.

An installation holds four secrets: the audit signing key, the registry key (seals on
principals and API keys), the probe digest key (keyed digests of searched images) and the
template key ring. This module is the one place that says where each is read from:

1. the environment (``AIRSIDE_SIGNING_KEY``, ``AIRSIDE_REGISTRY_KEY``,
   ``AIRSIDE_PROBE_DIGEST_KEY``, ``AIRSIDE_TEMPLATE_KEY``), which wins over any file;
2. else ``AIRSIDE_SECRETS_DIR`` when it is set: a directory a secrets manager fills, shared
   by every machine of the installation. A key missing there is refused, never created: a
   machine that made its own would fork the installation (its seals and signatures would
   not verify on the others);
3. else ``<data_dir>/keys``, where a missing key is created on first use (one machine).

Every key file is checked before it is read: readable or writable by no one but its owner,
owned by this user (or by root, which may grant its group read access: a secrets manager's
0440 file, as PostgreSQL accepts for its TLS key), in a folder that others cannot write
(or a sticky one, such as a Kubernetes secret volume). A symbolic link is followed, and
every link on the way and the file it ends at must pass the same checks.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from airside.config import Settings
from airside.errors import AirsideError
from airside.governance.secret_files import write_secret

KEYS_DIR = "keys"  # below the data directory
_MAX_LINKS = 40


class InsecureKeyFileError(AirsideError):
    """A key file (or its folder) that someone besides this user could read or replace."""

    code = "insecure_key_file"


class MissingSecretError(AirsideError):
    """A key that must come from the secrets directory (or the environment) is absent."""

    code = "missing_secret"


@dataclass(frozen=True)
class KeySpec:
    """One of the installation's keys: its file name, its setting, and what to call it."""

    file: str
    setting: str  # the Settings field; its variable is AIRSIDE_ + the field in capitals
    what: str

    @property
    def env(self) -> str:
        return f"AIRSIDE_{self.setting.upper()}"


SIGNING = KeySpec("audit_ed25519.pem", "signing_key", "audit signing key")
REGISTRY = KeySpec("registry.key", "registry_key", "registry key")
PROBE_DIGEST = KeySpec("probe_digest.key", "probe_digest_key", "probe digest key")
TEMPLATES = KeySpec("templates.keyring", "template_key", "template key ring")
# The set every machine of one installation must share (what a key set directory holds).
SHARED: tuple[KeySpec, ...] = (SIGNING, REGISTRY, PROBE_DIGEST, TEMPLATES)


@dataclass(frozen=True)
class KeySource:
    """Where one key comes from for one installation's settings."""

    spec: KeySpec
    path: Path  # the file (not read when ``env`` is set)
    env: SecretStr | None  # the key from the environment, which wins over the file
    managed: bool  # Airside may create and rewrite the file (<data_dir>/keys, one machine)
    required: bool  # absent, it is refused at start (unmanaged files only)

    @property
    def from_env(self) -> bool:
        return self.env is not None

    def describe(self) -> str:
        """Where the key comes from, for messages (never the key itself)."""
        return self.spec.env if self.env is not None else str(self.path)

    def available(self) -> bool:
        return self.env is not None or self.path.exists()

    def missing(self) -> MissingSecretError:
        return MissingSecretError(
            f"the {self.spec.what} is missing: {self.path} does not exist and "
            f"{self.spec.env} is not set. Keys are never created in a secrets directory, "
            "where every machine of the installation must find the same ones: put the "
            "installation's complete key set there, not a new key for this machine alone",
            details={"path": str(self.path), "setting": self.spec.env},
        )

    def read(self, generate: Callable[[], bytes]) -> bytes:
        """The key: from the environment (hex decoded; a PEM as it is), else the checked
        file, created from ``generate()`` (0600, atomically) when missing and managed."""
        if self.env is not None:
            return decode_env(self.env.get_secret_value())
        if not self.path.exists():
            if not self.managed:
                raise self.missing()
            write_secret(self.path, generate(), exclusive=True)
        check_key_file(self.path)
        try:
            return self.path.read_bytes()
        except OSError as e:
            raise AirsideError(
                f"cannot read the {self.spec.what} {self.path}: {e.strerror}",
                code="bad_installation_key",
            ) from None


def decode_env(text: str) -> bytes:
    """A key given in the environment: 64 hex characters are its 32 bytes; anything else
    (a PEM) is taken as it is, with ``\\n`` written out as two characters allowed."""
    text = text.strip()
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        return text.replace("\\n", "\n").encode("utf-8")
    return raw


def keys_dir(settings: Settings) -> Path:
    """The folder key files are read from: the secrets directory, else <data_dir>/keys."""
    if settings.secrets_dir is not None:
        return settings.secrets_dir
    return settings.data_dir / KEYS_DIR


def source_of(settings: Settings, spec: KeySpec) -> KeySource:
    """Where ``spec`` comes from under ``settings`` (see the module docstring)."""
    env = getattr(settings, spec.setting)
    if env is not None and not env.get_secret_value().strip():
        env = None
    path = keys_dir(settings) / spec.file
    required = True
    if spec is TEMPLATES:
        path = settings.template_keyring or path
        # "auto" protects templates only when a key exists: a ring may then be absent.
        required = settings.template_protection == "on"
    return KeySource(spec, path, env, settings.secrets_dir is None, required)


def check_at_start(settings: Settings) -> None:
    """Refuse to start on an insecure key file, or on a key missing where it cannot be
    created (the secrets directory), before anything is created or opened."""
    for spec in SHARED:
        src = source_of(settings, spec)
        if src.env is not None:
            continue
        if src.path.exists():
            check_key_file(src.path)
        elif os.path.lexists(src.path) or (not src.managed and src.required):
            raise src.missing()  # (a link to nothing is missing too)


# ---------------------------------------------------------------------------------------------
# permissions


def check_key_file(path: Path) -> None:
    """Refuse ``path`` unless only its owner (this user, or root) can read or replace it.

    Each link on the way to the file is checked (its owner, its folder), then the file
    itself (a regular file, its owner, its mode) and the folder that really holds it."""
    if os.name != "posix":
        return
    me = os.geteuid()
    p = path.absolute()
    for _ in range(_MAX_LINKS):
        st = os.lstat(p)
        _check_folder(p, p.parent.resolve(), me)
        if not stat.S_ISLNK(st.st_mode):
            break
        if st.st_uid not in (me, 0):
            raise InsecureKeyFileError(
                f"the key file {path} is a link owned by uid {st.st_uid} ({p}), who could "
                "point it at a key of their choosing; make it owned by this user or root",
                details={"path": str(path)},
            )
        target = Path(os.readlink(p))
        p = target if target.is_absolute() else p.parent / target
    else:
        raise InsecureKeyFileError(
            f"the key file {path} is behind too many links", details={"path": str(path)}
        )
    shown = str(path) if p == path.absolute() else f"{path} (a link to {p})"
    if not stat.S_ISREG(st.st_mode):
        raise InsecureKeyFileError(
            f"the key file {shown} is not a regular file", details={"path": str(path)}
        )
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid not in (me, 0):
        raise InsecureKeyFileError(
            f"the key file {shown} is owned by uid {st.st_uid}, not by this user (uid {me}) "
            f"or root: its owner can read and replace it; give it to uid {me} (chown) with "
            "mode 0600",
            details={"path": str(path), "owner": st.st_uid},
        )
    # Root may let this process's group read a key it owns (a secrets manager's 0440 file).
    allowed = 0o600 if st.st_uid == me else 0o640
    if mode & 0o077 & ~allowed:
        raise InsecureKeyFileError(
            f"the key file {shown} can be read or written by others (mode {mode:04o}); make "
            f"it readable by its owner only (mode 0600): chmod 600 {p}",
            details={"path": str(path), "mode": f"{mode:04o}"},
        )


def _check_folder(entry: Path, folder: Path, me: int) -> None:
    """Whoever can write the folder holding a key (or a link to one) can replace the key."""
    st = os.stat(folder)
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid not in (me, 0):
        raise InsecureKeyFileError(
            f"the folder {folder} holding the key file {entry} is owned by uid {st.st_uid}, "
            f"who could replace the key; give it to this user (uid {me}) or root",
            details={"path": str(folder), "owner": st.st_uid},
        )
    # A sticky folder (a Kubernetes secret volume is 1777) lets no one replace an entry
    # they do not own, and the entries themselves are checked.
    if mode & 0o022 and not mode & stat.S_ISVTX:
        raise InsecureKeyFileError(
            f"the folder {folder} holding the key file {entry} can be written by others "
            f"(mode {mode:04o}), who could replace the key; make it writable by its owner "
            f"only (mode 0700): chmod 700 {folder}",
            details={"path": str(folder), "mode": f"{mode:04o}"},
        )
