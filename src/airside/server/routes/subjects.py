"""One subject's data: erasure on request and withdrawal of a legal basis, each answered
with the signed receipt the CLI prints (``airside receipt verify`` checks it offline)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from airside.errors import NotFoundError
from airside.governance.principals import Principal
from airside.server.auth import Caller, Service, allowed
from airside.server.work import Pool
from airside.services import erasure, subjects

router = APIRouter(tags=["subjects"])


class WithdrawIn(BaseModel):
    purpose: str = Field(examples=["boarding:KE123"], description="The purpose of the basis")


@router.get("/subjects/{subject}", summary="Which galleries and legal bases hold a subject")
async def find_subject(subject: str, app: Service, who: Caller, pool: Pool) -> dict[str, Any]:
    found = await pool.run(subjects.list_subjects, app, who, None, reference=subject)
    if not found:
        raise NotFoundError(f"no subject {subject!r} in the galleries you reach")
    return found[0].as_dict()


@router.delete("/subjects/{subject}", summary="Erase a subject; the signed erasure receipt")
async def erase_subject(
    subject: str,
    app: Service,
    who: Caller,
    pool: Pool,
    reason: Annotated[str, Query(max_length=500, description="Recorded in the receipt")] = (
        "erasure request"
    ),
) -> dict[str, Any]:
    receipt = await pool.run(erasure.erase_subject, app, who, subject, reason)
    return receipt.as_dict()


@router.post(
    "/subjects/{subject}/consent/withdraw",
    summary="Withdraw a basis for a purpose (erases the subject from its galleries); a receipt",
)
async def withdraw_consent(
    subject: str,
    body: WithdrawIn,
    app: Service,
    who: Annotated[Principal, allowed("consent.withdraw")],
    pool: Pool,
) -> dict[str, Any]:
    receipt = await pool.run(erasure.withdraw_basis, app, who, subject, body.purpose)
    return receipt.as_dict()
