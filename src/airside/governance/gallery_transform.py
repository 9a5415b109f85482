"""A gallery's secret orthogonal transform: ``v -> Q v`` keeps scores and unlinks galleries.

Each gallery can hold a random 32-byte seed; the seed determines an orthogonal matrix
``Q``; the gallery stores ``Q v`` instead of ``v`` and probes are multiplied by ``Q``
before the search. ``(Q p)·(Q v) = p·v``: scores are unchanged, while the same face
enrolled in two galleries is stored as two unrelated vectors (cosine ~0), and a gallery can
be re-keyed (a new ``Q``) without the source images. (docs/template_protection.md)
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# the per-gallery orthogonal transform


def orthogonal_matrix(seed: bytes, dim: int) -> np.ndarray:
    """The ``dim`` x ``dim`` orthogonal matrix of ``seed`` (float64), Haar-distributed.

    A Gaussian matrix is drawn from SHAKE-256 of the seed (Box-Muller on 53-bit uniforms:
    fixed by the standard, not by NumPy's random streams, which may change between
    versions), then ``Q`` comes from its QR decomposition with the signs fixed so that
    ``R`` has a positive diagonal, which makes ``Q`` unique."""
    n = dim * dim
    pairs = (n + 1) // 2
    stream = hashlib.shake_256(b"airside/orthogonal/v1\x00" + dim.to_bytes(4, "big") + seed).digest(
        pairs * 16
    )
    words = np.frombuffer(stream, dtype=">u8").astype(np.uint64)
    u = ((words >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53  # in (0, 1)
    u1, u2 = u[0::2], u[1::2]
    r = np.sqrt(-2.0 * np.log(u1))
    gauss = np.concatenate([r * np.cos(2 * np.pi * u2), r * np.sin(2 * np.pi * u2)])[:n]
    q, rr = np.linalg.qr(gauss.reshape(dim, dim))
    signs = np.sign(np.diag(rr))
    signs[signs == 0] = 1.0
    return np.ascontiguousarray(q * signs)


@dataclass(frozen=True, eq=False)
class GalleryTransform:
    """``v -> Q v`` for one gallery (``q`` None: the identity, for unprotected galleries).
    ``tag`` names the transform (a digest of the seed) so that callers can tell whether an
    in-memory index was built with the gallery's current one."""

    q: np.ndarray | None = None
    tag: str | None = None

    @classmethod
    def from_seed(cls, seed: bytes, dim: int) -> GalleryTransform:
        tag = hashlib.sha256(b"airside/transform-tag/v1\x00" + seed).hexdigest()[:32]
        return cls(orthogonal_matrix(seed, dim), tag)

    @property
    def is_identity(self) -> bool:
        return self.q is None

    def forward(self, vectors: np.ndarray) -> np.ndarray:
        """Rows ``v`` to rows ``Q v`` (float32); computed in float64."""
        v = np.asarray(vectors)
        if self.q is None:
            return np.ascontiguousarray(v, dtype=np.float32)
        return np.ascontiguousarray(v.astype(np.float64) @ self.q.T, dtype=np.float32)

    def inverse(self, vectors: np.ndarray) -> np.ndarray:
        """Rows ``Q v`` back to rows ``v`` (float64, for re-keying)."""
        v = np.asarray(vectors, dtype=np.float64)
        return v if self.q is None else v @ self.q


IDENTITY = GalleryTransform()
