"""Two-person review of watchlist hits, each reviewer with their own key: a hit becomes
actionable once two different reviewers confirm it; the searcher cannot review it."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from airside.governance.principals import Principal
from airside.server.auth import Caller, Service
from airside.server.routes import RowId
from airside.server.work import Pool, WorkPool
from airside.services import review
from airside.services.app import Airside

router = APIRouter(tags=["review"])

Status = Literal["open", "confirmed", "rejected", "expired", "all"]


class VoteIn(BaseModel):
    note: str | None = Field(None, max_length=2000, description="Kept with the vote")


@router.get("/review", summary="Review cases in the caller's galleries (open by default)")
async def list_cases(
    app: Service,
    who: Caller,
    pool: Pool,
    status: Annotated[Status, Query(description="A case status, or all")] = "open",
) -> dict[str, Any]:
    cases = await pool.run(review.list_cases, app, who, None if status == "all" else status)
    return {"total": len(cases), "items": [c.as_dict() for c in cases]}


@router.get("/review/{case_id}", summary="One review case, with its votes")
async def get_case(case_id: RowId, app: Service, who: Caller, pool: Pool) -> dict[str, Any]:
    return (await pool.run(review.get_case, app, who, case_id)).as_dict()


async def _vote(
    app: Airside, who: Principal, pool: WorkPool, case_id: int, decision: str,
    body: VoteIn | None,
) -> dict[str, Any]:  # fmt: skip
    note = body.note if body is not None else None
    return (await pool.run(review.vote, app, who, case_id, decision, note)).as_dict()


@router.post("/review/{case_id}/confirm", summary="Confirm a hit (two make it actionable)")
async def confirm(
    case_id: RowId, app: Service, who: Caller, pool: Pool, body: VoteIn | None = None
) -> dict[str, Any]:
    return await _vote(app, who, pool, case_id, "confirm", body)


@router.post("/review/{case_id}/reject", summary="Reject a hit: the case closes")
async def reject(
    case_id: RowId, app: Service, who: Caller, pool: Pool, body: VoteIn | None = None
) -> dict[str, Any]:
    return await _vote(app, who, pool, case_id, "reject", body)
