"""The progress adapter: rich bars on a terminal, one line per stage and task elsewhere."""

from __future__ import annotations

import io

from rich.console import Console

from unianimate_cli.console import ProgressDisplay


def test_rich_bars_on_a_terminal() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100)
    with ProgressDisplay(console) as display:
        assert display.progress is not None
        display.stage_started("animate", "never run")
        with display.factory("steps", 31) as task:
            task.update(10)
            task.advance(21)
        display.stage_finished("animate")
    text = out.getvalue()
    assert "animate" in text


def test_lines_without_a_terminal_and_quiet() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=False)
    with ProgressDisplay(console) as display:
        assert display.progress is None
        display.stage_started("align", "input changed (pose.driving)")
        with display.factory("frames", 4) as task:
            task.advance(4)
        display.stage_finished("align")
    lines = out.getvalue().splitlines()
    assert lines[0] == "align: running (input changed (pose.driving))"
    assert lines[1] == "align: frames (0/4)"
    assert lines[2].startswith("align: frames done 4/4 in ")
    assert lines[3].startswith("align: done in ")

    quiet = io.StringIO()
    with ProgressDisplay(Console(file=quiet), quiet=True) as display:
        display.stage_started("align", "never run")
        with display.factory("frames", 4) as task:
            task.advance(4)
        display.stage_finished("align")
    assert quiet.getvalue() == ""
