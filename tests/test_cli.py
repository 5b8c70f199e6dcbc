"""CliRunner tests of every subcommand: results on stdout, messages on stderr, exit codes."""

from __future__ import annotations

import json
import re
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from test_runner_standins import HOOKS, reset_hooks, standin_registry
from unianimate_cli.cli import build_app

runner = CliRunner()


@pytest.fixture(autouse=True)
def _hooks() -> None:
    reset_hooks()


@pytest.fixture()
def inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    monkeypatch.chdir(tmp_path)
    photo, video = tmp_path / "photo.jpg", tmp_path / "dance.mp4"
    photo.write_bytes(b"photo")
    video.write_bytes(b"video")
    return photo, video


def invoke(*args: str, registry: object = None) -> object:
    app = build_app(standin_registry() if registry is None else registry)
    return runner.invoke(app, [str(a) for a in args])


def test_help_lists_stages_and_examples() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    for name in ("count", "double", "status", "weights"):
        assert name in result.stdout
    assert "dev" not in result.stdout.split()  # hidden
    sub = invoke("count", "--help")
    assert sub.exit_code == 0
    assert "--units" in sub.stdout and "--salt" in sub.stdout and "--json" in sub.stdout
    assert "unianimate count photo.jpg dance.mp4" in sub.stdout


def test_builtin_help_has_examples() -> None:
    app = build_app()
    for name in ("extract-pose", "align", "animate", "extend", "status", "weights"):
        result = runner.invoke(app, [name, "--help"])
        assert result.exit_code == 0, result.output
        assert "Examples" in result.stdout, name
    result = runner.invoke(app, ["animate", "--help"])
    assert "--guide-scale" in result.stdout and "--window-size" in result.stdout
    assert "[default: 2.5]" in result.stdout


def test_run_then_skip_then_force(inputs: tuple[Path, Path], tmp_path: Path) -> None:
    photo, video = inputs
    result = invoke("double", photo, video)
    assert result.exit_code == 0, result.output
    project = tmp_path / "photo-dance.unianimate"
    assert result.stdout.splitlines() == [str(project / "double" / "out.txt"), str(project / "double" / "parts")]
    assert "count: running (never run)" in result.stderr
    assert list((project / "logs").glob("*.log"))

    HOOKS["computed"].clear()
    again = invoke("double", project)
    assert again.exit_code == 0 and HOOKS["computed"] == []
    assert "double: up to date" in again.stderr

    forced = invoke("double", project, "--force", "--json")
    data = json.loads(forced.stdout)
    assert [(s["name"], s["ran"]) for s in data["stages"]] == [("count", False), ("double", True)]
    assert data["outputs"]["double.text"] == str(project / "double" / "out.txt")
    assert HOOKS["computed"] == ["double"]


def test_global_options_before_or_after(inputs: tuple[Path, Path], tmp_path: Path) -> None:
    photo, video = inputs
    result = invoke("--json", "--project", tmp_path / "mine", "count", photo, video, "--units", "2", "-q")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["project"] == str(tmp_path / "mine") and data["info"] == {"units": 2}
    assert result.stderr == ""  # --quiet


def test_params_changed_message_and_sticky_upstream(inputs: tuple[Path, Path], tmp_path: Path) -> None:
    photo, video = inputs
    assert invoke("count", photo, video, "--salt", "x").exit_code == 0
    project = tmp_path / "photo-dance.unianimate"
    result = invoke("count", project, "--salt", "y")
    assert "count: running (params changed (salt 'x' -> 'y'))" in result.stderr
    # Running downstream keeps the upstream params it last ran with.
    HOOKS["computed"].clear()
    result = invoke("double", project)
    assert result.exit_code == 0
    assert HOOKS["computed"] == ["double"]


def test_downstream_command_takes_upstream_options(inputs: tuple[Path, Path], tmp_path: Path) -> None:
    photo, video = inputs
    help_text = invoke("double", "--help").stdout
    assert "count options" in help_text and "--units" in help_text
    result = invoke("double", photo, video, "--units", "2", "--salt", "q", "--json")
    assert result.exit_code == 0, result.output
    project = tmp_path / "photo-dance.unianimate"
    lines = (project / "count" / "lines.txt").read_text().splitlines()
    assert len(lines) == 2  # --units reached the upstream count stage
    # Changing an upstream option on the downstream command reruns both stages.
    HOOKS["computed"].clear()
    again = invoke("double", project, "--units", "3", "--json")
    assert [(s["name"], s["ran"]) for s in json.loads(again.stdout)["stages"]] == [("count", True), ("double", True)]
    assert len((project / "count" / "lines.txt").read_text().splitlines()) == 3


def test_config_precedence_through_the_cli(inputs: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    photo, video = inputs
    project = tmp_path / "photo-dance.unianimate"
    project.mkdir()
    (project / "unianimate.toml").write_text("[count]\nunits = 3\n")
    r = invoke("count", photo, video, "--json")
    assert json.loads(r.stdout)["info"]["units"] == 3
    monkeypatch.setenv("UNIANIMATE_COUNT_UNITS", "5")
    r = invoke("count", project, "--json")
    assert json.loads(r.stdout)["info"]["units"] == 5
    r = invoke("count", project, "--units", "2", "--json")
    assert json.loads(r.stdout)["info"]["units"] == 2
    monkeypatch.setenv("UNIANIMATE_COUNT_UNITS", "many")
    r = invoke("count", project)
    assert r.exit_code == 1
    assert 'error: count.units = "many" in environment variable UNIANIMATE_COUNT_UNITS: expected an integer' in r.stderr


def test_user_errors_exit_1_usage_errors_exit_2(inputs: tuple[Path, Path], tmp_path: Path) -> None:
    photo, _ = inputs
    r = invoke("count", photo, tmp_path / "nope.mp4")
    assert r.exit_code == 1 and r.stdout == ""
    assert f"error: video {tmp_path / 'nope.mp4'} does not exist" in r.stderr
    assert "hint:" in r.stderr
    r = invoke("count", tmp_path)
    assert r.exit_code == 1 and "not a unianimate project" in r.stderr
    assert invoke("count", "--units", "lots").exit_code == 2
    assert invoke("no-such-command").exit_code == 2


def test_lock_held_by_live_process(inputs: tuple[Path, Path], tmp_path: Path) -> None:
    import socket

    photo, video = inputs
    assert invoke("count", photo, video).exit_code == 0
    project = tmp_path / "photo-dance.unianimate"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (project / ".lock").write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(), "command": "unianimate animate"}))
        r = invoke("count", project, "--force")
        assert r.exit_code == 1
        assert f"is in use by pid {holder.pid}" in r.stderr
    finally:
        holder.kill()
        holder.wait()
    r = invoke("count", project, "--force")
    assert r.exit_code == 0 and "taking over the lock" in r.stderr


def test_keyboard_interrupt_exits_130_and_resumes(inputs: tuple[Path, Path], tmp_path: Path) -> None:
    photo, video = inputs

    def stop(i: int) -> None:
        if i == 1:
            raise KeyboardInterrupt

    HOOKS["after_unit"] = stop
    r = invoke("count", photo, video, "--units", "4")
    assert r.exit_code == 130
    assert "interrupted; run the same command again to resume" in r.stderr
    HOOKS["after_unit"] = None
    HOOKS["computed"].clear()
    r = invoke("count", photo, video, "--units", "4")
    assert r.exit_code == 0
    assert HOOKS["computed"] == [2, 3]
    assert "resuming from the partial work" in r.stderr


def test_internal_error_names_the_log(inputs: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from test_runner_standins import COUNT

    photo, video = inputs

    def broken(self: object, ctx: object, params: object) -> None:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(type(COUNT), "run", broken)
    r = invoke("count", photo, video)
    assert r.exit_code == 1
    (line,) = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    log_path = Path(line.split("the traceback is in ")[1])
    assert log_path.parent == tmp_path / "photo-dance.unianimate" / "logs"
    assert "Traceback" in log_path.read_text() and "ZeroDivisionError" in log_path.read_text()
    assert "Traceback" not in r.stderr
    r = invoke("count", photo, video, "--debug")
    assert isinstance(r.exception, ZeroDivisionError)


def test_oom_and_disk_full_become_resource_errors(inputs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from test_runner_standins import COUNT

    photo, video = inputs

    class OutOfMemoryError(RuntimeError):
        pass

    def oom(self: object, ctx: object, params: object) -> None:
        raise OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(type(COUNT), "run", oom)
    r = invoke("count", photo, video)
    assert r.exit_code == 1 and "error: out of GPU memory" in r.stderr and "--window-size" in r.stderr

    def full(self: object, ctx: object, params: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", "/x/y.mp4")

    monkeypatch.setattr(type(COUNT), "run", full)
    r = invoke("count", photo, video)
    assert r.exit_code == 1 and "error: disk full while writing /x/y.mp4" in r.stderr


def test_status_text_and_json(inputs: tuple[Path, Path], tmp_path: Path) -> None:
    photo, video = inputs
    invoke("count", photo, video)
    project = tmp_path / "photo-dance.unianimate"
    r = invoke("status", project)
    assert r.exit_code == 0
    assert "count          fresh" in r.stdout and "double         missing (never run)" in r.stdout
    r = invoke("status", project, "--json", "--units", "1") if False else invoke("--json", "status", project)
    data = json.loads(r.stdout)
    assert {s["name"]: s["state"] for s in data["stages"]} == {"count": "fresh", "double": "missing"}
    assert data["inputs"]["photo"] == str(photo.resolve())
    photo.write_bytes(b"changed")
    data = json.loads(invoke("--json", "status", project).stdout)
    assert data["stages"][0]["reason"] == "input changed (user:photo)"


def test_status_in_cwd_project(inputs: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    photo, video = inputs
    invoke("count", photo, video)
    monkeypatch.chdir(tmp_path / "photo-dance.unianimate")
    assert invoke("status").exit_code == 0
    assert invoke("double").exit_code == 0


def test_weights_lists_dirs_and_missing_files(tmp_path: Path) -> None:
    app = build_app()
    r = runner.invoke(app, ["weights", "--weights-dir", str(tmp_path), "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["search_dirs"][0] == str(tmp_path)
    assert {f["component"] for f in data["files"]} == {"unet", "vae", "clip", "detector", "pose"}
    assert all(f["state"] == "missing" for f in data["files"])
    assert "weights fetch" in r.stderr


def test_weights_fetch_offline_is_a_clear_error(tmp_path: Path) -> None:
    r = runner.invoke(build_app(), ["weights", "fetch", "yolox_l.onnx", "--dest", str(tmp_path)])
    assert r.exit_code == 1
    # Offline (tests block the network), or without a hub library: either way one clear line.
    assert re.search(r"^error: (could not|cannot) download", r.stderr, re.M), r.stderr
    assert "hint: " in r.stderr


def test_dev_parity_unknown_folder(tmp_path: Path) -> None:
    r = runner.invoke(build_app(), ["dev", "parity", str(tmp_path)])
    assert r.exit_code == 1 and "error:" in r.stderr


def test_help_does_not_import_torch() -> None:
    code = (
        "import sys\n"
        "from unianimate_cli.cli import main\n"
        "sys.argv = ['unianimate', '--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'cv2', 'av', 'onnxruntime', 'open_clip', 'numpy') if m in sys.modules]\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    env = {**os.environ, "UNIANIMATE_STAGES": "builtin"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert "extract-pose" in proc.stdout
    assert "HEAVY []" in proc.stderr, proc.stderr


def test_inputs_are_resolved_or_refused(inputs: tuple[Path, Path], tmp_path: Path) -> None:
    photo, video = inputs
    r = invoke("count")
    assert r.exit_code == 1 and "error: no inputs given" in r.stderr
    r = invoke("count", photo)  # a lone photo needs a project that has the video
    assert r.exit_code == 1 and "error: no project for the photo" in r.stderr and "photo.jpg VIDEO" in r.stderr
    assert invoke("count", photo, video).exit_code == 0
    project = tmp_path / "photo-dance.unianimate"
    r = invoke("count", project, "--project", tmp_path / "other")
    assert r.exit_code == 1 and "two project directories" in r.stderr
    r = invoke("--project", project, "count", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["project"] == str(project)


def test_status_and_weights_print_once_under_torchrun(inputs: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    photo, video = inputs
    assert invoke("count", photo, video).exit_code == 0
    project = tmp_path / "photo-dance.unianimate"
    for name, value in {"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}.items():
        monkeypatch.setenv(name, value)
    for args in (("status", project), ("weights",)):
        follower = invoke(*args)
        assert follower.exit_code == 0 and follower.stdout == "", args  # rank 0 prints it
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    leader = invoke("status", project)
    assert leader.exit_code == 0 and "count" in leader.stdout
