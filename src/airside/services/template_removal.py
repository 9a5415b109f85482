"""Removing templates from galleries, so that every index follows without a rebuild.

Erasure, consent withdrawal and retention purge all end here: the rows are deleted, each
gallery's revision is bumped, and the removed ids are journalled under that revision
(``TemplateRemoval``) in the same transaction. An index replays the journal after the
revision it last synchronised (``Airside.index_with_transform``): in process or in Milvus,
a removal costs one delete per template, never a reload.
"""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import delete, insert, update
from sqlalchemy.orm import Session

from airside.store.tables import Gallery, Template, TemplateRemoval


def remove_templates(session: Session, template_ids_by_gallery: dict[int, list[int]]) -> None:
    """Delete the templates, bump each gallery's revision and journal the removals."""
    for gallery_id, ids in sorted(template_ids_by_gallery.items()):
        if not ids:
            continue
        session.execute(delete(Template).where(Template.id.in_(ids)))
        revision = session.scalar(
            update(Gallery)
            .where(Gallery.id == gallery_id)
            .values(revision=Gallery.revision + 1)
            .returning(Gallery.revision)
        )
        session.execute(
            insert(TemplateRemoval),
            [{"gallery_id": gallery_id, "template_id": t, "revision": revision} for t in ids],
        )


def by_gallery(rows: list[tuple[int, int]]) -> dict[int, list[int]]:
    """``(template id, gallery id)`` pairs grouped by gallery."""
    out: dict[int, list[int]] = defaultdict(list)
    for template_id, gallery_id in rows:
        out[gallery_id].append(template_id)
    return dict(out)
