"""ArcFace-style 5-point alignment: the crop InsightFace, SFace and their kin were trained on.

Recognition nets of the ArcFace lineage only work on faces warped so that the eyes, nose
tip and mouth corners land on one fixed 112x112 template; a crop that is off by a few
pixels costs accuracy. The warp is the least-squares similarity (rotation, uniform scale,
shift; no reflection) from the 5 landmarks to the template, as InsightFace's
``norm_crop`` and OpenCV's ``FaceRecognizerSF.alignCrop`` compute it.

Landmark order (ArcFace, as YuNet, SCRFD and RetinaFace report them): 0 the eye on the
image's left, 1 the eye on the image's right, 2 the nose tip, 3 the mouth corner on the
image's left, 4 the mouth corner on the image's right.

Landmarks come from the detector. dlib's HOG/CNN detectors give none, and dlib's 5-point
predictor finds eye corners and the base of the nose but no mouth corners, so it cannot
fill the 5-point template. By default the aligner therefore refuses such a detection
(code ``no_landmarks``). ``DlibEyeLandmarks`` is an explicit opt-in: it aligns on the two
eye centres alone (the midpoints of dlib's eye corners), which fixes rotation, scale and
position exactly but ignores the mouth, so chips of turned or tilted heads drift from
what the net was trained on. The fallback is named in ``preprocessing`` so templates made
with it never pass for detector-aligned ones.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
from PIL import Image

from airside.errors import AirsideError
from airside.vision.protocols import Detection

# InsightFace's ``arcface_dst`` (= OpenCV FaceRecognizerSF's template) for a 112x112 chip.
ARCFACE_TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)
ALIGNMENT_VERSION = "v1"


def arcface_template(size: int = 112) -> np.ndarray:
    """The template for a ``size`` x ``size`` chip, scaled as InsightFace's ``estimate_norm``.

    Multiples of 112 scale the 112 template; multiples of 128 scale it as a 128 chip with
    the 112 face centred (8 px margin each side); other sizes scale by size/112.
    """
    if size <= 0:
        raise ValueError(f"chip size must be positive, got {size}")
    if size % 112 == 0 or size % 128 != 0:
        return ARCFACE_TEMPLATE_112 * (size / 112.0)
    ratio = size / 128.0
    out = ARCFACE_TEMPLATE_112 * ratio
    out[:, 0] += 8.0 * ratio
    return out


def estimate_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 matrix of the least-squares similarity taking ``src`` points onto ``dst``.

    Written in complex numbers (a point is x + iy, a similarity is z -> a z + t): the
    least-squares ``a`` has a closed form, equal to Umeyama's solution restricted to proper
    rotations, and it needs no special case for two points (eyes-only alignment).
    """
    s = np.asarray(src, dtype=np.float64)
    d = np.asarray(dst, dtype=np.float64)
    if s.shape != d.shape or s.ndim != 2 or s.shape[1] != 2 or s.shape[0] < 2:
        raise ValueError(f"need two matching (n>=2, 2) point sets, got {s.shape} and {d.shape}")
    if not (np.isfinite(s).all() and np.isfinite(d).all()):
        raise ValueError("landmarks must be finite")
    zs = s[:, 0] + 1j * s[:, 1]
    zd = d[:, 0] + 1j * d[:, 1]
    cs, cd = zs - zs.mean(), zd - zd.mean()
    spread = float(np.sum(np.abs(cs) ** 2))
    if spread < 1e-12:
        raise ValueError("landmarks coincide: no transform can be estimated")
    a = complex(np.sum(np.conj(cs) * cd) / spread)
    t = complex(zd.mean() - a * zs.mean())
    return np.array([[a.real, -a.imag, t.real], [a.imag, a.real, t.imag]], dtype=np.float64)


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64)
    out: np.ndarray = pts @ matrix[:, :2].T + matrix[:, 2]
    return out


def warp_affine(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """``cv2.warpAffine(image, matrix, (size, size))`` with bilinear sampling and black fill.

    Coordinates follow OpenCV (a pixel's centre sits at its integer index). Only the part
    of the image the chip can see is handed to PIL, so a 12-megapixel photo is not copied
    whole for every face.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}")
    full = np.vstack([matrix, [0.0, 0.0, 1.0]])
    inv = np.linalg.inv(full)[:2]  # chip pixel -> image pixel
    corners = apply_affine(inv, np.array([[0, 0], [size - 1, 0], [0, size - 1], [size - 1] * 2]))
    h, w = image.shape[:2]
    x0 = max(0, int(np.floor(corners[:, 0].min())) - 2)
    y0 = max(0, int(np.floor(corners[:, 1].min())) - 2)
    x1 = min(w, int(np.ceil(corners[:, 0].max())) + 3)
    y1 = min(h, int(np.ceil(corners[:, 1].max())) + 3)
    if x1 <= x0 or y1 <= y0:
        return np.zeros((size, size, 3), dtype=np.uint8)
    crop = Image.fromarray(np.ascontiguousarray(image[y0:y1, x0:x1]))
    # PIL samples output pixel p at A(p + 0.5) and reads input pixel centres at +0.5:
    # A(q) = inv(q - 0.5) + 0.5 - crop offset maps OpenCV's convention onto PIL's.
    lin, off = inv[:, :2], inv[:, 2]
    shift = off - 0.5 * lin.sum(axis=1) + 0.5 - np.array([x0, y0], dtype=np.float64)
    coeffs = (lin[0, 0], lin[0, 1], shift[0], lin[1, 0], lin[1, 1], shift[1])
    chip = crop.transform(
        (size, size),
        Image.Transform.AFFINE,
        tuple(float(c) for c in coeffs),
        resample=Image.Resampling.BILINEAR,
        fillcolor=(0, 0, 0),
    )
    return np.asarray(chip, dtype=np.uint8)


class FallbackLandmarks(Protocol):
    """Landmarks for detections that come without them, in ArcFace order (NaN = unknown)."""

    name: str

    def landmarks(self, image: np.ndarray, detection: Detection) -> np.ndarray: ...


def arcface_points_from_dlib(points: np.ndarray) -> np.ndarray:
    """dlib's 5 points (eye corners, nose base) as ArcFace-order landmarks.

    Eye centres are the midpoints of each eye's two corners. Index 2 carries dlib's nose
    *base*, not the tip the template expects, so alignment does not use it (it still
    serves a yaw estimate); the mouth corners are unknown (NaN).
    """
    p = np.asarray(points, dtype=np.float64)
    if p.shape != (5, 2):
        raise ValueError(f"dlib's 5-point shape is (5, 2), got {p.shape}")
    eye_a = p[0:2].mean(axis=0)  # the eye on the image's right
    eye_b = p[2:4].mean(axis=0)  # the eye on the image's left
    left, right = (eye_a, eye_b) if eye_a[0] < eye_b[0] else (eye_b, eye_a)
    nan = [np.nan, np.nan]
    return np.array([left, right, p[4], nan, nan], dtype=np.float32)


class DlibEyeLandmarks:
    """Opt-in fallback: eye centres from dlib's 5-point predictor (see the module notes)."""

    name = "dlib5pt-eyes"

    def __init__(self) -> None:
        from airside.vision.dlib_models import DlibFivePointAligner

        self._dlib = DlibFivePointAligner(mirror=False)

    def landmarks(self, image: np.ndarray, detection: Detection) -> np.ndarray:
        return arcface_points_from_dlib(self._dlib.landmarks(image, detection))


class ArcFaceAligner:
    """A ``LandmarkAligner`` that cuts ArcFace-template chips (112x112 unless told).

    ``views``: the canonical chip, then its mirror image when ``mirror`` (test-time
    augmentation; the template is nearly symmetric, so the flipped chip is itself
    aligned).
    """

    def __init__(
        self,
        size: int = 112,
        *,
        mirror: bool = False,
        fallback: FallbackLandmarks | None = None,
    ) -> None:
        self.size = size
        self.mirror = mirror
        self.fallback = fallback
        self.template = arcface_template(size)
        parts = [f"arcface5pt-{size}-{ALIGNMENT_VERSION}"]
        if fallback is not None:
            parts.append(f"fallback-{fallback.name}")
        if mirror:
            parts.append("mirror")
        self.preprocessing = "+".join(parts)

    def landmarks(self, image: np.ndarray, detection: Detection) -> np.ndarray:
        """The detector's 5 points (InsightFace order, what the template expects) when it
        gives them, else the fallback's, else a refusal (``no_landmarks``)."""
        if detection.landmarks is not None:
            return np.asarray(detection.landmarks, dtype=np.float32)
        if self.fallback is None:
            raise AirsideError(
                f"detector {detection.detector!r} gives no facial landmarks, and ArcFace "
                "alignment needs 5 (eyes, nose tip, mouth corners): use a detector that "
                "reports them (YuNet, SCRFD, RetinaFace) or opt in to the dlib eye fallback",
                code="no_landmarks",
            )
        return self.fallback.landmarks(image, detection)

    def pose_points(self, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(eye on the image's right, eye on the image's left, nose) in ArcFace order. With
        the dlib eye fallback the nose is dlib's nose base, which serves a yaw estimate."""
        lm = np.asarray(landmarks, dtype=np.float32)
        return lm[1], lm[0], lm[2]

    def transform(self, landmarks: np.ndarray) -> np.ndarray:
        """Image -> chip: all 5 points when known, else the two eye centres alone."""
        lm = np.asarray(landmarks, dtype=np.float64)
        if lm.shape != (5, 2):
            raise ValueError(f"ArcFace alignment takes (5, 2) landmarks, got {lm.shape}")
        if np.isfinite(lm).all():
            return estimate_similarity(lm, self.template)
        if self.fallback is not None and np.isfinite(lm[:2]).all():
            return estimate_similarity(lm[:2], self.template[:2])
        raise AirsideError(
            "landmarks are incomplete: ArcFace alignment needs both eyes at least",
            code="no_landmarks",
        )

    def views(self, image: np.ndarray, detection: Detection, landmarks: np.ndarray) -> np.ndarray:
        chip = warp_affine(image, self.transform(landmarks), self.size)
        chips = [chip, chip[:, ::-1]] if self.mirror else [chip]
        return np.ascontiguousarray(np.stack(chips))
