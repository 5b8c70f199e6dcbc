"""Scale and offset the driving poses to the reference photo's body (run_align_pose.py).

Two modes, both described in spec/POSE.md:

* ``"reference"`` (section 6) reproduces ``run_align_pose.mp_main`` exactly, including its
  defects: signed scales, (-1, -1) invisible points used as positions, and NaN/inf when a
  measured length is 0. It exists for parity checks.
* ``"robust"`` (section 12, the default) equals the reference on every visible point when the
  photo and the calibration frame are complete, and otherwise never divides by ~0, never moves
  invisible points and never produces NaN or infinity: each scale and limb ratio comes from the
  first frame (starting at the calibration frame) where it can be measured, else 1.

The algorithm (both modes): global scales x_ratio (shoulder width) and y_ratio (shoulder centre
to hip centre); per frame scale every point, then apply the 15 limb-length corrections of
``LIMB_CORRECTIONS`` in order, each moving the limb's child side and the attached hand by
(parent - child) * (1 - ratio); finally add one translation that puts the calibration frame's
neck on the photo's neck. Lengths are Euclidean in normalised coordinates (anisotropic unless
the image is square; kept for parity, spec section 11 #18).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np

from unianimate_cli.errors import InputError
from unianimate_cli.pose.keypoints import PoseFrame

log = logging.getLogger(__name__)

AlignMode = Literal["reference", "robust"]
Calibration = int | Literal["first", "auto"]

_EPS = 1e-6  # spec section 12: a length or width must exceed this to be measured


@dataclass(frozen=True)
class LimbCorrection:
    """One row of the reference's limb table: parent -> child, what it moves."""

    name: str
    parent: int
    child: int
    body_moved: tuple[int, ...]
    hand_moved: int | None  # index into hands ([left, right]) or None


# spec/POSE.md section 6, table; order matters (each uses the values left by the previous ones).
LIMB_CORRECTIONS = (
    LimbCorrection("neck", 1, 0, (0, 14, 15, 16, 17), None),
    LimbCorrection("shoulder2", 1, 2, (2, 3, 4), 1),
    LimbCorrection("shoulder5", 1, 5, (5, 6, 7), 0),
    LimbCorrection("arm3", 2, 3, (3, 4), 1),
    LimbCorrection("arm4", 3, 4, (4,), 1),
    LimbCorrection("arm6", 5, 6, (6, 7), 0),
    LimbCorrection("arm7", 6, 7, (7,), 0),
    LimbCorrection("head14", 0, 14, (14, 16), None),
    LimbCorrection("head15", 0, 15, (15, 17), None),
    LimbCorrection("head16", 14, 16, (16,), None),
    LimbCorrection("head17", 15, 17, (17,), None),
    LimbCorrection("ll1", 8, 9, (9, 10, 19), None),  # the person's right leg, right foot (19)
    LimbCorrection("ll2", 9, 10, (10, 19), None),
    LimbCorrection("rl1", 11, 12, (12, 13, 18), None),  # left leg, left foot (18)
    LimbCorrection("rl2", 12, 13, (13, 18), None),
)
LIMB_NAMES = tuple(limb.name for limb in LIMB_CORRECTIONS)

# The raw foot points (PoseFrame.feet) follow their foot's derived body point.
_FEET_OF_BODY = {18: (0, 1, 2), 19: (3, 4, 5)}


@dataclass(frozen=True)
class AlignInfo:
    """What the alignment measured, and where (frame indices into the driving sequence)."""

    mode: str
    calibration_frame: int | None
    x_ratio: float
    y_ratio: float
    ratios: dict[str, float]
    translation: tuple[float, float]
    x_scale_frame: int | None = None
    y_scale_frame: int | None = None
    ratio_frames: dict[str, int | None] = field(default_factory=dict)
    translation_frame: int | None = None
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class AlignResult:
    frames: tuple[PoseFrame, ...]
    info: AlignInfo


@dataclass
class _Points:
    """Mutable float64 copies of one frame's coordinates plus which points may move."""

    body: np.ndarray  # (20, 2)
    feet: np.ndarray  # (6, 2)
    hands: np.ndarray  # (2, 21, 2)
    face: np.ndarray  # (68, 2)
    body_vis: np.ndarray  # (20,) bool
    feet_vis: np.ndarray
    hands_vis: np.ndarray
    face_vis: np.ndarray

    @classmethod
    def of(cls, frame: PoseFrame, robust: bool) -> _Points:
        if robust:
            vis = (frame.body_visible, frame.feet_visible, frame.hand_visible, frame.face_visible)
        else:  # the reference moves every point, visible or not
            vis = (
                np.ones(20, bool),
                np.ones(6, bool),
                np.ones((2, 21), bool),
                np.ones(68, bool),
            )
        return cls(frame.body.copy(), frame.feet.copy(), frame.hands.copy(), frame.face.copy(), *vis)


def _length(p: np.ndarray, a: int, b: int) -> float:
    # the reference's formula, kept for bit-level parity (also of its NaN/inf cases)
    return float(((p[a][0] - p[b][0]) ** 2 + (p[a][1] - p[b][1]) ** 2) ** 0.5)


def _hypot(d: np.ndarray) -> float:
    return float(np.hypot(d[0], d[1]))


def _scale(pts: _Points, x_ratio: float, y_ratio: float) -> None:
    s = np.array([x_ratio, y_ratio])
    pts.body[pts.body_vis] *= s
    pts.feet[pts.feet_vis] *= s
    pts.hands[pts.hands_vis] *= s
    pts.face[pts.face_vis] *= s


def _correct(pts: _Points, limb: LimbCorrection, ratio: float, robust: bool) -> None:
    if robust and not (pts.body_vis[limb.parent] and pts.body_vis[limb.child]):
        return
    offset = (pts.body[limb.parent] - pts.body[limb.child]) * (1.0 - ratio)
    for j in limb.body_moved:
        if pts.body_vis[j]:
            pts.body[j] += offset
        for k in _FEET_OF_BODY.get(j, ()):
            if pts.feet_vis[k]:
                pts.feet[k] += offset
    if limb.hand_moved is not None:
        h = limb.hand_moved
        pts.hands[h][pts.hands_vis[h]] += offset


def _translate(pts: _Points, t: np.ndarray) -> None:
    pts.body[pts.body_vis] += t
    pts.feet[pts.feet_vis] += t
    pts.hands[pts.hands_vis] += t
    pts.face[pts.face_vis] += t


def _apply(
    driving: Sequence[PoseFrame],
    x_ratio: float,
    y_ratio: float,
    ratios: dict[str, float],
    t: np.ndarray,
    robust: bool,
) -> tuple[PoseFrame, ...]:
    """Scale, correct each limb of and translate every driving frame; both modes share this order."""
    out = []
    for frame in driving:
        pts = _Points.of(frame, robust=robust)
        _scale(pts, x_ratio, y_ratio)
        for limb in LIMB_CORRECTIONS:
            _correct(pts, limb, ratios[limb.name], robust=robust)
        _translate(pts, t)
        out.append(frame.with_points(pts.body, pts.feet, pts.hands, pts.face))
    return tuple(out)


def _search_order(n: int, start: int) -> list[int]:
    return list(range(start, n)) + list(range(0, start))


def choose_calibration_frame(frames: Sequence[PoseFrame], calibration: Calibration = "first") -> int:
    """Index of the frame the measurements start from.

    ``"first"`` is frame 0 (the reference); ``"auto"`` the most complete frame (most visible
    body joints, then most visible hand points; the earliest wins ties); an int is used as is.
    """
    if not frames:
        raise InputError("no driving frames to calibrate the alignment on", "check the driving video")
    if calibration == "first":
        return 0
    if calibration == "auto":
        keys = [(f.num_visible_body, int(f.hand_visible.sum())) for f in frames]
        best = max(keys)
        return keys.index(best)
    if isinstance(calibration, int) and not isinstance(calibration, bool):
        if not 0 <= calibration < len(frames):
            raise InputError(
                f"calibration frame {calibration} does not exist: the driving poses have {len(frames)} frames",
                f"choose 0..{len(frames) - 1}, 'first' or 'auto'",
            )
        return calibration
    raise InputError(f"calibration {calibration!r} is not 'first', 'auto' or a frame index")


def align_poses(
    reference: PoseFrame,
    driving: Sequence[PoseFrame],
    *,
    mode: AlignMode = "robust",
    calibration: Calibration = "first",
) -> AlignResult:
    """Align every driving pose to the reference photo's body; return new frames and what was measured.

    reference: the photo pose (never modified). driving: the video poses in order. The output
    frames keep scores, image sizes and boxes; only coordinates change. An empty ``driving``
    gives an empty result (robust) -- callers should refuse an empty video before this.
    """
    if mode not in ("reference", "robust"):
        raise ValueError(f"mode must be 'reference' or 'robust', got {mode!r}")
    if mode == "reference":
        return _align_reference(reference, driving, calibration)
    return _align_robust(reference, driving, calibration)


def _align_reference(reference: PoseFrame, driving: Sequence[PoseFrame], calibration: Calibration) -> AlignResult:
    if not driving:
        raise InputError("no driving frames to align", "check the driving video")
    k = choose_calibration_frame(driving, calibration)
    R = reference.body
    Z = driving[k].body
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        x_ratio = (R[5][0] - R[2][0]) / (Z[5][0] - Z[2][0])
        ref_c1, ref_c2 = 0.5 * (R[2] + R[5]), 0.5 * (R[8] + R[11])
        zero_c1, zero_c2 = 0.5 * (Z[2] + Z[5]), 0.5 * (Z[8] + Z[11])
        y_ratio = (ref_c2[1] - ref_c1[1]) / (zero_c2[1] - zero_c1[1])
        # measure the ratios on the calibration frame as it is being processed (in place in the source)
        calib = _Points.of(driving[k], robust=False)
        _scale(calib, x_ratio, y_ratio)
        ratios: dict[str, float] = {}
        for limb in LIMB_CORRECTIONS:
            ratio = np.float64(_length(R, limb.parent, limb.child)) / np.float64(
                _length(calib.body, limb.parent, limb.child)
            )
            ratios[limb.name] = float(ratio)
            _correct(calib, limb, ratios[limb.name], robust=False)
        t = R[1] - calib.body[1]
        out = _apply(driving, x_ratio, y_ratio, ratios, t, robust=False)
    info = AlignInfo(
        mode="reference",
        calibration_frame=k,
        x_ratio=float(x_ratio),
        y_ratio=float(y_ratio),
        ratios=ratios,
        translation=(float(t[0]), float(t[1])),
        x_scale_frame=k,
        y_scale_frame=k,
        ratio_frames={name: k for name in LIMB_NAMES},
        translation_frame=k,
    )
    return AlignResult(out, info)


def _x_width(p: PoseFrame) -> float | None:
    vis = p.body_visible
    if not (vis[2] and vis[5]):
        return None
    w = abs(p.body[5][0] - p.body[2][0])
    return float(w) if w > _EPS else None


def _y_height(p: PoseFrame) -> float | None:
    vis = p.body_visible
    if not (vis[2] and vis[5] and vis[8] and vis[11]):
        return None
    c1, c2 = 0.5 * (p.body[2] + p.body[5]), 0.5 * (p.body[8] + p.body[11])
    h = abs(c2[1] - c1[1])
    return float(h) if h > _EPS else None


def _align_robust(reference: PoseFrame, driving: Sequence[PoseFrame], calibration: Calibration) -> AlignResult:
    warnings: list[str] = []
    n = len(driving)
    k = choose_calibration_frame(driving, calibration) if n else None
    order = _search_order(n, k) if k is not None else []

    def first_measure(fn: object) -> tuple[float | None, int | None]:
        for i in order:
            v = fn(driving[i])  # type: ignore[operator]
            if v is not None:
                return v, i
        return None, None

    x_ratio: float | None = None
    y_ratio: float | None = None
    x_frame = y_frame = None
    ref_w, ref_h = _x_width(reference), _y_height(reference)
    if ref_w is not None:
        w, x_frame = first_measure(_x_width)
        x_ratio = None if w is None else ref_w / w
    if ref_h is not None:
        h, y_frame = first_measure(_y_height)
        y_ratio = None if h is None else ref_h / h
    if ref_w is None or ref_h is None:
        warnings.append(
            "the reference photo has no complete upper body (shoulders and hips); "
            "body scale not adjusted where it cannot be measured"
        )
    if x_ratio is None and y_ratio is None:
        x_ratio = y_ratio = 1.0
        if n:
            warnings.append("no frame allows measuring the body scale; using scale 1")
    elif x_ratio is None:
        x_ratio = y_ratio
        x_frame = None
    elif y_ratio is None:
        y_ratio = x_ratio
        y_frame = None
    assert x_ratio is not None and y_ratio is not None

    ref_vis = reference.body_visible
    ratios: dict[str, float] = {}
    ratio_frames: dict[str, int | None] = {}
    s = np.array([x_ratio, y_ratio])
    for limb in LIMB_CORRECTIONS:
        ratios[limb.name], ratio_frames[limb.name] = 1.0, None
        if not (ref_vis[limb.parent] and ref_vis[limb.child]):
            continue
        ref_len = _hypot(reference.body[limb.child] - reference.body[limb.parent])
        if not ref_len > _EPS:
            continue
        for i in order:
            f = driving[i]
            if not (f.body_visible[limb.parent] and f.body_visible[limb.child]):
                continue
            length = _hypot((f.body[limb.child] - f.body[limb.parent]) * s)
            if length > _EPS:
                ratios[limb.name], ratio_frames[limb.name] = ref_len / length, i
                break

    t = np.zeros(2)
    t_frame = None
    if ref_vis[1]:
        for i in order:
            if driving[i].body_visible[1]:
                t = reference.body[1] - driving[i].body[1] * s
                t_frame = i
                break
    elif n:
        warnings.append("the reference photo has no neck (both shoulders needed); poses not moved onto it")

    out = _apply(driving, x_ratio, y_ratio, ratios, t, robust=True)
    for message in warnings:
        log.warning(message)
    info = AlignInfo(
        mode="robust",
        calibration_frame=k,
        x_ratio=float(x_ratio),
        y_ratio=float(y_ratio),
        ratios=ratios,
        translation=(float(t[0]), float(t[1])),
        x_scale_frame=x_frame,
        y_scale_frame=y_frame,
        ratio_frames=ratio_frames,
        translation_frame=t_frame,
        warnings=tuple(warnings),
    )
    return AlignResult(out, info)
