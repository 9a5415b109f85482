"""Face image quality: a 0-100 score with the reasons that lowered it.

Each factor maps a measurement to [0, 1]; the score is their weighted geometric mean, so
one bad factor (a tiny or blurred face) pulls the whole score down instead of being
averaged away. Measurements are made on the aligned chip so they do not depend on the
photo's resolution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from airside.vision.protocols import Detection

WEIGHTS = {"size": 1.0, "sharpness": 1.0, "exposure": 0.8, "pose": 1.0, "confidence": 0.6}


def _ramp(x: float, lo: float, hi: float) -> float:
    """0 at ``lo``, 1 at ``hi``, linear between (works for descending ramps too)."""
    if hi == lo:
        return 1.0 if x >= hi else 0.0
    return float(min(1.0, max(0.0, (x - lo) / (hi - lo))))


@dataclass(frozen=True)
class QualityReport:
    score: float
    factors: dict[str, float]
    measurements: dict[str, float]
    reasons: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "score": round(self.score, 1),
            "factors": {k: round(v, 3) for k, v in self.factors.items()},
            "measurements": {k: round(v, 3) for k, v in self.measurements.items()},
            "reasons": self.reasons,
        }


def laplacian_variance(grey: np.ndarray) -> float:
    g = grey.astype(np.float32)
    lap = -4 * g[1:-1, 1:-1] + g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:]
    return float(lap.var())


def _grey(rgb: np.ndarray) -> np.ndarray:
    out: np.ndarray = rgb[..., :3].astype(np.float32) @ np.array(
        [0.299, 0.587, 0.114], dtype=np.float32
    )
    return out


PosePoints = tuple[np.ndarray, np.ndarray, np.ndarray]


def dlib_pose_points(landmarks: np.ndarray) -> PosePoints:
    """(eye on the image's right, eye on the image's left, nose base) from dlib's 5 points:
    two corners per eye, then the base of the nose."""
    return landmarks[0:2].mean(axis=0), landmarks[2:4].mean(axis=0), landmarks[4]


def pose_from_points(points: PosePoints) -> tuple[float, float, float]:
    """(yaw ratio, roll degrees, interocular px) from the two eyes and the nose.

    ``points`` is (eye on the image's right, eye on the image's left, nose), as
    ``LandmarkAligner.pose_points`` reads them from its own landmark layout. Yaw ratio is
    the nose's sideways offset from the eye midpoint over the eye distance: about 0 when
    frontal, ~0.3 at 30-40 degrees of head turn.
    """
    eye_a, eye_b, nose = points
    axis = eye_a - eye_b
    iod = float(np.hypot(*axis))
    if iod < 1e-6:
        return 1.0, 90.0, 0.0
    roll = math.degrees(math.atan2(float(axis[1]), float(axis[0])))
    mid = (eye_a + eye_b) / 2
    unit = axis / iod
    yaw = float(np.dot(nose - mid, unit)) / iod
    return yaw, roll, iod


def pose_from_landmarks(landmarks: np.ndarray) -> tuple[float, float, float]:
    """(yaw ratio, roll degrees, interocular px) from dlib's 5 points."""
    return pose_from_points(dlib_pose_points(landmarks))


def assess(
    detection: Detection,
    pose_points: PosePoints,
    chip: np.ndarray,
    *,
    confident_score: float,
    score_threshold: float,
) -> QualityReport:
    """``pose_points``: (eye on the image's right, eye on the image's left, nose), from the
    aligner that found the landmarks (``LandmarkAligner.pose_points``)."""
    width = detection.width
    yaw, roll, iod = pose_from_points(pose_points)
    # The chip has 25% padding around the face; measure the central face area.
    h, w = chip.shape[:2]
    core = chip[int(h * 0.2) : int(h * 0.85), int(w * 0.2) : int(w * 0.8)]
    grey = _grey(core)
    sharp = laplacian_variance(grey)
    # The chip is resampled to 150 px, so a small face is upscaled and looks soft: judge
    # sharpness relative to what its source resolution allows.
    brightness = float(grey.mean())
    clipped = float(((grey < 8) | (grey > 247)).mean())

    factors = {
        "size": _ramp(width, 30.0, 90.0),
        "sharpness": _ramp(math.log10(max(sharp, 1e-3)), math.log10(8.0), math.log10(60.0)),
        "exposure": min(_ramp(brightness, 25.0, 70.0), _ramp(brightness, 235.0, 190.0))
        * _ramp(clipped, 0.35, 0.05),
        "pose": _ramp(abs(yaw), 0.45, 0.15) * _ramp(abs(roll), 40.0, 20.0),
        "confidence": _ramp(detection.score, score_threshold - 0.3, confident_score),
    }
    total_w = sum(WEIGHTS.values())
    log_sum = sum(WEIGHTS[k] * math.log(max(v, 0.01)) for k, v in factors.items())
    score = 100.0 * math.exp(log_sum / total_w)
    if min(factors.values()) <= 0.01:
        score = min(score, 10.0)

    reasons: list[str] = []
    if factors["size"] < 0.6:
        reasons.append(f"face too small: {width:.0f} px wide (want at least 90 px)")
    if factors["sharpness"] < 0.6:
        reasons.append(f"image blurred (sharpness {sharp:.1f}, want at least 60)")
    if factors["exposure"] < 0.6:
        if brightness < 70:
            reasons.append(f"face under-exposed (mean brightness {brightness:.0f}/255)")
        elif brightness > 190:
            reasons.append(f"face over-exposed (mean brightness {brightness:.0f}/255)")
        else:
            reasons.append(f"{clipped:.0%} of the face is clipped to black or white")
    if factors["pose"] < 0.6:
        reasons.append(f"head not frontal (turn ratio {yaw:+.2f}, tilt {roll:+.0f} degrees)")
    if factors["confidence"] < 0.6:
        reasons.append(f"detector unsure this is a face (score {detection.score:.2f})")

    return QualityReport(
        score=score,
        factors=factors,
        measurements={
            "face_width_px": width,
            "interocular_px": iod,
            "sharpness": sharp,
            "brightness": brightness,
            "clipped_fraction": clipped,
            "yaw_ratio": yaw,
            "roll_deg": roll,
            "detector_score": detection.score,
        },
        reasons=reasons,
    )
