"""Whole-body keypoints of one person per frame, and their versioned JSONL file form.

Coordinates are normalised by the source image: x / width_px, y / height_px, float64, as the
reference's DWPose dicts hold them (``run_align_pose.py``, ``DWposeDetector.__call__``).

Visibility convention (the reference's, spec/POSE.md section 5): a point is *visible* iff its
score is > ``VISIBILITY_THRESHOLD`` (0.3). Extraction writes invisible points as exactly
(-1, -1); alignment keeps them there (the ``reference`` alignment mode is the one exception: it
moves them like the reference does). The reference blanks coordinates at score < 0.3 but
builds the body subset at score > 0.3; the two differ only at exactly 0.3, which float32
model scores cannot hit, so one threshold is used.

Layout (k = keypoint axis):
* ``body`` (20, 2): OpenPose 18 (0 nose, 1 neck, 2 R shoulder, 3 R elbow, 4 R wrist,
  5 L shoulder, 6 L elbow, 7 L wrist, 8 R hip, 9 R knee, 10 R ankle, 11 L hip, 12 L knee,
  13 L ankle, 14 R eye, 15 L eye, 16 R ear, 17 L ear), then 18 left foot and 19 right foot,
  each the mean of that foot's big and small toe. These 20 points are what alignment and
  drawing use. The neck score is 1.0 when both shoulder scores are > 0.3, else 0.0; a foot
  score is the smaller of its two toe scores.
* ``feet`` (6, 2): the raw COCO-WholeBody foot points (L big toe, L small toe, L heel,
  R big toe, R small toe, R heel), kept for inspection; alignment moves them with their foot.
* ``hands`` (2, 21, 2): [left, right], COCO-WholeBody hand order.
* ``face`` (68, 2).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from unianimate_cli.errors import InputError
from unianimate_cli.project import atomic_write_text

VISIBILITY_THRESHOLD = 0.3
NUM_BODY = 20
NUM_FEET = 6
NUM_HAND = 21
NUM_FACE = 68
INVISIBLE = -1.0

POSES_SCHEMA = "unianimate.poses"
POSES_VERSION = 1

BODY_NAMES = (
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder",
    "left_elbow", "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip",
    "left_knee", "left_ankle", "right_eye", "left_eye", "right_ear", "left_ear",
    "left_foot", "right_foot",
)  # fmt: skip

# COCO-WholeBody index of OpenPose body joints 0..17 (joint 1, the neck, is derived).
# Measured in fixtures/pose/onnx_io.json, "wholebody_conversion.table_measured".
OPENPOSE_FROM_COCO = (0, -1, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3)
COCO_FEET = slice(17, 23)
COCO_FACE = slice(23, 91)
COCO_LEFT_HAND = slice(91, 112)
COCO_RIGHT_HAND = slice(112, 133)


def _arr(x: Any, shape: tuple[int, ...], what: str) -> np.ndarray:
    a = np.array(x, dtype=np.float64)
    if a.shape != shape:
        raise ValueError(f"{what} must have shape {shape}, got {a.shape}")
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class PoseFrame:
    """One person's whole-body pose in one image (see the module docstring for the layout)."""

    body: np.ndarray  # (20, 2) float64, normalised
    body_scores: np.ndarray  # (20,)
    feet: np.ndarray  # (6, 2)
    feet_scores: np.ndarray  # (6,)
    hands: np.ndarray  # (2, 21, 2) [left, right]
    hand_scores: np.ndarray  # (2, 21)
    face: np.ndarray  # (68, 2)
    face_scores: np.ndarray  # (68,)
    height_px: int
    width_px: int
    box_xyxy: tuple[float, float, float, float] | None = None  # detector box, image pixels

    def __post_init__(self) -> None:
        for name, shape in (
            ("body", (NUM_BODY, 2)),
            ("body_scores", (NUM_BODY,)),
            ("feet", (NUM_FEET, 2)),
            ("feet_scores", (NUM_FEET,)),
            ("hands", (2, NUM_HAND, 2)),
            ("hand_scores", (2, NUM_HAND)),
            ("face", (NUM_FACE, 2)),
            ("face_scores", (NUM_FACE,)),
        ):
            object.__setattr__(self, name, _arr(getattr(self, name), shape, name))
        if int(self.height_px) <= 0 or int(self.width_px) <= 0:
            raise ValueError(f"image size must be positive, got {self.height_px}x{self.width_px}")
        object.__setattr__(self, "height_px", int(self.height_px))
        object.__setattr__(self, "width_px", int(self.width_px))
        if self.box_xyxy is not None:
            object.__setattr__(self, "box_xyxy", tuple(float(v) for v in self.box_xyxy))

    # ----- construction -------------------------------------------------------------------

    @classmethod
    def from_wholebody(
        cls,
        keypoints_px: np.ndarray,
        scores: np.ndarray,
        height_px: int,
        width_px: int,
        box_xyxy: Sequence[float] | None = None,
    ) -> PoseFrame:
        """Build a frame from one person's raw pose-model output (133, 2) px + (133,) scores.

        Reproduces ``Wholebody.__call__`` (neck) and ``DWposeDetector.__call__`` (normalise,
        blank invisible points to (-1, -1), feet from the toe means).
        """
        kp = np.asarray(keypoints_px, dtype=np.float64)
        sc = np.asarray(scores, dtype=np.float64)
        if kp.shape != (133, 2) or sc.shape != (133,):
            raise ValueError(f"expected (133, 2) keypoints and (133,) scores, got {kp.shape}, {sc.shape}")
        norm = kp / np.array([float(width_px), float(height_px)])
        visible = sc >= VISIBILITY_THRESHOLD  # the reference blanks at < 0.3
        norm = np.where(visible[:, None], norm, INVISIBLE)

        body = np.empty((NUM_BODY, 2))
        body_scores = np.empty(NUM_BODY)
        for j, c in enumerate(OPENPOSE_FROM_COCO):
            if c >= 0:
                body[j] = norm[c]
                body_scores[j] = sc[c]
        neck_visible = sc[5] > VISIBILITY_THRESHOLD and sc[6] > VISIBILITY_THRESHOLD
        # mean of the two shoulder rows in pixels, then normalised (the reference's order)
        neck_px = np.mean(kp[[5, 6]], axis=0)
        body[1] = neck_px / np.array([float(width_px), float(height_px)]) if neck_visible else INVISIBLE
        body_scores[1] = 1.0 if neck_visible else 0.0
        for j, (a, b) in ((18, (17, 18)), (19, (20, 21))):
            both = sc[a] > VISIBILITY_THRESHOLD and sc[b] > VISIBILITY_THRESHOLD
            body[j] = (norm[a] + norm[b]) / 2 if both else INVISIBLE
            body_scores[j] = min(sc[a], sc[b])
        return cls(
            body=body,
            body_scores=body_scores,
            feet=norm[COCO_FEET],
            feet_scores=sc[COCO_FEET],
            hands=np.stack([norm[COCO_LEFT_HAND], norm[COCO_RIGHT_HAND]]),
            hand_scores=np.stack([sc[COCO_LEFT_HAND], sc[COCO_RIGHT_HAND]]),
            face=norm[COCO_FACE],
            face_scores=sc[COCO_FACE],
            height_px=height_px,
            width_px=width_px,
            box_xyxy=None if box_xyxy is None else tuple(float(v) for v in box_xyxy),  # type: ignore[arg-type]
        )

    @classmethod
    def from_dwpose(
        cls,
        candidate: np.ndarray,
        subset: np.ndarray,
        hands: np.ndarray,
        faces: np.ndarray,
        height_px: int = 768,
        width_px: int = 512,
    ) -> PoseFrame:
        """Build a frame from the reference's pose dict arrays (candidate 20x2, subset 20, ...).

        Scores are 1.0 for visible and 0.0 for invisible points (body: subset != -1; hands and
        face: not exactly (-1, -1)). The raw foot points are unknown; they repeat the foot means.
        """
        cand = np.asarray(candidate, dtype=np.float64).reshape(NUM_BODY, 2)
        sub = np.asarray(subset, dtype=np.float64).reshape(-1)[:NUM_BODY]
        hnd = np.asarray(hands, dtype=np.float64).reshape(2, NUM_HAND, 2)
        fac = np.asarray(faces, dtype=np.float64).reshape(NUM_FACE, 2)
        body_scores = (sub != -1).astype(np.float64)
        feet = np.repeat(cand[18:20], 3, axis=0)
        return cls(
            body=cand,
            body_scores=body_scores,
            feet=feet,
            feet_scores=np.repeat(body_scores[18:20], 3),
            hands=hnd,
            hand_scores=(~np.all(hnd == INVISIBLE, axis=-1)).astype(np.float64),
            face=fac,
            face_scores=(~np.all(fac == INVISIBLE, axis=-1)).astype(np.float64),
            height_px=height_px,
            width_px=width_px,
        )

    # ----- views ----------------------------------------------------------------------------

    @property
    def body_visible(self) -> np.ndarray:
        """(20,) bool: the reference's subset != -1."""
        return self.body_scores > VISIBILITY_THRESHOLD

    @property
    def hand_visible(self) -> np.ndarray:
        """(2, 21) bool: score > 0.3 and not at (-1, -1)."""
        return (self.hand_scores > VISIBILITY_THRESHOLD) & ~np.all(self.hands == INVISIBLE, axis=-1)

    @property
    def face_visible(self) -> np.ndarray:
        """(68,) bool: score > 0.3 and not at (-1, -1)."""
        return (self.face_scores > VISIBILITY_THRESHOLD) & ~np.all(self.face == INVISIBLE, axis=-1)

    @property
    def feet_visible(self) -> np.ndarray:
        """(6,) bool."""
        return (self.feet_scores > VISIBILITY_THRESHOLD) & ~np.all(self.feet == INVISIBLE, axis=-1)

    @property
    def num_visible_body(self) -> int:
        return int(self.body_visible.sum())

    def subset(self) -> np.ndarray:
        """(20,) float64: j where body joint j is visible, else -1 (the reference's subset)."""
        return np.where(self.body_visible, np.arange(NUM_BODY, dtype=np.float64), -1.0)

    def with_points(
        self,
        body: np.ndarray | None = None,
        feet: np.ndarray | None = None,
        hands: np.ndarray | None = None,
        face: np.ndarray | None = None,
    ) -> PoseFrame:
        """A copy with some coordinate arrays replaced (scores and size kept)."""
        return PoseFrame(
            body=self.body if body is None else body,
            body_scores=self.body_scores,
            feet=self.feet if feet is None else feet,
            feet_scores=self.feet_scores,
            hands=self.hands if hands is None else hands,
            hand_scores=self.hand_scores,
            face=self.face if face is None else face,
            face_scores=self.face_scores,
            height_px=self.height_px,
            width_px=self.width_px,
            box_xyxy=self.box_xyxy,
        )

    def is_finite(self) -> bool:
        return all(
            bool(np.all(np.isfinite(a)))
            for a in (self.body, self.feet, self.hands, self.face, self.body_scores,
                      self.feet_scores, self.hand_scores, self.face_scores)
        )  # fmt: skip

    def equals(self, other: PoseFrame) -> bool:
        """Exact equality of every array and field."""
        return (
            self.height_px == other.height_px
            and self.width_px == other.width_px
            and self.box_xyxy == other.box_xyxy
            and all(
                np.array_equal(getattr(self, n), getattr(other, n))
                for n in ("body", "body_scores", "feet", "feet_scores", "hands", "hand_scores",
                          "face", "face_scores")
            )  # fmt: skip
        )


@dataclass(frozen=True)
class PoseSequence:
    """Poses of consecutive sampled frames of one source (a video, or a photo as one frame)."""

    frames: tuple[PoseFrame, ...]
    fps: float | None = None  # frame rate of the sampled sequence, if it came from a video
    source: str | None = None  # file name the poses were extracted from
    source_frames: tuple[int, ...] | None = None  # source frame index of each frame
    meta: dict[str, Any] = field(default_factory=dict)  # free-form, JSON-serialisable

    def __post_init__(self) -> None:
        object.__setattr__(self, "frames", tuple(self.frames))
        if self.source_frames is not None:
            object.__setattr__(self, "source_frames", tuple(int(i) for i in self.source_frames))
            if len(self.source_frames) != len(self.frames):
                raise ValueError("source_frames must have one entry per frame")

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> PoseFrame:
        return self.frames[i]


# ----- JSONL -----------------------------------------------------------------------------------
#
# Format "unianimate.poses" version 1. UTF-8, one JSON object per line.
# Line 1 (header): {"schema": "unianimate.poses", "version": 1, "num_frames": N,
#                   "fps": float|null, "source": str|null, "meta": {...},
#                   "coordinates": "normalised x/width_px, y/height_px; invisible = (-1, -1) ...",
#                   "layout": {...}}
# Lines 2..N+1 (one per frame, in order):
#   {"frame": i, "source_frame": int|null, "height_px": H, "width_px": W,
#    "box_xyxy": [x1, y1, x2, y2]|null,
#    "body": [[x, y] x 20], "body_scores": [20], "feet": [[x, y] x 6], "feet_scores": [6],
#    "hands": [[[x, y] x 21] x 2], "hand_scores": [[21] x 2], "face": [[x, y] x 68], "face_scores": [68]}
# Floats are written with repr (round-trip exact); NaN and infinity are not allowed.
# A reader refuses a different schema or a version it does not know.

_LAYOUT = {
    "body": list(BODY_NAMES),
    "feet": ["left_big_toe", "left_small_toe", "left_heel", "right_big_toe", "right_small_toe", "right_heel"],
    "hands": "[left, right] x 21 COCO-WholeBody hand points",
    "face": "68 COCO-WholeBody face points",
    "visibility": f"score > {VISIBILITY_THRESHOLD}",
}


def _frame_to_json(i: int, frame: PoseFrame, source_frame: int | None) -> dict[str, Any]:
    return {
        "frame": i,
        "source_frame": source_frame,
        "height_px": frame.height_px,
        "width_px": frame.width_px,
        "box_xyxy": None if frame.box_xyxy is None else list(frame.box_xyxy),
        "body": frame.body.tolist(),
        "body_scores": frame.body_scores.tolist(),
        "feet": frame.feet.tolist(),
        "feet_scores": frame.feet_scores.tolist(),
        "hands": frame.hands.tolist(),
        "hand_scores": frame.hand_scores.tolist(),
        "face": frame.face.tolist(),
        "face_scores": frame.face_scores.tolist(),
    }


def save_poses(path: Path, poses: PoseSequence | Iterable[PoseFrame]) -> None:
    """Write poses as versioned JSONL, atomically (temp file in the same folder, then rename).

    Raises ValueError if any value is NaN or infinite (our alignment never produces them).
    """
    seq = poses if isinstance(poses, PoseSequence) else PoseSequence(frames=tuple(poses))
    path = Path(path)
    header = {
        "schema": POSES_SCHEMA,
        "version": POSES_VERSION,
        "num_frames": len(seq.frames),
        "fps": seq.fps,
        "source": seq.source,
        "meta": seq.meta,
        "coordinates": "normalised: x / width_px, y / height_px; invisible points are (-1, -1)",
        "layout": _LAYOUT,
    }
    lines = [json.dumps(header, allow_nan=False)]
    for i, frame in enumerate(seq.frames):
        if not frame.is_finite():
            raise ValueError(f"pose frame {i} holds NaN or infinity; refusing to write {path}")
        sf = None if seq.source_frames is None else seq.source_frames[i]
        lines.append(json.dumps(_frame_to_json(i, frame, sf), allow_nan=False))
    atomic_write_text(path, "\n".join(lines) + "\n")


def _bad(path: Path, why: str) -> InputError:
    return InputError(
        f"pose file {path} is not readable: {why}",
        "run `unianimate extract-pose` again to recreate it",
    )


def load_poses(path: Path) -> PoseSequence:
    """Read a file written by ``save_poses``; raise InputError naming the file on any problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"pose file {path} does not exist", "run `unianimate extract-pose` first") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise _bad(path, str(exc)) from None
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise _bad(path, "the file is empty")
    try:
        header = json.loads(lines[0])
    except json.JSONDecodeError as exc:
        raise _bad(path, f"line 1 is not JSON ({exc.msg})") from None
    if not isinstance(header, dict) or header.get("schema") != POSES_SCHEMA:
        raise _bad(path, f"line 1 is not a {POSES_SCHEMA!r} header")
    version = header.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise _bad(path, "the header has no integer version")
    if version > POSES_VERSION:
        raise InputError(
            f"pose file {path} has format version {version}, newer than this unianimate reads ({POSES_VERSION})",
            "upgrade unianimate, or run `unianimate extract-pose` again",
        )
    if version != POSES_VERSION:
        raise _bad(path, f"unknown format version {version}")
    num_frames = header.get("num_frames")
    if not isinstance(num_frames, int) or num_frames != len(lines) - 1:
        raise _bad(path, f"the header says {num_frames} frames but the file has {len(lines) - 1} (truncated?)")
    frames: list[PoseFrame] = []
    source_frames: list[int | None] = []
    for lineno, line in enumerate(lines[1:], start=2):
        try:
            rec = json.loads(line, parse_constant=_reject_constant)
            if not isinstance(rec, dict):
                raise ValueError("not an object")
            if rec.get("frame") != lineno - 2:
                raise ValueError(f"expected frame {lineno - 2}, got {rec.get('frame')!r}")
            box = rec.get("box_xyxy")
            frame = PoseFrame(
                body=rec["body"],
                body_scores=rec["body_scores"],
                feet=rec["feet"],
                feet_scores=rec["feet_scores"],
                hands=rec["hands"],
                hand_scores=rec["hand_scores"],
                face=rec["face"],
                face_scores=rec["face_scores"],
                height_px=_positive_int(rec["height_px"]),
                width_px=_positive_int(rec["width_px"]),
                box_xyxy=None if box is None else _box(box),
            )
            if not frame.is_finite():
                raise ValueError("non-finite value")
            sf = rec.get("source_frame")
            if sf is not None and (not isinstance(sf, int) or isinstance(sf, bool)):
                raise ValueError("source_frame is not an integer")
        except (KeyError, ValueError, TypeError) as exc:
            why = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
            raise _bad(path, f"line {lineno}: {why}") from None
        frames.append(frame)
        source_frames.append(sf)
    fps = header.get("fps")
    if fps is not None and (
        not isinstance(fps, (int, float)) or isinstance(fps, bool) or not math.isfinite(fps) or fps <= 0
    ):
        raise _bad(path, f"bad fps {fps!r}")
    meta = header.get("meta") or {}
    if not isinstance(meta, dict):
        raise _bad(path, "meta is not an object")
    source = header.get("source")
    return PoseSequence(
        frames=tuple(frames),
        fps=None if fps is None else float(fps),
        source=source if isinstance(source, str) else None,
        source_frames=_all_ints(source_frames),
        meta=meta,
    )


def _all_ints(values: list[int | None]) -> tuple[int, ...] | None:
    """The source frame indices if every frame has one (a partial list is dropped)."""
    ints = tuple(v for v in values if v is not None)
    return ints if ints and len(ints) == len(values) else None


def _reject_constant(name: str) -> float:
    raise ValueError(f"non-finite value {name}")


def _positive_int(v: Any) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
        raise ValueError(f"image size {v!r} is not a positive integer")
    return v


def _box(v: Any) -> tuple[float, float, float, float]:
    if not isinstance(v, list) or len(v) != 4:
        raise ValueError("box_xyxy must be 4 numbers")
    a, b, c, d = (float(x) for x in v)
    return (a, b, c, d)
