"""The models directory: model files an operator added by hand, each with its manifest.

Nothing is ever downloaded: a model enters only through ``add_model_file``, which copies
a local file, has it opened and fitted to its family, and records its sha256.
``load_model`` re-hashes the file on every load and refuses one that no longer matches, so
a swapped or corrupted model cannot silently change who is matched.

The registry files models; it does not run them. Opening a file and reading its input,
outputs and embedding size is asked of a :class:`ModelInspector` the caller gives (vision's
ONNX one: ``airside.vision.model_files``), so this package imports no model code.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from pydantic import ValidationError

from airside.errors import AirsideError, ConflictError, NotFoundError
from airside.model_registry.manifest import (
    FAMILY_KINDS,
    MANIFEST_SUFFIX,
    NAME_PATTERN,
    ChannelOrder,
    Layout,
    Manifest,
    ModelKind,
    Normalisation,
    OutputSpec,
    image_input_layout,
    manifest_name,
    sha256_file,
)

log = logging.getLogger(__name__)

Validator = Callable[[Manifest, Path], None]
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ModelSpec:
    """What an operator says about a model file when adding it: the one description that
    ``add_model_file`` and the admin service (``services.model_admin``) both take.

    ``kind`` defaults from ``family``. Normalisation fields left out take the family's
    defaults (arcface, sface) and the layout the model's input shape implies."""

    family: str
    licence: str | None = None
    kind: ModelKind | None = None
    name: str | None = None
    source: str | None = None
    version: str = "1"
    input_size: tuple[int, int] | None = None
    mean: float | tuple[float, float, float] | None = None
    std: float | tuple[float, float, float] | None = None
    scale: float | None = None
    channels: ChannelOrder | None = None
    layout: Layout | None = None

    @classmethod
    def of(cls, family: str | ModelSpec, **fields: Any) -> ModelSpec:
        """A spec from a family and keyword fields (how callers write it), or ``family``
        itself when it is a spec (with ``fields`` replaced)."""
        if isinstance(family, ModelSpec):
            return replace(family, **fields)
        return cls(family, **fields)

    def pixel_fields(self) -> dict[str, Any]:
        """The normalisation fields given (mean, std, scale, channels), without the layout."""
        given = {"mean": self.mean, "std": self.std, "scale": self.scale,
                 "channels": self.channels}  # fmt: skip
        return {k: v for k, v in given.items() if v is not None}


class ModelIO(NamedTuple):
    """What an opened model file takes and gives."""

    input_shape: list[Any]
    output_names: list[str]


class ModelInspector(Protocol):
    """Opens model files for the registry, which only files them: whoever runs the models
    (vision) knows how to open one, what a family's pixels are by default, and whether a
    file is an embedder it can feed."""

    def open(self, path: Path) -> ModelIO:
        """Load ``path`` (AirsideError ``model_invalid`` when it does not load)."""
        ...

    def default_normalisation(self, family: str, path: Path) -> Normalisation | None:
        """The preprocessing ``family``'s models take unless told otherwise (None: none)."""
        ...

    def embedder_geometry(self, manifest: Manifest, path: Path) -> tuple[int, int, int]:
        """(chip width, chip height, dimension) of the embedder ``manifest`` describes, or
        AirsideError ``model_family_mismatch`` when it is not one that can be fed."""
        ...


class ModelCheck(NamedTuple):
    """One manifest's health. ``manifest`` is None when the manifest itself is unreadable."""

    manifest: Manifest | None
    ok: bool
    problem: str | None


def _copy_hashing(src: Path, dst: Path) -> tuple[str, int]:
    """Copy ``src`` to ``dst`` and digest the bytes written, in one streamed pass."""
    h = hashlib.sha256()
    size = 0
    with src.open("rb") as fin, dst.open("xb") as fout:
        while chunk := fin.read(_CHUNK):
            h.update(chunk)
            fout.write(chunk)
            size += len(chunk)
        fout.flush()
        os.fsync(fout.fileno())
    return h.hexdigest(), size


def _place(tmp: Path, final: Path) -> bool:
    """Move ``tmp`` to ``final`` unless ``final`` exists (False then): never overwrites.

    A hard link is atomic and fails on an existing name; where links are not supported,
    fall back to check-then-replace.
    """
    try:
        os.link(tmp, final)
    except FileExistsError:
        return False
    except OSError:
        if final.exists():
            return False
        os.replace(tmp, final)
        return True
    tmp.unlink()
    return True


def _write_new(path: Path, text: str) -> bool:
    """Write ``path`` atomically (a temp file, then one rename); False if it exists."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        with tmp.open("x", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        return _place(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _read_manifest(path: Path) -> Manifest:
    try:
        manifest = Manifest.from_json(path.read_bytes())
    except (OSError, ValidationError, ValueError) as exc:
        raise AirsideError(
            f"manifest {path.name} is unreadable: {exc}", code="model_manifest_invalid"
        ) from exc
    expected = path.name.removesuffix(MANIFEST_SUFFIX)
    if manifest.name != expected:
        raise AirsideError(
            f"manifest {path.name} names model {manifest.name!r}, not {expected!r}",
            code="model_manifest_invalid",
        )
    return manifest


def _resolve_kind(family: str, kind: ModelKind | None) -> ModelKind:
    known = FAMILY_KINDS.get(family)
    if kind is None:
        if known is None:
            raise AirsideError(
                f"unknown model family {family!r}: give its kind, or use one of "
                f"{', '.join(sorted(FAMILY_KINDS))}",
                code="model_family_unknown",
            )
        return known
    if known is not None and known != kind:
        raise AirsideError(
            f"family {family!r} models are {known}s, not {kind}s",
            code="model_family_mismatch",
        )
    return kind


def _image_layout(shape: list[Any], layout: Layout | None, name: str, family: str) -> Layout:
    """The layout of a 4-D, 3-channel image input, or a refusal saying why it is not one."""

    def refuse(why: str) -> AirsideError:
        return AirsideError(
            f"{name} does not fit family {family!r}: its input {shape} {why}",
            code="model_family_mismatch",
        )

    if len(shape) != 4:
        raise refuse("is not an image batch (N, C, H, W or N, H, W, C)")
    implied = image_input_layout(shape)
    if layout is None:
        if implied is None:
            raise refuse("has no clear 3-channel axis: give the layout (NCHW or NHWC)")
        return implied
    channel = shape[1] if layout == "NCHW" else shape[3]
    if (implied is not None and implied != layout) or (isinstance(channel, int) and channel != 3):
        raise refuse(f"is not a 3-channel {layout} image")
    return layout


def _static_size(shape: list[Any], layout: Layout) -> tuple[int, int] | None:
    h, w = (shape[2], shape[3]) if layout == "NCHW" else (shape[1], shape[2])
    if isinstance(w, int) and w > 0 and isinstance(h, int) and h > 0:
        return (w, h)
    return None


def _normalisation(base: Normalisation, given: dict[str, Any], layout: Layout) -> Normalisation:
    try:
        return Normalisation.model_validate({**base.model_dump(), **given, "layout": layout})
    except ValidationError as exc:
        raise AirsideError(
            f"invalid normalisation: {exc}", code="model_normalisation_invalid"
        ) from exc


def add_model_file(
    models_dir: Path,
    file: Path,
    spec: ModelSpec,
    *,
    inspector: ModelInspector,
    validate: Validator | None = None,
) -> Manifest:
    """Copy a local model into ``models_dir`` with its manifest, once it proves usable.

    ``inspector`` opens the staged copy: embedders are built and their chip size and
    dimension read; other kinds are checked to take 3-channel images, and
    ``validate(manifest, path)`` may add family checks (it raises to refuse).
    Adding the same file under the same name again returns the existing manifest.
    """
    spec = replace(spec, family=spec.family.strip().lower())
    family = spec.family
    resolved_kind = _resolve_kind(family, spec.kind)
    if spec.licence is None or not spec.licence.strip():
        raise AirsideError(
            "a licence is required to add a model (an SPDX id such as Apache-2.0, or the "
            "licence text): a model of unknown licence cannot be deployed",
            code="licence_required",
        )
    file = Path(file)
    if not file.is_file():
        raise NotFoundError(f"model file {file} does not exist", code="model_missing")
    name = spec.name or file.stem
    if not NAME_PATTERN.match(name):
        raise AirsideError(
            f"model name {name!r} must be letters, digits, '.', '_' or '-'; give name=...",
            code="model_name_invalid",
        )
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = models_dir / manifest_name(name)
    target = models_dir / file.name

    incoming = models_dir / f".incoming-{secrets.token_hex(8)}"
    incoming.mkdir()
    try:
        staged = incoming / file.name  # keeps the real name in ONNX Runtime's messages
        digest, size = _copy_hashing(file, staged)
        if manifest_path.exists():
            existing = _read_manifest(manifest_path)
            if existing.sha256 == digest:
                log.info("model %s is already registered with this file", name)
                return existing
            raise ConflictError(
                f"a model named {name!r} already exists with a different file "
                f"(sha256 {existing.sha256[:16]}..., new {digest[:16]}...); choose another name",
                code="model_exists",
            )
        if target.exists() and sha256_file(target) != digest:
            raise ConflictError(
                f"{target.name} already exists in {models_dir} with different contents; "
                "rename the file or choose another",
                code="model_exists",
            )
        manifest = _validated_manifest(
            staged,
            replace(spec, name=name),
            kind=resolved_kind,
            digest=digest,
            size=size,
            inspector=inspector,
        )
        if validate is not None:
            validate(manifest, staged)
        if not _place(staged, target) and sha256_file(target) != digest:
            raise ConflictError(
                f"{target.name} appeared in {models_dir} with different contents meanwhile",
                code="model_exists",
            )
        if not _write_new(manifest_path, manifest.to_json()):
            raise ConflictError(f"a model named {name!r} was added meanwhile", code="model_exists")
        log.info("added model %s (%s, %s) sha256 %s", name, family, resolved_kind, digest)
        return manifest
    finally:
        shutil.rmtree(incoming, ignore_errors=True)


def _validated_manifest(
    path: Path,
    spec: ModelSpec,
    *,
    kind: ModelKind,
    digest: str,
    size: int,
    inspector: ModelInspector,
) -> Manifest:
    """Open the staged copy, fit it to its family, and describe it."""
    assert spec.name is not None and spec.licence is not None
    family = spec.family
    model = inspector.open(path)
    shape = list(model.input_shape)
    layout = _image_layout(shape, spec.layout, path.name, family)
    given = spec.pixel_fields()

    normalisation: Normalisation | None = None
    if kind == "face-embedder":
        base = inspector.default_normalisation(family, path)
        if base is None and not {"mean", "std"} <= given.keys():
            raise AirsideError(
                f"family {family!r} has no default preprocessing: give mean and std "
                "(and channels, layout, scale when not RGB, NCHW, 1)",
                code="model_normalisation_required",
            )
        normalisation = _normalisation(base or Normalisation(), given, layout)
    elif given or spec.layout is not None:
        normalisation = _normalisation(Normalisation(), given, layout)

    manifest = Manifest(
        name=spec.name,
        kind=kind,
        family=family,
        version=spec.version,
        file=path.name,
        sha256=digest,
        size_bytes=size,
        # An embedder family knows its chip size: the model's own is checked against it.
        input_size=spec.input_size
        if kind == "face-embedder"
        else spec.input_size or _static_size(shape, layout),
        normalisation=normalisation,
        output=OutputSpec(names=list(model.output_names)),
        licence=spec.licence,
        source=spec.source,
        added_at=datetime.now(UTC),
    )
    if kind != "face-embedder":
        return manifest
    width, height, dim = inspector.embedder_geometry(manifest, path)
    return manifest.model_copy(
        update={
            "input_size": (width, height),
            "output": OutputSpec(names=manifest.output.names, dim=dim),
        }
    )


def describe_file(
    path: Path, spec: ModelSpec, *, digest: str, inspector: ModelInspector
) -> Manifest:
    """The manifest ``add_model_file`` would write for ``path``, without copying it: for
    model files that ship inside an installed package and are checked against a published
    digest instead (``airside.vision.bundled``)."""
    path = Path(path)
    assert spec.name is not None
    return _validated_manifest(
        path, spec, kind=_resolve_kind(spec.family, spec.kind), digest=digest,
        size=path.stat().st_size, inspector=inspector,
    )  # fmt: skip


def list_models(models_dir: Path) -> list[Manifest]:
    """Every readable manifest, by name; unreadable ones are logged (see ``verify_models``)."""
    out = []
    for path in sorted(Path(models_dir).glob(f"*{MANIFEST_SUFFIX}")):
        try:
            out.append(_read_manifest(path))
        except AirsideError as exc:
            log.warning("%s", exc)
    return out


def _check_file(models_dir: Path, manifest: Manifest) -> tuple[Path, str | None]:
    path = models_dir / manifest.file
    if not path.is_file():
        return path, f"model file {manifest.file} is missing"
    digest = sha256_file(path)
    if digest != manifest.sha256:
        return path, (
            f"{manifest.file} has sha256 {digest[:16]}..., its manifest says "
            f"{manifest.sha256[:16]}...: the file was changed or replaced"
        )
    return path, None


def verify_models(models_dir: Path) -> list[ModelCheck]:
    """Re-hash every model against its manifest."""
    models_dir = Path(models_dir)
    out = []
    for path in sorted(models_dir.glob(f"*{MANIFEST_SUFFIX}")):
        try:
            manifest = _read_manifest(path)
        except AirsideError as exc:
            out.append(ModelCheck(None, False, str(exc)))
            continue
        _, problem = _check_file(models_dir, manifest)
        out.append(ModelCheck(manifest, problem is None, problem))
    return out


def load_model(models_dir: Path, name: str) -> tuple[Manifest, Path]:
    """The manifest and file of model ``name``, refused if the file no longer matches."""
    models_dir = Path(models_dir)
    path = models_dir / manifest_name(name)
    if not NAME_PATTERN.match(name) or not path.is_file():
        raise NotFoundError(f"no model named {name!r} in {models_dir}", code="model_not_found")
    manifest = _read_manifest(path)
    file, problem = _check_file(models_dir, manifest)
    if problem is not None:
        code = "model_missing" if not file.is_file() else "model_tampered"
        raise AirsideError(f"refusing model {name!r}: {problem}", code=code)
    return manifest, file


def remove_model(models_dir: Path, name: str) -> Manifest:
    """Remove model ``name``: its manifest first (so it is never half-registered), then its
    file unless another manifest names the same file. Returns the removed manifest."""
    models_dir = Path(models_dir)
    path = models_dir / manifest_name(name)
    if not NAME_PATTERN.match(name) or not path.is_file():
        raise NotFoundError(f"no model named {name!r} in {models_dir}", code="model_not_found")
    manifest = _read_manifest(path)
    path.unlink()
    shared = any(m.file == manifest.file for m in list_models(models_dir))
    if not shared:
        (models_dir / manifest.file).unlink(missing_ok=True)
    log.info("removed model %s (%s)", name, manifest.file)
    return manifest
