"""Boxes from one detector, poses from MoveNet on the people it found.

A box detector (NanoDet) finds people down to ~60 px in a crowd, where MoveNet finds few;
MoveNet gives the 17 keypoints the fall rule reads, which a box detector has not. Running
MoveNet on every person of a crowd would cost ~20 ms each, and the pose is only needed
where a person may be down: so it runs on a padded crop of each person whose box is not
plainly upright (width/height at least ``min_aspect``), widest first, at most
``max_poses`` per frame. Upright people keep ``keypoints=None`` (the fall rule then reads
their box, which says "upright" just as well).
"""

from __future__ import annotations

import numpy as np

from airside.vision.detectors.geometry import box_iou
from airside.vision.people import PersonDetection, PersonDetector, check_image
from airside.vision.people.movenet import MoveNetDetector

PAD = 0.25  # of the box's longer side, around the crop


class PosedPeople:
    """``PersonDetector``: ``boxes``' people, with MoveNet poses where they may be down."""

    def __init__(
        self,
        boxes: PersonDetector,
        poses: MoveNetDetector,
        *,
        min_aspect: float = 0.6,
        max_poses: int = 4,
    ) -> None:
        self.boxes = boxes
        self.poses = poses
        self.min_aspect = min_aspect
        self.max_poses = max_poses
        self.name = f"{boxes.name}+{poses.name}"

    def detect(self, image: np.ndarray) -> list[PersonDetection]:
        return self.add_poses(check_image(image), self.boxes.detect(image))

    def detect_region(
        self, image: np.ndarray, region: tuple[int, int, int, int]
    ) -> list[PersonDetection]:
        """``boxes``' people in ``region`` (its own ``detect_region`` when it has one, else
        the whole frame's people that overlap the region), with poses added."""
        image = check_image(image)
        look = getattr(self.boxes, "detect_region", None)
        if look is not None:
            found: list[PersonDetection] = look(image, region)
        else:
            x0, y0, x1, y1 = region
            found = [
                p
                for p in self.boxes.detect(image)
                if p.box[0] < x1 and p.box[2] > x0 and p.box[1] < y1 and p.box[3] > y0
            ]
        return self.add_poses(image, found)

    def add_poses(self, image: np.ndarray, people: list[PersonDetection]) -> list[PersonDetection]:
        """``people`` with keypoints added to those that may be down (see module doc)."""

        def aspect(p: PersonDetection) -> float:
            return (p.box[2] - p.box[0]) / max(1e-9, p.box[3] - p.box[1])

        wanted = sorted(
            (i for i, p in enumerate(people) if aspect(p) >= self.min_aspect),
            key=lambda i: -aspect(people[i]),
        )[: self.max_poses]
        out = list(people)
        h, w = image.shape[:2]
        for i in wanted:
            x0, y0, x1, y1 = people[i].box
            pad = PAD * max(x1 - x0, y1 - y0)
            cx0, cy0 = max(0, int(x0 - pad)), max(0, int(y0 - pad))
            cx1, cy1 = min(w, int(x1 + pad) + 1), min(h, int(y1 + pad) + 1)
            if cx1 - cx0 < 8 or cy1 - cy0 < 8:
                continue
            found = self.poses.detect(np.ascontiguousarray(image[cy0:cy1, cx0:cx1]))
            if not found:
                continue
            shifted = np.array(
                [[d.box[0] + cx0, d.box[1] + cy0, d.box[2] + cx0, d.box[3] + cy0] for d in found]
            )
            overlap = box_iou(np.asarray(people[i].box, dtype=np.float64), shifted)
            best = int(np.argmax(overlap))
            kps = found[best].keypoints
            if overlap[best] < 0.3 or kps is None:
                continue  # MoveNet saw someone else in the crop
            kps = kps + np.array([cx0, cy0, 0], dtype=np.float32)
            p = people[i]
            out[i] = PersonDetection(p.box, p.score, kps, p.detector)
        return out
