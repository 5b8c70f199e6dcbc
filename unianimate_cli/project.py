"""The project directory: manifest, content hashes, atomic writes, lock and logs.

A project directory holds every artifact of one photo + video pair. ``manifest.json``
(schema 1) records, per stage, the key it ran with, its parameters and the hashes of its
inputs and outputs, so a later command can tell what is up to date by content rather than
by mtime (the DVC lock file idea). Every write goes to a temp file in the same folder and
is moved into place with ``os.replace``; the manifest is written last.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from unianimate_cli.errors import ProjectError

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
LOCK_NAME = ".lock"
LOGS_DIR = "logs"
TMP_DIR = ".tmp"
PROJECT_SUFFIX = ".unianimate"
MANIFEST_SCHEMA = 1
_CHUNK = 1 << 20


# ---------------------------------------------------------------------------- hashing


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks (weights are GBs)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_dir(path: Path) -> str:
    """Hex sha256 over a directory tree: sorted relative names and each file's sha256."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = file.relative_to(path).as_posix()
        digest.update(f"{rel}\0{sha256_file(file)}\n".encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class FileStat:
    """What tells us a file may have changed without reading it: size and mtime in ns."""

    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> FileStat:
        if path.is_dir():
            files = [p for p in path.rglob("*") if p.is_file()]
            stats = [p.stat() for p in files]
            mtime = max([path.stat().st_mtime_ns, *(s.st_mtime_ns for s in stats)])
            return cls(size=sum(s.st_size for s in stats) + len(files), mtime_ns=mtime)
        st = path.stat()
        return cls(size=st.st_size, mtime_ns=st.st_mtime_ns)


def hash_path(path: Path) -> str:
    """sha256 of a file, or of a directory tree."""
    return sha256_dir(path) if path.is_dir() else sha256_file(path)


def canonical_sha256(obj: Any) -> str:
    """``sha256:<hex>`` of canonical JSON (sorted keys, no spaces): the stage key recipe."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


# ---------------------------------------------------------------------------- atomic writes


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success fsync it and ``os.replace`` it into place.

    For writers that want a file name (``torch.save``, ``safetensors.save_file``, PyAV).
    On an exception the temp file is removed and ``path`` is untouched. ``suffix`` keeps an
    extension writers may need (".mp4").
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never half."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: Path, text: str) -> None:
    """Text version of :func:`atomic_write_bytes` (UTF-8)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    """Pretty JSON (sorted keys) written atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def replace_tree(src: Path, dst: Path) -> None:
    """Move a finished file or directory ``src`` onto ``dst``, replacing what was there.

    A directory cannot be ``os.replace``d onto a non-empty one, so the old tree is first
    moved aside and deleted after the new one is in place.
    """
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir() and dst.exists():
        trash = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        if trash.exists():
            shutil.rmtree(trash) if trash.is_dir() else trash.unlink()
        os.replace(dst, trash)
        os.replace(src, dst)
        shutil.rmtree(trash) if trash.is_dir() else trash.unlink()
    else:
        if dst.is_dir() and not src.is_dir():
            shutil.rmtree(dst)
        os.replace(src, dst)
    _fsync_dir(dst.parent)


# ---------------------------------------------------------------------------- lock


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ProjectLock:
    """An exclusive lock file naming the holder's pid, host and command.

    Created with ``O_CREAT | O_EXCL``. A lock left by a process that no longer runs on this
    host (kill -9, power loss) is taken over with a warning; a live holder gives a
    ``ProjectError`` naming its pid.
    """

    def __init__(self, root: Path, command: str = "") -> None:
        self.path = root / LOCK_NAME
        self.command = command
        self.held = False

    def acquire(self) -> None:
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": self.command,
            "since": _utc_now(),
        }
        for _attempt in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._read_holder()
                if holder is None:
                    # Empty or unreadable: a holder died between create and write, or it is
                    # being written right now. Treat an old one as stale.
                    if self._age_s() < 2.0:
                        raise ProjectError(
                            f"{self.path.parent} is being locked by another command",
                            "wait for it to finish and run this command again",
                        ) from None
                    self._take_over("an unreadable lock file")
                    continue
                pid = int(holder.get("pid", -1))
                same_host = holder.get("host") == socket.gethostname()
                if pid == os.getpid() and same_host:
                    self._take_over("this same process")
                    continue
                if same_host and not _pid_alive(pid):
                    self._take_over(f"pid {pid}, which no longer runs")
                    continue
                what = f" ({holder['command']})" if holder.get("command") else ""
                where = "" if same_host else f" on {holder.get('host')}"
                raise ProjectError(
                    f"{self.path.parent} is in use by pid {pid}{where}{what} since {holder.get('since', '?')}",
                    f"wait for it to finish; if no such process runs, delete {self.path}",
                ) from None
            with os.fdopen(fd, "w") as fh:
                json.dump(info, fh)
                fh.flush()
                os.fsync(fh.fileno())
            self.held = True
            return
        raise ProjectError(f"could not lock {self.path.parent}", f"delete {self.path} and try again")

    def _read_holder(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _age_s(self) -> float:
        try:
            return _dt.datetime.now().timestamp() - self.path.stat().st_mtime
        except OSError:
            return 0.0

    def _take_over(self, why: str) -> None:
        log.warning("taking over the lock of %s left by %s", self.path.parent, why)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def release(self) -> None:
        if self.held:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self.held = False

    def __enter__(self) -> ProjectLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


# ---------------------------------------------------------------------------- project


def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _slug(name: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")
    return slug or "input"


def default_project_dir(photo: Path | None, video: Path, base: Path | None = None) -> Path:
    """``<photo stem>-<video stem>.unianimate`` in ``base`` (the current directory).

    Without a photo (``extract-pose VIDEO``) it is ``<video stem>.unianimate``.
    """
    base = Path.cwd() if base is None else base
    stem = _slug(video.stem) if photo is None else f"{_slug(photo.stem)}-{_slug(video.stem)}"
    return base / f"{stem}{PROJECT_SUFFIX}"


def is_project_dir(path: Path) -> bool:
    """A directory that holds a manifest, or that carries the project suffix."""
    return path.is_dir() and ((path / MANIFEST_NAME).is_file() or path.name.endswith(PROJECT_SUFFIX))


def empty_manifest() -> dict[str, Any]:
    return {"schema": MANIFEST_SCHEMA, "inputs": {}, "stages": {}, "hashes": {}}


class Project:
    """One project directory and its manifest.

    ``manifest`` is the loaded dict; call :meth:`save` to write it atomically. The
    ``hashes`` section caches content hashes of files outside the project (photo, video,
    weights) by path, size and mtime, so a 5 GB weight file is hashed once.
    """

    def __init__(self, root: Path) -> None:
        self.root = root.resolve() if root.exists() else root.absolute()
        self.manifest = empty_manifest()
        self._loaded = False

    # -- layout
    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST_NAME

    @property
    def logs_dir(self) -> Path:
        return self.root / LOGS_DIR

    @property
    def tmp_dir(self) -> Path:
        return self.root / TMP_DIR

    def path(self, rel: str) -> Path:
        """Absolute path of a project-relative artifact path."""
        return self.root / rel.rstrip("/")

    def partial_dir(self, stage: str) -> Path:
        return self.root / stage / "partial"

    def exists(self) -> bool:
        return self.manifest_path.is_file()

    # -- manifest
    def create(self) -> None:
        """Make the directory (and logs/) if needed and load any manifest it holds."""
        if self.root.exists() and not self.root.is_dir():
            raise ProjectError(f"{self.root} is a file, not a project directory", "pass another --project")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self.logs_dir.mkdir(exist_ok=True)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise
            raise ProjectError(f"cannot create project directory {self.root}: {exc.strerror}", "pass a writable --project") from exc
        self.root = self.root.resolve()
        self.load()

    def load(self) -> dict[str, Any]:
        """Read manifest.json; a corrupt one is moved aside with a warning and starts empty."""
        self._loaded = True
        if not self.manifest_path.is_file():
            self.manifest = empty_manifest()
            return self.manifest
        try:
            data = json.loads(self.manifest_path.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or not isinstance(data.get("stages"), dict):
                raise ValueError("not a manifest object")
        except ValueError as exc:
            aside = self.manifest_path.with_name(f"manifest.corrupt-{_dt.datetime.now():%Y%m%d-%H%M%S}.json")
            log.warning("%s is unreadable (%s); moved it to %s and starting afresh", self.manifest_path, exc, aside.name)
            with contextlib.suppress(OSError):
                os.replace(self.manifest_path, aside)
            self.manifest = empty_manifest()
            return self.manifest
        schema = data.get("schema")
        if schema != MANIFEST_SCHEMA:
            raise ProjectError(
                f"{self.manifest_path} has schema {schema}, this unianimate reads schema {MANIFEST_SCHEMA}",
                "use the unianimate version that made it, or start a new --project",
            )
        for section in ("inputs", "stages", "hashes"):
            data.setdefault(section, {})
        self.manifest = data
        return data

    def save(self) -> None:
        atomic_write_json(self.manifest_path, self.manifest)

    @property
    def stages(self) -> dict[str, Any]:
        return self.manifest["stages"]  # type: ignore[no-any-return]

    # -- user inputs
    def user_input(self, name: str) -> Path | None:
        """The recorded path of ``user:<name>`` (photo, video), or None."""
        rec = self.manifest["inputs"].get(name)
        return Path(rec["path"]) if rec else None

    def set_user_input(self, name: str, path: Path) -> None:
        self.manifest["inputs"][name] = {"path": str(path.resolve())}

    # -- hashing with the cache
    def file_hash(self, path: Path) -> str:
        """sha256 of a file or tree outside the project, re-read only if size or mtime moved."""
        path = path.resolve()
        stat = FileStat.of(path)
        cache: dict[str, Any] = self.manifest["hashes"]
        rec = cache.get(str(path))
        if rec and rec.get("size") == stat.size and rec.get("mtime_ns") == stat.mtime_ns:
            return str(rec["sha256"])
        if stat.size > 64 * _CHUNK:
            log.info("hashing %s (%.1f MB)", path, stat.size / 1e6)
        digest = hash_path(path)
        cache[str(path)] = {"sha256": digest, "size": stat.size, "mtime_ns": stat.mtime_ns}
        return digest

    def output_hash(self, rel: str, recorded: dict[str, Any] | None) -> str | None:
        """Hash of a project artifact; reuses ``recorded`` when size and mtime still match.

        Returns None when the artifact is missing.
        """
        path = self.path(rel)
        if not path.exists():
            return None
        stat = FileStat.of(path)
        if recorded and recorded.get("size") == stat.size and recorded.get("mtime_ns") == stat.mtime_ns:
            return str(recorded["sha256"])
        return hash_path(path)

    def lock(self, command: str = "") -> ProjectLock:
        return ProjectLock(self.root, command or " ".join(["unianimate", *sys.argv[1:]]))

    def new_log_path(self) -> Path:
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        return self.logs_dir / f"{stamp}-{os.getpid()}.log"


def utc_now() -> str:
    """The manifest's timestamp format, ``2026-11-24T11:20:03Z``."""
    return _utc_now()
