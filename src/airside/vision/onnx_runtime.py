"""Opening ONNX models: thread settings, execution providers, and an honest report of
which provider actually runs the model (ONNX Runtime silently falls back to the CPU)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from airside.errors import AirsideError

log = logging.getLogger(__name__)

Device = Literal["cpu", "cuda", "auto"]

_PROVIDERS: dict[str, list[str]] = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
}


class ProviderUnavailable(AirsideError):
    """A GPU was asked for and cannot be used: refuse rather than run 20x slower unnoticed."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="provider_unavailable")


@dataclass
class OnnxModel:
    """An inference session with the facts a caller needs about it."""

    session: Any  # onnxruntime.InferenceSession
    path: Path
    provider: str  # the provider that runs the model, e.g. "CPUExecutionProvider"
    input_name: str
    input_shape: list[int | str | None]
    output_names: list[str]

    def run(self, batch: Any) -> list[Any]:
        return list(self.session.run(self.output_names, {self.input_name: batch}))


def available_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def open_model(path: Path | str, *, threads: int = 0, device: Device = "cpu") -> OnnxModel:
    """Open ``path`` on ``device``. ``threads`` 0 lets ONNX Runtime choose.

    ``cuda`` refuses (ProviderUnavailable) when CUDA is not usable here, ``auto`` takes
    CUDA when it is and says so in ``provider``.
    """
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise AirsideError(f"model file {path} does not exist", code="model_missing")
    have = available_providers()
    if device == "auto":
        wanted = _PROVIDERS["cuda"] if "CUDAExecutionProvider" in have else _PROVIDERS["cpu"]
    else:
        wanted = _PROVIDERS[device]
        if device == "cuda" and "CUDAExecutionProvider" not in have:
            raise ProviderUnavailable(
                "a GPU was requested but this ONNX Runtime has no CUDA provider "
                f"(available: {', '.join(have)}); install onnxruntime-gpu or use device=cpu"
            )
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads > 0:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(str(path), sess_options=opts, providers=wanted)
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise AirsideError(
            f"{path.name} is not a model ONNX Runtime can load: {exc}", code="model_invalid"
        ) from exc
    running = session.get_providers()
    provider = running[0] if running else "unknown"
    if device == "cuda" and provider != "CUDAExecutionProvider":
        # The CUDA provider exists but could not start (driver, libraries, no device).
        raise ProviderUnavailable(
            f"a GPU was requested for {path.name} but ONNX Runtime runs it on {provider}; "
            "check the CUDA driver and libraries, or use device=cpu"
        )
    inp = session.get_inputs()[0]
    log.info("%s runs on %s", path.name, provider)
    return OnnxModel(
        session=session,
        path=path,
        provider=provider,
        input_name=inp.name,
        input_shape=list(inp.shape),
        output_names=[o.name for o in session.get_outputs()],
    )
