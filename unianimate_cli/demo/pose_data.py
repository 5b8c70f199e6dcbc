"""Training and evaluation samples for the demo pose models, and their held-out evaluation.

A sample is one synthetic figure (``synth.py``) in one pose, placed at a random scale and position
on a canvas of random size over a random background, then optionally degraded (blur, down- and
up-sampling, colour shifts, noise, JPEG) the way low-resolution or diffusion-rendered frames are.
Ground truth is COCO-WholeBody ordered (133 points), the order the DWPose models output.

Seeds: figures with seed < ``TRAIN_SEED_BASE`` (1,000,000) are never used in training, so every
small seed (the demo's examples, the tests) is held out. Numpy and OpenCV only: no torch here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from unianimate_cli.demo import motion as mo
from unianimate_cli.demo.synth import FigureStyle, make_background, make_example_poses, render_figure_with_box
from unianimate_cli.pose.keypoints import (
    COCO_FACE,
    COCO_FEET,
    COCO_LEFT_HAND,
    COCO_RIGHT_HAND,
    OPENPOSE_FROM_COCO,
    PoseFrame,
)

TRAIN_SEED_BASE = 1_000_000
# the shipped models (package data), written by ``python -m unianimate_cli.demo.train_pose``
FAMILY_DIR = Path(__file__).resolve().parent / "family"
DETECTOR_FILE = "demo_detector.onnx"
POSE_FILE = "demo_pose.onnx"
NUM_COCO = 133
COCO_BODY = slice(0, 17)
# OpenPose joints 0, 2..17 (the neck is derived from the shoulders, so it is not a model output)
OPENPOSE_BODY_JOINTS = tuple(j for j in range(18) if OPENPOSE_FROM_COCO[j] >= 0)
_SOURCE_HW = (384, 256)  # the frame the motion is laid out in before it is moved onto the canvas


@dataclass(frozen=True)
class PoseSample:
    """One image with its person: ``image_bgr`` uint8 (h, w, 3), as OpenCV and DWPose take it.

    ``box_xyxy`` is the rendered figure's box in pixels (None: nobody in the image);
    ``keypoints`` (133, 2) float64 pixels and ``visible`` (133,) bool, COCO-WholeBody order.
    ``frame`` is the ground truth as a PoseFrame (OpenPose order, normalised), None without a person.
    """

    image_bgr: np.ndarray
    box_xyxy: tuple[float, float, float, float] | None
    keypoints: np.ndarray
    visible: np.ndarray
    frame: PoseFrame | None


def coco_wholebody(frame: PoseFrame) -> tuple[np.ndarray, np.ndarray]:
    """A PoseFrame -> COCO-WholeBody (133, 2) pixels and (133,) visibility: what the pose model outputs."""
    scale = np.array([float(frame.width_px), float(frame.height_px)])
    pts = np.zeros((NUM_COCO, 2))
    vis = np.zeros(NUM_COCO, dtype=bool)
    for j, c in enumerate(OPENPOSE_FROM_COCO):
        if c >= 0:
            pts[c], vis[c] = frame.body[j] * scale, frame.body_visible[j]
    for sl, p, v in (
        (COCO_FEET, frame.feet, frame.feet_visible),
        (COCO_FACE, frame.face, frame.face_visible),
        (COCO_LEFT_HAND, frame.hands[0], frame.hand_visible[0]),
        (COCO_RIGHT_HAND, frame.hands[1], frame.hand_visible[1]),
    ):
        pts[sl], vis[sl] = p * scale, v
    return pts, vis


def _points136(frame: PoseFrame) -> tuple[np.ndarray, np.ndarray]:
    """The frame's points in motion.py's 136 layout, in pixels, with visibility."""
    pts = np.concatenate([frame.body, frame.feet, frame.hands.reshape(-1, 2), frame.face])
    vis = np.concatenate([frame.body_visible, frame.feet_visible, frame.hand_visible.reshape(-1), frame.face_visible])
    return pts * np.array([float(frame.width_px), float(frame.height_px)]), vis


def _extent(pts: np.ndarray, vis: np.ndarray, frame: PoseFrame) -> tuple[float, float, float, float]:
    """A rough figure box from the visible points (the head's top and the limbs' flesh added)."""
    p = pts[vis]
    x0, y0 = p.min(axis=0)
    x1, y1 = p.max(axis=0)
    h = y1 - y0
    return float(x0 - 0.06 * h), float(y0 - 0.1 * h), float(x1 + 0.06 * h), float(y1 + 0.03 * h)


def placed_pose(seed: int, rng: np.random.Generator, height_px: int, width_px: int) -> tuple[FigureStyle, PoseFrame]:
    """Figure ``seed`` in a random frame of its dance (or its photo stance), moved and scaled onto the canvas.

    The figure's height is 25-95% of the canvas height (less if the canvas is narrow); about one
    sample in ten is pushed partly (up to ~15%) out of the canvas.
    """
    style, photo, clip = make_example_poses(seed, 48, *_SOURCE_HW)
    src = photo if rng.random() < 0.15 else clip.frames[int(rng.integers(0, len(clip.frames)))]
    pts, vis = _points136(src)
    x0, y0, x1, y1 = _extent(pts, vis, src)
    w0, h0 = x1 - x0, y1 - y0
    frac = rng.uniform(0.25, 0.95)
    s = min(frac * height_px / h0, 0.95 * width_px / w0)
    bw, bh = w0 * s, h0 * s
    out = 0.15 if rng.random() < 0.1 else 0.0
    left = rng.uniform(-out * bw, max(width_px - bw * (1 - out), -out * bw + 1e-6))
    top = rng.uniform(-out * bh, max(height_px - bh * (1 - out), -out * bh + 1e-6))
    new = (pts - np.array([x0, y0])) * s + np.array([left, top])
    inside = (new[:, 0] >= 0) & (new[:, 0] < width_px) & (new[:, 1] >= 0) & (new[:, 1] < height_px)
    return style, mo.to_pose_frame(new, vis & inside, height_px, width_px)


def degrade(image_rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random blur, resampling, colour, noise and JPEG damage; uint8 RGB in, uint8 RGB out."""
    import cv2

    img = image_rgb
    h, w = img.shape[:2]
    if rng.random() < 0.5:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 1.0) * max(h, w) / 300.0)
    if rng.random() < 0.25:
        f = rng.uniform(1.5, 3.5)
        small = cv2.resize(img, (max(int(w / f), 8), max(int(h / f), 8)), interpolation=cv2.INTER_AREA)
        img = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    out = img.astype(np.float32)
    if rng.random() < 0.5:
        gain = rng.uniform(0.7, 1.3) * rng.uniform(0.9, 1.1, size=3)
        out = (out - 128.0) * gain.astype(np.float32) + 128.0 + rng.uniform(-30, 30)
    if rng.random() < 0.4:
        out = out + rng.normal(0.0, rng.uniform(2.0, 10.0), size=out.shape).astype(np.float32)
    img = np.clip(out, 0, 255).astype(np.uint8)
    if rng.random() < 0.4:
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(20, 90))])
        decoded = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if ok else None
        if decoded is not None:
            img = decoded
    return np.ascontiguousarray(img)


def canvas_size(rng: np.random.Generator) -> tuple[int, int]:
    """A random (height_px, width_px): long side 128-640 (log-uniform), aspect 0.5-2."""
    long_side = math.exp(rng.uniform(math.log(128), math.log(640)))
    aspect = math.exp(rng.uniform(math.log(0.5), math.log(2.0)))  # width / height
    if aspect >= 1:
        return max(int(long_side / aspect), 32), int(long_side)
    return int(long_side), max(int(long_side * aspect), 32)


def make_pose_sample(
    seed: int,
    rng: np.random.Generator,
    *,
    is_degraded: bool = True,
    has_person: bool = True,
    size_hw: tuple[int, int] | None = None,
) -> PoseSample:
    """Figure ``seed`` placed by ``rng`` over a random background (see the module docstring)."""
    h, w = size_hw if size_hw is not None else canvas_size(rng)
    background = make_background(int(rng.integers(0, 2**31)), h, w)
    if has_person:
        style, frame = placed_pose(seed, rng, h, w)
        image, box = render_figure_with_box(style, frame, h, w, background)
        frame = replace(frame, box_xyxy=box)
        keypoints, visible = coco_wholebody(frame)
    else:
        image, box, frame = background, None, None
        keypoints, visible = np.zeros((NUM_COCO, 2)), np.zeros(NUM_COCO, dtype=bool)
    if is_degraded:
        image = degrade(image, rng)
    return PoseSample(np.ascontiguousarray(image[..., ::-1]), box, keypoints, visible, frame)


def held_out_samples(seeds: Sequence[int], is_degraded: bool) -> list[PoseSample]:
    """Evaluation samples of figure seeds below TRAIN_SEED_BASE, each placed by its own seeded rng."""
    out = []
    for seed in seeds:
        if not 0 <= seed < TRAIN_SEED_BASE:
            raise ValueError(f"held-out seeds must be in [0, {TRAIN_SEED_BASE}), got {seed}")
        rng = np.random.default_rng([seed, 91, int(is_degraded)])
        out.append(make_pose_sample(seed, rng, is_degraded=is_degraded))
    return out


# ----- evaluation through the real extraction code -------------------------------------------------


@dataclass(frozen=True)
class PoseMetrics:
    """Held-out quality of a detector + pose model pair, measured through ``pose.dwpose.DWPose``.

    Pixel errors are in image pixels and also as a fraction of the ground-truth box height
    (``*_rel``); PCK@0.05 counts visible body joints within 5% of the box height.
    """

    num_images: int
    detection_recall: float  # images whose chosen person overlaps the ground truth with IoU > 0.5
    mean_iou: float  # of the chosen person box (0 when nobody was found)
    body_error_px: float  # median over images of the mean OpenPose-body error (visible joints)
    body_error_rel: float
    body_error_gt_box_rel: float  # the same with the ground-truth box instead of the detector's
    body_pck05: float
    body_visible_recall: float  # ground-truth visible body joints with score > 0.3
    hidden_rejected: float  # ground-truth hidden face/ear points with score <= 0.3
    face_error_rel: float  # median over images, visible face points
    hand_error_rel: float
    false_people: int  # people found on the person-free images

    def summary(self) -> str:
        """One line of the figures, for the training log and reports."""
        return (
            f"images={self.num_images} recall={self.detection_recall:.3f} iou={self.mean_iou:.3f} "
            f"body_err={self.body_error_px:.2f}px ({self.body_error_rel:.4f} of box h) "
            f"gt_box_body_err={self.body_error_gt_box_rel:.4f} pck05={self.body_pck05:.3f} "
            f"vis_recall={self.body_visible_recall:.3f} "
            f"hidden_rejected={self.hidden_rejected:.3f} face_err={self.face_error_rel:.4f} "
            f"hand_err={self.hand_error_rel:.4f} false_people={self.false_people}"
        )


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Plain IoU of two xyxy boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def evaluate(model: object, samples: Sequence[PoseSample], empty_images: Sequence[np.ndarray] = ()) -> PoseMetrics:
    """Run ``model`` (a ``pose.dwpose.DWPose``) on each sample's image and compare with its ground truth.

    The person is chosen as the extraction stage chooses it (``select_person``, "auto").
    """
    from unianimate_cli.pose.dwpose import DWPose, select_person

    assert isinstance(model, DWPose)
    ious: list[float] = []
    body_px: list[float] = []
    body_rel: list[float] = []
    gt_box_rel: list[float] = []
    pck: list[float] = []
    vis_rec: list[float] = []
    rejected: list[float] = []
    face_rel: list[float] = []
    hand_rel: list[float] = []
    gt_body = [OPENPOSE_FROM_COCO[j] for j in OPENPOSE_BODY_JOINTS]
    for s in samples:
        assert s.frame is not None and s.box_xyxy is not None
        gt_h = s.box_xyxy[3] - s.box_xyxy[1]
        body = np.array([c for c in gt_body if s.visible[c]])
        kp = model.estimate(s.image_bgr, np.array([s.box_xyxy])).keypoints[0]
        gt_box_rel.append(float(np.linalg.norm(kp[body] - s.keypoints[body], axis=1).mean() / gt_h))
        people = model.people(s.image_bgr, whole_image_fallback=False)
        if not people:
            ious.append(0.0)
            continue
        person = select_person(people)
        ious.append(box_iou(person.box_xyxy, s.box_xyxy) if person.box_xyxy is not None else 0.0)
        est = model.estimate(s.image_bgr, np.array([person.box_xyxy]))
        kp, sc = est.keypoints[0], est.scores[0]
        err = np.linalg.norm(kp[body] - s.keypoints[body], axis=1)
        body_px.append(float(err.mean()))
        body_rel.append(float(err.mean() / gt_h))
        pck.append(float((err < 0.05 * gt_h).mean()))
        vis_rec.append(float((sc[body] > 0.3).mean()))
        face = np.arange(COCO_FACE.start, COCO_FACE.stop)
        hidden = np.concatenate([np.array([1, 2, 3, 4]), face])
        hidden = hidden[~s.visible[hidden]]
        if hidden.size:
            rejected.append(float((sc[hidden] <= 0.3).mean()))
        for idx, out in ((face, face_rel), (np.arange(COCO_LEFT_HAND.start, COCO_RIGHT_HAND.stop), hand_rel)):
            idx = idx[s.visible[idx]]
            if idx.size:
                out.append(float(np.linalg.norm(kp[idx] - s.keypoints[idx], axis=1).mean() / gt_h))
    false_people = sum(len(model.people(img, whole_image_fallback=False)) for img in empty_images)

    def median(v: list[float]) -> float:
        return float(np.median(v)) if v else math.inf

    return PoseMetrics(
        num_images=len(samples),
        detection_recall=float(np.mean([i > 0.5 for i in ious])),
        mean_iou=float(np.mean(ious)),
        body_error_px=median(body_px),
        body_error_rel=median(body_rel),
        body_error_gt_box_rel=median(gt_box_rel),
        body_pck05=float(np.mean(pck)) if pck else 0.0,
        body_visible_recall=float(np.mean(vis_rec)) if vis_rec else 0.0,
        hidden_rejected=float(np.mean(rejected)) if rejected else 0.0,
        face_error_rel=median(face_rel),
        hand_error_rel=median(hand_rel),
        false_people=int(false_people),
    )


def empty_images(seeds: Sequence[int]) -> list[np.ndarray]:
    """Person-free BGR images: a flat grey frame, then backgrounds of each seed."""
    out: list[np.ndarray] = [np.full((256, 192, 3), 128, np.uint8)]
    for seed in seeds:
        h, w = canvas_size(np.random.default_rng([seed, 93]))
        out.append(make_background(seed, h, w)[..., ::-1].copy())
    return out
