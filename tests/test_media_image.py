"""Photo loading (as cv2.imread does it) and the resize rules, against the conditioning fixture."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import load_file

from unianimate_cli.errors import InputError
from unianimate_cli.media.image import (
    FitPolicy,
    fit_image,
    load_image,
    pillow_matches_reference,
    resize_exact,
    save_frames,
    save_image,
)


def _photo(height: int = 20, width: int = 30) -> np.ndarray:
    img = np.zeros((height, width, 3), np.uint8)
    img[:, :, 2] = 90
    img[:6, :6] = [250, 10, 10]  # red marker, top-left
    return img


def _cv2_rgb(path: Path, flags: int = cv2.IMREAD_COLOR) -> np.ndarray:
    bgr = cv2.imread(str(path), flags)
    assert bgr is not None
    return np.asarray(bgr)[:, :, ::-1]


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_exif_orientation_like_opencv(tmp_path: Path, orientation: int) -> None:
    image = Image.fromarray(_photo())
    exif = image.getexif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{orientation}.jpg"
    image.save(path, exif=exif, quality=95)
    loaded = load_image(path)
    assert np.array_equal(loaded, _cv2_rgb(path))
    assert loaded.shape[:2] == ((30, 20) if orientation in (6, 8) else (20, 30))
    # The red marker ends up where an upright viewer shows it.
    corner = {1: (0, 0), 3: (-1, -1), 6: (0, -1), 8: (-1, 0)}[orientation]
    assert loaded[corner][0] > 200


def test_alpha_dropped_like_opencv_or_composited(tmp_path: Path) -> None:
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:4, :, 3] = 255  # top half opaque, bottom half transparent
    path = tmp_path / "cut.png"
    Image.fromarray(rgba).save(path)
    dropped = load_image(path)
    assert np.array_equal(dropped, _cv2_rgb(path))
    assert (dropped[..., 0] == 200).all()
    white = load_image(path, alpha_background=(255, 255, 255))
    assert (white[:4] == [200, 0, 0]).all() and (white[4:] == 255).all()


def test_greyscale_and_16_bit(tmp_path: Path) -> None:
    grey = (np.arange(48, dtype=np.uint8).reshape(6, 8) * 5).astype(np.uint8)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    loaded = load_image(tmp_path / "grey.png")
    assert loaded.shape == (6, 8, 3) and (loaded == grey[..., None]).all()

    deep = (np.arange(48, dtype=np.uint16).reshape(6, 8) * 1300).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "deep.png"), np.stack([deep] * 3, axis=-1))
    assert np.array_equal(load_image(tmp_path / "deep.png"), _cv2_rgb(tmp_path / "deep.png"))


def test_pillow_fallback_for_formats_opencv_lacks(tmp_path: Path) -> None:
    path = tmp_path / "pal.gif"
    Image.fromarray(_photo()).convert("P").save(path)
    loaded = load_image(path, alpha_background=(0, 0, 0))  # forces the Pillow path
    assert loaded.shape == (20, 30, 3) and loaded[0, 0, 0] > 200


def _mp4_bytes(path: Path) -> Path:
    path.write_bytes(b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + b"\x00" * 64)
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "nope.jpg", "not found"),
        (lambda d: _write(d / "empty.jpg", b""), "empty"),
        (lambda d: _write(d / "junk.jpg", b"definitely not an image" * 10), "cannot read"),
        (lambda d: _write(d / "dance.mp4", b"\x00" * 64), "is a video"),
        (lambda d: _mp4_bytes(d / "dance.jpg"), "is a video"),
        (lambda d: d, "folder"),
    ],
    ids=["missing", "empty", "garbage", "video-suffix", "video-bytes", "folder"],
)
def test_bad_image_input(tmp_path: Path, make: object, message: str) -> None:
    path = make(tmp_path)  # type: ignore[operator]
    with pytest.raises(InputError, match=message) as caught:
        load_image(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)
    assert caught.value.hint


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_resize_exact_matches_reference_transforms(fixtures_dir: Path) -> None:
    """local_image, the pose frames and the CLIP input are Pillow bilinear stretches of the uint8 images."""
    folder = fixtures_dir / "conditioning"
    data = load_file(str(folder / "conditioning.safetensors"))
    meta = json.loads((folder / "meta.json").read_text())
    photo = data["ref_image_rgb_uint8"]
    local = data["short_enough.local_image"]  # b c f h w in [0, 1]
    height, width = local.shape[-2:]
    ours = resize_exact(photo, width, height).astype(np.float32) / np.float32(255.0)
    np.testing.assert_allclose(ours, local[0, :, 0].transpose(1, 2, 0), rtol=0, atol=1e-6)

    dwpose = data["short_enough.dwpose"]
    picked = meta["cases"]["short_enough"]["pose_file_index_per_frame"]
    for slot, index in enumerate(picked, start=1):
        pose = resize_exact(data["poses_rgb_uint8"][index], width, height).astype(np.float32) / np.float32(255.0)
        np.testing.assert_allclose(pose, dwpose[0, :, slot].transpose(1, 2, 0), rtol=0, atol=1e-6)
    ref_pose = resize_exact(data["ref_pose_rgb_uint8"], width, height).astype(np.float32) / np.float32(255.0)
    np.testing.assert_allclose(ref_pose, dwpose[0, :, 0].transpose(1, 2, 0), rtol=0, atol=1e-6)

    clip = data["short_enough.clip_input"]
    vit_h, vit_w = clip.shape[-2:]
    mean = np.asarray(meta["vit_mean"], np.float32)
    std = np.asarray(meta["vit_std"], np.float32)
    pixels = resize_exact(photo, vit_w, vit_h).astype(np.float32) / np.float32(255.0)
    normalised = ((pixels - mean) / std).transpose(2, 0, 1)
    assert pillow_matches_reference()
    np.testing.assert_allclose(normalised, clip[0], rtol=0, atol=1e-6)


def test_fit_policies() -> None:
    wide = np.zeros((10, 40, 3), np.uint8)
    wide[:, 18:22] = 255  # white centre band
    stretched = fit_image(wide, 16, 16, "stretch")
    assert np.array_equal(stretched, resize_exact(wide, 16, 16))

    cropped = fit_image(wide, 16, 16, FitPolicy.CROP)
    assert cropped.shape == (16, 16, 3)
    assert cropped[:, 7:9].min() == 255  # the centre is kept...
    assert cropped[:, 0].max() == 0  # ...and the sides are cut, not squashed in

    padded = fit_image(wide, 16, 16, "pad", background=(0, 0, 200))
    assert padded.shape == (16, 16, 3)
    assert (padded[0] == [0, 0, 200]).all() and (padded[-1] == [0, 0, 200]).all()  # bars top and bottom
    inner_h = round(10 * 16 / 40)
    y0 = (16 - inner_h) // 2
    assert np.array_equal(padded[y0 : y0 + inner_h], resize_exact(wide, 16, inner_h))  # whole width, centred
    assert (padded[:y0] == [0, 0, 200]).all() and (padded[y0 + inner_h :] == [0, 0, 200]).all()

    with pytest.raises(ValueError):
        fit_image(wide, 16, 16, "zoom")


def test_save_image_and_frames(tmp_path: Path) -> None:
    img = _photo()
    save_image(tmp_path / "one.png", img)
    assert np.array_equal(load_image(tmp_path / "one.png"), img)
    count = save_frames(tmp_path / "frames", (img + i for i in range(3)))
    names = sorted(p.name for p in (tmp_path / "frames").iterdir())
    assert count == 3 and names == ["00000.png", "00001.png", "00002.png"]
    assert np.array_equal(load_image(tmp_path / "frames" / "00002.png"), img + 2)
