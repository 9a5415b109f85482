"""dlib's face-recognition ResNet as an embedder: dlib's own forward pass (the reference),
or the same weights converted once to ONNX (``vision.dlib_onnx``) and run by ONNX Runtime.

Both carry the same embedding contract: same weights, same alignment, same descriptors.
"""

from __future__ import annotations

import threading
from pathlib import Path

import dlib
import numpy as np

from airside.vision.contract import EmbeddingContract
from airside.vision.dlib_models import RESNET_FILE, file_sha256, models_dir


def resnet_contract() -> EmbeddingContract:
    return EmbeddingContract(
        model_id="dlib-resnet",
        version="1",
        weights_sha256=file_sha256(models_dir() / RESNET_FILE),
        dim=128,
        preprocessing="dlib5pt-chip150-pad0.25-v1",  # the aligner's views refine this
    )


class DlibResNetEmbedder:
    """dlib's own forward pass: the reference implementation (single-threaded, holds the GIL)."""

    provider = "dlib"
    alignment: str | None = None  # the analyzer's aligner supplies it

    def __init__(self) -> None:
        self.contract = resnet_contract()
        self._net = dlib.face_recognition_model_v1(str(models_dir() / RESNET_FILE))
        self._lock = threading.Lock()

    def embed(self, chips: np.ndarray) -> np.ndarray:
        if len(chips) == 0:
            return np.zeros((0, self.contract.dim), dtype=np.float32)
        with self._lock:
            vecs = self._net.compute_face_descriptor([np.ascontiguousarray(c) for c in chips])
        return np.asarray([np.asarray(v) for v in vecs], dtype=np.float32)


class OnnxDlibResNet:
    """dlib's ResNet weights, converted once to ONNX and run by ONNX Runtime.

    The embedding contract is dlib's: same weights, same alignment, same descriptors.
    """

    provider = "onnxruntime:CPUExecutionProvider"
    alignment: str | None = None  # the analyzer's aligner supplies it

    def __init__(self, onnx_path: Path, threads: int = 0) -> None:
        from airside.vision.dlib_onnx import OnnxResNetEmbedder

        self.contract: EmbeddingContract = resnet_contract()
        self._runner = OnnxResNetEmbedder(onnx_path, threads)

    def embed(self, chips: np.ndarray) -> np.ndarray:
        return self._runner.embed(chips)
