"""Operator-supplied model files and their manifests (see ``registry``).

Files are added with ``add_model_file`` and an inspector that can open them (vision's:
``airside.vision.model_files.add_model``); this package imports no model code."""

from airside.model_registry.manifest import Manifest, ModelKind, Normalisation, OutputSpec
from airside.model_registry.registry import (
    ModelCheck,
    ModelInspector,
    ModelIO,
    ModelSpec,
    add_model_file,
    describe_file,
    list_models,
    load_model,
    remove_model,
    verify_models,
)

__all__ = [
    "Manifest",
    "ModelCheck",
    "ModelIO",
    "ModelInspector",
    "ModelKind",
    "ModelSpec",
    "Normalisation",
    "OutputSpec",
    "add_model_file",
    "describe_file",
    "list_models",
    "load_model",
    "remove_model",
    "verify_models",
]
