"""Service errors as RFC 9457 ``application/problem+json``, with the service's code.

The status comes from the error's code (a stable table below), never from its message;
an unexpected exception is a 500 whose body names an incident, never a traceback (the
traceback goes to the log without its message, as the CLI's guard does).
"""

from __future__ import annotations

import logging
import secrets
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from airside.errors import AirsideError
from airside.store.faults import store_fault

log = logging.getLogger("airside.server")

PROBLEM = "application/problem+json"

# code -> HTTP status. Unlisted AirsideError codes are 400 (the request cannot be done).
STATUS_OF: dict[str, int] = {
    # who is calling
    "missing_key": 401, "bad_key": 401, "key_revoked": 401, "key_expired": 401,
    "unknown_principal": 401, "principal_disabled": 401,
    "session_ended": 401, "session_expired": 401, "csrf_failed": 403,
    "too_many_attempts": 429,
    # what they may do
    "forbidden": 403, "role_mismatch": 403, "out_of_scope": 403, "purpose_mismatch": 403,
    # what they asked about
    "not_found": 404, "model_not_found": 404,
    "conflict": 409, "gallery_exists": 409, "model_in_use": 409, "same_reviewer": 409,
    "remote_camera": 409,
    "expired": 409,
    # the body
    "too_large": 413, "payload_too_large": 413,
    "unreadable": 415, "not_an_image": 415, "unsupported": 415, "truncated": 415,
    "corrupt": 415, "empty": 415, "extension_mismatch": 415,
    "face": 422, "no_face": 422, "several_faces": 422, "no_landmarks": 422,
    "not_enrolled": 404, "no_basis_to_withdraw": 409, "model_exists": 409,
    "no_calibration": 409, "enrolment_refused": 422, "no_legal_basis": 422, "bad_basis": 422,
    "bad_reference": 422, "validation": 422, "quality": 422,
    # administration: models, calibration, principals, review
    "model_invalid": 422, "model_incompatible": 422, "model_output_invalid": 422,
    "model_family_unknown": 422, "unknown_family": 422, "model_family_mismatch": 422,
    "model_name_invalid": 422, "model_manifest_invalid": 422, "licence_required": 422,
    "model_normalisation_required": 422, "model_normalisation_invalid": 422,
    "model_tampered": 409, "model_missing": 409, "registry_tampered": 403,
    "contract_mismatch": 409, "same_contract": 409, "bad_calibration_set": 422,
    "too_few_subjects": 422,
    "bad_request": 400, "audit_chain_broken": 409, "bad_scene": 422, "no_scene_file": 409,
    "no_picture": 502, "keys_exist": 409, "url_not_allowed": 422,
    # the installation's keys (governance/key_source.py): the server's setup, not the caller
    "insecure_key_file": 500, "missing_secret": 500,
    # moving and keeping the store (services/store_transfer.py, services/backup.py)
    "bad_database_url": 422, "same_store": 409, "target_not_empty": 409,
    "migration_failed": 500, "destination_not_empty": 409, "keys_with_backup": 422,
    "backup_invalid": 422, "backup_corrupt": 422, "backup_too_new": 409,
    "backup_engine_mismatch": 409, "restore_keys_missing": 409, "store_not_empty": 409,
    "restore_unverified": 500, "unsupported_store": 409, "snapshot_failed": 500,
    "pg_tools_missing": 500,
    # the server
    "overloaded": 503, "not_ready": 503, "deadline": 503, "cannot_write": 500,
    "index_unavailable": 503,
    # the store's surroundings (store/faults.py): its server down or restarting, a full disk
    "store_unavailable": 503, "disk_full": 507,
}  # fmt: skip


class Problem(BaseModel):
    """An error's body (RFC 9457), as ``problem`` writes it; some carry more members
    (``fields``, ``details``, ``refused``, ``reasons``, ``incident``)."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    code: str


def documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` of problems with ``statuses``, for a route or a router."""
    schema = Problem.model_json_schema()
    return {
        status: {"description": HTTPStatus(status).phrase, "content": {PROBLEM: {"schema": schema}}}
        for status in statuses
    }


# What any route of the API may answer, whatever it does: a body that cannot be parsed
# (400), a missing or bad key (401), a caller without the right (403), a thing not found
# (404), a state that forbids it (409), a body over the limit (413), an upload that is not
# an image (415), fields that are not valid (422), a locked-out address (429), a server
# too busy or still starting, or its store unreachable (503), a full disk (507).
API_PROBLEMS = documented(400, 401, 403, 404, 409, 413, 415, 422, 429, 503, 507)


HTTP_CODES = {401: "missing_key", 404: "not_found", 405: "method_not_allowed",
              413: "payload_too_large"}  # fmt: skip


def status_of(code: str) -> int:
    if code.startswith("image_"):  # a capture's refusal of an image it could not decode
        code = code.removeprefix("image_")
    return STATUS_OF.get(code, 400)


def problem(
    status: int, code: str, detail: str, *, headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:  # fmt: skip
    body: dict[str, Any] = {
        "type": f"https://airside.invalid/problems/{code}",
        "title": code.replace("_", " "),
        "status": status,
        "detail": detail,
        "code": code,
        **extra,
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def from_error(error: AirsideError) -> JSONResponse:
    """The problem for a service error: its code, message and structured details."""
    # An image error's reason is its code over HTTP (415 or 413, not one "image").
    code = str(getattr(error, "reason", "")) if error.code == "image" else error.code
    code = code or error.code
    status = status_of(code)
    extra: dict[str, Any] = {}
    if error.details:
        extra["details"] = error.details
    refusals = getattr(error, "refusals", None)
    if refusals:
        extra["refused"] = [r.as_dict() for r in refusals]
        if all(status_of(str(r.code)) == 415 for r in refusals):
            status = 415  # nothing in the upload could be decoded
    reasons = getattr(error, "reasons", None)
    if reasons:
        extra["reasons"] = reasons
    headers = None
    if status in (429, 503):
        headers = {"Retry-After": str(error.details.get("retry_after", 1))}
    return problem(status, code, str(error), headers=headers, **extra)


def install(app: FastAPI) -> None:
    """Answer every error as a problem: service errors, HTTP errors, bad fields, bugs."""

    @app.exception_handler(AirsideError)
    async def _airside(_req: Request, exc: AirsideError) -> JSONResponse:
        return from_error(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, exc: RequestValidationError) -> JSONResponse:
        fields = [
            {
                "field": ".".join(str(p) for p in e.get("loc", ()) if p != "body"),
                "problem": e.get("msg", ""),
            }
            for e in exc.errors()
        ]
        return problem(422, "validation", "the request's fields are not valid", fields=fields)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {
            400: "bad_request",  # e.g. a JSON body that is not UTF-8 ("error parsing the body")
            404: "not_found",
            405: "method_not_allowed",
            401: "missing_key",
            413: "payload_too_large",
        }.get(exc.status_code, "http_error")
        return problem(
            exc.status_code, code, str(exc.detail), headers=getattr(exc, "headers", None)
        )

    async def _store_or_disk(_req: Request, exc: Exception) -> JSONResponse:
        # The store's server down or restarting, or a full disk: a code the caller can act
        # on (503 with Retry-After, 507), not an incident (store/faults.py).
        fault = store_fault(exc)
        if fault is not None:
            log.warning("%s: %s", fault.code, type(exc).__name__)
            return from_error(fault)
        return unexpected(exc)

    app.add_exception_handler(DBAPIError, _store_or_disk)
    app.add_exception_handler(OSError, _store_or_disk)

    @app.exception_handler(Exception)
    async def _unexpected(_req: Request, exc: Exception) -> JSONResponse:
        return unexpected(exc)


def unexpected(exc: BaseException) -> JSONResponse:
    """A bug: a 500 naming an incident; the traceback goes to the log without messages."""
    incident = secrets.token_hex(4)
    # Type and location only: a database error's message quotes what it was writing.
    log.error("incident %s: unexpected %s", incident, type(exc).__name__,
              exc_info=(type(exc), exc, None))  # fmt: skip
    return problem(500, "internal_error", f"unexpected error (incident {incident})",
                   incident=incident)  # fmt: skip
