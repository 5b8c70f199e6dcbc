"""Small test inputs shared by several test modules: sliding driving videos and tiny weights."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def encode_rgb(path: Path, frames: Sequence[np.ndarray], fps: int, options: dict[str, str] | None = None) -> Path:
    """Write uint8 RGB frames as an H.264 MP4 with PyAV (libx264 options such as crf, g)."""
    import av

    h, w = frames[0].shape[:2]
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        if options:
            stream.options = dict(options)
        for rgb in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb, dtype=np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def sliding_video(
    path: Path, photo: Path, shifts: Sequence[int], fps: int, options: dict[str, str] | None = None
) -> tuple[int, int]:
    """A driving video whose frames are ``photo`` rolled sideways by each shift (even-cropped).

    Returns the frame size (h, w). With the tiny stand-in ONNX models of the fixtures every
    frame holds the same people, so the pose stages have something to find.
    """
    from unianimate_cli.media.image import load_image

    rgb = load_image(photo)
    h, w = (rgb.shape[0] // 2) * 2, (rgb.shape[1] // 2) * 2
    encode_rgb(path, [np.roll(rgb, s, axis=1)[:h, :w] for s in shifts], fps, options)
    return h, w


def tiny_weights(folder: Path, fixtures_dir: Path) -> Path:
    """A tiny random model family with the fixtures' stand-in DWPose ONNX models."""
    from unianimate_cli.weights import write_tiny_family

    onnx = fixtures_dir / "pose" / "onnx"
    write_tiny_family(folder, seed=0, detector_onnx=onnx / "tiny_yolox.onnx", pose_onnx=onnx / "tiny_dwpose.onnx")
    return folder
