"""End to end through the CLI on a real video: tiny ONNX pose models and a tiny random model family."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from videos import sliding_video, tiny_weights

from unianimate_cli.cli import build_app
from unianimate_cli.project import sha256_file

FPS = 4
NUM_FRAMES = 6


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, fixtures_dir: Path) -> tuple[Path, Path, Path]:
    """(photo, driving video, weights dir) for a whole run in seconds."""
    root = tmp_path_factory.mktemp("e2e")
    photo = fixtures_dir / "pose" / "onnx" / "image1.png"
    video = root / "dance.mp4"
    sliding_video(video, photo, [5 * i for i in range(NUM_FRAMES)], FPS)
    weights = tiny_weights(root / "weights", fixtures_dir)
    return photo, video, weights


ANIMATE_ARGS = ("--device", "cpu", "--width", "64", "--height", "64", "--steps", "5", "--window-size", "4", "--window-overlap", "2")


@pytest.fixture(scope="module")
def clean(setup: tuple[Path, Path, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """One uninterrupted animate run (project dir, its --json record), shared by the tests."""
    photo, video, weights = setup
    root = tmp_path_factory.mktemp("clean")
    with pytest.MonkeyPatch.context() as mp:
        # Module scope runs before conftest's per-test isolation: isolate here too.
        mp.setenv("UNIANIMATE_STAGES", "builtin")
        mp.setenv("UNIANIMATE_CONFIG_DIR", str(root / "config"))
        mp.setenv("UNIANIMATE_DATA_DIR", str(root / "data"))
        mp.setenv("UNIANIMATE_ALIGN_WIDTH", "64")
        mp.setenv("UNIANIMATE_ALIGN_HEIGHT", "64")
        mp.chdir(root)
        result = CliRunner().invoke(build_app(), ["animate", str(photo), str(video), "--weights-dir", str(weights), *ANIMATE_ARGS, "--json"])
    assert result.exit_code == 0, result.output
    return root / "image1-dance.unianimate", json.loads(result.stdout)


def test_animate_runs_every_stage_then_skips(setup: tuple[Path, Path, Path], clean: tuple[Path, dict], monkeypatch: pytest.MonkeyPatch) -> None:
    import av

    photo, video, weights = setup
    project, data = clean
    monkeypatch.setenv("UNIANIMATE_ALIGN_WIDTH", "64")
    monkeypatch.setenv("UNIANIMATE_ALIGN_HEIGHT", "64")
    assert [(s["name"], s["ran"]) for s in data["stages"]] == [("extract-pose", True), ("align", True), ("animate", True)]
    out = Path(data["outputs"]["render.video"])
    assert out == project / "render" / "out.mp4"
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        assert (stream.width, stream.height) == (64, 64)
        assert float(stream.average_rate) == pytest.approx(FPS)
    assert frames == NUM_FRAMES
    assert data["info"]["num_frames"] == NUM_FRAMES

    first_hash = sha256_file(project / "animate" / "latents.safetensors")
    again = CliRunner().invoke(build_app(), ["animate", str(project), "--weights-dir", str(weights), *ANIMATE_ARGS, "--json"])
    assert again.exit_code == 0, again.output
    assert [s["ran"] for s in json.loads(again.stdout)["stages"]] == [False, False, False]

    status = CliRunner().invoke(build_app(), ["--json", "status", str(project), "--weights-dir", str(weights)])
    states = {s["name"]: s["state"] for s in json.loads(status.stdout)["stages"]}
    assert states["extract-pose"] == states["align"] == "fresh"
    assert first_hash == sha256_file(project / "animate" / "latents.safetensors")

    listing = CliRunner().invoke(build_app(), ["weights", "--weights-dir", str(weights), "--json"])
    assert listing.exit_code == 0, listing.output
    assert {f["component"]: f["state"] for f in json.loads(listing.stdout)["files"]} == dict.fromkeys(
        ("unet", "vae", "clip", "detector", "pose"), "loads"
    )


def test_interrupted_render_resumes_to_identical_output(
    setup: tuple[Path, Path, Path], clean: tuple[Path, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C after DDIM step 2 of 5; the rerun runs only steps 3-5 and gives the same files."""
    from unianimate_cli import animation
    from unianimate_cli.models.unet import UniAnimateUNet

    photo, video, weights = setup
    clean_project, _ = clean
    monkeypatch.setenv("UNIANIMATE_ALIGN_WIDTH", "64")
    monkeypatch.setenv("UNIANIMATE_ALIGN_HEIGHT", "64")
    calls: list[int] = []
    real_forward = UniAnimateUNet.forward

    def counted(self: UniAnimateUNet, *args: object, **kwargs: object) -> object:
        calls.append(1)
        return real_forward(self, *args, **kwargs)

    monkeypatch.setattr(UniAnimateUNet, "forward", counted)

    def animate(project: Path) -> object:
        return CliRunner().invoke(build_app(), ["animate", str(photo), str(video), "--project", str(project), "--weights-dir", str(weights), *ANIMATE_ARGS])

    real_save = animation._save_tensors

    def save_then_stop(path: Path, tensors: dict) -> None:
        real_save(path, tensors)
        if path.name == animation.STATE_FILE and int(tensors["completed_steps"]) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(animation, "_save_tensors", save_then_stop)
    interrupted = animate(tmp_path / "resumed")
    assert interrupted.exit_code == 130
    assert "interrupted; run the same command again to resume" in interrupted.stderr
    assert (tmp_path / "resumed" / "animate" / "partial" / animation.STATE_FILE).exists()
    assert not (tmp_path / "resumed" / "render" / "out.mp4").exists()
    per_step = len(calls) // 2
    assert per_step > 0 and len(calls) == 2 * per_step

    monkeypatch.setattr(animation, "_save_tensors", real_save)
    calls.clear()
    resumed = animate(tmp_path / "resumed")
    assert resumed.exit_code == 0, resumed.output
    assert len(calls) == 3 * per_step  # steps 1-2 were not recomputed
    for rel in ("animate/latents.safetensors", "render/out.mp4", "align/poses.jsonl", "pose/driving.jsonl"):
        assert sha256_file(tmp_path / "resumed" / rel) == sha256_file(clean_project / rel), rel


def test_segments_then_extend(setup: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """animate in last-frame segments over the first 4 poses, then extend to all 6."""
    import av

    photo, video, weights = setup
    monkeypatch.setenv("UNIANIMATE_ALIGN_WIDTH", "64")
    monkeypatch.setenv("UNIANIMATE_ALIGN_HEIGHT", "64")
    project = tmp_path / "p"
    common = ["--weights-dir", str(weights), "--device", "cpu", "--json"]
    r = CliRunner().invoke(build_app(), ["animate", str(photo), str(video), "--project", str(project), "--mode", "segments",
                                         "--segment-frames", "3", "--max-frames", "4", "--width", "64", "--height", "64", "--steps", "5", *common])
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)["info"]
    assert (info["num_frames"], info["segments"]) == (4, 2)

    r = CliRunner().invoke(build_app(), ["extend", str(project), "--segment-frames", "3", "--steps", "5", *common])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert [(s["name"], s["ran"]) for s in data["stages"]] == [("extract-pose", False), ("align", False), ("animate", False), ("extend", True)]
    assert (data["info"]["num_frames"], data["info"]["added_frames"]) == (NUM_FRAMES, NUM_FRAMES - 4)
    with av.open(data["outputs"]["render.extended"]) as container:
        assert sum(1 for _ in container.decode(video=0)) == NUM_FRAMES

    from safetensors.torch import load_file

    before = load_file(str(project / "animate" / "latents.safetensors"))["latents"]
    after = load_file(str(project / "extend" / "latents.safetensors"))["latents"]
    assert after.shape[2] == NUM_FRAMES
    assert (after[:, :, :4] == before).all()  # the earlier frames are kept as they were

    r = CliRunner().invoke(build_app(), ["extend", str(project), "--segment-frames", "3", "--steps", "5", *common])
    assert r.exit_code == 0 and json.loads(r.stdout)["stages"][-1]["ran"] is False
