"""The check every service makes first: is this principal allowed to do this, here, now?

A refusal is audited in its own transaction (the refused effect never starts) and raised.
"""

from __future__ import annotations

from airside.errors import AirsideError
from airside.governance import access
from airside.governance.principals import Principal
from airside.services.app import Airside
from airside.services.gallery_view import GalleryView, get_gallery


def authorize(
    app: Airside,
    principal: Principal,
    action: str,
    *,
    gallery: str | None = None,
    purpose: str | None = None,
) -> GalleryView | None:
    """Check ``principal`` may do ``action`` (on ``gallery``, for ``purpose`` when declared).

    Returns the gallery when one is named. The principal is checked before the gallery is
    looked up, so an unregistered caller cannot learn which galleries exist.
    """
    view: GalleryView | None = None
    try:
        with app.session() as s:
            access.authorize(s, principal, action)
            if gallery is None:
                return None
            view = get_gallery(s, gallery)
            access.authorize(
                s, principal, action, access.GalleryRef(view.name, view.purpose), purpose
            )
            return view
    except AirsideError as e:
        app.audit_refusal(
            principal,
            action,
            e,
            purpose=purpose or (view.purpose if view else None),
            gallery=gallery,
        )
        raise


def authorize_gallery(
    app: Airside, principal: Principal, action: str, name: str, purpose: str | None = None
) -> GalleryView:
    """``authorize`` for an action on one gallery, returning the gallery."""
    gallery = authorize(app, principal, action, gallery=name, purpose=purpose)
    assert gallery is not None
    return gallery
