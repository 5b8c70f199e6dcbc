"""Procedural synthetic people: seeded appearance, backgrounds, a keypoint-driven renderer, examples.

``render_figure`` draws a clothed figure from a ``PoseFrame`` alone (so it can also dress poses
extracted from real videos): limbs are tapered capsules and the torso a convex polygon, each
shaded across its width and optionally striped or checked along its own axis, so the pattern
moves with the body. The head is shaded as a sphere whose face (eyes, mouth, hairline) follows
the turn recovered from the nose, eyes and neck with the head model of ``motion.py``. Shapes are
signed-distance fields evaluated per pixel inside each part's box, which gives anti-aliased
edges and exact part coordinates for the textures. Parts are painted back to front: long hair,
far arm, legs, trousers and shirt, neck, ears, head, nose, near arms.

Sizes scale with the torso length in pixels (neck to hip centre), which is rigid in our motion.
Pixel centres sit at integer + 0.5, matching normalised coordinates x * width_px.
"""

from __future__ import annotations

import colorsys
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from unianimate_cli.demo import motion as mo
from unianimate_cli.pose.keypoints import PoseFrame, PoseSequence

Pattern = Literal["solid", "stripes", "checks"]
Rgb = tuple[int, int, int]
BackgroundKind = Literal["flat", "gradient", "shapes", "noise", "room"]
BACKGROUND_KINDS: tuple[BackgroundKind, ...] = ("flat", "gradient", "shapes", "noise", "room")


@dataclass(frozen=True)
class Material:
    """A cloth: base colour, optional second colour in a pattern, pattern period in torso lengths."""

    color: Rgb
    pattern: Pattern = "solid"
    color2: Rgb = (0, 0, 0)
    period: float = 0.25


@dataclass(frozen=True)
class FigureStyle:
    """Everything about how one synthetic person looks; build it with ``make_figure_style(seed)``."""

    skeleton: mo.Skeleton
    skin: Rgb
    hair: Rgb
    shirt: Material
    trousers: Material
    shoes: Rgb
    eyes: Rgb
    mouth: Rgb
    has_long_sleeves: bool
    has_shorts: bool
    has_long_hair: bool
    has_hands: bool
    build: float  # limb thickness factor, 0.8 (slim) to 1.25 (broad)
    shade: float  # darkening at a limb's edge, 0..0.5

    def limb_material(self, limb: tuple[int, int]) -> Material:
        """The material drawn along body limb (a, b): shirt, trousers or skin (as a solid Material)."""
        skin = Material(self.skin)
        upper_arms = {(2, 3), (5, 6)}
        forearms = {(3, 4), (6, 7)}
        thighs = {(8, 9), (11, 12)}
        shins = {(9, 10), (12, 13)}
        if limb in upper_arms:
            return self.shirt
        if limb in forearms:
            return self.shirt if self.has_long_sleeves else skin
        if limb in thighs:
            return self.trousers
        if limb in shins:
            return skin if self.has_shorts else self.trousers
        if limb in {(10, 19), (13, 18)}:
            return Material(self.shoes)
        raise ValueError(f"no material for limb {limb}")


def _hsv(h: float, s: float, v: float) -> Rgb:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return (round(r * 255), round(g * 255), round(b * 255))


def _distance(a: Rgb, b: Rgb) -> float:
    return float(np.linalg.norm(np.subtract(a, b, dtype=np.float64)))


def _cloth(rng: np.random.Generator, avoid: list[Rgb]) -> Material:
    # clothes differ clearly from the skin and from each other, so parts stay tellable apart
    color, best = (0, 0, 0), -1.0
    for _ in range(100):  # the first candidate far enough, else the farthest one
        candidate = _hsv(rng.random(), rng.uniform(0.35, 1.0), rng.uniform(0.3, 0.95))
        gap = min(_distance(candidate, a) for a in avoid)
        if gap > best:
            color, best = candidate, gap
        if gap > 120:
            break
    pattern: Pattern = rng.choice(["solid", "solid", "stripes", "checks"])  # type: ignore[assignment]
    h, s, v = colorsys.rgb_to_hsv(*(c / 255 for c in color))
    v2 = v * rng.uniform(0.35, 0.7) if v > 0.5 else v + 0.35  # the second colour is darker or lighter
    color2 = _hsv(h + rng.uniform(-0.15, 0.15), s * rng.uniform(0.3, 1.0), v2)
    return Material(color=color, pattern=pattern, color2=color2, period=float(rng.uniform(0.12, 0.3)))


def make_figure_style(seed: int) -> FigureStyle:
    """A seeded random look: body proportions, skin, hair, clothes with patterns, shoes."""
    rng = np.random.default_rng([int(seed), 1])
    skeleton = mo.make_skeleton(rng)
    skin = _hsv(rng.uniform(0.03, 0.1), rng.uniform(0.25, 0.6), rng.uniform(0.35, 0.95))
    hair = _hsv(rng.uniform(0.02, 0.12), rng.uniform(0.2, 0.8), rng.uniform(0.08, 0.75))
    shirt = _cloth(rng, [skin])
    trousers = _cloth(rng, [skin, shirt.color])
    shoes = _hsv(rng.random(), rng.uniform(0.0, 0.6), rng.uniform(0.05, 0.9))
    return FigureStyle(
        skeleton=skeleton,
        skin=skin,
        hair=hair,
        shirt=shirt,
        trousers=trousers,
        shoes=shoes,
        eyes=_hsv(rng.uniform(0.0, 0.7), rng.uniform(0.3, 0.9), rng.uniform(0.1, 0.4)),
        mouth=_hsv(rng.uniform(-0.03, 0.03), rng.uniform(0.4, 0.7), rng.uniform(0.35, 0.6)),
        has_long_sleeves=bool(rng.random() < 0.5),
        has_shorts=bool(rng.random() < 0.3),
        has_long_hair=bool(rng.random() < 0.4),
        has_hands=True,
        build=float(rng.uniform(0.8, 1.25)),
        shade=float(rng.uniform(0.15, 0.4)),
    )


# ----- backgrounds -----------------------------------------------------------------------------


def make_background(seed: int, height_px: int, width_px: int, kind: BackgroundKind | None = None) -> np.ndarray:
    """A seeded background, uint8 (height_px, width_px, 3) RGB: flat, gradient, shapes, noise or room."""
    import cv2

    rng = np.random.default_rng([int(seed), 3])
    chosen: BackgroundKind = kind if kind is not None else rng.choice(BACKGROUND_KINDS)  # type: ignore[assignment]
    h, w = int(height_px), int(width_px)

    def colour() -> np.ndarray:
        return np.array(_hsv(rng.random(), rng.uniform(0.0, 0.7), rng.uniform(0.25, 1.0)), dtype=np.float32)

    if chosen == "flat":
        img = np.broadcast_to(colour(), (h, w, 3)).copy()
    elif chosen == "gradient":
        a = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        s = (xx - w / 2) * math.cos(a) + (yy - h / 2) * math.sin(a)
        s = (s - s.min()) / max(float(s.max() - s.min()), 1e-6)
        img = colour() * (1 - s[..., None]) + colour() * s[..., None]
    elif chosen == "noise":
        img = np.zeros((h, w, 3), np.float32)
        c0, c1 = colour(), colour()
        n = np.zeros((h, w), np.float32)
        for octave, weight in ((4, 0.55), (12, 0.3), (40, 0.15)):
            small = rng.random((octave * h // max(h, w) + 2, octave * w // max(h, w) + 2)).astype(np.float32)
            n += weight * cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
        n = np.clip((n - n.min()) / max(float(n.max() - n.min()), 1e-6), 0, 1)
        img = c0 * (1 - n[..., None]) + c1 * n[..., None]
    elif chosen == "shapes":
        canvas = np.broadcast_to(colour(), (h, w, 3)).astype(np.uint8).copy()
        for _ in range(int(rng.integers(4, 14))):
            c = tuple(int(v) for v in colour())
            x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
            size = int(rng.integers(max(h, w) // 20, max(h, w) // 3))
            shape = rng.integers(0, 3)
            if shape == 0:
                cv2.circle(canvas, (x, y), size, c, -1, cv2.LINE_AA)
            elif shape == 1:
                cv2.rectangle(canvas, (x, y), (x + size, y + int(size * rng.uniform(0.3, 2))), c, -1, cv2.LINE_AA)
            else:
                pts = np.array([[x + rng.integers(-size, size), y + rng.integers(-size, size)] for _ in range(3)])
                cv2.fillConvexPoly(canvas, pts.astype(np.int32), c, cv2.LINE_AA)
        img = cv2.GaussianBlur(canvas, (0, 0), rng.uniform(0.5, 3.0)).astype(np.float32)
    else:  # room: a wall over a floor, the floor a little darker and vignetted
        horizon = int(h * rng.uniform(0.55, 0.85))
        img = np.empty((h, w, 3), np.float32)
        img[:horizon] = colour()
        floor = colour() * 0.8
        ramp = np.linspace(0.85, 1.1, h - horizon, dtype=np.float32)[:, None, None]
        img[horizon:] = floor * ramp
    grain = rng.normal(0.0, rng.uniform(0.0, 6.0), size=(h, w, 1)).astype(np.float32)
    return np.clip(img + grain, 0, 255).astype(np.uint8)


# ----- renderer ----------------------------------------------------------------------------------


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.hypot(v[0], v[1]))
    return v / n if n > 1e-9 else np.array([0.0, 1.0])


class _Painter:
    """Alpha-composites analytic shapes into a float32 RGB image, one part box at a time."""

    def __init__(self, image: np.ndarray, shade: float) -> None:
        self.img = image
        self.h, self.w = image.shape[:2]
        self.shade = shade
        self.extent = [math.inf, math.inf, -math.inf, -math.inf]  # union of part boxes, x0 y0 x1 y1

    def _box(self, lo: np.ndarray, hi: np.ndarray) -> tuple[slice, slice, np.ndarray, np.ndarray] | None:
        e = self.extent  # anti-aliasing tints pixels whose centre is within 0.5 px outside a shape
        e[0], e[1] = min(e[0], float(lo[0]) - 1.0), min(e[1], float(lo[1]) - 1.0)
        e[2], e[3] = max(e[2], float(hi[0]) + 1.0), max(e[3], float(hi[1]) + 1.0)
        x0, y0 = max(int(math.floor(lo[0])) - 1, 0), max(int(math.floor(lo[1])) - 1, 0)
        x1, y1 = min(int(math.ceil(hi[0])) + 2, self.w), min(int(math.ceil(hi[1])) + 2, self.h)
        if x1 <= x0 or y1 <= y0:
            return None
        ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        return slice(y0, y1), slice(x0, x1), xs + 0.5, ys + 0.5

    def _blend(self, sy: slice, sx: slice, alpha: np.ndarray, colour: np.ndarray) -> None:
        a = alpha[..., None]
        region = self.img[sy, sx]
        region *= 1.0 - a
        region += colour * a

    def _texture(self, mat: Material, u: np.ndarray, v: np.ndarray, unit: float) -> np.ndarray:
        base = np.array(mat.color, np.float32)
        if mat.pattern == "solid":
            return np.broadcast_to(base, u.shape + (3,))
        period = max(mat.period * unit, 4.0)
        k = period / math.pi  # about one pixel of blend at each pattern edge
        s = np.sin(2 * math.pi * u / period)
        if mat.pattern == "checks":
            s = s * np.sin(2 * math.pi * v / period)
        m = np.clip(s * k + 0.5, 0.0, 1.0)[..., None]
        return base * (1 - m) + np.array(mat.color2, np.float32) * m

    def capsule(self, p: np.ndarray, q: np.ndarray, r1: float, r2: float, mat: Material, unit: float) -> None:
        """A tapered capsule from p (radius r1) to q (radius r2), shaded across and patterned along."""
        rmax = max(r1, r2)
        box = self._box(np.minimum(p, q) - rmax, np.maximum(p, q) + rmax)
        if box is None:
            return
        sy, sx, xs, ys = box
        d = q - p
        length = float(np.hypot(d[0], d[1]))
        if length < 1e-6:
            d, length = np.array([0.0, 1.0]), 1e-6
        dx, dy = float(d[0]) / length, float(d[1]) / length
        rx, ry = xs - float(p[0]), ys - float(p[1])
        along = rx * dx + ry * dy
        across = ry * dx - rx * dy
        t = np.clip(along / length, 0.0, 1.0)
        dist = np.hypot(rx - t * length * dx, ry - t * length * dy)
        radius = r1 + t * (r2 - r1)
        alpha = np.clip(radius - dist + 0.5, 0.0, 1.0)
        if not alpha.any():
            return
        colour = self._texture(mat, along, across, unit)
        shading = 1.0 - self.shade * np.clip(across / np.maximum(radius, 1e-3), -1, 1) ** 2
        self._blend(sy, sx, alpha, colour * shading[..., None])

    def polygon(
        self, pts: np.ndarray, p: np.ndarray, q: np.ndarray, half_width: float, mat: Material, unit: float
    ) -> None:
        """A convex polygon (n, 2), textured in the frame of axis p -> q, shaded across half_width."""
        box = self._box(pts.min(axis=0), pts.max(axis=0))
        if box is None:
            return
        sy, sx, xs, ys = box
        area = 0.5 * float(np.sum(pts[:, 0] * np.roll(pts[:, 1], -1) - np.roll(pts[:, 0], -1) * pts[:, 1]))
        sdf = np.full(xs.shape, -np.inf, np.float32)
        for a, b in zip(pts, np.roll(pts, -1, axis=0)):
            e = b - a
            n = np.array([e[1], -e[0]]) / max(float(np.hypot(e[0], e[1])), 1e-9)
            if area < 0:
                n = -n
            sdf = np.maximum(sdf, (xs - a[0]) * n[0] + (ys - a[1]) * n[1])
        alpha = np.clip(0.5 - sdf, 0.0, 1.0)
        d = _unit(q - p)
        along = (xs - p[0]) * d[0] + (ys - p[1]) * d[1]
        across = (ys - p[1]) * d[0] - (xs - p[0]) * d[1]
        colour = self._texture(mat, along, across, unit)
        shading = 1.0 - self.shade * np.clip(across / max(half_width, 1.0), -1, 1) ** 2
        self._blend(sy, sx, alpha, colour * shading[..., None])

    def disc(self, c: np.ndarray, r: float, colour: Rgb | np.ndarray, shade: float = 0.0) -> None:
        box = self._box(c - r, c + r)
        if box is None:
            return
        sy, sx, xs, ys = box
        dist = np.hypot(xs - c[0], ys - c[1])
        alpha = np.clip(r - dist + 0.5, 0.0, 1.0)
        col = np.array(colour, np.float32) * (1.0 - shade * np.clip(dist / max(r, 1e-3), 0, 1) ** 2)[..., None]
        self._blend(sy, sx, alpha, col)

    def head(self, c: np.ndarray, r: float, across: np.ndarray, up: np.ndarray, yaw: float, style: FigureStyle) -> None:
        """A shaded sphere with hair, eyes and mouth placed by (lon, lat) relative to the face."""
        box = self._box(c - r, c + r)
        if box is None:
            return
        sy, sx, xs, ys = box
        rx, ry = xs - float(c[0]), ys - float(c[1])
        lat_px = rx * float(across[0]) + ry * float(across[1])
        up_px = rx * float(up[0]) + ry * float(up[1])
        dist = np.hypot(rx, ry)
        alpha = np.clip(r - dist + 0.5, 0.0, 1.0)
        inside = np.clip(dist / r, 0.0, 0.999)
        z = np.sqrt(1.0 - inside**2) * r
        lon = np.arctan2(lat_px, z) - yaw
        lat = np.arcsin(np.clip(up_px / r, -1.0, 1.0))
        skin = np.array(style.skin, np.float32)
        colour = np.broadcast_to(skin, xs.shape + (3,)).copy()

        def paint(mask: np.ndarray, rgb: Rgb) -> None:
            nonlocal colour
            colour = colour * (1 - mask[..., None]) + np.array(rgb, np.float32) * mask[..., None]

        cos_lat = np.cos(lat)
        for side in (-1.0, 1.0):
            e = np.hypot((lon - side * mo.EYE_LON) * cos_lat / 0.13, (lat - mo.EYE_LAT) / 0.07)
            paint(np.clip((1 - e) * 0.07 * r + 0.5, 0, 1), (245, 245, 240))
            pupil = np.hypot((lon - side * mo.EYE_LON) * cos_lat / 0.065, (lat - mo.EYE_LAT) / 0.065)
            paint(np.clip((1 - pupil) * 0.065 * r + 0.5, 0, 1), style.eyes)
        mouth = np.hypot(lon * cos_lat / 0.24, (lat - mo.MOUTH_LAT) / 0.055)
        paint(np.clip((1 - mouth) * 0.055 * r + 0.5, 0, 1), style.mouth)
        hairline = 0.38 - 0.12 * np.cos(lon)  # lower at the temples
        hair = np.maximum(
            np.clip((lat - hairline) * r + 0.5, 0, 1),
            np.clip((np.abs(lon) - 1.5) * r * cos_lat + 0.5, 0, 1),
        )
        paint(hair, style.hair)
        light = 0.72 + 0.28 * (z / r)
        self._blend(sy, sx, alpha, colour * light[..., None])


def _px(frame: PoseFrame, width_px: int, height_px: int) -> tuple[np.ndarray, np.ndarray]:
    """All 136 points in pixels (136, 2) and their visibility (136,)."""
    pts = np.concatenate([frame.body, frame.feet, frame.hands.reshape(-1, 2), frame.face]) * np.array(
        [float(width_px), float(height_px)]
    )
    vis = np.concatenate(
        [frame.body_visible, frame.feet_visible, frame.hand_visible.reshape(-1), frame.face_visible]
    )
    return pts, vis


def _head_pose(
    b: np.ndarray, v: np.ndarray, style: FigureStyle, unit: float, torso_up: np.ndarray
) -> tuple[np.ndarray, float, np.ndarray, np.ndarray, float] | None:
    """Recover head centre, radius, across/up axes and yaw from nose, eyes, ears and neck."""
    sk = style.skeleton
    r = sk.head_radius / sk.torso * unit
    if v[mo.R_EYE] and v[mo.L_EYE] and np.hypot(*(b[mo.L_EYE] - b[mo.R_EYE])) > 1e-3:
        across = _unit(b[mo.L_EYE] - b[mo.R_EYE])
    elif v[mo.R_EAR] and v[mo.L_EAR]:
        across = _unit(b[mo.L_EAR] - b[mo.R_EAR])
    else:
        across = np.array([-torso_up[1], torso_up[0]])
    up = np.array([across[1], -across[0]])
    lon, lat, rho = mo.NOSE_LON_LAT_RHO
    if v[mo.NOSE] and v[mo.NECK]:
        lateral = float(np.dot(b[mo.NOSE] - b[mo.NECK], across))
        sin_yaw = float(np.clip(lateral / (rho * r * math.cos(lat)), -0.99, 0.99))
        yaw = math.asin(sin_yaw)
        centre = b[mo.NOSE] - across * lateral - up * (rho * r * math.sin(lat))
    elif v[mo.NECK]:
        yaw = 0.0
        centre = b[mo.NECK] + up * (sk.neck / sk.torso * unit)
    elif v[mo.NOSE]:
        yaw = 0.0
        centre = b[mo.NOSE]
    else:
        return None
    return centre, r, across, up, yaw


def render_figure(
    style: FigureStyle,
    keypoints: PoseFrame,
    height_px: int,
    width_px: int,
    background: np.ndarray | Rgb | None = None,
) -> np.ndarray:
    """Draw the figure of ``style`` in pose ``keypoints``: uint8 (height_px, width_px, 3) RGB.

    ``background`` is an RGB uint8 image of that size, one colour, or None (mid grey). Parts whose
    joints are invisible are skipped, so poses from real videos with missing joints also render.
    """
    return render_figure_with_box(style, keypoints, height_px, width_px, background)[0]


def render_figure_with_box(
    style: FigureStyle,
    keypoints: PoseFrame,
    height_px: int,
    width_px: int,
    background: np.ndarray | Rgb | None = None,
) -> tuple[np.ndarray, tuple[float, float, float, float] | None]:
    """``render_figure`` plus the figure's box (x0, y0, x1, y1) in pixels, clipped to the image.

    The box is the union of the drawn parts' boxes (within a pixel of the painted silhouette):
    the ground truth a person detector learns. None when nothing was drawn.
    """
    h, w = int(height_px), int(width_px)
    if background is None:
        img = np.full((h, w, 3), 128.0, np.float32)
    elif isinstance(background, np.ndarray):
        if background.shape != (h, w, 3):
            raise ValueError(f"background must be ({h}, {w}, 3), got {background.shape}")
        img = background.astype(np.float32)
    else:
        img = np.empty((h, w, 3), np.float32)
        img[:] = np.array(background, np.float32)
    pts, vis = _px(keypoints, w, h)
    b, bv = pts[mo.BODY], vis[mo.BODY]
    hands = pts[mo.HANDS].reshape(2, 21, 2)
    paint = _Painter(img, style.shade)

    # body scale: torso length in pixels (falls back to shoulders, then to the frame)
    hip_c = None
    if bv[mo.R_HIP] and bv[mo.L_HIP]:
        hip_c = (b[mo.R_HIP] + b[mo.L_HIP]) / 2
    elif bv[mo.R_HIP] or bv[mo.L_HIP]:
        hip_c = b[mo.R_HIP] if bv[mo.R_HIP] else b[mo.L_HIP]
    if bv[mo.NECK] and hip_c is not None and np.hypot(*(hip_c - b[mo.NECK])) > 1:
        unit = float(np.hypot(*(hip_c - b[mo.NECK])))
        torso_up = _unit(b[mo.NECK] - hip_c)
    elif bv[mo.R_SHOULDER] and bv[mo.L_SHOULDER]:
        unit = 1.4 * float(np.hypot(*(b[mo.L_SHOULDER] - b[mo.R_SHOULDER])))
        torso_up = np.array([0.0, -1.0])
    else:
        unit = 0.3 * min(h, w)
        torso_up = np.array([0.0, -1.0])
    unit = max(unit, 2.0)
    k = style.build * unit
    head = _head_pose(b, bv, style, unit, torso_up)
    yaw = head[4] if head is not None else 0.0
    skin = Material(style.skin)

    def seg(i: int, j: int, r1: float, r2: float, mat: Material) -> None:
        if bv[i] and bv[j]:
            paint.capsule(b[i], b[j], r1, r2, mat, unit)

    def arm(side: int) -> None:
        sh, el, wr = (2, 3, 4) if side < 0 else (5, 6, 7)
        seg(sh, el, 0.115 * k, 0.09 * k, style.limb_material((sh, el)))
        seg(el, wr, 0.085 * k, 0.065 * k, style.limb_material((el, wr)))
        hand = hands[1 if side < 0 else 0]
        if style.has_hands and bv[wr]:
            if vis[mo.HANDS].reshape(2, 21)[1 if side < 0 else 0, 12]:
                palm = b[wr] + 0.5 * (hand[12] - b[wr])  # halfway to the middle fingertip
                paint.capsule(b[wr], palm, 0.07 * k, 0.09 * k, skin, unit)
            else:
                paint.disc(b[wr], 0.085 * k, style.skin, shade=style.shade)

    def leg(side: int) -> None:
        hp, kn, an, ft = (8, 9, 10, 19) if side < 0 else (11, 12, 13, 18)
        seg(hp, kn, 0.17 * k, 0.125 * k, style.limb_material((hp, kn)))
        seg(kn, an, 0.12 * k, 0.085 * k, style.limb_material((kn, an)))
        seg(an, ft, 0.085 * k, 0.075 * k, Material(style.shoes))

    # depth: a positive yaw turns the nose to image right and brings the person's right side forward
    depth = {-1: math.sin(yaw), 1: -math.sin(yaw)}
    if head is not None and style.has_long_hair:
        c, r, across, up, _ = head
        back = c - across * math.sin(yaw) * 0.35 * r
        paint.capsule(back, back - up * 2.2 * r, 1.08 * r, 0.95 * r, Material(style.hair), unit)
    far_arms = [s for s in (-1, 1) if depth[s] < -0.25]
    for s in far_arms:
        arm(s)
    for s in sorted((-1, 1), key=lambda s: depth[s]):
        leg(s)
    if bv[mo.NECK] and hip_c is not None:
        neck = b[mo.NECK]
        down = _unit(hip_c - neck)
        across_t = np.array([down[1], -down[0]])  # image right when upright
        if bv[mo.R_SHOULDER] and bv[mo.L_SHOULDER]:
            sh_half = float(np.hypot(*(b[mo.L_SHOULDER] - b[mo.R_SHOULDER]))) / 2
        else:
            sh_half = 0.37 * unit
        if bv[mo.R_HIP] and bv[mo.L_HIP]:
            hip_half = float(np.hypot(*(b[mo.L_HIP] - b[mo.R_HIP]))) / 2
        else:
            hip_half = 0.2 * unit
        turn = abs(math.sin(yaw))
        chest = math.hypot(sh_half + 0.07 * k, 0.3 * k * turn)
        waist_half = math.hypot(hip_half + 0.1 * k, 0.28 * k * turn)
        pelvis_half = math.hypot(hip_half + 0.15 * k, 0.3 * k * turn)
        waist = neck + (hip_c - neck) * 0.72
        bottom = hip_c + down * 0.12 * k
        trousers = np.array(
            [waist - across_t * waist_half, waist + across_t * waist_half,
             bottom + across_t * pelvis_half, bottom - across_t * pelvis_half]
        )  # fmt: skip
        paint.polygon(trousers, neck, hip_c, pelvis_half, style.trousers, unit)
        top = neck - down * 0.04 * k
        shirt = np.array(
            [top - across_t * chest * 0.8, top + across_t * chest * 0.8, neck + down * 0.12 * k + across_t * chest,
             waist + down * 0.05 * k + across_t * waist_half, waist + down * 0.05 * k - across_t * waist_half,
             neck + down * 0.12 * k - across_t * chest]
        )  # fmt: skip
        paint.polygon(shirt, neck, hip_c, chest, style.shirt, unit)
    if head is not None:
        c, r, across, up, _ = head
        if bv[mo.NECK]:
            paint.capsule(b[mo.NECK], c, 0.13 * k, 0.12 * k, skin, unit)
        for ear in (mo.R_EAR, mo.L_EAR):
            if bv[ear]:
                paint.disc(b[ear], 0.22 * r, style.skin, shade=0.3)
        paint.head(c, r, across, up, yaw, style)
        if bv[mo.NOSE] and abs(yaw) > 0.15:
            paint.disc(b[mo.NOSE], 0.17 * r, tuple(int(0.92 * x) for x in style.skin))  # type: ignore[arg-type]
    for s in sorted((s for s in (-1, 1) if s not in far_arms), key=lambda s: depth[s]):
        arm(s)
    image = np.clip(np.rint(paint.img), 0, 255).astype(np.uint8)
    x0, y0, x1, y1 = paint.extent
    x0, y0, x1, y1 = max(x0, 0.0), max(y0, 0.0), min(x1, float(w)), min(y1, float(h))
    return image, ((x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None)


# ----- examples ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Example:
    """One training/demo sample: a reference photo, a driving clip of the same figure, keypoints.

    ``photo`` uint8 (h, w, 3); ``frames`` uint8 (f, h, w, 3); keypoints normalised as PoseFrame,
    each with ``box_xyxy`` set to the rendered figure's box in pixels (a detector's ground truth).
    """

    photo: np.ndarray
    frames: np.ndarray
    keypoints_photo: PoseFrame
    keypoints_frames: PoseSequence
    fps: float
    style: FigureStyle


def make_example_poses(
    seed: int, num_frames: int, height_px: int, width_px: int, fps: float = 15.0
) -> tuple[FigureStyle, PoseFrame, PoseSequence]:
    """The keypoints of ``make_example`` without rendering: (style, photo pose, clip poses).

    The photo pose is a relaxed stance under the same camera scale as the clip, standing where
    frame 0 stands, so aligned driving poses land on the photo's body. Every visible point and the
    drawn flesh around it stays inside the frame.
    """
    if height_px < 16 or width_px < 16:
        raise ValueError(f"frame size must be at least 16x16, got {height_px}x{width_px}")
    style = make_figure_style(seed)
    motion = mo.make_motion(seed, num_frames, fps, skeleton=style.skeleton)
    rest = dataclasses.replace(mo.neutral_angles(), root_x=motion.angles.root_x[:1].copy())
    rest_pts, rest_vis = mo.pose_points(style.skeleton, rest)
    rng = np.random.default_rng([int(seed), 4])
    photo_place, clip_place = mo.place(
        style.skeleton,
        [(rest_pts, rest_vis, motion.zoom[:1]), (motion.points, motion.visible, motion.zoom)],
        height_px,
        width_px,
        rng,
    )
    keypoints_photo = mo.to_pose_frame(photo_place.apply(rest_pts[0], 0), rest_vis[0], height_px, width_px)
    return style, keypoints_photo, mo.motion_keypoints(motion, clip_place, height_px, width_px)


def make_example(seed: int, num_frames: int, height_px: int, width_px: int, fps: float = 15.0) -> Example:
    """The figure of ``seed`` standing (photo) and dancing (frames) over one background, one camera.

    Because photo and clip share figure, camera and background, the clip is the ground truth for
    animating the photo with the clip's poses. About 5 ms a frame at 384x256 on one core.
    """
    style, keypoints_photo, keypoints_frames = make_example_poses(seed, num_frames, height_px, width_px, fps)
    background = make_background(seed, height_px, width_px)
    return _render_example(style, keypoints_photo, keypoints_frames, background, fps)


def _render_example(
    style: FigureStyle, keypoints_photo: PoseFrame, clip: PoseSequence, background: np.ndarray, fps: float
) -> Example:
    """Render the photo and every clip frame over ``background``; keypoints gain the figure boxes."""
    photo, keypoints_photo = _render_boxed(style, keypoints_photo, background)
    frames, clip = _render_clip(style, clip, background)
    return Example(
        photo=photo,
        frames=frames,
        keypoints_photo=keypoints_photo,
        keypoints_frames=clip,
        fps=float(fps),
        style=style,
    )


def _render_boxed(style: FigureStyle, keypoints: PoseFrame, background: np.ndarray) -> tuple[np.ndarray, PoseFrame]:
    """Render over ``background`` and return the image and the keypoints carrying the figure's box."""
    h, w = background.shape[:2]
    image, box = render_figure_with_box(style, keypoints, h, w, background)
    return image, dataclasses.replace(keypoints, box_xyxy=box)


def _render_clip(style: FigureStyle, poses: PoseSequence, background: np.ndarray) -> tuple[np.ndarray, PoseSequence]:
    rendered = [_render_boxed(style, kp, background) for kp in poses.frames]
    frames = np.stack([img for img, _ in rendered])
    return frames, dataclasses.replace(poses, frames=tuple(kp for _, kp in rendered))


@dataclass(frozen=True)
class TransferExample:
    """Motion transfer with ground truth: person A's photo, person B's dance, A doing B's dance.

    ``driving`` is B's own example (its frames are the driving video). ``target`` holds A's photo
    and A rendered over A's background in B's poses *aligned to A's photo* (``pose.align``,
    robust mode), i.e. what an animation of A's photo with B's video should look like.
    """

    target: Example
    driving: Example


def make_transfer_example(
    photo_seed: int, dance_seed: int, num_frames: int, height_px: int, width_px: int, fps: float = 15.0
) -> TransferExample:
    """A's photo (``photo_seed``), B's dance video (``dance_seed``) and the aligned ground truth."""
    from unianimate_cli.pose.align import align_poses

    driving = make_example(dance_seed, num_frames, height_px, width_px, fps)
    # A's photo is framed for a dance of this length (its own), which leaves room for B's too
    style, keypoints_photo, _ = make_example_poses(photo_seed, num_frames, height_px, width_px, fps)
    aligned = align_poses(keypoints_photo, driving.keypoints_frames.frames, mode="robust").frames
    background = make_background(photo_seed, height_px, width_px)
    clip = PoseSequence(frames=aligned, fps=float(fps), source="synthetic", meta={"aligned": True})
    return TransferExample(target=_render_example(style, keypoints_photo, clip, background, fps), driving=driving)


def write_example(folder: Path | str, example: Example) -> dict[str, Path]:
    """Write ``photo.png``, ``dance.mp4`` and the ground-truth poses (``photo_pose.jsonl``,
    ``dance_poses.jsonl``, the pose library's format) into ``folder`` (created if needed)."""
    from unianimate_cli.media.image import save_image
    from unianimate_cli.media.video import write_video
    from unianimate_cli.pose.keypoints import save_poses

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "photo": folder / "photo.png",
        "video": folder / "dance.mp4",
        "photo_pose": folder / "photo_pose.jsonl",
        "video_poses": folder / "dance_poses.jsonl",
    }
    save_image(paths["photo"], example.photo)
    write_video(paths["video"], iter(example.frames), example.fps)
    save_poses(paths["photo_pose"], PoseSequence(frames=(example.keypoints_photo,), source="synthetic"))
    save_poses(paths["video_poses"], example.keypoints_frames)
    return paths
