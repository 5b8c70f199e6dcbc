"""DWPose through onnxruntime with the tiny stand-in models of fixtures/pose/onnx."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from unianimate_cli.errors import InputError, WeightsError
from unianimate_cli.parity.pose import run_onnx
from unianimate_cli.pose.dwpose import (
    DWPose,
    choose_providers,
    nms,
    select_person,
    track_person,
)
from unianimate_cli.pose.keypoints import PoseFrame


@pytest.fixture(scope="module")
def onnx_dir(fixtures_dir: Path) -> Path:
    folder = fixtures_dir / "pose" / "onnx"
    if not folder.is_dir():
        pytest.skip("onnx fixtures not found")
    return folder


@pytest.fixture(scope="module")
def model(onnx_dir: Path) -> DWPose:
    return DWPose(onnx_dir / "tiny_yolox.onnx", onnx_dir / "tiny_dwpose.onnx", device="auto")


def _image(onnx_dir: Path, name: str) -> np.ndarray:
    import cv2

    expected = json.loads((onnx_dir / "expected.json").read_text())
    return np.asarray(cv2.imread(str(onnx_dir / expected["images"][name]["file"])))


def test_onnx_end_to_end_matches_fixture(onnx_dir: Path) -> None:
    comparisons = run_onnx(onnx_dir)
    expected = json.loads((onnx_dir / "expected.json").read_text())
    for name in expected["images"]:
        assert any(c.name == f"{name}/raw_keypoints" for c in comparisons)
    assert all(c.ok for c in comparisons), [c for c in comparisons if not c.ok]


def test_extracted_person_matches_expected_pose(onnx_dir: Path, model: DWPose) -> None:
    with np.load(onnx_dir / "e2e_arrays.npz") as z:
        cand, subset = z["image1/pose_candidate"], z["image1/pose_subset"][0]
    people = model.people(_image(onnx_dir, "image1"))
    assert len(people) == len(
        json.loads((onnx_dir / "expected.json").read_text())["images"]["image1"]["final_person_boxes_xyxy"]
    )
    h, w = people[0].height_px, people[0].width_px
    assert np.abs((people[0].body - cand) * [w, h]).max() < 1e-3
    assert np.array_equal(people[0].subset(), subset)


def test_provider_choice(model: DWPose) -> None:
    import torch

    assert choose_providers("cpu") == ["CPUExecutionProvider"]
    if not torch.cuda.is_available():
        assert choose_providers("auto") == ["CPUExecutionProvider"]
        assert model.provider == "CPUExecutionProvider"
        assert model.notice is None
    with pytest.raises(InputError):
        choose_providers("tpu")  # type: ignore[arg-type]


def test_batched_pose_model_equals_one_crop_at_a_time(onnx_dir: Path, model: DWPose) -> None:
    assert model.pose_batch_dynamic
    single = DWPose(onnx_dir / "tiny_yolox.onnx", onnx_dir / "tiny_dwpose.onnx", device="cpu", batch_size=1)
    images = [_image(onnx_dir, "image1"), _image(onnx_dir, "image2_white"), _image(onnx_dir, "image1")]
    batched = list(model.people_batched(images))
    one_by_one = [single.people(im) for im in images]
    assert [len(p) for p in batched] == [len(p) for p in one_by_one]
    for a, b in zip(batched, one_by_one):
        for pa, pb in zip(a, b):
            assert np.array_equal(pa.body, pb.body)
            assert np.abs(pa.body_scores - pb.body_scores).max() < 1e-6


def test_no_person_error_names_the_file(onnx_dir: Path, model: DWPose) -> None:
    white = _image(onnx_dir, "image2_white")
    # the reference poses the whole image when nobody is detected ...
    fallback = model(white)
    assert len(fallback) == 1 and fallback[0].box_xyxy is None
    # ... a photo needs a real person
    nobody = model.people(white, whole_image_fallback=False)
    assert nobody == []
    with pytest.raises(InputError, match="no person found in photo_white.png"):
        select_person(nobody, name="photo_white.png")


def test_person_selection(onnx_dir: Path, model: DWPose) -> None:
    people = model.people(_image(onnx_dir, "image1"))
    areas = [(p.box_xyxy[2] - p.box_xyxy[0]) * (p.box_xyxy[3] - p.box_xyxy[1]) for p in people]  # type: ignore[index]
    assert len(people) >= 2
    assert select_person(people) is people[int(np.argmax(areas))]
    assert select_person(people, 1) is people[1]
    with pytest.raises(InputError, match="does not exist"):
        select_person(people, len(people), name="image1.png")


def _align_people(folder: Path, key: str, h: int, w: int) -> list[PoseFrame]:
    with np.load(folder / "arrays.npz") as z:
        raw_k, raw_s = z[f"{key}/raw_keypoints"], z[f"{key}/raw_scores"]
    return [PoseFrame.from_wholebody(raw_k[i], raw_s[i], h, w) for i in range(len(raw_k))]


def test_auto_choice_skips_small_background_person(fixtures_dir: Path) -> None:
    """e1: the pose model lists a small background person first; the reference takes it."""
    folder = fixtures_dir / "pose" / "align" / "e1_ref_two_people"
    case = json.loads((folder / "case.json").read_text())
    people = _align_people(folder, "ref", *case["reference_photo_hw"])
    assert len(people) == case["persons_in_reference_photo"] == 2
    chosen = select_person(people)
    assert chosen is people[1]
    spans = [np.ptp(p.body[p.body_visible], axis=0).prod() for p in people]
    assert spans[1] > spans[0]


def test_tracking_keeps_the_same_dancer(fixtures_dir: Path) -> None:
    """e2: the detector order swaps in frame 2; tracking keeps the first frame's dancer."""
    folder = fixtures_dir / "pose" / "align" / "e2_video_two_people"
    case = json.loads((folder / "case.json").read_text())
    per_frame = [
        _align_people(folder, f"frame{i:02d}", *case["video_frame_hw"]) for i in range(case["num_video_frames"])
    ]
    tracked = list(track_person(per_frame, name="dance.mp4"))
    picks = [next(j for j, p in enumerate(people) if p is t) for people, t in zip(per_frame, tracked)]
    assert picks == [0, 0, 1, 0]
    # the reference (person 0 every frame) would switch identity in frame 2
    necks = [p[0].body[1] for p in per_frame]
    assert np.linalg.norm(necks[2] - necks[1]) > np.linalg.norm(tracked[2].body[1] - tracked[1].body[1])


def test_nms_uses_plus_one_iou() -> None:
    boxes = np.array([[300, 400, 330, 470], [311.5, 400, 341.5, 470]], dtype=np.float32)
    scores = np.array([0.63, 0.54], dtype=np.float32)
    assert nms(boxes, scores, 0.45) == [0]  # "+1" IoU 0.4588 suppresses; plain IoU 0.4458 would keep


def test_missing_model_file(tmp_path: Path, onnx_dir: Path) -> None:
    with pytest.raises(WeightsError, match="does not exist"):
        DWPose(tmp_path / "yolox_l.onnx", onnx_dir / "tiny_dwpose.onnx")
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(WeightsError, match="cannot be loaded"):
        DWPose(bad, onnx_dir / "tiny_dwpose.onnx")


def test_photo_and_video_extraction_helpers(onnx_dir: Path, model: DWPose) -> None:
    from unianimate_cli.pose.dwpose import extract_photo_pose, extract_video_poses

    image1_bgr = _image(onnx_dir, "image1")
    white_bgr = _image(onnx_dir, "image2_white")
    photo = extract_photo_pose(model, image1_bgr[..., ::-1], "photo.png")
    direct = select_person(model.people(image1_bgr))
    assert photo.equals(direct)
    with pytest.raises(InputError, match="no person found in white.png"):
        extract_photo_pose(model, white_bgr[..., ::-1], "white.png")
    seen: list[int] = []
    frames_rgb = [image1_bgr[..., ::-1], white_bgr[..., ::-1], image1_bgr[..., ::-1]]
    poses = list(extract_video_poses(model, iter(frames_rgb), "clip.mp4", progress=seen.append))
    assert len(poses) == 3 and seen == [1, 2, 3]
    assert poses[0].equals(photo) and poses[2].equals(photo)
    assert poses[1].box_xyxy is None  # whole-image pose where nobody was detected
    with pytest.raises(InputError, match="RGB uint8"):
        extract_photo_pose(model, image1_bgr[..., 0], "grey.png")


def test_provider_message_says_what_runs(model: DWPose) -> None:
    assert model.provider in model.provider_message
    assert "\n" not in model.provider_message


@pytest.mark.gpu
def test_cuda_provider_runs_and_matches(onnx_dir: Path) -> None:
    gpu = DWPose(onnx_dir / "tiny_yolox.onnx", onnx_dir / "tiny_dwpose.onnx", device="auto")
    assert gpu.provider == "CUDAExecutionProvider", gpu.provider_message
    assert gpu.notice is None
    comparisons = run_onnx(onnx_dir)
    assert all(c.ok for c in comparisons), [c for c in comparisons if not c.ok]
