"""Camera administration: who may see and change the supervised cameras, each change
audited, and the ``camera`` principal each camera acts as.

The cameras themselves (their configuration file, their worker processes) belong to the
server that supervises them; this module is the governance around them. Listing is
``camera.list``; adding, removing and restarting a camera (``camera.add``,
``camera.remove``, ``camera.restart``, ``camera.edit``), taking a snapshot to draw on and editing a
camera's scene (``camera.snapshot``, ``camera.scene``) are listed for no role, so only an
administrator may. A refusal is audited by ``authorize``; a change is audited when it is done, and a
change that fails is audited as refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from fnmatch import fnmatchcase
from typing import Any

from sqlalchemy import select

from airside.errors import AirsideError, ConflictError
from airside.governance import audit, outbound
from airside.governance.principals import Principal
from airside.services import principal_admin
from airside.services.app import Airside
from airside.services.authz import authorize
from airside.store.tables import PrincipalRecord

CAMERA_ROLE = "camera"


def authorize_listing(app: Airside, who: Principal) -> None:
    """Raise (audited) unless ``who`` may see the cameras and their status."""
    authorize(app, who, "camera.list")


def authorize_scene(app: Airside, who: Principal) -> None:
    """Raise (audited) unless ``who`` may read and edit camera scenes (administrators)."""
    authorize(app, who, "camera.scene")


@contextmanager
def change(
    app: Airside, who: Principal, action: str, camera: str, result: dict[str, Any] | None = None
) -> Iterator[dict[str, Any]]:
    """Authorise ``action`` on ``camera``, run the change inside, then audit it (``result``,
    which the change may add to); an error inside is audited as a refusal and re-raised."""
    authorize(app, who, action)
    extra: dict[str, Any] = {"camera": camera, **(result or {})}
    try:
        yield extra
    except AirsideError as e:
        app.audit_refusal(who, action, e, extra=extra)
        raise
    with app.session() as s:
        audit.append(s, who, action, decision="done", result=extra)


def check_source(app: Airside, source: str, *, remote: bool = False) -> None:
    """Raise ``url_not_allowed`` when a camera's stream URL points at this machine or at a
    link-local address (governance/outbound.py). A file, a folder or ``camera:N`` is not a
    URL; a remote camera's source is opened by its worker, on another machine."""
    if not remote and "://" in source:
        outbound.check_url(app.settings, source, field="source")


def _covered(scopes: list[tuple[str, str]], gallery: str) -> bool:
    return any(fnmatchcase(gallery, g) and p == "*" for g, p in scopes)


def provision_principal(
    app: Airside, actor: Principal, name: str, galleries: list[str]
) -> Principal:
    """The registered ``camera`` principal ``name``, with a scope on each of ``galleries``:
    added if missing, and granted the galleries it lacks (``principal.add`` /
    ``principal.grant``, audited; ``actor`` must be allowed to). Scopes it has beyond
    ``galleries`` are left alone. A principal of that name with another role is a conflict,
    never changed."""
    with app.session(readonly=True) as s:
        rec = s.scalar(select(PrincipalRecord).where(PrincipalRecord.name == name))
        role = rec.role if rec is not None else None
        scopes = [(sc.gallery_pattern, sc.purpose_pattern) for sc in rec.scopes] if rec else []
    if role is None:
        return principal_admin.add_principal(
            app, actor, name, CAMERA_ROLE, [(g, "*") for g in galleries]
        )
    if role != CAMERA_ROLE:
        raise ConflictError(
            f"principal {name!r} exists with role {role!r}; a camera acts as a principal "
            f"of role {CAMERA_ROLE!r}",
            details={"field": "principal"},
        )
    for g in galleries:
        if not _covered(scopes, g):
            principal_admin.grant(app, actor, name, g, "*")
    return Principal(name, CAMERA_ROLE)
