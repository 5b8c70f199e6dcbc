"""Does a rendered video show the right figure in the right poses? Measures against the generator.

The synthetic examples come with their truth: the background, the figure's frames in the
driving poses, the keypoints. These measures compare a render with that truth, so that a
training run can report its quality and a test can tell a working pipeline from a broken one
(frames shuffled, pose ignored, photo ignored). numpy only; frames are uint8 [f, H, W, 3].

* :func:`figure_masks`: where a frame differs from the known background (the figure);
  :func:`inner` erodes them.
* :func:`compare_to_truth`: colour error inside the true figure, and silhouette IoU.
* :func:`palette_distance`: how far the figure's colours are from the photo's figure colours.
* :func:`luminance_correlation`: whether the figure's light and dark parts (shirt, trousers,
  skin, hair) are where the true figure has them; insensitive to a colour cast.
* :func:`keypoint_error`: distance of extracted arm keypoints from the driving ones, in torso lengths.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from unianimate_cli.pose.keypoints import PoseFrame

#: A pixel belongs to the figure when some channel differs from the background by more.
MASK_THRESHOLD = 40
#: Body joints keypoint_error compares: the elbows and wrists, which the dances move most (the
#: trunk and legs move little, so a render that ignored the pose would still match them).
ARM_JOINTS = (3, 4, 6, 7)


def figure_masks(frames: np.ndarray, background: np.ndarray, threshold: int = MASK_THRESHOLD) -> np.ndarray:
    """bool [f, H, W]: pixels whose colour is more than ``threshold`` from ``background`` [H, W, 3].

    Isolated pixels (fewer than 3 of their 3x3 neighbours set) are dropped, so compression
    noise in a decoded video does not count as figure.
    """
    frames = np.asarray(frames)
    diff = np.abs(frames.astype(np.int16) - np.asarray(background, dtype=np.int16)[None]).max(axis=-1)
    mask = diff > threshold
    padded = np.pad(mask, ((0, 0), (1, 1), (1, 1)))
    h, w = mask.shape[1:]
    neighbours = sum(padded[:, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for dy in (-1, 0, 1) for dx in (-1, 0, 1))
    return mask & (neighbours >= 4)  # the pixel itself and at least 3 neighbours


def inner(masks: np.ndarray, px: int = 1) -> np.ndarray:
    """``masks`` [f, H, W] eroded by ``px`` pixels (3x3 steps): the inside of a figure, without the
    anti-aliased edge that mixes in the background's colour."""
    out = np.asarray(masks, dtype=bool)
    for _ in range(px):
        padded = np.pad(out, ((0, 0), (1, 1), (1, 1)))
        h, w = out.shape[1:]
        shifted = [padded[:, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
        out = np.logical_and.reduce(shifted)
    return out


@dataclass(frozen=True)
class TruthScore:
    """How close a render is to the ground-truth frames (means over frames).

    ``colour_error``: mean absolute RGB difference (0-255) over the true figure's pixels.
    ``silhouette_iou``: intersection over union of the rendered and the true figure masks.
    """

    colour_error: float
    silhouette_iou: float


def compare_to_truth(frames: np.ndarray, truth: np.ndarray, background: np.ndarray) -> TruthScore:
    """Score ``frames`` [f, H, W, 3] against ``truth`` (same shape) rendered over ``background``."""
    frames, truth = np.asarray(frames), np.asarray(truth)
    if frames.shape != truth.shape:
        raise ValueError(f"frames {frames.shape} and truth {truth.shape} differ in shape")
    true_mask = figure_masks(truth, background)
    got_mask = figure_masks(frames, background)
    errors, ious = [], []
    for i in range(len(truth)):
        m = true_mask[i]
        diff = np.abs(frames[i].astype(np.float64) - truth[i].astype(np.float64))
        errors.append(float(diff[m].mean()) if m.any() else 0.0)
        union = (m | got_mask[i]).sum()
        ious.append(float((m & got_mask[i]).sum() / union) if union else 1.0)
    return TruthScore(colour_error=float(np.mean(errors)), silhouette_iou=float(np.mean(ious)))


def palette_distance(
    frames: np.ndarray, masks: np.ndarray, photo: np.ndarray, photo_mask: np.ndarray, max_pixels: int = 4000
) -> float:
    """Mean RGB distance (0-441) from the figure pixels of ``frames`` to the nearest figure colour of the photo.

    ``masks`` bool [f, H, W] and ``photo_mask`` [H, W] say where the figures are. Small when the
    rendered figure wears the photo's colours, large for another figure's. Pixels are
    subsampled evenly to at most ``max_pixels`` on each side.
    """
    got = np.asarray(frames)[np.asarray(masks)].astype(np.float64)
    ref = np.asarray(photo)[np.asarray(photo_mask)].astype(np.float64)
    if len(got) == 0 or len(ref) == 0:
        return float("inf")
    got = got[:: max(1, len(got) // max_pixels)]
    ref = ref[:: max(1, len(ref) // max_pixels)]
    d2 = (got**2).sum(1)[:, None] + (ref**2).sum(1)[None] - 2 * got @ ref.T
    return float(np.sqrt(np.maximum(d2.min(axis=1), 0.0)).mean())


def luminance_correlation(frames: np.ndarray, truth: np.ndarray, masks: np.ndarray) -> float:
    """Mean over frames of the correlation of luminance (Rec. 601) inside ``masks`` [f, H, W].

    1 for the truth itself; near 0 for another figure (other clothes) or a figure elsewhere.
    """
    weights = np.array([0.299, 0.587, 0.114])
    out = []
    for got, want, m in zip(np.asarray(frames), np.asarray(truth), np.asarray(masks)):
        if m.sum() < 3:
            continue
        a, b = got[m].astype(np.float64) @ weights, want[m].astype(np.float64) @ weights
        if a.std() == 0 or b.std() == 0:
            out.append(0.0)
            continue
        out.append(float(np.corrcoef(a, b)[0, 1]))
    if not out:
        raise ValueError("no figure pixels to compare")
    return float(np.mean(out))


def torso_length_px(frame: PoseFrame) -> float:
    """Neck to hip centre in pixels (the figure's size unit); NaN when not visible."""
    vis = frame.body_visible
    if not (vis[1] and vis[8] and vis[11]):
        return float("nan")
    scale = np.array([frame.width_px, frame.height_px], dtype=np.float64)
    hips = (frame.body[8] + frame.body[11]) / 2 * scale
    return float(np.hypot(*(frame.body[1] * scale - hips)))


def keypoint_error(found: Sequence[PoseFrame | None], expected: Sequence[PoseFrame]) -> tuple[float, float]:
    """(mean error in torso lengths, fraction of joints matched) of ``found`` vs ``expected`` poses.

    Compares the arm joints (``ARM_JOINTS``) visible in the expected pose. A joint that was not
    found, or a frame without a person (None), counts as an error of one torso length, so a
    render without a figure cannot score well. The torso length is the expected pose's.
    """
    if len(found) != len(expected):
        raise ValueError(f"{len(found)} found poses for {len(expected)} expected ones")
    errors: list[float] = []
    for got, want in zip(found, expected):
        unit = torso_length_px(want)
        if not np.isfinite(unit) or unit <= 0:
            continue
        scale = np.array([want.width_px, want.height_px], dtype=np.float64)
        for j in ARM_JOINTS:
            if not want.body_visible[j]:
                continue
            if got is None or not got.body_visible[j]:
                errors.append(1.0)
                continue
            errors.append(min(1.0, float(np.hypot(*((got.body[j] - want.body[j]) * scale))) / unit))
    if not errors:
        raise ValueError("no visible joints to compare")
    arr = np.asarray(errors)
    return float(arr.mean()), float((arr < 1.0).mean())
