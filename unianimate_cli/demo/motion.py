"""Skeletons and dance-like motion for synthetic people, as OpenPose-layout keypoints.

The figure lives in *body units*: its standing height (sole to top of head) is about 1, x points
right, y points down and the floor is y = 0. A pose is a set of joint angles; forward kinematics
turns it into points. Everything is 2D: a turn (``yaw``) only narrows the shoulders and hips
(``cos yaw``) and slides the face over a spherical head, so the chain limbs (upper arm, forearm,
thigh, shin) and the torso (neck to hip centre) keep their lengths in every frame.

Point layout of the internal ``(f, k, 2)`` arrays (k = ``NUM_POINTS`` = 136), in the order of
``unianimate_cli.pose.keypoints.PoseFrame``: 20 body points (OpenPose 18 + left foot, right
foot), 6 COCO-WholeBody foot points, 2 x 21 hand points [left, right], 68 face points.

The head is a sphere of radius ``head_radius`` around the head centre; a face point sits at
longitude ``lon`` (0 = the nose direction, positive = the person's left) and latitude ``lat``
(positive = up), at ``rho`` head radii. It shows at lateral ``rho r sin(lon + yaw) cos(lat)``
and is visible while it faces the camera (``cos(lon + yaw) cos(lat) > 0``, the ears a little
past that). The renderer (``synth.py``) inverts this model from the keypoints alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

from unianimate_cli.pose.keypoints import NUM_BODY, NUM_FACE, NUM_FEET, NUM_HAND, PoseFrame, PoseSequence

BODY = slice(0, NUM_BODY)
FEET = slice(NUM_BODY, NUM_BODY + NUM_FEET)
HANDS = slice(FEET.stop, FEET.stop + 2 * NUM_HAND)
FACE = slice(HANDS.stop, HANDS.stop + NUM_FACE)
NUM_POINTS = FACE.stop

# Body joints (OpenPose order) used by name below.
NOSE, NECK, R_SHOULDER, R_ELBOW, R_WRIST, L_SHOULDER, L_ELBOW, L_WRIST = range(8)
R_HIP, R_KNEE, R_ANKLE, L_HIP, L_KNEE, L_ANKLE, R_EYE, L_EYE, R_EAR, L_EAR = range(8, 18)
L_FOOT, R_FOOT = 18, 19

# Limbs whose length never changes (body joint pairs); the torso is neck -> hip centre.
RIGID_LIMBS = ((2, 3), (3, 4), (5, 6), (6, 7), (8, 9), (9, 10), (11, 12), (12, 13))

# Head-sphere positions (lon, lat, rho) of the face keypoints; the renderer draws the same features.
NOSE_LON_LAT_RHO = (0.0, -0.08, 1.15)
EYE_LON, EYE_LAT = 0.42, 0.15
EAR_LON, EAR_LAT = 1.62, 0.0
MOUTH_LAT = -0.5
_EAR_VISIBLE_DEPTH = -0.12  # an ear just behind the silhouette is still detected


def _face_template() -> np.ndarray:
    """(68, 3) lon, lat, rho of the 68 iBUG/COCO-WholeBody face points (0 = jaw at the right ear)."""
    pts: list[tuple[float, float, float]] = []
    for i in range(17):  # jaw, person's right to left
        s = i / 8.0 - 1.0
        pts.append((1.35 * s, -0.05 - 0.85 * (1.0 - abs(s) ** 1.6), 1.0))
    for lo, hi in ((-0.75, -0.12), (0.12, 0.75)):  # brows
        for lon in np.linspace(lo, hi, 5):
            mid = (lo + hi) / 2
            pts.append((float(lon), 0.36 + 0.06 * (1 - ((lon - mid) / 0.32) ** 2), 1.0))
    for i in range(4):  # nose bridge
        pts.append((0.0, 0.22 - 0.1 * i, 1.0 + 0.05 * i))
    for lon in np.linspace(-0.18, 0.18, 5):  # nostrils
        pts.append((float(lon), -0.2, 1.08 - 0.2 * abs(float(lon))))
    for cx, order in ((-EYE_LON, (180, 120, 60, 0, -60, -120)), (EYE_LON, (180, 120, 60, 0, -60, -120))):
        for deg in order:  # corner, upper lid, corner, lower lid
            a = math.radians(deg)
            pts.append((cx + 0.14 * math.cos(a), EYE_LAT + 0.05 * math.sin(a), 1.0))
    for deg in range(180, -180, -30):  # outer lips from the right corner
        a = math.radians(deg)
        pts.append((0.28 * math.cos(a), MOUTH_LAT + 0.1 * math.sin(a), 1.0))
    for deg in range(180, -180, -45):  # inner lips
        a = math.radians(deg)
        pts.append((0.2 * math.cos(a), MOUTH_LAT + 0.04 * math.sin(a), 1.0))
    out = np.array(pts, dtype=np.float64)
    assert out.shape == (NUM_FACE, 3)
    return out


FACE_TEMPLATE = _face_template()


@dataclass(frozen=True)
class Skeleton:
    """Segment lengths of one figure, in body units (standing height about 1)."""

    torso: float  # neck -> hip centre
    neck: float  # neck -> head centre
    head_radius: float
    shoulder_half_width: float
    hip_half_width: float
    upper_arm: float
    forearm: float
    hand: float  # wrist -> middle fingertip
    thigh: float
    shin: float
    foot: float  # ankle -> toes, seen in profile
    ankle_height: float  # sole -> ankle

    @property
    def height(self) -> float:
        """Standing height, sole to top of head."""
        return self.ankle_height + self.shin + self.thigh + self.torso + self.neck + self.head_radius


_BASE_SKELETON = Skeleton(
    torso=0.31, neck=0.105, head_radius=0.062, shoulder_half_width=0.115, hip_half_width=0.065,
    upper_arm=0.18, forearm=0.155, hand=0.1, thigh=0.245, shin=0.235, foot=0.1, ankle_height=0.04,
)  # fmt: skip


def make_skeleton(rng: np.random.Generator) -> Skeleton:
    """Proportions of a random adult-ish figure: each length within about 8% of a typical body."""
    jitter = {f.name: float(rng.uniform(0.92, 1.08)) for f in fields(Skeleton)}
    raw = Skeleton(**{name: getattr(_BASE_SKELETON, name) * jitter[name] for name in jitter})
    k = 1.0 / raw.height
    return Skeleton(**{f.name: getattr(raw, f.name) * k for f in fields(Skeleton)})


@dataclass(frozen=True)
class JointAngles:
    """Per-frame pose parameters, each ``(f,)`` float64 (radians or body units).

    Arm angles are measured from the torso's down direction toward the arm's own side (pi = arm
    straight up); the forearm angle adds ``*_elbow``. Leg angles are measured from straight down
    toward the leg's side; the shin angle is the thigh angle minus ``*_knee`` (knees bend outward).
    """

    root_x: np.ndarray  # hip centre x
    lean: np.ndarray  # torso rotation, positive leans to image right
    yaw: np.ndarray  # turn, positive turns the nose to image right
    head_tilt: np.ndarray
    r_arm: np.ndarray
    r_elbow: np.ndarray
    l_arm: np.ndarray
    l_elbow: np.ndarray
    r_leg: np.ndarray
    r_knee: np.ndarray
    l_leg: np.ndarray
    l_knee: np.ndarray
    r_shrug: np.ndarray
    l_shrug: np.ndarray

    @property
    def num_frames(self) -> int:
        return int(self.root_x.shape[0])


def neutral_angles(num_frames: int = 1) -> JointAngles:
    """A relaxed standing pose facing the camera, arms slightly away from the body."""
    z = np.zeros(num_frames)
    return JointAngles(
        root_x=z, lean=z, yaw=z, head_tilt=z, r_arm=z + 0.3, r_elbow=z + 0.12, l_arm=z + 0.3,
        l_elbow=z + 0.12, r_leg=z + 0.07, r_knee=z, l_leg=z + 0.07, l_knee=z, r_shrug=z, l_shrug=z,
    )  # fmt: skip


def _rot(v: np.ndarray, ang: np.ndarray) -> np.ndarray:
    """Rotate (f, 2) vectors by (f,) angles (screen coordinates, y down: positive = clockwise)."""
    c, s = np.cos(ang), np.sin(ang)
    return np.stack([c * v[:, 0] - s * v[:, 1], s * v[:, 0] + c * v[:, 1]], axis=-1)


def _dir(down: np.ndarray, side: np.ndarray, ang: np.ndarray) -> np.ndarray:
    """Unit vector at angle ``ang`` from ``down`` toward ``side`` (both (f, 2))."""
    return down * np.cos(ang)[:, None] + side * np.sin(ang)[:, None]


def pose_points(skeleton: Skeleton, angles: JointAngles) -> tuple[np.ndarray, np.ndarray]:
    """Forward kinematics: joint angles -> points (f, 136, 2) body units and visibility (f, 136).

    The lower of the two soles rests on the floor (y = 0) in every frame.
    """
    sk = skeleton
    f = angles.num_frames
    pts = np.zeros((f, NUM_POINTS, 2))
    vis = np.ones((f, NUM_POINTS), dtype=bool)
    body = pts[:, BODY]
    cy = np.cos(angles.yaw)[:, None]
    sy = np.sin(angles.yaw)

    hip_c = np.stack([angles.root_x, np.zeros(f)], axis=-1)
    up = np.stack([np.sin(angles.lean), -np.cos(angles.lean)], axis=-1)
    across = np.stack([np.cos(angles.lean), np.sin(angles.lean)], axis=-1)  # person's left when facing us
    neck = hip_c + up * sk.torso
    body[:, NECK] = neck
    body[:, R_SHOULDER] = neck - across * sk.shoulder_half_width * cy + up * angles.r_shrug[:, None]
    body[:, L_SHOULDER] = neck + across * sk.shoulder_half_width * cy + up * angles.l_shrug[:, None]
    body[:, R_HIP] = hip_c - across * sk.hip_half_width * cy
    body[:, L_HIP] = hip_c + across * sk.hip_half_width * cy

    hands = pts[:, HANDS].reshape(f, 2, NUM_HAND, 2)
    for sign, sh, el, wr, arm, elbow, hand_i in (
        (-1.0, R_SHOULDER, R_ELBOW, R_WRIST, angles.r_arm, angles.r_elbow, 1),
        (1.0, L_SHOULDER, L_ELBOW, L_WRIST, angles.l_arm, angles.l_elbow, 0),
    ):
        d1 = _dir(-up, sign * across, arm)
        d2 = _dir(-up, sign * across, arm + elbow)
        body[:, el] = body[:, sh] + d1 * sk.upper_arm
        body[:, wr] = body[:, el] + d2 * sk.forearm
        hands[:, hand_i] = _hand_points(body[:, wr], d2, sign, sk.hand)

    # Legs hang from the hips in a frame that follows only part of the torso lean.
    leg_down = _rot(np.tile([0.0, 1.0], (f, 1)), 0.3 * angles.lean)
    leg_side = _rot(np.tile([1.0, 0.0], (f, 1)), 0.3 * angles.lean)
    feet = pts[:, FEET]
    for sign, hp, kn, an, ft, leg, knee, fi in (
        (-1.0, R_HIP, R_KNEE, R_ANKLE, R_FOOT, angles.r_leg, angles.r_knee, 3),
        (1.0, L_HIP, L_KNEE, L_ANKLE, L_FOOT, angles.l_leg, angles.l_knee, 0),
    ):
        body[:, kn] = body[:, hp] + _dir(leg_down, sign * leg_side, leg) * sk.thigh
        body[:, an] = body[:, kn] + _dir(leg_down, sign * leg_side, leg - knee) * sk.shin
        # toes point along the facing direction, a little outward, and down to the sole
        toe_dir = np.stack([0.9 * sy + 0.35 * sign * cy[:, 0], np.zeros(f)], axis=-1)
        toes = body[:, an] + toe_dir * sk.foot + np.array([0.0, 0.8 * sk.ankle_height])
        body[:, ft] = toes
        width = np.stack([cy[:, 0], np.zeros(f)], axis=-1) * 0.22 * sk.foot
        feet[:, fi] = toes - sign * width  # big toe on the inner side
        feet[:, fi + 1] = toes + sign * width
        feet[:, fi + 2] = body[:, an] - np.stack([sy, np.zeros(f)], axis=-1) * 0.3 * sk.foot + np.array(
            [0.0, 0.85 * sk.ankle_height]
        )

    centre, h_across, h_up = head_frame(neck, up, angles.head_tilt, sk.neck)
    face_pts, face_vis = _sphere_points(centre, h_across, h_up, angles.yaw, sk.head_radius, FACE_TEMPLATE)
    pts[:, FACE] = face_pts
    vis[:, FACE] = face_vis
    special = np.array(
        [NOSE_LON_LAT_RHO, (-EYE_LON, EYE_LAT, 1.0), (EYE_LON, EYE_LAT, 1.0),
         (-EAR_LON, EAR_LAT, 1.0), (EAR_LON, EAR_LAT, 1.0)]  # fmt: skip
    )
    sp, _ = _sphere_points(centre, h_across, h_up, angles.yaw, sk.head_radius, special)
    depth = np.cos(special[None, :, 0] + angles.yaw[:, None])
    for col, j in enumerate((NOSE, R_EYE, L_EYE, R_EAR, L_EAR)):
        body[:, j] = sp[:, col]
        vis[:, j] = depth[:, col] > (_EAR_VISIBLE_DEPTH if j in (R_EAR, L_EAR) else 0.0)

    # Feet on the floor: the lowest sole point defines y = 0.
    sole = np.maximum(feet[:, [2, 5], 1], body[:, [L_FOOT, R_FOOT], 1] + 0.2 * sk.ankle_height).max(axis=1)
    pts[..., 1] -= sole[:, None]
    return pts, vis


def head_frame(
    neck: np.ndarray, up: np.ndarray, tilt: np.ndarray, neck_length: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Head centre (f, 2) and the head's across / up unit vectors (f, 2)."""
    h_up = _rot(up, tilt)
    h_across = np.stack([-h_up[:, 1], h_up[:, 0]], axis=-1)
    return neck + h_up * neck_length, h_across, h_up


def _sphere_points(
    centre: np.ndarray, across: np.ndarray, up: np.ndarray, yaw: np.ndarray, radius: float, template: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Project (n, 3) lon/lat/rho head-sphere points for each frame: (f, n, 2) and visible (f, n)."""
    lon = template[None, :, 0] + yaw[:, None]
    lat = template[None, :, 1]
    rho = template[None, :, 2] * radius
    lateral = rho * np.sin(lon) * np.cos(lat)
    vertical = rho * np.sin(lat)
    out = centre[:, None] + across[:, None] * lateral[..., None] + up[:, None] * vertical[..., None]
    return out, np.cos(lon) * np.cos(lat) > 0.0


def _hand_points(wrist: np.ndarray, direction: np.ndarray, sign: float, length: float) -> np.ndarray:
    """(f, 21, 2) COCO hand points: a flat open hand along ``direction``, thumb toward the body."""
    perp = np.stack([-direction[:, 1], direction[:, 0]], axis=-1) * (-sign)
    out = np.empty((wrist.shape[0], NUM_HAND, 2))
    out[:, 0] = wrist
    # (base along, base across, finger length) per finger, thumb first; lengths in hand lengths
    fingers = ((0.12, 0.2, 0.38), (0.45, 0.13, 0.5), (0.47, 0.04, 0.55), (0.45, -0.05, 0.5), (0.4, -0.13, 0.4))
    for i, (along, side, flen) in enumerate(fingers):
        spread = side * 0.8 if i else 0.9
        fdir = direction * math.cos(spread) + perp * math.sin(spread)
        base = wrist + (direction * along + perp * side) * length
        for j in range(4):
            out[:, 1 + 4 * i + j] = base + fdir * (flen * length * j / 3.0)
    return out


@dataclass(frozen=True)
class Motion:
    """A dance clip in body units: points (f, 136, 2), visibility (f, 136), camera zoom (f,)."""

    skeleton: Skeleton
    angles: JointAngles
    points: np.ndarray
    visible: np.ndarray
    zoom: np.ndarray
    fps: float

    @property
    def num_frames(self) -> int:
        return int(self.points.shape[0])


def _wave(rng: np.random.Generator, t: np.ndarray, amp: float, base_hz: float, ratios: tuple[float, ...]) -> np.ndarray:
    """A sum of sinusoids at ``ratios`` x ``base_hz`` with random phases and weights, peak <= amp."""
    weights = rng.uniform(0.2, 1.0, size=len(ratios))
    weights /= weights.sum()
    phases = rng.uniform(0.0, 2 * np.pi, size=len(ratios))
    out = np.zeros_like(t)
    for w, r, ph in zip(weights, ratios, phases):
        out += amp * w * np.sin(2 * np.pi * r * base_hz * t + ph)
    return out


def make_motion(
    seed: int, num_frames: int, fps: float, skeleton: Skeleton | None = None, is_starting_at_rest: bool = True
) -> Motion:
    """A seeded dance: sums of sinusoids on a random beat per joint, steps, sway, turns, zoom.

    The beat is 80-140 bpm; arms swing up to about 1.3 rad around a raised base, one leg at a time
    lifts on alternate beats, the hips sway and drift, and the figure turns up to about 0.7 rad.
    With ``is_starting_at_rest`` frame 0 is the ``neutral_angles`` stance and the dance fades in
    over 0.3-0.8 s: pose alignment measures its ratios on frame 0, and a frame 0 that matches the
    photo's stance makes them exactly 1 (the reference measures lengths in normalised units, so
    differently pointing limbs would get ratios of 0.7-1.0 on non-square frames and the aligned
    poses would miss the clip's own). Same seed, same clip.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    rng = np.random.default_rng([int(seed), 2])
    sk = skeleton if skeleton is not None else make_skeleton(np.random.default_rng([int(seed), 1]))
    t = np.arange(num_frames) / float(fps)
    beat = rng.uniform(80, 140) / 60.0  # Hz
    energy = rng.uniform(0.5, 1.0)
    slow = beat / rng.choice([4.0, 8.0])

    sway = _wave(rng, t, energy * rng.uniform(0.01, 0.05), beat, (0.5, 1.0))
    drift = _wave(rng, t, rng.uniform(0.0, 0.2), slow, (0.5, 1.0))
    root_x = sway + drift - drift[0]
    lean = 2.5 * sway + _wave(rng, t, energy * 0.06, beat, (1.0, 2.0))
    yaw_amp = rng.choice([0.0, rng.uniform(0.15, 0.7)], p=[0.25, 0.75])
    yaw = yaw_amp * np.sin(2 * np.pi * slow * t) + rng.uniform(-0.1, 0.1)
    head_tilt = _wave(rng, t, energy * 0.18, beat, (0.5, 1.0))

    is_mirrored = rng.random() < 0.5  # arms in phase (both up together) or alternating
    arm_base = rng.uniform(0.3, 1.2)
    arm_amp = energy * rng.uniform(0.4, 1.3)
    r_arm = arm_base + _wave(rng, t, arm_amp, beat, (0.5, 1.0, 2.0))
    l_arm = arm_base + (_wave(rng, t, arm_amp, beat, (0.5, 1.0, 2.0)) if not is_mirrored else r_arm - arm_base)
    elbow_base = rng.uniform(0.1, 1.2)
    r_elbow = elbow_base + _wave(rng, t, energy * 0.7, beat, (1.0, 2.0))
    l_elbow = elbow_base + _wave(rng, t, energy * 0.7, beat, (1.0, 2.0))

    step = np.sin(np.pi * beat * t + rng.uniform(0, 2 * np.pi))  # one step per beat, alternating legs
    step_amp = energy * rng.uniform(0.0, 1.0)
    r_lift = step_amp * np.clip(step, 0, None) ** 2
    l_lift = step_amp * np.clip(-step, 0, None) ** 2
    stance = rng.uniform(0.03, 0.22)
    bounce = _wave(rng, t, energy * 0.25, beat, (1.0,)) ** 2
    r_leg = stance + 0.3 * r_lift + 0.3 * bounce
    l_leg = stance + 0.3 * l_lift + 0.3 * bounce
    r_knee = 1.0 * r_lift + 0.6 * bounce
    l_knee = 1.0 * l_lift + 0.6 * bounce
    shrug = _wave(rng, t, energy * 0.012, beat, (1.0,))

    angles = JointAngles(
        root_x=root_x, lean=lean, yaw=np.clip(yaw, -0.8, 0.8), head_tilt=head_tilt,
        r_arm=np.clip(r_arm, -0.3, 2.9), r_elbow=np.clip(r_elbow, -0.5, 2.2),
        l_arm=np.clip(l_arm, -0.3, 2.9), l_elbow=np.clip(l_elbow, -0.5, 2.2),
        r_leg=np.clip(r_leg, -0.1, 0.9), r_knee=np.clip(r_knee, 0.0, 1.4),
        l_leg=np.clip(l_leg, -0.1, 0.9), l_knee=np.clip(l_knee, 0.0, 1.4),
        r_shrug=shrug, l_shrug=-shrug if is_mirrored else shrug,
    )  # fmt: skip
    fade_s = rng.uniform(0.3, 0.8)
    if is_starting_at_rest:
        w = np.clip(t / fade_s, 0.0, 1.0)
        w = w * w * (3 - 2 * w)  # smoothstep
        rest = neutral_angles(num_frames)
        blended = {}
        for f in fields(angles):
            a, b = getattr(rest, f.name), getattr(angles, f.name)
            blended[f.name] = a + w * (b - a)
        angles = JointAngles(**blended)
    points, visible = pose_points(sk, angles)
    zoom = 1.0 + _wave(rng, t, rng.uniform(0.0, 0.06), slow, (0.5,))
    return Motion(skeleton=sk, angles=angles, points=points, visible=visible, zoom=zoom, fps=float(fps))


@dataclass(frozen=True)
class Placement:
    """Body units -> pixels per frame: ``px = (p - anchor) * scale_px[f] + centre_px``."""

    scale_px: np.ndarray  # (f,) pixels per body unit
    anchor: tuple[float, float]  # body-unit point that maps to centre_px
    centre_px: tuple[float, float]

    def apply(self, points: np.ndarray, frame: int) -> np.ndarray:
        """(k, 2) body units of one frame -> (k, 2) pixels."""
        return (points - np.array(self.anchor)) * self.scale_px[frame] + np.array(self.centre_px)


def _extent(skeleton: Skeleton, points: np.ndarray, visible: np.ndarray) -> tuple[float, float, float, float]:
    """Body-unit box (x0, y0, x1, y1) holding every visible point of every frame plus the drawn flesh."""
    pad = 0.06  # limb half-thickness, hand discs, shoes
    top = points[:, BODY][:, [NOSE, R_EYE, L_EYE, NECK]]
    p = points[visible]
    head_top = top[..., 1].min() - 2.2 * skeleton.head_radius
    return (
        float(p[:, 0].min() - pad),
        float(min(p[:, 1].min() - pad, head_top)),
        float(p[:, 0].max() + pad),
        float(p[:, 1].max() + 0.5 * pad),
    )


def place(
    skeleton: Skeleton,
    point_sets: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    height_px: int,
    width_px: int,
    rng: np.random.Generator,
    margin: float = 0.03,
) -> list[Placement]:
    """One shared camera for several clips ((points, visible, zoom) each): fit all in the frame.

    The figure is as tall as 60-85% of the frame when standing, smaller if its motion needs the room;
    every visible point, head and limb thickness stays inside the frame at every zoom.
    """
    boxes = [_extent(skeleton, p, v) for p, v, _ in point_sets]
    x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    x1, y1 = max(b[2] for b in boxes), max(b[3] for b in boxes)
    zmax = max(float(z.max()) for _, _, z in point_sets)
    avail_h, avail_w = height_px * (1 - 2 * margin), width_px * (1 - 2 * margin)
    scale = min(rng.uniform(0.6, 0.85) * height_px, avail_h / ((y1 - y0) * zmax), avail_w / ((x1 - x0) * zmax))
    anchor = ((x0 + x1) / 2, (y0 + y1) / 2)
    slack_x = max(0.0, avail_w - (x1 - x0) * scale * zmax) / 2
    slack_y = max(0.0, avail_h - (y1 - y0) * scale * zmax) / 2
    centre = (width_px / 2 + rng.uniform(-slack_x, slack_x), height_px / 2 + rng.uniform(0.0, slack_y))
    return [Placement(scale_px=scale * z, anchor=anchor, centre_px=centre) for _, _, z in point_sets]


def to_pose_frame(points_px: np.ndarray, visible: np.ndarray, height_px: int, width_px: int) -> PoseFrame:
    """(136, 2) pixel points + (136,) visibility -> a normalised PoseFrame (invisible at (-1, -1), score 0)."""
    norm = points_px / np.array([float(width_px), float(height_px)])
    norm = np.where(visible[:, None], norm, -1.0)
    scores = visible.astype(np.float64)
    return PoseFrame(
        body=norm[BODY],
        body_scores=scores[BODY],
        feet=norm[FEET],
        feet_scores=scores[FEET],
        hands=norm[HANDS].reshape(2, NUM_HAND, 2),
        hand_scores=scores[HANDS].reshape(2, NUM_HAND),
        face=norm[FACE],
        face_scores=scores[FACE],
        height_px=height_px,
        width_px=width_px,
    )


def motion_keypoints(motion: Motion, placement: Placement, height_px: int, width_px: int) -> PoseSequence:
    """The clip's keypoints as normalised PoseFrames in a ``height_px`` x ``width_px`` frame."""
    frames = tuple(
        to_pose_frame(placement.apply(motion.points[i], i), motion.visible[i], height_px, width_px)
        for i in range(motion.num_frames)
    )
    return PoseSequence(frames=frames, fps=motion.fps, source="synthetic", meta={"generator": "unianimate_cli.demo"})
