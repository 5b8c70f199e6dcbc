"""uint8 conversion and the compare layout, exactly as the reference saves its videos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from unianimate_cli.media.layout import compose_compare, compose_compare_frames, conditions_to_uint8, to_uint8_frames


@pytest.fixture(scope="module")
def saved(fixtures_dir: Path) -> dict[str, np.ndarray]:
    return load_file(str(fixtures_dir / "conditioning" / "conditioning.safetensors"))


def _columns(saved: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    result = saved["save.decoded_video"]  # b c f h w
    num_frames = result.shape[2]
    photo = saved["short_enough.local_image"][:, :, :num_frames]
    pose = saved["short_enough.dwpose"][:, :, 1 : 1 + num_frames]  # the reference pose is not shown
    return photo, pose, result


def test_compose_compare_matches_reference_frames(saved: dict[str, np.ndarray]) -> None:
    photo, pose, result = _columns(saved)
    expected = saved["save.frames_uint8"]
    frames = compose_compare(photo, pose, result)
    assert frames.dtype == np.uint8 and frames.shape == expected.shape
    assert np.array_equal(frames, expected)
    as_tensors = compose_compare(torch.from_numpy(photo), torch.from_numpy(pose), torch.from_numpy(result))
    assert np.array_equal(as_tensors, expected)
    # A still photo (c h w) is repeated over the frames.
    assert np.array_equal(compose_compare(photo[0, :, 0], pose[0], result[0]), expected)


def test_streamed_layout_equals_tensor_layout(saved: dict[str, np.ndarray]) -> None:
    photo, pose, result = _columns(saved)
    photo_u8 = conditions_to_uint8(photo[0])[0]
    streamed = list(compose_compare_frames(photo_u8, conditions_to_uint8(pose[0]), to_uint8_frames(result[0])))
    assert np.array_equal(np.stack(streamed), saved["save.frames_uint8"])


def test_to_uint8_truncates_and_clamps(saved: dict[str, np.ndarray]) -> None:
    result = saved["save.decoded_video"]
    width = result.shape[-1]
    batched = to_uint8_frames(result)
    assert batched.shape == (result.shape[0], result.shape[2], result.shape[3], width, 3)
    assert np.array_equal(batched[0], saved["save.frames_uint8"][:, :, -width:])
    assert np.array_equal(to_uint8_frames(result[0]), batched[0])
    # x = 0.003 -> 0.5015 * 255 = 127.88: truncated to 127 where rounding would give 128.
    probe = np.full((3, 1, 1, 3), 0.003, np.float32)
    probe[:, :, :, 1], probe[:, :, :, 2] = -5.0, 5.0
    out = to_uint8_frames(probe)[0, 0]
    assert out[0].tolist() == [127, 127, 127] and out[1].tolist() == [0, 0, 0] and out[2].tolist() == [255] * 3
    assert to_uint8_frames(torch.from_numpy(probe).half()).shape == (1, 1, 3, 3)


def test_mismatched_columns_are_refused(saved: dict[str, np.ndarray]) -> None:
    photo, pose, result = _columns(saved)
    with pytest.raises(ValueError, match="differ in shape"):
        compose_compare(photo, pose[:, :, :1], result)
    with pytest.raises(ValueError):
        to_uint8_frames(result[0, 0])
