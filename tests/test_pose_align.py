"""Alignment against fixtures/pose/align: every case listed in index.json, both modes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from unianimate_cli.errors import InputError
from unianimate_cli.parity.pose import run_align_case, run_align_parent
from unianimate_cli.pose.align import align_poses, choose_calibration_frame
from unianimate_cli.pose.keypoints import PoseFrame


def _align_root() -> Path:
    configured = os.environ.get("UNIANIMATE_FIXTURES")
    base = Path(configured) if configured else Path(__file__).resolve().parent.parent.parent / "shared" / "fixtures"
    return base / "pose" / "align"


def _case_names() -> list[str]:
    index = _align_root() / "index.json"
    if not index.is_file():
        return []
    return [str(c["case"]) for c in json.loads(index.read_text())["cases"]]


CASES = _case_names()


def _load_case(folder: Path) -> tuple[dict, PoseFrame, list[PoseFrame]]:
    case = json.loads((folder / "case.json").read_text())
    with np.load(folder / "arrays.npz") as z:
        arrays = {k: z[k] for k in z.files}
    ph, pw = case["reference_photo_hw"]
    vh, vw = case["video_frame_hw"]
    ref = PoseFrame.from_wholebody(arrays["ref/raw_keypoints"][0], arrays["ref/raw_scores"][0], ph, pw)
    keys = sorted(
        (k.split("/")[0] for k in arrays if k.startswith("frame") and k.endswith("/raw_keypoints")),
        key=lambda s: int(s[5:]),
    )
    frames = [
        PoseFrame.from_wholebody(arrays[f"{k}/raw_keypoints"][0], arrays[f"{k}/raw_scores"][0], vh, vw) for k in keys
    ]
    return case, ref, frames


@pytest.mark.skipif(not CASES, reason="align fixtures not found")
@pytest.mark.parametrize("case_name", CASES)
def test_align_case_matches_fixture(fixtures_dir: Path, case_name: str) -> None:
    folder = fixtures_dir / "pose" / "align" / case_name
    comparisons = run_align_case(folder)
    failed = [f"{c.name}: {c.max_abs} {c.detail}" for c in comparisons if not c.ok]
    assert comparisons and not failed, failed


@pytest.mark.skipif(not CASES, reason="align fixtures not found")
@pytest.mark.parametrize("case_name", CASES)
def test_robust_alignment_is_finite_and_measures_where_the_fixture_does(fixtures_dir: Path, case_name: str) -> None:
    case, ref, frames = _load_case(fixtures_dir / "pose" / "align" / case_name)
    result = align_poses(ref, frames, mode="robust")
    assert len(result.frames) == len(frames)
    assert all(f.is_finite() for f in result.frames)
    assert np.isfinite(
        [result.info.x_ratio, result.info.y_ratio, *result.info.ratios.values(), *result.info.translation]
    ).all()
    # invisible points never move
    for before, after in zip(frames, result.frames):
        assert np.array_equal(after.body[~before.body_visible], before.body[~before.body_visible])
        assert np.all(after.hands[~before.hand_visible] == -1)
    info = (case.get("recommended") or {}).get("info") or {}
    for key, value in info.items():
        if key.endswith("_frame") and key[: -len("_frame")] in result.info.ratios:
            assert result.info.ratio_frames[key[: -len("_frame")]] == value, key
    if "x_scale_frame" in info:
        assert result.info.x_scale_frame == info["x_scale_frame"]
    if "y_scale_frame" in info:
        assert result.info.y_scale_frame == info["y_scale_frame"]
    if "offset_frame" in info:
        assert result.info.translation_frame == info["offset_frame"]


def test_parent_folder_runs_every_indexed_case(fixtures_dir: Path) -> None:
    root = fixtures_dir / "pose" / "align"
    names = {str(c["case"]) for c in json.loads((root / "index.json").read_text())["cases"]}
    comparisons = run_align_parent(root)
    seen = {c.name.split("/")[0] for c in comparisons}
    assert seen == names
    assert all(c.ok for c in comparisons)


def test_reference_mode_reproduces_the_crash_values(fixtures_dir: Path) -> None:
    """d01: the reference divides by a zero-length forearm; robust mode measures it elsewhere."""
    case, ref, frames = _load_case(fixtures_dir / "pose" / "align" / "d01_zero_length_limb_frame0")
    reference = align_poses(ref, frames, mode="reference")
    assert not all(f.is_finite() for f in reference.frames)
    robust = align_poses(ref, frames, mode="robust")
    assert all(f.is_finite() for f in robust.frames)
    assert robust.info.ratio_frames["arm4"] != 0


def test_back_facing_frame0_is_not_mirrored(fixtures_dir: Path) -> None:
    case, ref, frames = _load_case(fixtures_dir / "pose" / "align" / "d11_frame0_back_facing")
    assert align_poses(ref, frames, mode="reference").info.x_ratio < 0
    assert align_poses(ref, frames, mode="robust").info.x_ratio > 0


def test_photo_without_shoulder_falls_back_and_warns(fixtures_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    case, ref, frames = _load_case(fixtures_dir / "pose" / "align" / "d03_ref_missing_shoulder")
    result = align_poses(ref, frames, mode="robust")
    assert result.info.translation == (0.0, 0.0)
    assert result.info.warnings
    assert any("reference photo" in r.getMessage() for r in caplog.records)


def test_empty_driving_sequence(fixtures_dir: Path) -> None:
    case, ref, frames = _load_case(fixtures_dir / "pose" / "align" / "d10_empty_video")
    assert frames == []
    assert align_poses(ref, frames, mode="robust").frames == ()
    with pytest.raises(InputError):
        align_poses(ref, frames, mode="reference")


def test_calibration_frame_options(fixtures_dir: Path) -> None:
    case, ref, frames = _load_case(fixtures_dir / "pose" / "align" / "d09_frame0_nobody")
    assert choose_calibration_frame(frames, "first") == 0
    auto = choose_calibration_frame(frames, "auto")
    assert frames[auto].num_visible_body == max(f.num_visible_body for f in frames)
    assert frames[0].num_visible_body < frames[auto].num_visible_body
    result = align_poses(ref, frames, calibration="auto")
    assert result.info.calibration_frame == auto
    assert result.info.x_scale_frame == auto
    # an explicit index starts the search there
    last = len(frames) - 1
    assert align_poses(ref, frames, calibration=last).info.x_scale_frame == last
    with pytest.raises(InputError, match="does not exist"):
        choose_calibration_frame(frames, len(frames))
    with pytest.raises(InputError):
        choose_calibration_frame(frames, "middle")  # type: ignore[arg-type]


def test_reference_calibration_on_frame0_equals_default(fixtures_dir: Path) -> None:
    case, ref, frames = _load_case(fixtures_dir / "pose" / "align" / "a_typical")
    a = align_poses(ref, frames, mode="reference")
    b = align_poses(ref, frames, mode="reference", calibration=0)
    assert all(x.equals(y) for x, y in zip(a.frames, b.frames))
    other = align_poses(ref, frames, mode="reference", calibration=len(frames) - 1)
    assert other.info.ratios != a.info.ratios
