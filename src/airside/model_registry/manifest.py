"""What a model file is, where it came from and how to feed it: the manifest next to it.

A biometric template is only comparable with templates from the same weights fed the same
way, and an operator must be able to show which model, under which licence, produced a
decision. The manifest records both, with the file's sha256 so a swapped file is caught.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

ModelKind = Literal["face-detector", "face-embedder", "person-detector", "pose"]
ChannelOrder = Literal["RGB", "BGR"]
Layout = Literal["NCHW", "NHWC"]
MANIFEST_SUFFIX = ".manifest.json"
SCHEMA_VERSION = 1

# The kind each known family is, so ``add_model`` can infer it.
FAMILY_KINDS: dict[str, ModelKind] = {
    "yunet": "face-detector",
    "scrfd": "face-detector",
    "retinaface": "face-detector",
    "centerface": "face-detector",
    "ultraface": "face-detector",
    "blazeface": "face-detector",
    "arcface": "face-embedder",
    "sface": "face-embedder",
    "generic": "face-embedder",
    "yolo": "person-detector",
    "yolox": "person-detector",
    "rtmpose": "pose",
    "movenet": "pose",
}

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_FAMILY = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def _triple(v: object) -> object:
    """One number means the same for all three channels."""
    if isinstance(v, int | float):
        return (float(v),) * 3
    return v


class Normalisation(BaseModel):
    """How uint8 pixels become the model's input: ``(pixel * scale - mean) / std``.

    ``mean`` and ``std`` are per channel, in the model's channel order.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    scale: float = 1.0
    channels: ChannelOrder = "RGB"
    layout: Layout = "NCHW"

    @field_validator("mean", "std", mode="before")
    @classmethod
    def _triples(cls, v: object) -> object:
        return _triple(v)

    @field_validator("std")
    @classmethod
    def _nonzero(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(s == 0 for s in v):
            raise ValueError("std must not be zero")
        return v

    @field_validator("scale")
    @classmethod
    def _scale(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("scale must be positive")
        return v

    def describe(self) -> str:
        """A compact, stable name for the embedding contract (no '/': the fingerprint's)."""

        def fmt(v: tuple[float, float, float]) -> str:
            return f"{v[0]:g}" if v[0] == v[1] == v[2] else ",".join(f"{x:g}" for x in v)

        scale = "" if self.scale == 1.0 else f"-x{self.scale:g}"
        return (
            f"{self.channels.lower()}-{self.layout.lower()}{scale}"
            f"-mean{fmt(self.mean)}-std{fmt(self.std)}"
        )


class OutputSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    names: list[str] = Field(default_factory=list)
    dim: int | None = Field(None, ge=1)  # embedders: length of the embedding


class Manifest(BaseModel):
    """One model in the models directory. ``file`` is a bare name in that directory."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = SCHEMA_VERSION
    name: str
    kind: ModelKind
    family: str
    version: str = "1"
    file: str
    sha256: str
    size_bytes: int = Field(ge=0)
    input_size: tuple[int, int] | None = None  # (width, height)
    normalisation: Normalisation | None = None
    output: OutputSpec = Field(default_factory=OutputSpec)
    licence: str
    source: str | None = None
    added_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_PATTERN.match(v):
            raise ValueError(
                f"model name {v!r} must be letters, digits, '.', '_' or '-' (at most 128)"
            )
        return v

    @field_validator("family")
    @classmethod
    def _family(cls, v: str) -> str:
        if not _FAMILY.match(v):
            raise ValueError(f"family {v!r} must be lower-case letters, digits, '.', '_', '-'")
        return v

    @field_validator("file")
    @classmethod
    def _file(cls, v: str) -> str:
        # A manifest must never point outside its directory, even when edited by hand.
        if not v or "/" in v or "\\" in v or v in (".", "..") or v.startswith("."):
            raise ValueError(f"file {v!r} must be a plain file name in the models directory")
        return v

    @field_validator("sha256")
    @classmethod
    def _sha(cls, v: str) -> str:
        if not re.fullmatch(r"[0-9a-f]{64}", v):
            raise ValueError("sha256 must be 64 lower-case hex digits")
        return v

    @field_validator("licence")
    @classmethod
    def _licence(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("a licence (SPDX id or its text) is required")
        return v.strip()

    @field_validator("input_size")
    @classmethod
    def _size(cls, v: tuple[int, int] | None) -> tuple[int, int] | None:
        if v is not None and (v[0] <= 0 or v[1] <= 0):
            raise ValueError("input size must be positive")
        return v

    @field_validator("added_at")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        return v if v.tzinfo is not None else v.replace(tzinfo=UTC)

    @property
    def model_id(self) -> str:
        """The id templates carry in their embedding contract."""
        return f"{self.family}:{self.name}"

    def to_json(self) -> str:
        return self.model_dump_json(indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> Manifest:
        return cls.model_validate_json(text)


def manifest_name(name: str) -> str:
    return f"{name}{MANIFEST_SUFFIX}"


def sha256_file(path: Path) -> str:
    """Streamed, never cached: a file swapped since the last call must show a new digest."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def image_input_layout(shape: list[Any]) -> Layout | None:
    """The layout a 4-D input's static shape implies (3 channels first or last), if any."""
    if len(shape) != 4:
        return None
    first, last = shape[1] == 3, shape[3] == 3
    if first and not last:
        return "NCHW"
    if last and not first:
        return "NHWC"
    return None
