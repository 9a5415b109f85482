"""Face embedders run by ONNX Runtime: ArcFace-family nets, OpenCV's SFace, and the rest.

Each takes aligned uint8 RGB chips (what ``ArcFaceAligner`` cuts) and returns one
L2-normalised vector per chip. How pixels are turned into the net's input (channel order,
scale, mean, std, layout) is fixed per model and recorded in the embedding contract: the
same weights fed differently give vectors that must never be compared.

Reference preprocessing, checked against the upstream code:

- InsightFace ``ArcFaceONNX.get_feat``: ``blobFromImages(bgr, 1/127.5, mean 127.5,
  swapRB=True)``, so the net sees RGB, ``(x - 127.5) / 127.5``, NCHW. MXNet exports whose
  first nodes already subtract and multiply (``_minusscalar``/``_mulscalar``) take raw
  0..255 instead; ``ArcFaceEmbedder`` detects those as InsightFace does.
- OpenCV ``FaceRecognizerSF::feature``: ``blobFromImage(bgr, 1, 112x112, mean 0,
  swapRB=true)``, so SFace too sees RGB, raw 0..255, NCHW.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from airside.errors import AirsideError
from airside.model_registry.manifest import (
    Manifest,
    Normalisation,
    image_input_layout,
    sha256_file,
)
from airside.vision.contract import EmbeddingContract
from airside.vision.face_align import ArcFaceAligner
from airside.vision.onnx_runtime import Device, OnnxModel, open_model

log = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 32
ARCFACE_NORMALISATION = Normalisation(mean=127.5, std=127.5, channels="RGB", layout="NCHW")
RAW_RGB_NCHW = Normalisation(mean=0.0, std=1.0, channels="RGB", layout="NCHW")
SFACE_NORMALISATION = RAW_RGB_NCHW
_FLOAT_INPUTS: dict[str, type[np.floating[Any]]] = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
}


class ModelIncompatible(AirsideError):
    """The file loads but is not a face embedder this code can feed; ``problem`` says why."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(
            f"{path.name} cannot be used as a face embedder: {problem}", code="model_incompatible"
        )
        self.problem = problem


def _static(dim: Any) -> int | None:
    return dim if isinstance(dim, int) and dim > 0 else None


def has_inline_normalisation(path: Path) -> bool:
    """InsightFace's test: MXNet exports subtract and scale inside the graph."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    names = [node.name for node in graph.node[:8]]
    sub = any(n.startswith(("Sub", "_minus")) for n in names)
    mul = any(n.startswith(("Mul", "_mul")) for n in names)
    return sub and mul


class GenericOnnxEmbedder:
    """Any ONNX face embedder whose preprocessing ``normalisation`` fully describes.

    ``input_size`` (width, height) defaults to the model's static input size. A model with
    a fixed batch dimension runs in chunks of that size (padded), a dynamic one in chunks
    of ``max_batch``.
    """

    family = "generic"

    def __init__(
        self,
        path: Path | str,
        *,
        normalisation: Normalisation,
        input_size: tuple[int, int] | None = None,
        model_id: str | None = None,
        version: str = "1",
        alignment: str | None = None,
        weights_sha256: str | None = None,
        max_batch: int = DEFAULT_MAX_BATCH,
        threads: int = 0,
        device: Device = "cpu",
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.path = Path(path)
        self.normalisation = normalisation
        self._model: OnnxModel = open_model(self.path, threads=threads, device=device)
        self.provider = f"onnxruntime:{self._model.provider}"
        self.width, self.height, self._fixed_batch, self._dtype = self._check_input(input_size)
        self._step = self._fixed_batch or max_batch
        self._mean = np.asarray(normalisation.mean, dtype=np.float32)
        self._std = np.asarray(normalisation.std, dtype=np.float32)
        dim = self._probe_dim()
        if alignment is None:
            if self.width != self.height:
                raise ValueError(
                    f"{self.path.name} takes {self.width}x{self.height} chips: "
                    "say which alignment cuts them (alignment=...)"
                )
            alignment = ArcFaceAligner(self.width).preprocessing
        # The chips this embedder's contract was made for: an analyzer checks its aligner
        # cuts these, and takes the contract as it is (it names alignment and pixels).
        self.alignment: str | None = alignment
        self.contract = EmbeddingContract(
            model_id=model_id or f"{self.family}:{self.path.stem}",
            version=version,
            weights_sha256=weights_sha256 or sha256_file(self.path),
            dim=dim,
            preprocessing=f"{alignment}|{normalisation.describe()}",
        )

    def _check_input(
        self, input_size: tuple[int, int] | None
    ) -> tuple[int, int, int | None, type[np.floating[Any]]]:
        inputs = self._model.session.get_inputs()
        if len(inputs) != 1:
            raise ModelIncompatible(
                self.path, f"it has {len(inputs)} inputs, an embedder takes one"
            )
        dtype = _FLOAT_INPUTS.get(inputs[0].type)
        if dtype is None:
            raise ModelIncompatible(self.path, f"its input is {inputs[0].type}, not a float tensor")
        shape = list(self._model.input_shape)
        if len(shape) != 4:
            raise ModelIncompatible(
                self.path,
                f"its input has shape {shape}, not an image batch (N, C, H, W or N, H, W, C)",
            )
        layout = self.normalisation.layout
        implied = image_input_layout(shape)
        channel_dim = shape[1] if layout == "NCHW" else shape[3]
        if (implied is not None and implied != layout) or (
            _static(channel_dim) is not None and channel_dim != 3
        ):
            raise ModelIncompatible(
                self.path,
                f"its input has shape {shape}, which is not a 3-channel {layout} image "
                f"(set the layout to {implied} if that is what it takes)"
                if implied
                else f"its input has shape {shape}, not a 3-channel {layout} image",
            )
        h_dim, w_dim = (shape[2], shape[3]) if layout == "NCHW" else (shape[1], shape[2])
        model_size = (_static(w_dim), _static(h_dim))
        if input_size is None:
            if model_size[0] is None or model_size[1] is None:
                raise ModelIncompatible(
                    self.path, f"its input size is dynamic ({shape}): give input_size"
                )
            input_size = (model_size[0], model_size[1])
        for want, have, what in zip(input_size, model_size, ("width", "height"), strict=True):
            if want <= 0:
                raise ValueError(f"input {what} must be positive, got {want}")
            if have is not None and have != want:
                raise ModelIncompatible(
                    self.path,
                    f"it takes {model_size[0]}x{model_size[1]} images, not the "
                    f"{input_size[0]}x{input_size[1]} chips it would be fed",
                )
        return input_size[0], input_size[1], _static(shape[0]), dtype

    def _probe_dim(self) -> int:
        """Run one blank chip: proves the graph runs and says how long its vectors are."""
        zero = np.zeros((1, self.height, self.width, 3), dtype=np.uint8)
        try:
            out = self._forward(zero, check_shape=True)
        except AirsideError:
            raise
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelIncompatible(
                self.path, f"it fails on a {self.width}x{self.height} chip: {exc}"
            ) from exc
        return int(out.shape[1])

    def _prepare(self, chips: np.ndarray) -> np.ndarray:
        x = chips.astype(np.float32)
        if self.normalisation.channels == "BGR":
            x = x[..., ::-1]
        if self.normalisation.scale != 1.0:
            x *= np.float32(self.normalisation.scale)
        x = (x - self._mean) / self._std
        if self.normalisation.layout == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(x, dtype=self._dtype)

    def _forward(self, chips: np.ndarray, *, check_shape: bool = False) -> np.ndarray:
        parts = []
        for start in range(0, len(chips), self._step):
            part = chips[start : start + self._step]
            batch = self._prepare(part)
            if self._fixed_batch and len(part) < self._fixed_batch:
                pad = np.zeros((self._fixed_batch - len(part), *batch.shape[1:]), batch.dtype)
                batch = np.concatenate([batch, pad])
            raw = np.asarray(self._model.run(batch)[0])
            if check_shape and (
                raw.ndim < 2 or raw.shape[0] != len(batch) or math.prod(raw.shape[2:]) != 1
            ):
                raise ModelIncompatible(
                    self.path,
                    f"its first output has shape {list(raw.shape)} for {len(batch)} image(s), "
                    "not one vector per image",
                )
            parts.append(raw.reshape(len(batch), -1)[: len(part)].astype(np.float32))
        return np.concatenate(parts)

    def embed(self, chips: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 RGB chips -> (N, dim) float32, each of unit length."""
        chips = np.asarray(chips)
        if chips.ndim != 4 or chips.shape[1:] != (self.height, self.width, 3):
            raise ValueError(
                f"expected (N, {self.height}, {self.width}, 3) chips, got {chips.shape}"
            )
        if chips.dtype != np.uint8:
            raise ValueError(f"expected uint8 chips, got {chips.dtype}")
        if len(chips) == 0:
            return np.zeros((0, self.contract.dim), dtype=np.float32)
        vecs = self._forward(chips)
        if vecs.shape[1] != self.contract.dim:
            raise AirsideError(
                f"{self.path.name} gave {vecs.shape[1]}-d vectors, its contract says "
                f"{self.contract.dim}",
                code="model_output_invalid",
            )
        if not np.isfinite(vecs).all():
            raise AirsideError(
                f"{self.path.name} produced non-finite values", code="model_output_invalid"
            )
        norms = np.linalg.norm(vecs, axis=1, keepdims=True)
        out: np.ndarray = (vecs / np.maximum(norms, 1e-12)).astype(np.float32)
        return out


class _FamilyEmbedder(GenericOnnxEmbedder):
    """A family with a known chip size and preprocessing, both overridable."""

    default_normalisation = RAW_RGB_NCHW
    default_size = (112, 112)

    def __init__(
        self,
        path: Path | str,
        *,
        normalisation: Normalisation | None = None,
        input_size: tuple[int, int] | None = None,
        model_id: str | None = None,
        version: str = "1",
        alignment: str | None = None,
        weights_sha256: str | None = None,
        max_batch: int = DEFAULT_MAX_BATCH,
        threads: int = 0,
        device: Device = "cpu",
    ) -> None:
        super().__init__(
            path,
            normalisation=normalisation or self._default_normalisation(Path(path)),
            input_size=input_size or self.default_size,
            model_id=model_id,
            version=version,
            alignment=alignment,
            weights_sha256=weights_sha256,
            max_batch=max_batch,
            threads=threads,
            device=device,
        )

    def _default_normalisation(self, path: Path) -> Normalisation:
        return self.default_normalisation


class ArcFaceEmbedder(_FamilyEmbedder):
    """InsightFace-style nets (w600k/glint360k ResNets, MobileFaceNet, EdgeFace): 112x112."""

    family = "arcface"
    default_normalisation = ARCFACE_NORMALISATION

    def _default_normalisation(self, path: Path) -> Normalisation:
        return arcface_normalisation(path)


class SFaceEmbedder(_FamilyEmbedder):
    """OpenCV Zoo's SFace (face_recognition_sface_2021dec.onnx): 112x112, 128-d."""

    family = "sface"
    default_normalisation = SFACE_NORMALISATION


def arcface_normalisation(path: Path) -> Normalisation:
    """(x - 127.5) / 127.5, or raw pixels for graphs that normalise themselves."""
    if path.is_file() and has_inline_normalisation(path):
        log.info("%s normalises inside its graph: feeding raw 0..255", path.name)
        return RAW_RGB_NCHW
    return ARCFACE_NORMALISATION


def default_normalisation(family: str, path: Path) -> Normalisation | None:
    """The preprocessing a family's models take unless told otherwise (None: no default)."""
    if family == "arcface":
        return arcface_normalisation(path)
    if family == "sface":
        return SFACE_NORMALISATION
    return None


def embedder_from_manifest(
    manifest: Manifest,
    path: Path,
    *,
    alignment: str | None = None,
    max_batch: int = DEFAULT_MAX_BATCH,
    threads: int = 0,
    device: Device = "cpu",
) -> GenericOnnxEmbedder:
    """The embedder a registered model describes. ``path`` should come from ``load_model``,
    which has just checked the file against ``manifest.sha256``."""
    if manifest.kind != "face-embedder":
        raise AirsideError(
            f"model {manifest.name!r} is a {manifest.kind}, not a face embedder",
            code="model_incompatible",
        )
    common: dict[str, Any] = {
        "model_id": manifest.model_id,
        "version": manifest.version,
        "alignment": alignment,
        "weights_sha256": manifest.sha256,
        "max_batch": max_batch,
        "threads": threads,
        "device": device,
        "input_size": manifest.input_size,
    }
    if manifest.family == "arcface":
        return ArcFaceEmbedder(path, normalisation=manifest.normalisation, **common)
    if manifest.family == "sface":
        return SFaceEmbedder(path, normalisation=manifest.normalisation, **common)
    if manifest.normalisation is None:
        raise AirsideError(
            f"model {manifest.name!r} (family {manifest.family}) has no normalisation in its "
            "manifest, and only arcface and sface have defaults",
            code="model_incompatible",
        )
    return GenericOnnxEmbedder(path, normalisation=manifest.normalisation, **common)
