"""Adding an operator's model file to the registry, checked by what will run it.

The registry (``airside.model_registry``) files models and their manifests but runs
nothing; :class:`OnnxInspector` is how it sees a file: ONNX Runtime opens it, a family's
default pixels come from the embedders, and an embedder is built once to prove that it
can be fed. :func:`add_model` is ``add_model_file`` with that inspector.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from airside.errors import AirsideError
from airside.model_registry.manifest import Manifest, Normalisation
from airside.model_registry.registry import ModelIO, ModelSpec, Validator, add_model_file
from airside.vision.embedders.onnx_models import (
    ModelIncompatible,
    default_normalisation,
    embedder_from_manifest,
)
from airside.vision.onnx_runtime import Device, open_model


class OnnxInspector:
    """The registry's view of a file, through ONNX Runtime (``threads``, ``device``)."""

    def __init__(self, threads: int = 0, device: Device = "cpu") -> None:
        self.threads = threads
        self.device: Device = device

    def open(self, path: Path) -> ModelIO:
        model = open_model(path, threads=self.threads, device=self.device)
        return ModelIO(list(model.input_shape), list(model.output_names))

    def default_normalisation(self, family: str, path: Path) -> Normalisation | None:
        return default_normalisation(family, path)

    def embedder_geometry(self, manifest: Manifest, path: Path) -> tuple[int, int, int]:
        try:
            embedder = embedder_from_manifest(
                manifest, path, threads=self.threads, device=self.device
            )
        except ModelIncompatible as exc:
            raise AirsideError(
                f"{path.name} does not fit family {manifest.family!r}: {exc.problem}",
                code="model_family_mismatch",
            ) from exc
        return embedder.width, embedder.height, embedder.contract.dim


def add_model(
    models_dir: Path,
    file: Path,
    family: str | ModelSpec,
    *,
    validate: Validator | None = None,
    threads: int = 0,
    device: Device = "cpu",
    **spec: Any,
) -> Manifest:
    """Copy a local model into ``models_dir`` with its manifest, once ONNX Runtime loads it
    and it fits its family. ``family`` and ``spec`` (licence, name, kind, ...) are the
    fields of :class:`~airside.model_registry.registry.ModelSpec`, or ``family`` is one."""
    return add_model_file(
        models_dir,
        file,
        ModelSpec.of(family, **spec),
        inspector=OnnxInspector(threads, device),
        validate=validate,
    )
