"""Driving videos made with PyAV (variable rate, rotated, with and without audio) through every stage.

The media unit tests check decode and encode alone; here the same kinds of file go through
``extract-pose`` -> ``align`` -> ``animate`` on the CLI with the tiny models, and the result is
checked for frame count, frame rate, duration, size, audio presence and audio duration.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from test_media_video import make_video  # the tests' own PyAV video maker
from videos import tiny_weights
from unianimate_cli.cli import build_app
from unianimate_cli.media.video import iter_frames, probe_video

SIZE = 64
RENDER_ARGS = ("--device", "cpu", "--width", str(SIZE), "--height", str(SIZE), "--steps", "4", "--window-size", "8", "--window-overlap", "2")


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory, fixtures_dir: Path) -> Path:
    return tiny_weights(tmp_path_factory.mktemp("weights"), fixtures_dir)


@pytest.fixture()
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("UNIANIMATE_ALIGN_WIDTH", str(SIZE))
    monkeypatch.setenv("UNIANIMATE_ALIGN_HEIGHT", str(SIZE))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _run(*args: str) -> dict:
    result = CliRunner().invoke(build_app(), [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _render(photo: Path, video: Path, project: Path, weights: Path, *extract: str, animate: tuple[str, ...] = ()) -> dict:
    _run("extract-pose", str(photo), str(video), "--project", str(project), "--weights-dir", str(weights), *extract)
    return _run("animate", str(project), "--weights-dir", str(weights), *RENDER_ARGS, *animate)


def test_variable_rate_rotated_video_with_audio_keeps_timing_and_sound(
    fixtures_dir: Path, weights: Path, cli_env: Path
) -> None:
    # 20 frames stamped unevenly over 1.9 s at a nominal 10 fps, shown turned by 90 degrees,
    # with 2 s of AAC tone. Every 2nd of the evenly timed frames from frame 2 on is animated.
    pts_ms = [i * 100 if i % 5 else i * 100 - 40 for i in range(20)]
    pts_ms[0] = 0
    video = make_video(cli_env / "dance.mp4", len(pts_ms), 10, pts_ms=pts_ms, rotation=90, audio_s=2.0)
    source = probe_video(video)
    expected_frames = len(range(2, len(list(iter_frames(video))), 2))
    data = _render(
        fixtures_dir / "pose" / "onnx" / "image1.png", video, cli_env / "p", weights,
        "--frame-interval", "2", "--start-frame", "2", animate=("--frames", "frames", "--crf", "0"),
    )

    out = Path(data["outputs"]["render.video"])
    info = probe_video(out)
    assert info.num_frames == data["info"]["num_frames"] == expected_frames
    assert info.fps == source.fps / 2
    assert (info.width_px, info.height_px, info.rotation_deg) == (SIZE, SIZE, 0)
    assert info.duration_s == pytest.approx(expected_frames / float(info.fps), abs=0.02)
    assert data["info"]["has_audio"] is True
    assert info.audio is not None and info.audio.duration_s is not None
    # The audio is cut to the rendered span: from source frame 2 for expected_frames * 2 frames.
    assert info.audio.duration_s == pytest.approx(expected_frames * 2 / float(source.fps), abs=0.05)

    pngs = sorted((cli_env / "frames").glob("*.png"))
    assert [p.name for p in pngs] == [f"{i:05d}.png" for i in range(expected_frames)]
    # The PNGs are the frames the video holds, before H.264 (lossless here, --crf 0): the tiny
    # random model paints noise, whose chroma 4:2:0 cannot keep, so compare luma.
    from unianimate_cli.media.image import load_image

    luma = np.array([0.299, 0.587, 0.114])
    for png, decoded in zip(pngs, iter_frames(out), strict=True):
        diff = np.abs(load_image(png) @ luma - decoded.image @ luma)
        assert diff.mean() < 2.0, png.name


def test_silent_video_and_no_audio_flag_give_silent_results(fixtures_dir: Path, weights: Path, cli_env: Path) -> None:
    photo = fixtures_dir / "pose" / "onnx" / "image1.png"
    silent = make_video(cli_env / "silent.mp4", 6, 12)
    data = _render(photo, silent, cli_env / "a", weights)
    info = probe_video(Path(data["outputs"]["render.video"]))
    assert (info.num_frames, info.fps, info.audio) == (6, Fraction(12), None)
    assert data["info"]["has_audio"] is False

    loud = make_video(cli_env / "loud.mp4", 6, 12, audio_s=1.0)
    data = _render(photo, loud, cli_env / "b", weights, animate=("--no-audio", "--layout", "compare"))
    info = probe_video(Path(data["outputs"]["render.video"]))
    assert info.audio is None and data["info"]["has_audio"] is False
    assert (info.width_px, info.height_px) == (3 * SIZE, SIZE)  # photo | pose | result
