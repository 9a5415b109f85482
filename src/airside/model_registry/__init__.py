"""Operator-supplied model files and their manifests (see ``registry``)."""

from airside.model_registry.manifest import Manifest, ModelKind, Normalisation, OutputSpec
from airside.model_registry.registry import (
    ModelCheck,
    add_model,
    list_models,
    load_model,
    remove_model,
    verify_models,
)

__all__ = [
    "Manifest",
    "ModelCheck",
    "ModelKind",
    "Normalisation",
    "OutputSpec",
    "add_model",
    "list_models",
    "load_model",
    "remove_model",
    "verify_models",
]
