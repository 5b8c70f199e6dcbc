"""Synthetic people (unianimate_cli.demo): determinism, geometry, colours, files."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from unianimate_cli.demo import (
    make_background,
    make_example,
    make_example_poses,
    make_figure_style,
    make_motion,
    render_figure,
    write_example,
)
from unianimate_cli.demo import motion as mo
from unianimate_cli.demo.synth import BACKGROUND_KINDS
from unianimate_cli.media.image import load_image
from unianimate_cli.media.video import iter_frames, probe_video
from unianimate_cli.pose.draw import draw_pose
from unianimate_cli.pose.keypoints import PoseFrame, load_poses

SIZES = ((96, 64), (64, 96), (128, 128))  # (height_px, width_px): portrait, landscape, square


def _px(frame: PoseFrame) -> np.ndarray:
    return frame.body * np.array([frame.width_px, frame.height_px])


def test_same_seed_same_example_other_seed_differs() -> None:
    a = make_example(3, 6, 96, 64)
    b = make_example(3, 6, 96, 64)
    c = make_example(4, 6, 96, 64)
    assert np.array_equal(a.photo, b.photo) and np.array_equal(a.frames, b.frames)
    assert a.keypoints_photo.equals(b.keypoints_photo)
    assert all(x.equals(y) for x, y in zip(a.keypoints_frames.frames, b.keypoints_frames.frames))
    assert a.style == b.style
    assert a.style != c.style
    assert not np.array_equal(a.photo, c.photo)
    assert not np.array_equal(a.keypoints_frames[3].body, c.keypoints_frames[3].body)
    assert a.frames.shape == (6, 96, 64, 3) and a.frames.dtype == np.uint8
    assert a.photo.shape == (96, 64, 3) and a.photo.dtype == np.uint8
    assert len(a.keypoints_frames) == 6 and a.keypoints_frames.fps == a.fps == 15.0


def test_motion_is_seeded_and_moves() -> None:
    m1, m2, m3 = make_motion(11, 40, 15.0), make_motion(11, 40, 15.0), make_motion(12, 40, 15.0)
    assert np.array_equal(m1.points, m2.points) and np.array_equal(m1.zoom, m2.zoom)
    assert not np.array_equal(m1.points, m3.points)
    assert m1.points.shape == (40, mo.NUM_POINTS, 2) and m1.visible.shape == (40, mo.NUM_POINTS)
    # it dances: the wrists travel a good fraction of the body height over the clip
    wrists = m1.points[:, [mo.R_WRIST, mo.L_WRIST]]
    assert float(np.ptp(wrists, axis=0).max()) > 0.1
    # the lower sole rests on the floor (y = 0) in every frame, nothing goes below it
    assert float(m1.points[:, mo.BODY, 1].max()) <= 1e-9
    with pytest.raises(ValueError):
        make_motion(1, 0, 15.0)


@pytest.mark.parametrize(("height_px", "width_px"), SIZES)
def test_keypoints_stay_inside_the_frame(height_px: int, width_px: int) -> None:
    for seed in range(12):
        _, photo, clip = make_example_poses(seed, 64, height_px, width_px)
        for frame in (photo, *clip.frames):
            assert (frame.height_px, frame.width_px) == (height_px, width_px)
            for pts, vis in (
                (frame.body, frame.body_visible),
                (frame.feet, frame.feet_visible),
                (frame.hands.reshape(-1, 2), frame.hand_visible.reshape(-1)),
                (frame.face, frame.face_visible),
            ):
                inside = pts[vis]
                assert inside.size and inside.min() >= 0.0 and inside.max() <= 1.0, seed
            # the whole body skeleton is detectable: everything but a turned-away ear is visible
            assert frame.body_visible[:16].all() and frame.body_visible[18:].all()
            assert frame.is_finite()


def test_limbs_are_rigid() -> None:
    """Chain limbs keep their length relative to the (rigid) torso in every frame, in pixels."""
    for seed in range(6):
        _, photo, clip = make_example_poses(seed, 48, 96, 160)
        ratios = []
        for frame in (photo, *clip.frames):
            b = _px(frame)
            torso = np.linalg.norm(b[mo.NECK] - (b[mo.R_HIP] + b[mo.L_HIP]) / 2)
            ratios.append([np.linalg.norm(b[i] - b[j]) / torso for i, j in mo.RIGID_LIMBS])
        r = np.array(ratios)
        assert np.abs(r - r[0]).max() < 1e-9, seed
        sk = make_figure_style(seed).skeleton
        expected = [sk.upper_arm, sk.forearm] * 2 + [sk.thigh, sk.shin] * 2
        np.testing.assert_allclose(r[0], np.array(expected) / sk.torso, rtol=1e-9)
    # the camera zooms, so pixel lengths do change (the check above is not vacuous)
    m = make_motion(2, 64, 15.0)
    assert np.ptp(m.zoom) > 0 or np.ptp(make_motion(5, 64, 15.0).zoom) > 0


def test_turning_moves_the_face() -> None:
    """Facing shows in the keypoints: the nose is on the side the figure turns to."""
    style = make_figure_style(0)
    for yaw in (-0.6, 0.6):
        angles = dataclasses.replace(mo.neutral_angles(), yaw=np.array([yaw]))
        pts, vis = mo.pose_points(style.skeleton, angles)
        assert np.sign(pts[0, mo.NOSE, 0] - pts[0, mo.NECK, 0]) == np.sign(yaw)
        far_ear = mo.L_EAR if yaw > 0 else mo.R_EAR
        assert not vis[0, far_ear]  # the ear turned away is hidden, like DWPose would miss it


def _dist_to_segment(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    d = b - a
    t = 0.0 if not d.any() else float(np.clip(np.dot(p - a, d) / np.dot(d, d), 0, 1))
    return float(np.linalg.norm(p - (a + t * d)))


@pytest.mark.parametrize("seed", range(8))
def test_limb_colours_are_the_style_colours(seed: int) -> None:
    """At each limb's midpoint the photo shows that limb's cloth (or skin, shoe) colour."""
    ex = make_example(seed, 16, 384, 256)
    style = ex.style
    limbs = [(2, 3), (3, 4), (5, 6), (6, 7), (8, 9), (9, 10), (11, 12), (12, 13), (10, 19), (13, 18)]

    def matches(image: np.ndarray, frame: PoseFrame, limb: tuple[int, int]) -> bool:
        b = _px(frame)
        x, y = (b[limb[0]] + b[limb[1]]) / 2
        pixel = image[int(y), int(x)].astype(np.float64)
        mat = style.limb_material(limb)
        second = mat.color2 if mat.pattern != "solid" else mat.color
        return _dist_to_segment(pixel, np.array(mat.color, float), np.array(second, float)) < 12.0

    # the standing photo hides no limb: every midpoint shows its own material
    for limb in limbs:
        assert matches(ex.photo, ex.keypoints_photo, limb), (seed, limb, style)
    # while dancing, an arm or leg sometimes passes in front of another
    hits = [matches(img, kp, limb) for img, kp in zip(ex.frames, ex.keypoints_frames.frames) for limb in limbs]
    assert np.mean(hits) > 0.9
    b = _px(ex.keypoints_photo)
    # the head is skin, shaded as a sphere: between the nose and the neck it is a darkened skin
    x, y = (b[mo.NOSE] + b[mo.NECK]) / 2
    pixel = ex.photo[int(y), int(x)].astype(np.float64)
    skin = np.array(style.skin, float)
    assert _dist_to_segment(pixel, 0.65 * skin, skin) < 12.0
    # and the background shows away from the figure (the top corners are never covered)
    bg = make_background(seed, 384, 256)
    assert np.array_equal(ex.photo[:4, :4], bg[:4, :4])


def test_render_skips_missing_joints_and_keeps_background() -> None:
    _, photo, _ = make_example_poses(1, 1, 128, 96)
    style = make_figure_style(1)
    full = render_figure(style, photo, 128, 96, (10, 200, 30))
    scores = photo.body_scores.copy()
    scores[[mo.L_ELBOW, mo.L_WRIST]] = 0.0
    hand_scores = photo.hand_scores.copy()
    hand_scores[0] = 0.0
    partial = PoseFrame(
        body=np.where(scores[:, None] > 0, photo.body, -1.0), body_scores=scores, feet=photo.feet,
        feet_scores=photo.feet_scores, hands=photo.hands, hand_scores=hand_scores, face=photo.face,
        face_scores=photo.face_scores, height_px=128, width_px=96,
    )  # fmt: skip
    missing_arm = render_figure(style, partial, 128, 96, (10, 200, 30))
    assert not np.array_equal(full, missing_arm)
    # where the forearm was, the background shows now
    x, y = ((photo.body[mo.L_ELBOW] + photo.body[mo.L_WRIST]) / 2) * np.array([96, 128])
    assert tuple(missing_arm[int(y), int(x)]) == (10, 200, 30)
    assert tuple(full[int(y), int(x)]) != (10, 200, 30)
    empty = PoseFrame(
        body=np.full((20, 2), -1.0), body_scores=np.zeros(20), feet=np.full((6, 2), -1.0), feet_scores=np.zeros(6),
        hands=np.full((2, 21, 2), -1.0), hand_scores=np.zeros((2, 21)), face=np.full((68, 2), -1.0),
        face_scores=np.zeros(68), height_px=128, width_px=96,
    )  # fmt: skip
    assert np.array_equal(render_figure(style, empty, 128, 96, (1, 2, 3)), np.broadcast_to((1, 2, 3), (128, 96, 3)))
    with pytest.raises(ValueError):
        render_figure(style, photo, 128, 96, np.zeros((10, 10, 3), np.uint8))


def test_backgrounds_are_seeded_and_varied() -> None:
    means = []
    for kind in BACKGROUND_KINDS:
        a = make_background(5, 48, 80, kind)
        assert a.shape == (48, 80, 3) and a.dtype == np.uint8
        assert np.array_equal(a, make_background(5, 48, 80, kind))
        means.append(a.reshape(-1, 3).mean(axis=0))
    assert not np.array_equal(make_background(5, 48, 80), make_background(6, 48, 80))
    assert len({tuple(np.round(m)) for m in means}) == len(BACKGROUND_KINDS)


def test_generated_poses_draw_like_extracted_ones() -> None:
    """The pose library draws our keypoints: every limb shows up on the condition frame."""
    _, photo, clip = make_example_poses(0, 4, 768, 512)
    for frame in (photo, clip[2]):
        canvas = draw_pose(frame, 768, 512)
        assert canvas.shape == (768, 512, 3)
        assert (canvas.max(axis=-1) > 0).mean() > 0.01


def test_write_example_writes_readable_files(tmp_path: Path) -> None:
    ex = make_example(7, 12, 96, 64, fps=12.0)
    paths = write_example(tmp_path / "ex", ex)
    assert paths["photo"] == tmp_path / "ex" / "photo.png" and paths["video"] == tmp_path / "ex" / "dance.mp4"
    assert np.array_equal(load_image(paths["photo"]), ex.photo)  # PNG is lossless
    info = probe_video(paths["video"])
    assert info.num_frames == 12 and (info.height_px, info.width_px) == (96, 64)
    assert float(info.fps) == pytest.approx(12.0)
    decoded = np.stack([f.image for f in iter_frames(paths["video"])])
    assert decoded.shape == ex.frames.shape
    assert np.abs(decoded.astype(int) - ex.frames.astype(int)).mean() < 6.0  # H.264 crf 18
    poses = load_poses(paths["video_poses"])
    assert len(poses) == 12 and all(p.equals(q) for p, q in zip(poses.frames, ex.keypoints_frames.frames))
    assert load_poses(paths["photo_pose"])[0].equals(ex.keypoints_photo)


@pytest.mark.parametrize(("height_px", "width_px"), SIZES)
def test_aligned_driving_poses_are_the_clip_poses(height_px: int, width_px: int) -> None:
    """The clip starts in the photo's stance, so aligning it to the photo changes nothing:
    the rendered clip is the ground truth for animating the photo with its own poses."""
    from unianimate_cli.pose.align import align_poses

    for seed in range(4):
        _, photo, clip = make_example_poses(seed, 24, height_px, width_px)
        assert np.allclose(clip[0].body, photo.body, atol=1e-12)
        assert not np.allclose(clip[-1].body, photo.body, atol=1e-3)  # and then it dances
        for mode in ("robust", "reference"):
            aligned = align_poses(photo, clip.frames, mode=mode)  # type: ignore[arg-type]
            for got, want in zip(aligned.frames, clip.frames):
                vis = want.body_visible
                np.testing.assert_allclose(got.body[vis], want.body[vis], atol=1e-9)
                np.testing.assert_allclose(got.hands, want.hands, atol=1e-9)


def test_motion_is_a_function_of_time_not_of_frame_rate() -> None:
    """Every other frame at 30 fps is the 15 fps clip: the dance lives in seconds, fps only samples it."""
    fast, slow = make_motion(9, 40, 30.0), make_motion(9, 20, 15.0)
    np.testing.assert_allclose(fast.points[::2], slow.points, atol=1e-12)
    np.testing.assert_allclose(fast.zoom[::2], slow.zoom, atol=1e-12)


def test_styles_vary_over_seeds() -> None:
    styles = [make_figure_style(s) for s in range(40)]
    assert styles[0] == make_figure_style(0)
    assert {s.shirt.pattern for s in styles} == {"solid", "stripes", "checks"}
    for flag in ("has_long_sleeves", "has_shorts", "has_long_hair"):
        assert {getattr(s, flag) for s in styles} == {True, False}, flag
    assert len({s.skin for s in styles}) == 40 and len({s.skeleton.upper_arm for s in styles}) == 40
    for s in styles:  # clothes never blend into the skin or each other
        assert np.linalg.norm(np.subtract(s.shirt.color, s.trousers.color)) > 100
        assert np.linalg.norm(np.subtract(s.shirt.color, s.skin)) > 100
        assert np.linalg.norm(np.subtract(s.trousers.color, s.skin)) > 100


def test_transfer_example_puts_b_dance_on_a() -> None:
    from unianimate_cli.demo import make_transfer_example
    from unianimate_cli.pose.align import align_poses

    tr = make_transfer_example(1, 2, 10, 96, 64)
    again = make_transfer_example(1, 2, 10, 96, 64)
    assert np.array_equal(tr.target.frames, again.target.frames)
    assert tr.target.frames.shape == tr.driving.frames.shape == (10, 96, 64, 3)
    assert tr.target.style == make_figure_style(1) and tr.driving.style == make_figure_style(2)
    assert np.array_equal(tr.driving.frames, make_example(2, 10, 96, 64).frames)
    # the target poses are B's driving poses aligned to A's photo
    want = align_poses(tr.target.keypoints_photo, tr.driving.keypoints_frames.frames).frames
    for got, exp in zip(tr.target.keypoints_frames.frames, want):
        assert all(np.array_equal(getattr(got, n), getattr(exp, n)) for n in ("body", "hands", "feet", "face"))
        assert got.box_xyxy is not None and got.box_xyxy != exp.box_xyxy  # boxes are A's, re-measured
    # B starts in the same stance as A, so aligned frame 0 is A's photo pose up to the parts
    # alignment leaves alone (hip width, feet): within 2% of the frame
    p0, photo = tr.target.keypoints_frames[0], tr.target.keypoints_photo
    assert np.abs(p0.body - photo.body)[photo.body_visible].max() < 0.02
    # A's look over A's background: target frame 0 is close to A's photo, far from B's frame 0
    diff_a = np.abs(tr.target.frames[0].astype(int) - tr.target.photo.astype(int)).mean()
    diff_b = np.abs(tr.target.frames[0].astype(int) - tr.driving.frames[0].astype(int)).mean()
    assert diff_a < 3.0 < diff_b


def test_boxes_hold_the_figure_tightly() -> None:
    """Every keypoint frame carries the rendered figure's box: nothing is drawn outside it,
    and each of its edges touches the figure (within 2 px)."""
    ex = make_example(8, 6, 128, 96)
    style = ex.style
    for image_kp in [(ex.photo, ex.keypoints_photo)] + list(zip(ex.frames, ex.keypoints_frames.frames)):
        kp = image_kp[1]
        assert kp.box_xyxy is not None
        flat = render_figure(style, kp, 128, 96, (0, 0, 255))
        drawn = np.any(flat != (0, 0, 255), axis=-1)
        ys, xs = np.nonzero(drawn)
        x0, y0, x1, y1 = kp.box_xyxy
        assert x0 <= xs.min() and xs.max() + 1 <= x1 and y0 <= ys.min() and ys.max() + 1 <= y1
        assert xs.min() - x0 < 2 and x1 - (xs.max() + 1) < 2 and ys.min() - y0 < 2 and y1 - (ys.max() + 1) < 2
        vis = kp.body[kp.body_visible] * [96, 128]
        assert (vis >= [x0, y0]).all() and (vis <= [x1, y1]).all()


def test_module_entry_writes_one_folder_per_seed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from unianimate_cli.demo.__main__ import _seeds, main

    assert _seeds("0-2,7") == [0, 1, 2, 7]
    assert main([str(tmp_path), "--seeds", "4,5", "--frames", "3", "--height", "64", "--width", "48"]) == 0
    assert capsys.readouterr().out.split() == [str(tmp_path / "seed_4"), str(tmp_path / "seed_5")]
    assert probe_video(tmp_path / "seed_5" / "dance.mp4").num_frames == 3
