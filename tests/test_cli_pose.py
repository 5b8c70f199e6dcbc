"""The pose commands on their own inputs: ``extract-pose VIDEO|IMAGE`` then ``align PHOTO --project P``.

CliRunner on a real clip with the tiny ONNX pose models and the tiny model family's weights
folder; only the two pose stages run, so each command takes about a second.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner
from videos import sliding_video, tiny_weights

from unianimate_cli.cli import build_app
from unianimate_cli.pose.keypoints import load_poses
from unianimate_cli.project import sha256_file

NUM_FRAMES = 4
FPS = 4


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, fixtures_dir: Path) -> dict[str, Path]:
    """photo (two people), white (nobody), dance.mp4 and the weights folder."""
    onnx = fixtures_dir / "pose" / "onnx"
    root = tmp_path_factory.mktemp("pose_cli")
    photo, white = root / "photo.png", root / "white.png"
    shutil.copyfile(onnx / "image1.png", photo)
    shutil.copyfile(onnx / "image2_white.png", white)
    video = root / "dance.mp4"
    sliding_video(video, photo, [5 * i for i in range(NUM_FRAMES)], FPS)
    weights = tiny_weights(root / "weights", fixtures_dir)
    return {"photo": photo, "white": white, "video": video, "weights": weights}


def _invoke(files: dict[str, Path], *args: object) -> object:
    common = ["--weights-dir", str(files["weights"]), "--device", "cpu"]
    return CliRunner().invoke(build_app(), [str(a) for a in args] + common)


@pytest.fixture(scope="module")
def extracted(files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """``extract-pose dance.mp4`` run once in a fresh folder: (that folder, the CliRunner result)."""
    root = tmp_path_factory.mktemp("extracted")
    with pytest.MonkeyPatch.context() as mp:
        # Module scope runs before conftest's per-test isolation: isolate here too.
        mp.setenv("UNIANIMATE_STAGES", "builtin")
        mp.setenv("UNIANIMATE_CONFIG_DIR", str(root / "config"))
        mp.setenv("UNIANIMATE_DATA_DIR", str(root / "data"))
        mp.chdir(root)
        result = _invoke(files, "extract-pose", files["video"])
    return root, result


@pytest.fixture()
def project(extracted: tuple[Path, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the extracted project (mtimes kept), in the test's own folder (the cwd)."""
    root, _ = extracted
    copy = tmp_path / "dance.unianimate"
    shutil.copytree(root / "dance.unianimate", copy)
    monkeypatch.chdir(tmp_path)
    return copy


def test_extract_pose_video_alone_starts_a_project(extracted: tuple[Path, object]) -> None:
    root, result = extracted
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    project = root / "dance.unianimate"
    assert result.stdout.splitlines() == [str(project / "pose" / "driving.jsonl"), str(project / "pose" / "preview.mp4")]  # type: ignore[attr-defined]
    driving = load_poses(project / "pose" / "driving.jsonl")
    assert len(driving) == NUM_FRAMES and driving.fps == FPS
    assert not (project / "pose" / "reference.jsonl").exists()
    manifest = json.loads((project / "manifest.json").read_text())
    assert set(manifest["inputs"]) == {"video"}
    assert set(manifest["stages"]) == {"extract-pose"}


def test_align_photo_on_the_project_then_a_changed_photo_reruns_only_align(
    files: dict[str, Path], project: Path, tmp_path: Path
) -> None:
    driving_sha = sha256_file(project / "pose" / "driving.jsonl")
    r = _invoke(files, "align", files["photo"], "--project", project, "--width", "64", "--height", "64", "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert [(s["name"], s["ran"]) for s in data["stages"]] == [("extract-pose", False), ("align", True)]
    assert data["outputs"]["pose.reference"] == str(project / "pose" / "reference.jsonl")
    assert data["info"]["people_in_photo"] == 2 and data["info"]["num_frames"] == NUM_FRAMES
    reference = load_poses(project / "pose" / "reference.jsonl")
    assert reference.source == "photo.png" and len(reference) == 1
    assert len(list((project / "align" / "frames").glob("*.png"))) == NUM_FRAMES + 1

    # PHOTO PROJECT, positionally: nothing to do
    r = _invoke(files, "align", files["photo"], project, "--width", "64", "--height", "64", "--json")
    assert r.exit_code == 0, r.output
    assert [s["ran"] for s in json.loads(r.stdout)["stages"]] == [False, False]

    # Another photo (the same one mirrored): align runs again, extract-pose does not.
    import cv2

    other = tmp_path / "other.png"
    cv2.imwrite(str(other), cv2.imread(str(files["photo"]))[:, ::-1])
    before = reference[0].body.copy()
    r = _invoke(files, "align", other, project, "--width", "64", "--height", "64", "--json")
    assert r.exit_code == 0, r.output
    stages = json.loads(r.stdout)["stages"]
    assert [(s["name"], s["ran"]) for s in stages] == [("extract-pose", False), ("align", True)]
    assert stages[1]["reason"] == "input changed (user:photo)"
    assert not np.allclose(load_poses(project / "pose" / "reference.jsonl")[0].body, before)
    assert sha256_file(project / "pose" / "driving.jsonl") == driving_sha
    assert json.loads((project / "manifest.json").read_text())["inputs"]["photo"]["path"] == str(other.resolve())


def test_extract_pose_image_is_one_frame(files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    r = _invoke(files, "extract-pose", files["photo"], "--image-fps", "8", "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["project"] == str(tmp_path / "photo.unianimate")
    assert data["info"]["num_frames"] == 1 and data["info"]["fps"] == 8.0 and data["info"]["is_image"] is True
    driving = load_poses(tmp_path / "photo.unianimate" / "pose" / "driving.jsonl")
    assert len(driving) == 1 and driving.fps == 8.0 and driving.source_frames == (0,)


def test_pose_command_errors(files: dict[str, Path], project: Path, tmp_path: Path) -> None:
    # a project with a driving video but no photo yet: animate says what is missing, before any model loads
    r = _invoke(files, "animate", project)
    assert r.exit_code == 1 and "records no photo" in r.stderr
    assert f"unianimate align PHOTO --project {project}" in r.stderr

    # nobody in the photo: the error names the file
    r = _invoke(files, "align", files["white"], "--project", project)
    assert r.exit_code == 1 and r.stdout == ""
    assert f"error: no person found in {files['white']}" in r.stderr

    # a video given as the photo: refused before the project records it
    before = json.loads((project / "manifest.json").read_text())["inputs"]
    r = _invoke(files, "align", files["video"], "--project", project)
    assert r.exit_code == 1 and "is a video, not a photo" in r.stderr
    assert "unianimate extract-pose" in r.stderr  # the hint says where a video goes
    assert json.loads((project / "manifest.json").read_text())["inputs"] == before

    # the photo given as the video, and the video as the photo
    r = _invoke(files, "extract-pose", files["video"], files["photo"])
    assert r.exit_code == 1 and "PHOTO and VIDEO are the wrong way round" in r.stderr
    assert not (tmp_path / "dance-photo.unianimate").exists()

    # a missing project, and no project at all
    r = _invoke(files, "align", files["photo"], "--project", tmp_path / "nope.unianimate")
    assert r.exit_code == 1 and f"error: project {tmp_path / 'nope.unianimate'} does not exist" in r.stderr
    assert "extract-pose VIDEO" in r.stderr and not (tmp_path / "nope.unianimate").exists()
    r = _invoke(files, "align", files["photo"])
    assert r.exit_code == 1 and "error: no project for the photo" in r.stderr
