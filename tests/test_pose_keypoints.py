"""PoseFrame construction and the versioned JSONL pose file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from unianimate_cli.errors import InputError
from unianimate_cli.pose.keypoints import POSES_VERSION, PoseFrame, PoseSequence, load_poses, save_poses


def _frames(fixtures_dir: Path) -> tuple[list[PoseFrame], dict[str, np.ndarray]]:
    folder = fixtures_dir / "pose" / "align" / "c_missing_keypoints"
    case = json.loads((folder / "case.json").read_text())
    with np.load(folder / "arrays.npz") as z:
        arrays = {k: z[k] for k in z.files}
    vh, vw = case["video_frame_hw"]
    n = case["num_video_frames"]
    frames = [
        PoseFrame.from_wholebody(arrays[f"frame{i:02d}/raw_keypoints"][0], arrays[f"frame{i:02d}/raw_scores"][0], vh, vw,
                                 box_xyxy=(1.5, 2.0, 300.25, 400.0) if i == 0 else None)
        for i in range(n)
    ]  # fmt: skip
    return frames, arrays


def test_from_wholebody_matches_reference_pose_dict(fixtures_dir: Path) -> None:
    frames, arrays = _frames(fixtures_dir)
    for i, f in enumerate(frames):
        np.testing.assert_array_equal(f.body, arrays[f"frame{i:02d}/pose_candidate"])
        np.testing.assert_array_equal(f.subset(), arrays[f"frame{i:02d}/pose_subset"][0])
        np.testing.assert_array_equal(f.hands, arrays[f"frame{i:02d}/pose_hands"])
        np.testing.assert_array_equal(f.face, arrays[f"frame{i:02d}/pose_faces"][0])
    # invisible points are exactly (-1, -1) and not visible
    some = frames[2]
    assert np.all(some.hands[~some.hand_visible] == -1)
    assert (~some.hand_visible).any()


def test_jsonl_round_trip_is_exact(fixtures_dir: Path, tmp_path: Path) -> None:
    frames, _ = _frames(fixtures_dir)
    seq = PoseSequence(
        frames=tuple(frames),
        fps=12.5,
        source="dance.mp4",
        source_frames=tuple(range(0, 2 * len(frames), 2)),
        meta={"interval": 2},
    )
    path = tmp_path / "poses" / "driving.jsonl"
    save_poses(path, seq)
    assert [p.name for p in path.parent.iterdir()] == ["driving.jsonl"]  # no temp file left
    header = json.loads(path.read_text().splitlines()[0])
    assert header["schema"] == "unianimate.poses" and header["version"] == POSES_VERSION
    back = load_poses(path)
    assert len(back) == len(frames)
    assert all(a.equals(b) for a, b in zip(frames, back.frames))
    assert back.fps == 12.5 and back.source == "dance.mp4" and back.meta == {"interval": 2}
    assert back.source_frames == seq.source_frames
    assert back.frames[0].box_xyxy == (1.5, 2.0, 300.25, 400.0)


def test_save_replaces_atomically_and_refuses_nan(fixtures_dir: Path, tmp_path: Path) -> None:
    frames, _ = _frames(fixtures_dir)
    path = tmp_path / "p.jsonl"
    save_poses(path, frames[:2])
    before = path.read_bytes()
    bad = frames[0].with_points(body=np.full((20, 2), np.nan))
    with pytest.raises(ValueError, match="NaN"):
        save_poses(path, [frames[0], bad])
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.jsonl"]


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda lines: [], "empty"),
        (lambda lines: ["not json"] + lines[1:], "not JSON"),
        (lambda lines: [json.dumps({"schema": "other", "version": 1})] + lines[1:], "header"),
        (lambda lines: [lines[0].replace('"version": 1', '"version": 99')] + lines[1:], "newer"),
        (lambda lines: [lines[0].replace('"version": 1', '"version": 0')] + lines[1:], "unknown format version"),
        (lambda lines: lines[:-1], "truncated"),
        (lambda lines: lines[:1] + [lines[1].replace('"body": [[', '"body": [[[')] + lines[2:], "line 2"),
        (lambda lines: lines[:1] + [lines[1].replace('"height_px": ', '"height_px": -')] + lines[2:], "line 2"),
        (
            lambda lines: lines[:1] + [lines[1].replace('"face_scores": [', '"face_scores": [NaN, ')] + lines[2:],
            "line 2",
        ),
        (
            lambda lines: lines[:1]
            + [json.dumps({k: v for k, v in json.loads(lines[1]).items() if k != "hands"})]
            + lines[2:],
            "hands",
        ),
    ],
)
def test_load_rejects_bad_files(fixtures_dir: Path, tmp_path: Path, mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    frames, _ = _frames(fixtures_dir)
    good = tmp_path / "good.jsonl"
    save_poses(good, frames[:3])
    bad = _write(tmp_path / "bad.jsonl", mutate(good.read_text().splitlines()))
    with pytest.raises(InputError, match=message) as err:
        load_poses(bad)
    assert "bad.jsonl" in err.value.message
    assert "\n" not in err.value.message


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        load_poses(tmp_path / "nope.jsonl")


def test_posframe_validates_shapes() -> None:
    with pytest.raises(ValueError, match="body"):
        PoseFrame(
            body=np.zeros((18, 2)), body_scores=np.zeros(20), feet=np.zeros((6, 2)), feet_scores=np.zeros(6),
            hands=np.zeros((2, 21, 2)), hand_scores=np.zeros((2, 21)), face=np.zeros((68, 2)),
            face_scores=np.zeros(68), height_px=10, width_px=10,
        )  # fmt: skip
