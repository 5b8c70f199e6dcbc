"""Model pixels -> uint8 frames, and the side-by-side comparison layout.

Both follow the reference's saver (``utils/video_op.py``,
``save_video_multiple_conditions_not_gif_horizontal_3col``): generated pixels in [-1, 1] become
``clamp(x * 0.5 + 0.5, 0, 1) * 255`` in float32 and are then **truncated** to uint8 (not
rounded); condition pixels already in [0, 1] are only multiplied by 255 and truncated. The
compare layout puts ``[photo | driving pose | result]`` side by side, each column h x w.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np


def _as_float32(x: Any) -> np.ndarray:
    """A float32 numpy view of a torch tensor (any device/dtype) or array."""
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch here
        x = x.detach().to("cpu").float().numpy()
    return np.asarray(x, dtype=np.float32)


def _channels_last(x: np.ndarray, what: str) -> np.ndarray:
    """``c f h w`` or ``b c f h w`` -> ``f h w c`` or ``b f h w c``."""
    if x.ndim == 4:
        return np.moveaxis(x, 0, -1)
    if x.ndim == 5:
        return np.moveaxis(x, 1, -1)
    raise ValueError(f"{what} must be c f h w or b c f h w, got shape {x.shape}")


def to_uint8_frames(video: Any) -> np.ndarray:
    """Generated pixels in about [-1, 1] -> uint8 frames, exactly as the reference saves them.

    ``video``: torch tensor or array, ``c f h w`` or ``b c f h w`` with c = 3 (RGB).
    Returns ``f h w 3`` or ``b f h w 3`` uint8.
    """
    x = _as_float32(video)
    # Two separate float32 ops, like the reference's mul_(std).add_(mean), so rounding matches.
    y = x * np.float32(0.5) + np.float32(0.5)
    y = np.clip(y, np.float32(0.0), np.float32(1.0)) * np.float32(255.0)
    return np.ascontiguousarray(_channels_last(y.astype(np.uint8), "video"))


def conditions_to_uint8(condition: Any) -> np.ndarray:
    """Condition pixels in [0, 1] (``local_image``, ``dwpose``) -> uint8, ``f h w 3`` (``c f h w`` in).

    The reference multiplies by 255 and truncates without clamping; we clip to [0, 1] first,
    which changes nothing for in-range values and keeps out-of-range ones defined.
    """
    x = np.clip(_as_float32(condition), np.float32(0.0), np.float32(1.0)) * np.float32(255.0)
    return np.ascontiguousarray(_channels_last(x.astype(np.uint8), "condition"))


def _drop_batch(x: np.ndarray, what: str) -> np.ndarray:
    if x.ndim == 5:
        if x.shape[0] != 1:
            raise ValueError(f"{what} has batch {x.shape[0]}; compose one video at a time")
        return x[0]
    return x


def compose_compare(photo: Any, pose: Any, result: Any) -> np.ndarray:
    """The reference's 3-column frames: ``[photo | pose | result]``, uint8 ``f h 3w 3``.

    * ``photo``: the resized reference image in [0, 1], ``c f h w`` (``local_image``), or
      ``c h w`` to repeat over the frames; a leading batch of 1 is allowed.
    * ``pose``: the driving pose frames in [0, 1], ``c f h w``, **without** the reference pose
      (the reference shows ``dwpose[:, :, 1:]``).
    * ``result``: generated pixels in [-1, 1], ``c f h w``.
    All must share ``f``, ``h`` and ``w`` (the reference average-pools mismatches; we refuse them).
    """
    photo_f = _drop_batch(_as_float32(photo), "photo")
    pose_f = _drop_batch(_as_float32(pose), "pose")
    result_f = _drop_batch(_as_float32(result), "result")
    if photo_f.ndim == 3:
        photo_f = np.repeat(photo_f[:, None], result_f.shape[1], axis=1)
    if not (photo_f.shape == pose_f.shape == result_f.shape):
        raise ValueError(
            f"compare columns differ in shape: photo {photo_f.shape}, pose {pose_f.shape}, result {result_f.shape}"
        )
    columns = [conditions_to_uint8(photo_f), conditions_to_uint8(pose_f), to_uint8_frames(result_f)]
    return np.concatenate(columns, axis=2)


def compose_compare_frames(
    photo: np.ndarray, poses: Iterable[np.ndarray], results: Iterable[np.ndarray]
) -> Iterator[np.ndarray]:
    """Streamed compare layout from uint8 frames: ``[photo | pose_i | result_i]`` per frame.

    ``photo`` is uint8 ``h w 3`` (already at the result's size); ``poses`` and ``results`` yield
    uint8 ``h w 3``. Stops at the shorter of the two. For long renders decoded in chunks; the
    values equal ``compose_compare`` when the uint8 frames came from the same conversions.
    """
    for pose, result in zip(poses, results, strict=False):
        if not (photo.shape == pose.shape == result.shape):
            raise ValueError(f"compare columns differ in shape: {photo.shape}, {pose.shape}, {result.shape}")
        yield np.concatenate([photo, pose, result], axis=1)
