"""The caller of a service. No biometric operation runs without one."""

from __future__ import annotations

import getpass
from dataclasses import dataclass


@dataclass(frozen=True)
class Principal:
    name: str
    role: str


def local_principal() -> Principal:
    """The operator at this machine's CLI, acting as the local administrator."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return Principal(name=f"local:{user}", role="admin")
