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

    Returns the gallery when one is named. The principal, and then whether its scopes
    could cover a gallery of that name, are checked before the gallery is looked up: a
    caller learns that a gallery does not exist (``not_found``) only for a name it could be
    entitled to, and is otherwise told ``out_of_scope`` whether the gallery exists or not.
    """
    view: GalleryView | None = None
    try:
        with app.session() as s:
            rec = access.authorize(s, principal, action)
            if gallery is None:
                return None
            access.require_scope_on_name(rec, action, gallery)
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
