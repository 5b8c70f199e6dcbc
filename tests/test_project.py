"""Project directory: hashing with the stat cache, atomic writes, the lock, the manifest."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from unianimate_cli.errors import ProjectError
from unianimate_cli.project import (
    Project,
    ProjectLock,
    atomic_path,
    atomic_write_json,
    canonical_sha256,
    default_project_dir,
    sha256_file,
)


def test_sha256_file_matches_hashlib(tmp_path: Path) -> None:
    data = os.urandom(3 << 20)
    f = tmp_path / "w.bin"
    f.write_bytes(data)
    assert sha256_file(f) == hashlib.sha256(data).hexdigest()


def test_file_hash_rehashes_only_when_stat_moves(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import unianimate_cli.project as project_mod

    f = tmp_path / "photo.jpg"
    f.write_bytes(b"one")
    project = Project(tmp_path / "p")
    project.create()
    calls: list[Path] = []
    real = project_mod.hash_path
    monkeypatch.setattr(project_mod, "hash_path", lambda p: calls.append(p) or real(p))
    first = project.file_hash(f)
    assert project.file_hash(f) == first and len(calls) == 1
    f.write_bytes(b"two")
    os.utime(f, ns=(1, 1))
    assert project.file_hash(f) == hashlib.sha256(b"two").hexdigest() and len(calls) == 2


def test_canonical_key_ignores_dict_order() -> None:
    assert canonical_sha256({"a": 1, "b": [1, 2]}) == canonical_sha256({"b": [1, 2], "a": 1})
    assert canonical_sha256({"a": 1}) != canonical_sha256({"a": 2})


def test_atomic_path_leaves_old_file_on_error(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    atomic_write_json(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_default_project_dir_from_input_names(tmp_path: Path) -> None:
    assert default_project_dir(Path("my photo.jpg"), Path("/x/dance.mp4"), tmp_path) == tmp_path / "my-photo-dance.unianimate"
    assert default_project_dir(None, Path("/x/my dance.mp4"), tmp_path) == tmp_path / "my-dance.unianimate"


def test_lock_names_the_live_holder(tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        lock_file = tmp_path / "p" / ".lock"
        import socket

        lock_file.write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(), "command": "unianimate animate x"}))
        with pytest.raises(ProjectError, match=f"in use by pid {holder.pid} \\(unianimate animate x\\)") as info:
            ProjectLock(tmp_path / "p").acquire()
        assert "delete" in (info.value.hint or "")
    finally:
        holder.kill()
        holder.wait()
    # The holder is gone now: its lock is stale and is taken over.
    with ProjectLock(tmp_path / "p") as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert not (tmp_path / "p" / ".lock").exists()


def test_corrupt_manifest_is_moved_aside(tmp_path: Path) -> None:
    project = Project(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    assert project.load()["stages"] == {}
    assert list(tmp_path.glob("manifest.corrupt-*.json"))


def test_other_schema_is_refused(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text(json.dumps({"schema": 99, "stages": {}}))
    with pytest.raises(ProjectError, match="schema 99"):
        Project(tmp_path).load()
