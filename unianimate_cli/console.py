"""Everything meant for people: the stderr Console, logging, progress bars.

Built once per invocation (never at import), so ``CliRunner`` captures it. Library code
never imports this module: it logs through ``logging`` and reports progress through
callbacks, and :class:`ProgressDisplay` turns those callbacks into rich bars on a
terminal, or one line per stage and task when stderr is a pipe or a file.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from unianimate_cli.stage import ProgressTask

LOG_FORMAT_FILE = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
_OUR_HANDLER_ATTR = "_unianimate_handler"


def make_console() -> Console:
    """A Console on the current ``sys.stderr`` (looked up now, so test runners capture it)."""
    return Console(file=sys.stderr, soft_wrap=True, highlight=False)


def is_terminal(console: Console) -> bool:
    return bool(console.is_terminal) and not console.is_dumb_terminal


@dataclass
class Logging:
    """The handlers one invocation installed, so they can be removed again."""

    console: Console
    level: int
    handlers: list[logging.Handler] = field(default_factory=list)
    log_file: Path | None = None

    def add_file(self, path: Path) -> Path:
        """Also log everything at DEBUG to ``path`` (the project's logs/ folder)."""
        if self.log_file == path:
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8", delay=True)
        handler.setLevel(logging.DEBUG)
        handler.setFormatter(logging.Formatter(LOG_FORMAT_FILE))
        setattr(handler, _OUR_HANDLER_ATTR, True)
        logging.getLogger().addHandler(handler)
        self.handlers.append(handler)
        self.log_file = path
        return path

    def drop_file(self) -> None:
        """Stop logging to the file of :meth:`add_file` (batch mode: one log file per job)."""
        if self.log_file is None:
            return
        root = logging.getLogger()
        for h in [h for h in self.handlers if isinstance(h, logging.FileHandler) and Path(h.baseFilename) == self.log_file.absolute()]:
            root.removeHandler(h)
            h.close()
            self.handlers.remove(h)
        self.log_file = None

    def close(self) -> None:
        root = logging.getLogger()
        for h in self.handlers:
            root.removeHandler(h)
            h.close()
        self.handlers.clear()


def setup_logging(console: Console, verbosity: int, quiet: bool) -> Logging:
    """RichHandler on the stderr console: WARNING, -v INFO, -vv DEBUG; --quiet ERROR only."""
    if quiet:
        level = logging.ERROR
    elif verbosity >= 2:
        level = logging.DEBUG
    elif verbosity == 1:
        level = logging.INFO
    else:
        level = logging.WARNING
    root = logging.getLogger()
    for h in list(root.handlers):  # handlers of an earlier invocation in this process
        if getattr(h, _OUR_HANDLER_ATTR, False):
            root.removeHandler(h)
            h.close()
    handler = RichHandler(
        console=console,
        level=level,
        show_time=verbosity >= 2,
        show_path=verbosity >= 2,
        markup=False,
        rich_tracebacks=False,
    )
    handler.setFormatter(logging.Formatter("%(message)s"))
    setattr(handler, _OUR_HANDLER_ATTR, True)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    # Chatty third-party loggers stay at WARNING even with -vv.
    for noisy in ("PIL", "matplotlib", "urllib3", "filelock", "fsspec", "httpx", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    return Logging(console=console, level=level, handlers=[handler])


# ---------------------------------------------------------------------------- progress


def _fmt_s(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    m, s = divmod(seconds, 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m"


class _RichTask(ProgressTask):
    def __init__(self, display: ProgressDisplay, label: str, total: int | None) -> None:
        self.display = display
        assert display.progress is not None
        self.task_id: TaskID = display.progress.add_task(f"  {label}", total=total)
        self.closed = False

    def advance(self, n: int = 1) -> None:
        if self.display.progress is not None:
            self.display.progress.advance(self.task_id, n)

    def update(self, completed: int, total: int | None = None) -> None:
        if self.display.progress is not None:
            if total is not None:
                self.display.progress.update(self.task_id, completed=completed, total=total)
            else:
                self.display.progress.update(self.task_id, completed=completed)

    def close(self) -> None:
        if not self.closed and self.display.progress is not None:
            self.display.progress.remove_task(self.task_id)  # inner bars are transient
        self.closed = True


class _LineTask(ProgressTask):
    """Without a terminal: a line when a task starts, every ~10 % at most every 10 s, and at the end."""

    def __init__(self, display: ProgressDisplay, label: str, total: int | None) -> None:
        self.display = display
        self.label = label
        self.total = total
        self.completed = 0
        self.start = time.monotonic()
        self.last_line = self.start
        self.last_fraction = 0.0
        self.closed = False
        display.line(f"{display.stage}: {label}" + (f" (0/{total})" if total else ""))

    def advance(self, n: int = 1) -> None:
        self.update(self.completed + n)

    def update(self, completed: int, total: int | None = None) -> None:
        self.completed = completed
        if total is not None:
            self.total = total
        if not self.total:
            return
        fraction = completed / self.total
        now = time.monotonic()
        if fraction - self.last_fraction >= 0.1 and now - self.last_line >= 10.0 and completed < self.total:
            elapsed = now - self.start
            eta = elapsed / max(fraction, 1e-9) - elapsed
            self.display.line(f"{self.display.stage}: {self.label} {completed}/{self.total}, {_fmt_s(elapsed)} elapsed, ~{_fmt_s(eta)} left")
            self.last_line, self.last_fraction = now, fraction

    def close(self) -> None:
        if not self.closed:
            total = f" {self.completed}/{self.total}" if self.total else ""
            self.display.line(f"{self.display.stage}: {self.label} done{total} in {_fmt_s(time.monotonic() - self.start)}")
        self.closed = True


class ProgressDisplay:
    """Turns stage callbacks into bars: one row per stage, transient rows for its tasks.

    Use as a context manager around the whole run; ``stage_started``/``stage_finished``
    bracket each stage and :meth:`factory` is the ``StageContext.progress`` callback.
    """

    def __init__(self, console: Console, quiet: bool = False, live: bool | None = None) -> None:
        self.console = console
        self.quiet = quiet
        self.live = is_terminal(console) if live is None else live
        self.progress: Progress | None = None
        self.stage = ""
        self._stage_task: TaskID | None = None
        self._stage_start = 0.0

    def __enter__(self) -> ProgressDisplay:
        if self.live and not self.quiet:
            self.progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=self.console,
                transient=False,
            )
            self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)
            self.progress = None

    def line(self, text: str) -> None:
        if not self.quiet:
            self.console.print(text, markup=False, highlight=False)

    def stage_started(self, name: str, reason: str) -> None:
        self.stage = name
        self._stage_start = time.monotonic()
        if self.progress is not None:
            self._stage_task = self.progress.add_task(f"{name} ({reason})", total=None)
        else:
            self.line(f"{name}: running ({reason})")

    def stage_finished(self, name: str, ok: bool = True) -> None:
        elapsed = _fmt_s(time.monotonic() - self._stage_start)
        if self.progress is not None and self._stage_task is not None:
            self.progress.update(self._stage_task, total=1, completed=1 if ok else 0, description=f"{name} {'done' if ok else 'stopped'}")
            self.progress.stop_task(self._stage_task)
            self._stage_task = None
        elif ok:
            self.line(f"{name}: done in {elapsed}")

    def stage_skipped(self, name: str, why: str) -> None:
        self.line(f"{name}: {why}")

    def factory(self, label: str, total: int | None = None) -> ProgressTask:
        if self.quiet:
            return ProgressTask()
        if self.progress is not None:
            return _RichTask(self, label, total)
        return _LineTask(self, label, total)
