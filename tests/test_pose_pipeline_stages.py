"""extract_driving_poses / extract_reference_pose / align_and_draw end to end on a PyAV-made clip with the tiny ONNX models."""

from __future__ import annotations

import hashlib
import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from videos import encode_rgb, sliding_video

from unianimate_cli.errors import InputError
from unianimate_cli.pose import dwpose as dwpose_module
from unianimate_cli.pose import pipeline
from unianimate_cli.pose.keypoints import load_poses
from unianimate_cli.pose.pipeline import (
    AlignParams,
    ExtractPoseParams,
    align_and_draw,
    extract_driving_poses,
    extract_reference_pose,
)

SHIFTS = (0, 6, 12, 18, 24, 30, 36, 42, 48, 54)  # one frame per shift: 10 frames
FPS = 4  # low, so resuming at frame 6 (1.5 s) seeks instead of decoding from the start


def _onnx(fixtures_dir: Path) -> tuple[Path, Path, Path]:
    folder = fixtures_dir / "pose" / "onnx"
    return folder, folder / "tiny_yolox.onnx", folder / "tiny_dwpose.onnx"


def _make_video(path: Path, photo: Path, shifts: tuple[int, ...] = SHIFTS, fps: int = FPS) -> tuple[int, int]:
    """Frames = the photo rolled sideways by each shift; short GOP so resuming later chunks seeks."""
    return sliding_video(path, photo, shifts, fps, {"crf": "10", "g": "4"})


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class _Count:
    """Counts detector runs (one per image posed) by wrapping DWPose.detect."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        real = dwpose_module.DWPose.detect

        def counted(model: Any, image_bgr: np.ndarray) -> Any:
            self.calls += 1
            return real(model, image_bgr)

        monkeypatch.setattr(dwpose_module.DWPose, "detect", counted)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory, fixtures_dir: Path) -> tuple[Path, tuple[int, int]]:
    folder, _, _ = _onnx(fixtures_dir)
    path = tmp_path_factory.mktemp("clip") / "dance.mp4"
    return path, _make_video(path, folder / "image1.png")


def _run(
    fixtures_dir: Path, video: Path, out: Path, params: ExtractPoseParams, progress: Any = None, preview: bool = True
) -> Any:
    _, det, pose = _onnx(fixtures_dir)
    return extract_driving_poses(
        video,
        det,
        pose,
        out / "pose" / "driving.jsonl",
        out / "pose" / "preview.mp4" if preview else None,
        params,
        partial_dir=out / "partial",
        progress=progress,
    )


def test_extract_writes_poses_fps_and_preview(
    fixtures_dir: Path, clip: tuple[Path, tuple[int, int]], tmp_path: Path
) -> None:
    import av

    video, (h, w) = clip
    params = ExtractPoseParams(frame_interval=2, start_frame=1, chunk_frames=3, device="cpu")
    seen: list[tuple[int, int]] = []
    result = _run(fixtures_dir, video, tmp_path, params, progress=lambda d, t: seen.append((d, t)))

    expected_sources = tuple(range(1, len(SHIFTS), 2))  # 1, 3, 5, 7, 9
    assert result.num_frames == len(expected_sources)
    assert result.source_frames == expected_sources
    assert result.fps == Fraction(FPS, 2) and result.source_fps == FPS
    assert result.resumed_frames == 0 and not result.is_image
    assert any("several people in dance.mp4" in w for w in result.warnings)  # image1 holds a big and a small person
    assert result.provider_message and "CPUExecutionProvider" in result.provider_message
    assert [d for d, _ in seen] == list(range(1, len(expected_sources) + 1))

    driving = load_poses(tmp_path / "pose" / "driving.jsonl")
    assert len(driving) == len(expected_sources)
    assert driving.fps == pytest.approx(FPS / 2)
    assert driving.source_frames == expected_sources
    assert driving.meta["frame_interval"] == 2 and driving.meta["start_frame"] == 1
    assert Fraction(driving.meta["fps"]) == result.fps
    assert all(f.height_px == h and f.width_px == w for f in driving.frames)
    # the tracked person is the big one: its box is always the detector's main box, which moves
    boxes = [f.box_xyxy for f in driving.frames]
    assert all(b is not None and (b[3] - b[1]) > 300 for b in boxes)
    assert len({b for b in boxes}) > 1

    assert not (tmp_path / "pose" / "reference.jsonl").exists()  # the photo is align's work

    with av.open(str(tmp_path / "pose" / "preview.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.average_rate == Fraction(FPS, 2)
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    assert len(decoded) == len(expected_sources) and all(d.any() for d in decoded)
    # partial files are gone after success
    assert not any((tmp_path / "partial").glob("*.jsonl"))


@pytest.mark.parametrize("person", ["auto", 1])
def test_extract_resumes_after_interrupt_without_recomputing(
    fixtures_dir: Path,
    clip: tuple[Path, tuple[int, int]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    person: Any,
) -> None:
    video, _ = clip
    chunk = 3
    params = ExtractPoseParams(chunk_frames=chunk, batch_size=2, device="cpu", person=person)
    whole = tmp_path / "whole"
    counter = _Count(monkeypatch)
    whole_result = _run(fixtures_dir, video, whole, params)
    uninterrupted_calls = counter.calls
    assert uninterrupted_calls == len(SHIFTS)  # every frame, no photo
    # person 1 is the small bystander: the choice must survive the resume's tracker replay
    heights = {b[3] - b[1] for f in load_poses(whole / "pose" / "driving.jsonl").frames if (b := f.box_xyxy)}
    assert (max(heights) > 300) if person == "auto" else (max(heights) < 100)

    k = 1  # interrupt once chunk k (frames 3..5) is finished

    def stop_after_chunk(done: int, total: int) -> None:
        if done == (k + 1) * chunk:
            raise KeyboardInterrupt

    cut = tmp_path / "cut"
    counter.calls = 0
    with pytest.raises(KeyboardInterrupt):
        _run(fixtures_dir, video, cut, params, progress=stop_after_chunk)
    assert not (cut / "pose" / "driving.jsonl").exists()
    saved = sorted(p.name for p in (cut / "partial").glob("chunk_*.jsonl"))
    assert saved == [f"chunk_{i:05d}.jsonl" for i in range(k + 1)]

    counter.calls = 0
    progress: list[int] = []
    result = _run(fixtures_dir, video, cut, params, progress=lambda d, t: progress.append(d))
    assert result.resumed_frames == (k + 1) * chunk
    assert counter.calls == len(SHIFTS) - (k + 1) * chunk  # finished chunks are not posed again
    assert progress[0] == (k + 1) * chunk and progress[-1] == len(SHIFTS)
    assert result.warnings == whole_result.warnings
    for name in ("driving.jsonl", "preview.mp4"):
        assert _sha(cut / "pose" / name) == _sha(whole / "pose" / name), name

    # Ctrl-C while the preview is encoded: every chunk is saved, so the rerun needs no model
    done = tmp_path / "done"

    def interrupted_preview(*args: Any) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(pipeline, "write_pose_preview", interrupted_preview)
        with pytest.raises(KeyboardInterrupt):
            _run(fixtures_dir, video, done, params)
    assert len(list((done / "partial").glob("chunk_*.jsonl"))) == -(-len(SHIFTS) // chunk)
    counter.calls = 0
    again = _run(fixtures_dir, video, done, params)
    assert counter.calls == 0 and again.provider_message is None
    assert again.resumed_frames == len(SHIFTS) and again.warnings == whole_result.warnings
    for name in ("driving.jsonl", "preview.mp4"):
        assert _sha(done / "pose" / name) == _sha(whole / "pose" / name), name


def _raise_at(done: int, at: int) -> None:
    if done == at:
        raise KeyboardInterrupt


def test_partial_chunks_of_other_settings_are_discarded(
    fixtures_dir: Path, clip: tuple[Path, tuple[int, int]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    video, _ = clip
    params = ExtractPoseParams(chunk_frames=4, max_frames=8, device="cpu")
    with pytest.raises(KeyboardInterrupt):
        _run(fixtures_dir, video, tmp_path, params, progress=lambda d, t: _raise_at(d, 4), preview=False)
    assert (tmp_path / "partial" / "chunk_00000.jsonl").is_file()
    counter = _Count(monkeypatch)
    other = ExtractPoseParams(chunk_frames=4, max_frames=8, frame_interval=1, start_frame=2, device="cpu")
    result = _run(fixtures_dir, video, tmp_path, other, preview=False)
    assert result.resumed_frames == 0 and counter.calls == 8
    assert any("discarding" in w for w in result.warnings)
    assert load_poses(tmp_path / "pose" / "driving.jsonl").source_frames == tuple(range(2, 10))


def test_frame_without_anybody_gets_an_empty_pose_and_a_warning(fixtures_dir: Path, tmp_path: Path) -> None:
    import cv2

    folder, _, _ = _onnx(fixtures_dir)
    bgr = cv2.imread(str(folder / "image1.png"))
    assert bgr is not None
    person = bgr[:, :384, ::-1]
    white = np.full_like(person, 255)  # the tiny detector sees nobody in a white image
    video = tmp_path / "gap.mp4"
    encode_rgb(video, [person, white, person], FPS, {"crf": "10", "g": "4"})
    result = _run(fixtures_dir, video, tmp_path, ExtractPoseParams(device="cpu"), preview=False)
    assert any("1 of 3 frames of gap.mp4 had no detected person" in w for w in result.warnings)
    boxes = [f.box_xyxy for f in load_poses(tmp_path / "pose" / "driving.jsonl").frames]
    assert boxes[1] is None and boxes[0] is not None and boxes[2] is not None


def test_reference_pose_picks_a_person_and_names_a_photo_without_one(fixtures_dir: Path, tmp_path: Path) -> None:
    folder, det, pose = _onnx(fixtures_dir)
    out = tmp_path / "reference.jsonl"
    result = extract_reference_pose(folder / "image1.png", det, pose, out, device="cpu")
    reference = load_poses(out)
    assert len(reference) == 1 and reference.meta["people_found"] == result.people_found == 2
    assert reference.source == "image1.png"
    assert any("2 people found" in w for w in result.warnings)
    box = reference[0].box_xyxy
    assert box is not None and box[3] - box[1] > 300  # "auto" takes the large person
    extract_reference_pose(folder / "image1.png", det, pose, out, person=1, device="cpu")
    small = load_poses(out)[0].box_xyxy
    assert small is not None and small[3] - small[1] < 100  # person 1 is the small bystander
    with pytest.raises(InputError, match="person 5 does not exist"):
        extract_reference_pose(folder / "image1.png", det, pose, tmp_path / "x.jsonl", person=5, device="cpu")

    expected = json.loads((folder / "expected.json").read_text())["images"]["image2_white"]
    assert expected["final_person_boxes_xyxy"] == []  # the fixture's white image has nobody
    photo = folder / "image2_white.png"
    with pytest.raises(InputError, match="no person found") as info:
        extract_reference_pose(photo, det, pose, tmp_path / "white.jsonl", device="cpu")
    assert str(photo) in info.value.message
    assert not (tmp_path / "white.jsonl").exists()


def test_still_image_is_a_one_frame_driving_sequence(fixtures_dir: Path, tmp_path: Path) -> None:
    import av

    folder, _, _ = _onnx(fixtures_dir)
    image = folder / "image1.png"
    result = _run(fixtures_dir, image, tmp_path, ExtractPoseParams(image_fps=8.0, frame_interval=3, device="cpu"))
    assert result.is_image and result.num_frames == 1 and result.source_frames == (0,)
    assert result.fps == 8  # image_fps; the frame interval does not divide it
    driving = load_poses(tmp_path / "pose" / "driving.jsonl")
    assert len(driving) == 1 and driving.fps == 8.0 and driving.meta["is_image"] is True
    box = driving[0].box_xyxy
    assert box is not None and box[3] - box[1] > 300
    with av.open(str(tmp_path / "pose" / "preview.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 1
    with pytest.raises(InputError, match="past the end") as info:
        _run(fixtures_dir, image, tmp_path / "b", ExtractPoseParams(start_frame=1, device="cpu"))
    assert "still image" in info.value.message
    white = folder / "image2_white.png"
    with pytest.raises(InputError, match="no person found") as info:
        _run(fixtures_dir, white, tmp_path / "w", ExtractPoseParams(device="cpu"))
    assert str(white) in info.value.message


@pytest.mark.parametrize("content", [b"", b"not a video at all"])
def test_bad_video_fails_before_models_load(
    fixtures_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: bytes
) -> None:
    _, det, pose = _onnx(fixtures_dir)
    video = tmp_path / "dance.mp4"
    video.write_bytes(content)

    def no_model(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the models must not load for a bad video")

    monkeypatch.setattr(dwpose_module.DWPose, "__init__", no_model)
    with pytest.raises(InputError) as info:
        extract_driving_poses(video, det, pose, tmp_path / "d.jsonl", None, ExtractPoseParams(), tmp_path / "partial")
    assert str(video) in info.value.message


def test_bad_params_and_start_past_end(fixtures_dir: Path, clip: tuple[Path, tuple[int, int]], tmp_path: Path) -> None:
    video, _ = clip
    with pytest.raises(InputError, match="frame interval 0"):
        _run(fixtures_dir, video, tmp_path, ExtractPoseParams(frame_interval=0))
    with pytest.raises(InputError, match="past the end"):
        _run(fixtures_dir, video, tmp_path, ExtractPoseParams(start_frame=len(SHIFTS), device="cpu"))


def test_align_and_draw_writes_condition_frames(
    fixtures_dir: Path, clip: tuple[Path, tuple[int, int]], tmp_path: Path
) -> None:
    import cv2
    from PIL import Image

    from unianimate_cli.pose.draw import draw_pose

    folder, det, pose = _onnx(fixtures_dir)
    video, _ = clip
    _run(fixtures_dir, video, tmp_path, ExtractPoseParams(max_frames=4, device="cpu"), preview=False)
    extract_reference_pose(folder / "image1.png", det, pose, tmp_path / "pose" / "reference.jsonl", device="cpu")
    frames_dir = tmp_path / "align" / "frames"
    frames_dir.mkdir(parents=True)
    (frames_dir / "0009.png").write_bytes(b"stale")  # from an older, longer run
    seen: list[tuple[int, int]] = []
    info = align_and_draw(
        tmp_path / "pose" / "reference.jsonl",
        tmp_path / "pose" / "driving.jsonl",
        tmp_path / "align" / "poses.jsonl",
        frames_dir,
        AlignParams(calibration="auto"),
        progress=lambda d, t: seen.append((d, t)),
    )
    driving = load_poses(tmp_path / "pose" / "driving.jsonl")
    aligned = load_poses(tmp_path / "align" / "poses.jsonl")
    assert info.num_frames == len(driving) == len(aligned) == 4
    assert aligned.fps == driving.fps and aligned.source_frames == driving.source_frames
    assert aligned.meta["align"]["calibration_frame"] == info.align.calibration_frame
    assert sorted(p.name for p in frames_dir.iterdir()) == sorted([*info.frame_names, "ref_pose.png"])
    assert info.frame_names == ("0000.png", "0001.png", "0002.png", "0003.png")
    assert seen[-1] == (5, 5)
    for i, name in enumerate(info.frame_names):
        img = np.asarray(Image.open(frames_dir / name).convert("RGB"))
        assert img.shape == (768, 512, 3) and img.any()
        assert np.array_equal(img, draw_pose(aligned[i]))  # lossless
    ref_img = np.asarray(Image.open(frames_dir / "ref_pose.png").convert("RGB"))
    reference = load_poses(tmp_path / "pose" / "reference.jsonl")[0]
    assert np.array_equal(ref_img, draw_pose(reference))  # the unaligned photo pose, face-less
    assert not np.array_equal(ref_img, draw_pose(reference, include_face=True))

    # the reference's JPEG files, on another canvas size
    jpg_dir = tmp_path / "jpg"
    info_jpg = align_and_draw(
        tmp_path / "pose" / "reference.jsonl",
        tmp_path / "pose" / "driving.jsonl",
        tmp_path / "aligned2.jsonl",
        jpg_dir,
        AlignParams(height_px=384, width_px=256, jpeg_quality=95),
        None,
    )
    assert info_jpg.reference_name == "ref_pose.jpg"
    img = np.asarray(Image.open(jpg_dir / "0000.jpg").convert("RGB"))
    assert img.shape == (384, 256, 3) and img.any()
    # the bytes cv2.imwrite(canvas) gives with OpenCV's defaults, as run_align_pose.py saves them
    canvas = draw_pose(reference, 384, 256)[..., ::-1]
    ok, default_jpeg = cv2.imencode(".jpg", np.ascontiguousarray(canvas))
    assert ok and (jpg_dir / "ref_pose.jpg").read_bytes() == default_jpeg.tobytes()


def test_align_refuses_empty_driving(tmp_path: Path) -> None:
    from unianimate_cli.pose.keypoints import PoseSequence, save_poses

    empty = tmp_path / "driving.jsonl"
    save_poses(empty, PoseSequence(()))
    with pytest.raises(InputError, match="no driving frames") as info:
        align_and_draw(tmp_path / "ref.jsonl", empty, tmp_path / "a.jsonl", tmp_path / "f", AlignParams(), None)
    assert str(empty) in info.value.message and info.value.hint is not None


def test_reference_mode_nan_is_an_input_error_robust_mode_is_not(fixtures_dir: Path, tmp_path: Path) -> None:
    from unianimate_cli.pose.keypoints import PoseFrame, PoseSequence, save_poses

    pose = json.loads((fixtures_dir / "pose" / "onnx" / "expected.json").read_text())["images"]["image1"]["pose"]
    photo = PoseFrame.from_dwpose(
        pose["bodies"]["candidate"], pose["bodies"]["subset"][0], pose["hands"], pose["faces"]
    )
    body = photo.body.copy()
    body[5] = body[2]  # zero shoulder width: the reference divides by it
    save_poses(tmp_path / "ref.jsonl", PoseSequence((photo,)))
    save_poses(tmp_path / "drv.jsonl", PoseSequence((photo.with_points(body=body), photo), fps=12.0))
    args = (tmp_path / "ref.jsonl", tmp_path / "drv.jsonl", tmp_path / "a.jsonl", tmp_path / "frames")
    with pytest.raises(InputError, match="NaN or infinity"):
        align_and_draw(*args, AlignParams(mode="reference"), None)
    assert not (tmp_path / "a.jsonl").exists()
    info = align_and_draw(*args, AlignParams(mode="robust"), None)
    assert info.num_frames == 2 and load_poses(tmp_path / "a.jsonl").fps == 12.0
