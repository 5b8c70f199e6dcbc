"""Photo loading and the resize rules the model inputs need.

``load_image`` decodes the way the reference does (``cv2.imread`` then BGR->RGB): EXIF
orientation applied, alpha **dropped** (the colour channels are kept as stored, not composited),
greyscale repeated to three channels, 16-bit scaled to 8-bit. Files OpenCV cannot read go
through Pillow with the same rules. ``resize_exact`` is the reference's ``Resize``: Pillow
bilinear on the 8-bit image, a plain stretch.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from enum import Enum
from pathlib import Path
from typing import Literal

import numpy as np

from unianimate_cli.errors import InputError
from unianimate_cli.project import atomic_path

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = frozenset(
    {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".wmv", ".flv", ".mpg", ".mpeg", ".ts", ".3gp", ".gif"}
)
_IMAGE_HINT = "pass a photo as JPEG, PNG, WebP, BMP or TIFF"
# Pillow 13 changed bilinear rounding for some size pairs (fixtures/conditioning/README.md).
_PILLOW_CHECKED = (10, 2), (12, 3)


class FitPolicy(str, Enum):
    """How a photo is brought to the model's width x height."""

    STRETCH = "stretch"  # squash to the size, as the reference does (default, parity)
    CROP = "crop"  # keep the aspect ratio, cut the overflow equally from both sides
    PAD = "pad"  # keep the aspect ratio, fill the rest with a background colour


def _looks_like_video(path: Path) -> bool:
    if path.suffix.lower() in VIDEO_SUFFIXES - {".gif"}:
        return True
    try:
        with path.open("rb") as handle:
            head = handle.read(12)
    except OSError:
        return False
    if head[:4] == b"\x1a\x45\xdf\xa3":  # Matroska / WebM
        return True
    # ISO media (MP4/MOV) shares its box layout with AVIF/HEIF stills; tell them apart by brand.
    return head[4:8] == b"ftyp" and head[8:12] not in (b"avif", b"avis", b"heic", b"heix", b"mif1", b"msf1")


def media_kind(path: Path | str) -> Literal["image", "video", "unknown"]:
    """Whether a user file is a still image or a video, from its name and header only.

    Lets a driving input be either, and lets a video given as the photo (or a photo and a
    video given the wrong way round) fail before anything loads. Animated GIF/WebP/PNG count as
    video. ``unknown``: neither test knows the file (OpenCV or FFmpeg may still read it).
    """
    path = Path(path)
    if not path.is_file():
        return "unknown"
    if _looks_like_video(path):
        return "video"
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as opened:  # reads the header only
            return "video" if getattr(opened, "n_frames", 1) > 1 else "image"
    except (UnidentifiedImageError, OSError, ValueError):
        return "unknown"


def load_image(path: Path | str, alpha_background: tuple[int, int, int] | None = None) -> np.ndarray:
    """Read a photo as RGB uint8 ``h w 3``, upright.

    ``alpha_background=None`` drops alpha as OpenCV does (reference parity: hidden pixels
    become visible, often black). Given a colour, transparent pixels are composited onto it
    instead. Raises ``InputError`` for a missing, empty or unreadable file, or a video.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"photo not found: {path}", "check the path")
    if path.is_dir():
        raise InputError(f"{path} is a folder, not a photo", _IMAGE_HINT)
    if path.stat().st_size == 0:
        raise InputError(f"{path} is empty (0 bytes)", _IMAGE_HINT)
    if _looks_like_video(path):
        raise InputError(f"{path} is a video, not a photo", _IMAGE_HINT + " (pass the video as the driving video)")
    if alpha_background is None:
        image = _load_cv2(path)
        if image is not None:
            return image
    return _load_pillow(path, alpha_background)


def _load_cv2(path: Path) -> np.ndarray | None:
    import cv2

    # imdecode of the raw bytes works for any path (cv2.imread cannot open some non-ASCII
    # names on Windows) and applies EXIF orientation like imread with IMREAD_COLOR.
    data = np.fromfile(str(path), dtype=np.uint8)
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if bgr is None:
        return None
    return np.ascontiguousarray(bgr[:, :, ::-1])


def _load_pillow(path: Path, alpha_background: tuple[int, int, int] | None) -> np.ndarray:
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            opened.load()
            image = ImageOps.exif_transpose(opened) or opened
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise InputError(f"cannot read {path} as an image ({' '.join(str(err).split())[:120]})", _IMAGE_HINT) from err
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        image = Image.fromarray((np.asarray(image, dtype=np.uint32) >> 8).clip(0, 255).astype(np.uint8))
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
    if alpha_background is not None and has_alpha:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*alpha_background, 255))
        image = Image.alpha_composite(canvas, rgba)
    return np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))


def _check_rgb(img: np.ndarray) -> None:
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"expected a uint8 h w 3 RGB image, got {img.dtype} {img.shape}")


def resize_exact(img: np.ndarray, width_px: int, height_px: int) -> np.ndarray:
    """Stretch RGB uint8 ``h w 3`` to ``height_px x width_px`` with Pillow bilinear (reference ``Resize``).

    Pillow 10.2 to 12.3 agree bit for bit; 13.0 rounds differently for some size pairs, which
    breaks parity (see fixtures/conditioning/README.md). A no-op size returns a copy.
    """
    from PIL import Image

    _check_rgb(img)
    if width_px < 1 or height_px < 1:
        raise ValueError(f"target size {width_px}x{height_px} must be positive")
    if (img.shape[1], img.shape[0]) == (width_px, height_px):
        return img.copy()
    return np.asarray(Image.fromarray(img).resize((width_px, height_px), Image.Resampling.BILINEAR), dtype=np.uint8)


def fit_image(
    img: np.ndarray,
    width_px: int,
    height_px: int,
    policy: FitPolicy | str = FitPolicy.STRETCH,
    background: tuple[int, int, int] = (0, 0, 0),
) -> np.ndarray:
    """Bring RGB uint8 ``h w 3`` to exactly ``height_px x width_px`` by ``policy``.

    * stretch: ``resize_exact`` (the reference; a person may look squashed).
    * crop: cut the centre region with the target's aspect ratio, then resize (nothing squashed,
      the edges are lost, which may cut off feet or hands).
    * pad: resize to fit inside, centred on ``background`` (nothing lost or squashed; the model
      sees bars). Sizes are rounded to whole pixels.
    """
    policy = FitPolicy(policy)
    _check_rgb(img)
    h, w = img.shape[:2]
    if policy is FitPolicy.STRETCH:
        return resize_exact(img, width_px, height_px)
    if policy is FitPolicy.CROP:
        # Compare w/h with width_px/height_px in integers to avoid float ties.
        if w * height_px > width_px * h:  # too wide: keep full height
            crop_w = max(1, round(h * width_px / height_px))
            x0 = (w - crop_w) // 2
            region = img[:, x0 : x0 + crop_w]
        else:
            crop_h = max(1, round(w * height_px / width_px))
            y0 = (h - crop_h) // 2
            region = img[y0 : y0 + crop_h, :]
        return resize_exact(np.ascontiguousarray(region), width_px, height_px)
    scale = min(width_px / w, height_px / h)
    inner_w = min(width_px, max(1, round(w * scale)))
    inner_h = min(height_px, max(1, round(h * scale)))
    canvas = np.empty((height_px, width_px, 3), dtype=np.uint8)
    canvas[:] = np.asarray(background, dtype=np.uint8)
    y0, x0 = (height_px - inner_h) // 2, (width_px - inner_w) // 2
    canvas[y0 : y0 + inner_h, x0 : x0 + inner_w] = resize_exact(img, inner_w, inner_h)
    return canvas


def save_image(path: Path | str, img: np.ndarray) -> Path:
    """Write RGB uint8 ``h w 3`` to ``path`` (format from the suffix) atomically."""
    from PIL import Image

    path = Path(path)
    _check_rgb(img)
    with atomic_path(path, suffix=path.suffix) as tmp:
        Image.fromarray(img).save(tmp, format=Image.registered_extensions().get(path.suffix.lower()))
    return path


def save_frames(folder: Path | str, frames: Iterable[np.ndarray], pattern: str = "{index:05d}.png") -> int:
    """Write each RGB uint8 ``h w 3`` frame as ``folder / pattern.format(index=i)``; returns the count.

    The folder is created if needed. Each file is written atomically.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    count = 0
    for index, frame in enumerate(frames):
        save_image(folder / pattern.format(index=index), np.asarray(frame))
        count += 1
    return count


def pillow_matches_reference() -> bool:
    """Whether the installed Pillow resizes like the reference's 10.2 (10.2 to 12.3 do)."""
    import PIL

    parts = tuple(int(p) for p in PIL.__version__.split(".")[:2] if p.isdigit())
    return _PILLOW_CHECKED[0] <= parts <= _PILLOW_CHECKED[1]
