"""Pose rendering against fixtures/pose/draw."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from unianimate_cli.parity.pose import compare_render, run_draw
from unianimate_cli.pose.draw import draw_canvas, draw_pose, hand_edge_colors
from unianimate_cli.pose.keypoints import PoseFrame


def _pose(folder: Path, name: str) -> PoseFrame:
    with np.load(folder / "poses.npz") as z:
        return PoseFrame.from_dwpose(
            z[f"{name}/candidate"], z[f"{name}/subset"], z[f"{name}/hands"], z[f"{name}/faces"]
        )


def test_draw_fixture_matches(fixtures_dir: Path) -> None:
    comparisons = run_draw(fixtures_dir / "pose" / "draw")
    names = {c.name for c in comparisons}
    index = json.loads((fixtures_dir / "pose" / "draw" / "index.json").read_text())
    for pose in index["poses"]:
        assert f"{pose['name']}.png" in names and f"{pose['name']}_with_face.png" in names
    assert all(c.ok for c in comparisons), [c for c in comparisons if not c.ok]
    assert all(c.max_abs == 0 for c in comparisons if c.name.endswith(".png"))


def test_hand_colours_match_palette(fixtures_dir: Path) -> None:
    palette = json.loads((fixtures_dir / "pose" / "draw" / "palette.json").read_text())
    assert [list(c) for c in hand_edge_colors()] == [e["float_colour"] for e in palette["hand_edges"]]


def test_draw_pose_returns_the_saved_files_rgb(fixtures_dir: Path) -> None:
    import cv2

    folder = fixtures_dir / "pose" / "draw"
    frame = _pose(folder, "pose1")
    rgb = draw_pose(frame)
    assert rgb.dtype == np.uint8 and rgb.shape == (768, 512, 3)
    # a PIL/RGB reader of the saved file sees the canvas reversed
    expected_rgb = cv2.imread(str(folder / "pose1.png"))[..., ::-1]
    assert np.array_equal(rgb, expected_rgb)
    # the neck -> right shoulder limb (colour entry 0) appears blue after dimming
    palette = json.loads((folder / "palette.json").read_text())
    blue = palette["limbs"][0]["saved_file_rgb_after_dimming"]
    assert np.all(rgb.reshape(-1, 3) == blue, axis=1).any()
    # the face only on request
    with_face = draw_pose(frame, include_face=True)
    assert (np.all(with_face == 255, axis=-1).sum()) > (np.all(rgb == 255, axis=-1).sum())


def test_draw_any_resolution(fixtures_dir: Path) -> None:
    frame = _pose(fixtures_dir / "pose" / "draw", "pose1")
    big = draw_pose(frame, height_px=1216, width_px=768)
    assert big.shape == (1216, 768, 3)
    x, y = frame.body[1]
    neck_px = big[int(y * 1216), int(x * 768)]
    assert tuple(neck_px[::-1]) == (255, 85, 0)  # joint 1 colour, canvas order


def test_border_allowance_only_near_the_edge() -> None:
    a = np.zeros((64, 64, 3), np.uint8)
    b = a.copy()
    b[2, 30] = 255
    near = compare_render("near", a, b)
    c = a.copy()
    c[30, 30] = 255
    far = compare_render("far", a, c)
    assert not far.ok and far.max_abs == 1
    import cv2

    major_minor = tuple(int(v) for v in cv2.__version__.split(".")[:2])
    assert near.ok == (major_minor >= (4, 13))


def test_invisible_points_are_not_drawn() -> None:
    canvas = draw_canvas(np.full((20, 2), -1.0), np.full(20, -1.0), np.full((2, 21, 2), -1.0), np.full((68, 2), -1.0))
    assert not canvas.any()
