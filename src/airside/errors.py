"""Errors a caller can act on. Each carries a short machine ``code``, a message in the
domain's words and structured ``details``, so that every adapter (the CLI, the HTTP API)
can render it in its own language: a message never names a command-line option or an
HTTP route (``tests/test_error_messages.py``).

``details`` keys in use: ``field`` / ``fields`` (the input concerned, in the use-case's
parameter names: ``basis``, ``basis_ref``, ``departs``...), ``limit``, and ``next`` (the
use-case that resolves it, by its audit action: ``gallery.create``, ``calibration.fit``...).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class AirsideError(Exception):
    """Base class: ``code`` is stable for scripts, ``str(e)`` is for people, ``details`` for
    adapters."""

    code = "error"

    def __init__(
        self, message: str, *, code: str | None = None, details: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.details: dict[str, Any] = dict(details or {})


class NotFoundError(AirsideError):
    code = "not_found"


class ConflictError(AirsideError):
    code = "conflict"


class ConsentError(AirsideError):
    """No recorded consent or legal basis covers the purpose at this moment."""

    code = "no_legal_basis"


class FaceError(AirsideError):
    """The image holds no usable face, or more than one where one was required."""

    code = "face"


class ContractMismatchError(AirsideError):
    """Templates from different embedding contracts must never be compared."""

    code = "contract_mismatch"


class NoCalibrationError(AirsideError, FileNotFoundError):
    """No FMR -> threshold table for an embedder's contract: nothing can be decided with it
    until one is fitted (``airside eval verify --identities ... --calibrate``)."""

    code = "no_calibration"


class AccessDenied(AirsideError):
    """The principal is unknown, disabled, lacks the role or scope, or asks for the wrong
    purpose. ``code`` says which (``unknown_principal``, ``forbidden``, ``out_of_scope``...)."""

    code = "forbidden"
