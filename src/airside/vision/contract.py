"""The embedding contract: what produced a template, so incomparable ones are never compared."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np

from airside.errors import ContractMismatchError


@dataclass(frozen=True)
class EmbeddingContract:
    model_id: str
    version: str
    weights_sha256: str
    dim: int
    preprocessing: str

    @property
    def fingerprint(self) -> str:
        return (
            f"{self.model_id}@{self.version}/{self.weights_sha256[:16]}"
            f"/{self.dim}d/{self.preprocessing}"
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> EmbeddingContract:
        return cls(**json.loads(text))


def require_same(a: EmbeddingContract | str, b: EmbeddingContract | str) -> None:
    fa = a.fingerprint if isinstance(a, EmbeddingContract) else a
    fb = b.fingerprint if isinstance(b, EmbeddingContract) else b
    if fa != fb:
        raise ContractMismatchError(
            f"templates come from different embedding contracts ({fa} vs {fb}); "
            "re-enrol from source images with one model instead of comparing them"
        )


@dataclass(frozen=True)
class Template:
    """An L2-normalised embedding plus the contract that produced it."""

    vector: np.ndarray
    contract: EmbeddingContract

    @classmethod
    def from_embedding(cls, embedding: np.ndarray, contract: EmbeddingContract) -> Template:
        v = np.asarray(embedding, dtype=np.float32).reshape(-1)
        if v.shape[0] != contract.dim:
            raise ValueError(f"embedding has {v.shape[0]} values, contract says {contract.dim}")
        n = float(np.linalg.norm(v))
        if not np.isfinite(n) or n == 0.0:
            raise ValueError("embedding is zero or not finite")
        return cls(vector=v / n, contract=contract)

    def to_bytes(self) -> bytes:
        return self.vector.astype("<f4").tobytes()


def similarity(a: Template, b: Template) -> float:
    """Cosine similarity in [-1, 1]; higher means more alike. Refuses mixed contracts."""
    require_same(a.contract, b.contract)
    return float(np.dot(a.vector, b.vector))
