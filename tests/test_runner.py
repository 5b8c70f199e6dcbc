"""Runner: make-like planning with reasons, skip/force, recording, resume and partial work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from test_runner_standins import HOOKS, reset_hooks, standin_registry
from unianimate_cli.config import load_settings
from unianimate_cli.project import Project, sha256_file
from unianimate_cli.runner import Runner


@pytest.fixture(autouse=True)
def _hooks() -> None:
    reset_hooks()


def _inputs(tmp_path: Path) -> tuple[Path, Path]:
    photo, video = tmp_path / "photo.jpg", tmp_path / "dance.mp4"
    photo.write_bytes(b"photo-bytes")
    video.write_bytes(b"video-bytes")
    return photo, video


def _runner(root: Path, photo: Path, video: Path, **cli: dict) -> Runner:
    registry = standin_registry()
    project = Project(root)
    project.create()
    project.set_user_input("photo", photo)
    project.set_user_input("video", video)
    types = {s.name: s.params_type for s in registry}
    settings = load_settings(types, cli=cli, project_dir=project.root)
    return Runner(project, registry, settings)


def test_chain_runs_upstream_then_skips_when_fresh(tmp_path: Path) -> None:
    photo, video = _inputs(tmp_path)
    runner = _runner(tmp_path / "p", photo, video)
    assert [s.name for s in runner.chain("double")] == ["count", "double"]
    results = runner.run("double")
    assert [(r.name, r.ran, r.reason) for r in results] == [("count", True, "never run"), ("double", True, "never run")]
    out = tmp_path / "p" / "double" / "out.txt"
    assert out.read_text().count("\n") == 8
    manifest = json.loads((tmp_path / "p" / "manifest.json").read_text())
    rec = manifest["stages"]["double"]
    assert manifest["schema"] == 1
    assert rec["outputs"]["double.text"]["sha256"] == sha256_file(out)
    assert rec["inputs"]["count.lines"]["sha256"] == sha256_file(tmp_path / "p" / "count" / "lines.txt")
    assert rec["key"].startswith("sha256:")
    assert not (tmp_path / "p" / "count" / "partial").exists()
    assert not list((tmp_path / "p" / ".tmp").rglob("*.txt"))

    HOOKS["computed"].clear()
    again = _runner(tmp_path / "p", photo, video).run("double")
    assert [r.ran for r in again] == [False, False]
    assert HOOKS["computed"] == []


def test_reasons_params_input_output(tmp_path: Path) -> None:
    photo, video = _inputs(tmp_path)
    _runner(tmp_path / "p", photo, video).run("double")

    plan = _runner(tmp_path / "p", photo, video, count={"salt": "b"}).plan("double")
    assert plan[0].reasons == ("params changed (salt 'a' -> 'b')",)
    assert plan[1].state == "stale" and "upstream count" in plan[1].reason

    # A key=False param does not make the stage stale.
    assert _runner(tmp_path / "p", photo, video, count={"delay_s": 0.01}).plan("count")[0].state == "fresh"

    photo.write_bytes(b"other photo")
    assert _runner(tmp_path / "p", photo, video).plan("count")[0].reasons == ("input changed (user:photo)",)
    photo.write_bytes(b"photo-bytes")

    (tmp_path / "p" / "double" / "out.txt").unlink()
    st = _runner(tmp_path / "p", photo, video).plan("double")
    assert st[0].state == "fresh"
    assert st[1].reasons == ("output missing (double/out.txt)",)

    (tmp_path / "p" / "count" / "lines.txt").write_text("edited\n")
    assert "output changed (count/lines.txt)" in _runner(tmp_path / "p", photo, video).plan("count")[0].reasons


def test_touch_or_copy_starts_no_work(tmp_path: Path) -> None:
    import os
    import shutil

    photo, video = _inputs(tmp_path)
    _runner(tmp_path / "p", photo, video).run("double")
    os.utime(photo, (1, 1))
    os.utime(tmp_path / "p" / "count" / "lines.txt", (5, 5))
    assert [s.state for s in _runner(tmp_path / "p", photo, video).plan("double")] == ["fresh", "fresh"]
    shutil.copytree(tmp_path / "p", tmp_path / "copy")
    assert [s.state for s in _runner(tmp_path / "copy", photo, video).plan("double")] == ["fresh", "fresh"]


def test_upstream_rerun_with_same_output_keeps_downstream(tmp_path: Path) -> None:
    photo, video = _inputs(tmp_path)
    _runner(tmp_path / "p", photo, video).run("double")
    (tmp_path / "p" / "count" / "lines.txt").unlink()
    HOOKS["computed"].clear()
    results = _runner(tmp_path / "p", photo, video).run("double")
    assert [r.ran for r in results] == [True, False]  # same content again: double stays fresh


def test_force_reruns_only_the_target(tmp_path: Path) -> None:
    photo, video = _inputs(tmp_path)
    _runner(tmp_path / "p", photo, video).run("double")
    HOOKS["computed"].clear()
    results = _runner(tmp_path / "p", photo, video).run("double", force=True)
    assert [(r.name, r.ran) for r in results] == [("count", False), ("double", True)]
    assert results[1].reason == "forced (--force)"


def _run_interrupted(root: Path, photo: Path, video: Path, k: int, units: int) -> None:
    def stop(i: int) -> None:
        if i == k:
            raise KeyboardInterrupt

    HOOKS["after_unit"] = stop
    with pytest.raises(KeyboardInterrupt):
        _runner(root, photo, video, count={"units": units}).run("double")
    HOOKS["after_unit"] = None


def test_resume_after_interrupt_gives_identical_artifacts(tmp_path: Path) -> None:
    photo, video = _inputs(tmp_path)
    units = 6
    _runner(tmp_path / "clean", photo, video, count={"units": units}).run("double")

    HOOKS["computed"].clear()
    _run_interrupted(tmp_path / "p", photo, video, k=2, units=units)
    assert HOOKS["computed"] == [0, 1, 2]
    assert not (tmp_path / "p" / "count" / "lines.txt").exists()  # no half artifact in place
    assert (tmp_path / "p" / "count" / "partial" / "unit-0002.txt").exists()

    HOOKS["computed"].clear()
    _runner(tmp_path / "p", photo, video, count={"units": units}).run("double")
    assert HOOKS["computed"] == [3, 4, 5, "double"]  # finished units are not recomputed
    for rel in ("count/lines.txt", "double/out.txt", "double/parts/0.txt"):
        assert sha256_file(tmp_path / "p" / rel) == sha256_file(tmp_path / "clean" / rel)
    clean = json.loads((tmp_path / "clean" / "manifest.json").read_text())["stages"]
    resumed = json.loads((tmp_path / "p" / "manifest.json").read_text())["stages"]
    for name in ("count", "double"):
        assert resumed[name]["key"] == clean[name]["key"]
        assert {k: v["sha256"] for k, v in resumed[name]["outputs"].items()} == {k: v["sha256"] for k, v in clean[name]["outputs"].items()}


def test_partial_work_of_another_key_is_discarded(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    photo, video = _inputs(tmp_path)
    _run_interrupted(tmp_path / "p", photo, video, k=1, units=4)
    HOOKS["computed"].clear()
    with caplog.at_level("WARNING"):
        _runner(tmp_path / "p", photo, video, count={"units": 4, "salt": "z"}).run("count")
    assert HOOKS["computed"] == [0, 1, 2, 3]
    assert "discarding partial work" in caplog.text


def test_stage_that_skips_an_output_is_reported(tmp_path: Path) -> None:
    from test_runner_standins import COUNT

    from unianimate_cli.errors import ProjectError

    photo, video = _inputs(tmp_path)
    runner = _runner(tmp_path / "p", photo, video)
    original = type(COUNT).run
    try:
        type(COUNT).run = lambda self, ctx, params: None  # type: ignore[method-assign]
        with pytest.raises(ProjectError, match="without writing count/lines.txt"):
            runner.run("count")
    finally:
        type(COUNT).run = original  # type: ignore[method-assign]
    assert "count" not in Project(tmp_path / "p").load()["stages"]


def test_missing_user_input_is_a_project_error(tmp_path: Path) -> None:
    from unianimate_cli.errors import ProjectError

    registry = standin_registry()
    project = Project(tmp_path / "p")
    project.create()
    settings = load_settings({s.name: s.params_type for s in registry})
    with pytest.raises(ProjectError, match="records no photo"):
        Runner(project, registry, settings).run("count")


def test_missing_weights_fail_before_any_stage_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from test_runner_standins import DOUBLE

    from unianimate_cli.errors import WeightsError

    def weights(self: object, ctx: object, params: object) -> dict:
        raise WeightsError("weight file unet.pth not found (looked in: /nowhere)")

    monkeypatch.setattr(type(DOUBLE), "weight_files", weights)
    photo, video = _inputs(tmp_path)
    with pytest.raises(WeightsError):
        _runner(tmp_path / "p", photo, video).run("double")
    assert HOOKS["computed"] == []  # count did not run first
