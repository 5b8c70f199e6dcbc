"""Skeleton rendering identical to the reference's pose frames (what the UNet was trained on).

Reproduces ``run_align_pose.draw_pose`` with ``dwpose/util.py`` (``draw_body_and_foot``,
``draw_handpose``, ``draw_facepose``), spec/POSE.md section 7: 19 limbs as filled OpenCV
ellipse polygons, the canvas dimmed x0.6 (floor), 20 joint discs, then both hands at full
intensity; the face only on request (the reference never saves it). Every pixel coordinate is
truncated with ``int()`` as the reference does, and OpenCV does the rasterising (LINE_8, no
anti-aliasing), because a different rasteriser cannot match its integer ellipse polygons.

Channel order: the reference fills a numpy canvas with its colour table and saves it with
``cv2.imwrite``, which stores channel 0 as blue. ``draw_canvas`` returns that canvas; ``draw_pose``
returns the saved file's RGB (the canvas with channels reversed), which is what the model sees.
Sizes (stick half-width 4, joint radius 4, hand line 2, hand point 4, face point 3) are in
pixels whatever the canvas size, as in the reference.
"""

from __future__ import annotations

import colorsys
import math

import numpy as np

from unianimate_cli.pose.keypoints import PoseFrame

CANVAS_HEIGHT_PX = 768  # hard-coded in the reference's mp_main for every frame
CANVAS_WIDTH_PX = 512

STICK_HALF_WIDTH_PX = 4
JOINT_RADIUS_PX = 4
HAND_LINE_THICKNESS_PX = 2
HAND_POINT_RADIUS_PX = 4
FACE_POINT_RADIUS_PX = 3
DIM_FACTOR = 0.6
_EPS = 0.01  # util.eps: a hand/face pixel coordinate must be > 0.01 (i.e. >= 1 after int())

# Limb i joins body joints LIMBS[i] (0-based; util.limbSeq is 1-based). Drawing order matters.
LIMBS = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11),
    (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17), (13, 18), (10, 19),
)  # fmt: skip

# Canvas values (channel 0 first), index = limb or joint.
COLORS = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
    (170, 255, 255), (255, 255, 0),
)  # fmt: skip

HAND_EDGES = (
    (0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (0, 9), (9, 10),
    (10, 11), (11, 12), (0, 13), (13, 14), (14, 15), (15, 16), (0, 17), (17, 18), (18, 19), (19, 20),
)  # fmt: skip
HAND_POINT_COLOR = (0, 0, 255)
FACE_POINT_COLOR = (255, 255, 255)


def hand_edge_colors() -> tuple[tuple[float, float, float], ...]:
    """Float colour of each hand edge: HSV(e / 20, 1, 1) * 255, as matplotlib computes it.

    OpenCV rounds these when drawing; fixtures/pose/draw/palette.json lists the results.
    """
    n = len(HAND_EDGES)
    out = []
    for e in range(n):
        r, g, b = _hsv_to_rgb(e / float(n))
        out.append((r * 255, g * 255, b * 255))
    return tuple(out)


def _hsv_to_rgb(h: float) -> tuple[float, float, float]:
    # s = v = 1: the same sector formula matplotlib.colors.hsv_to_rgb uses
    return colorsys.hsv_to_rgb(h, 1.0, 1.0)


def draw_canvas(
    candidate: np.ndarray,
    subset: np.ndarray,
    hands: np.ndarray,
    faces: np.ndarray | None,
    height_px: int = CANVAS_HEIGHT_PX,
    width_px: int = CANVAS_WIDTH_PX,
) -> np.ndarray:
    """Render the reference's pose dict arrays into its canvas (channel order as the reference).

    candidate (20, 2) normalised, subset (20,) with j or -1, hands (2, 21, 2), faces (68, 2) or
    None for no face. Returns uint8 (height_px, width_px, 3). Non-finite coordinates of drawn
    points raise ValueError (the reference crashes there too).
    """
    import cv2

    H, W = int(height_px), int(width_px)
    cand = np.asarray(candidate, dtype=np.float64).reshape(-1, 2)
    sub = np.asarray(subset, dtype=np.float64).reshape(-1)
    canvas: np.ndarray = np.zeros((H, W, 3), dtype=np.uint8)

    for i, (a, b) in enumerate(LIMBS):
        if sub[a] == -1 or sub[b] == -1:
            continue
        xa, ya = cand[int(sub[a])][0] * float(W), cand[int(sub[a])][1] * float(H)
        xb, yb = cand[int(sub[b])][0] * float(W), cand[int(sub[b])][1] * float(H)
        mean_x = (xa + xb) / 2.0
        mean_y = (ya + yb) / 2.0
        length = ((ya - yb) ** 2 + (xa - xb) ** 2) ** 0.5
        angle = math.degrees(math.atan2(ya - yb, xa - xb))
        polygon = cv2.ellipse2Poly(
            (int(mean_x), int(mean_y)), (int(length / 2), STICK_HALF_WIDTH_PX), int(angle), 0, 360, 1
        )
        cv2.fillConvexPoly(canvas, np.asarray(polygon), COLORS[i])

    canvas = (canvas * DIM_FACTOR).astype(np.uint8)

    for j in range(min(len(sub), len(COLORS))):
        if sub[j] == -1:
            continue
        x, y = cand[int(sub[j])]
        cv2.circle(canvas, (int(x * W), int(y * H)), JOINT_RADIUS_PX, COLORS[j], thickness=-1)

    edge_colors = hand_edge_colors()
    for peaks in np.asarray(hands, dtype=np.float64).reshape(-1, 21, 2):
        for e, (p, q) in enumerate(HAND_EDGES):
            x1, y1 = int(peaks[p][0] * W), int(peaks[p][1] * H)
            x2, y2 = int(peaks[q][0] * W), int(peaks[q][1] * H)
            if x1 > _EPS and y1 > _EPS and x2 > _EPS and y2 > _EPS:
                cv2.line(canvas, (x1, y1), (x2, y2), edge_colors[e], thickness=HAND_LINE_THICKNESS_PX)
        for px, py in peaks:
            x, y = int(px * W), int(py * H)
            if x > _EPS and y > _EPS:
                cv2.circle(canvas, (x, y), HAND_POINT_RADIUS_PX, HAND_POINT_COLOR, thickness=-1)

    if faces is not None:
        for px, py in np.asarray(faces, dtype=np.float64).reshape(-1, 2):
            x, y = int(px * W), int(py * H)
            if x > _EPS and y > _EPS:
                cv2.circle(canvas, (x, y), FACE_POINT_RADIUS_PX, FACE_POINT_COLOR, thickness=-1)
    return canvas


def draw_pose(
    frame: PoseFrame,
    height_px: int = CANVAS_HEIGHT_PX,
    width_px: int = CANVAS_WIDTH_PX,
    include_face: bool = False,
) -> np.ndarray:
    """Render one pose as the reference's saved pose frame: uint8 (height_px, width_px, 3) RGB.

    Body joints and limbs follow the visibility scores (the reference's subset); hand and face
    points are drawn wherever their truncated pixel coordinates are >= 1, as in the reference
    (invisible points sit at (-1, -1) and so are never drawn). The face is off by default because
    no UniAnimate pose frame contains it. Default size 768x512 (H x W) as the reference.
    """
    canvas = draw_canvas(
        frame.body,
        frame.subset(),
        frame.hands,
        frame.face if include_face else None,
        height_px=height_px,
        width_px=width_px,
    )
    return np.ascontiguousarray(canvas[..., ::-1])
