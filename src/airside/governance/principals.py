"""The caller of a service. No biometric operation runs without one."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Principal:
    name: str
    role: str


# The retention policy and other scheduled housekeeping act as this principal in the audit
# log. It is not registered and cannot pass ``authorize``: only in-process code uses it.
SYSTEM = Principal("system", "system")
