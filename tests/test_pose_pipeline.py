"""Extraction -> pose files -> alignment -> drawing with the tiny ONNX models (what the stages chain)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from unianimate_cli.pose.align import align_poses
from unianimate_cli.pose.draw import draw_pose
from unianimate_cli.pose.dwpose import DWPose, extract_photo_pose, extract_video_poses
from unianimate_cli.pose.keypoints import PoseSequence, load_poses, save_poses


def test_extract_align_draw_round_trip(fixtures_dir: Path, tmp_path: Path) -> None:
    import cv2

    folder = fixtures_dir / "pose" / "onnx"
    model = DWPose(folder / "tiny_yolox.onnx", folder / "tiny_dwpose.onnx", device="cpu", batch_size=4)
    photo_rgb = cv2.imread(str(folder / "image1.png"))[..., ::-1]
    h, w = photo_rgb.shape[:2]
    # a "video": the photo shifted sideways and resized to another frame size
    video = []
    for shift in (0, 8, 16, 24, 32):
        moved = np.roll(photo_rgb, shift, axis=1)
        video.append(cv2.resize(np.ascontiguousarray(moved), (w + 64, h + 96), interpolation=cv2.INTER_LINEAR))
    reference = extract_photo_pose(model, photo_rgb, "photo.png")
    driving = list(extract_video_poses(model, iter(video), "dance.mp4"))
    assert len(driving) == len(video)
    assert all(f.width_px == w + 64 and f.height_px == h + 96 for f in driving)

    save_poses(tmp_path / "pose" / "reference.jsonl", PoseSequence((reference,), source="photo.png"))
    save_poses(tmp_path / "pose" / "driving.jsonl", PoseSequence(tuple(driving), fps=15.0, source="dance.mp4"))
    ref_back = load_poses(tmp_path / "pose" / "reference.jsonl")[0]
    driving_back = load_poses(tmp_path / "pose" / "driving.jsonl").frames
    assert ref_back.equals(reference)

    result = align_poses(ref_back, driving_back, calibration="auto")
    assert len(result.frames) == len(video)
    assert all(f.is_finite() for f in result.frames)
    # frame 0 of the video is the photo itself, stretched: aligned, its neck lands on the photo's neck
    k = result.info.calibration_frame
    assert k is not None
    assert np.allclose(result.frames[k].body[1], reference.body[1], atol=1e-9)

    frames = [draw_pose(f) for f in result.frames]
    assert all(fr.shape == (768, 512, 3) and fr.dtype == np.uint8 and fr.any() for fr in frames)
    ref_frame = draw_pose(reference)
    assert ref_frame.any()
