"""Errors a caller can act on. Each carries a short machine ``code`` and a human message."""

from __future__ import annotations


class AirsideError(Exception):
    """Base class: ``code`` is stable for scripts, ``str(e)`` is for people."""

    code = "error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


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
