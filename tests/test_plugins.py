"""Third-party stages: the example plugin installs, is discovered and runs through the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from unianimate_cli.project import sha256_file
from unianimate_cli.stage import discover_stages

REPO = Path(__file__).resolve().parent.parent
HELLO = REPO / "stages" / "unianimate-stage-hello"


@pytest.fixture(scope="module")
def hello_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example plugin pip-installed (no deps, no build isolation) into a temp target."""
    target = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index", "--target", str(target), str(HELLO)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert list(target.glob("unianimate_stage_hello-*.dist-info"))
    return target


@pytest.fixture()
def plugins_on(hello_site: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("UNIANIMATE_STAGES", raising=False)
    monkeypatch.syspath_prepend(str(hello_site))
    return hello_site


def _inputs(tmp_path: Path) -> tuple[Path, Path]:
    photo, video = tmp_path / "me.png", tmp_path / "moves.mp4"
    photo.write_bytes(b"p")
    video.write_bytes(b"v")
    return photo, video


def test_installed_plugin_is_discovered_and_runs(plugins_on: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from unianimate_cli.cli import build_app

    registry = discover_stages()
    assert "hello" in registry and "hello" not in registry.builtin
    assert {"extract-pose", "align", "animate", "extend"} <= registry.builtin
    monkeypatch.chdir(tmp_path)
    photo, video = _inputs(tmp_path)
    result = CliRunner().invoke(build_app(), ["hello", str(photo), str(video), "--greeting", "hi", "--lines", "2", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    out = Path(data["outputs"]["hello.greeting"])
    assert out == tmp_path / "me-moves.unianimate" / "hello" / "greeting.txt"
    assert [line.split()[:2] for line in out.read_text().splitlines()] == [["hi", "0"], ["hi", "1"]]


def test_builtin_only_hides_plugins(plugins_on: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNIANIMATE_STAGES", "builtin")
    assert "hello" not in discover_stages()


def _fake_dist(site: Path, name: str, entry: str, module: str | None, code: str = "") -> None:
    info = site / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[unianimate.stages]\n{entry}\n")
    if module:
        (site / f"{module}.py").write_text(code)


def test_broken_plugin_is_skipped_and_clash_keeps_builtin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    site = tmp_path / "site"
    site.mkdir()
    _fake_dist(site, "broken_plugin", "broken = broken_plugin_mod:STAGE", "broken_plugin_mod", "raise ImportError('no such thing')\n")
    _fake_dist(site, "clash_plugin", "align = clash_plugin_mod:STAGE", "clash_plugin_mod", "STAGE = None\n")
    monkeypatch.delenv("UNIANIMATE_STAGES", raising=False)
    monkeypatch.syspath_prepend(str(site))
    with caplog.at_level("WARNING"):
        registry = discover_stages()
    assert "broken" not in registry
    assert type(registry["align"]).__module__ == "unianimate_cli.stages.align"
    assert any("skipping plugin broken" in p for p in registry.problems)
    assert any("clashes with the built-in stage align" in p for p in registry.problems)
    assert "skipping plugin broken" in caplog.text


def test_killed_run_resumes_to_identical_output(hello_site: Path, tmp_path: Path) -> None:
    """kill -9 a plugin run mid-way; the rerun keeps finished units and matches a clean run."""
    photo, video = _inputs(tmp_path)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hello_site), *sys.path])}
    env.pop("UNIANIMATE_STAGES", None)

    def cmd(project: Path, delay: str, quiet: bool = True) -> list[str]:
        args = [sys.executable, "-m", "unianimate_cli", "hello", str(photo), str(video), "--project", str(project), "--lines", "6", "--delay-s", delay]
        return args + (["-q"] if quiet else [])

    clean = tmp_path / "clean"
    subprocess.run(cmd(clean, "0"), env=env, check=True, capture_output=True, timeout=120)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(cmd(killed, "0.4"), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    partial = killed / "hello" / "partial"
    deadline = time.monotonic() + 60
    while len(list(partial.glob("line-*.txt"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = sorted(p.name for p in partial.glob("line-*.txt"))
    assert 2 <= len(done_before) < 6
    assert not (killed / "hello" / "greeting.txt").exists()
    assert (killed / ".lock").exists()  # left by the killed process; taken over below

    rerun = subprocess.run(cmd(killed, "0", quiet=False), env=env, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert sha256_file(killed / "hello" / "greeting.txt") == sha256_file(clean / "hello" / "greeting.txt")
    manifest = json.loads((killed / "manifest.json").read_text())
    assert manifest["stages"]["hello"]["key"] == json.loads((clean / "manifest.json").read_text())["stages"]["hello"]["key"]
    assert not partial.exists()
    # Same key: the finished units were reused, not discarded and recomputed.
    assert "resuming from the partial work" in rerun.stderr
    assert "taking over the lock" in rerun.stderr
    assert "discarding" not in rerun.stderr


def test_builtin_stage_list_matches_pyproject() -> None:
    import tomllib

    from unianimate_cli.stage import BUILTIN_STAGE_TARGETS, ENTRY_POINT_GROUP

    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"][ENTRY_POINT_GROUP]
    assert BUILTIN_STAGE_TARGETS == declared


def test_uninstalled_source_tree_still_has_the_builtin_stages(monkeypatch: pytest.MonkeyPatch) -> None:
    """``PYTHONPATH=. python -m unianimate_cli`` (no dist-info, so no entry points) keeps every command."""
    from importlib import metadata

    monkeypatch.setattr(metadata, "entry_points", lambda **kwargs: [])
    registry = discover_stages()
    assert set(registry.builtin) == {"extract-pose", "align", "animate", "extend"}
    assert registry.stages["animate"].name == "animate"
