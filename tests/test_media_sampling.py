"""The reference's pose-frame selection, checked against every run the fixture recorded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from unianimate_cli.errors import InputError
from unianimate_cli.media.video import SamplingRule, select_frame_indices


def _runs(fixtures_dir: Path) -> list[dict[str, Any]]:
    runs = json.loads((fixtures_dir / "pose" / "video" / "sampling.json").read_text())["runs"]
    assert runs, "sampling.json holds no runs"
    return list(runs)


def _max_frames(run: dict[str, Any]) -> int | None:
    value = run["max_frames"]
    return None if value == "None" else int(value)


def test_every_sampling_run_matches(fixtures_dir: Path) -> None:
    checked = raised = 0
    for run in _runs(fixtures_dir):
        args = (run["files"], run["frame_interval"], _max_frames(run), SamplingRule(run["variant"]))
        if run.get("raises"):
            with pytest.raises(InputError, match="too few"):
                select_frame_indices(*args)
            raised += 1
            continue
        slots = select_frame_indices(*args)
        assert slots == run["slot_to_pose_file_index"], run
        assert len(slots) == run["pose_tensor_frames"]
        summary = run["summary"]
        assert sum(s is None for s in slots) == summary["zero_padded"]
        assert sum(s is not None for s in slots) == summary["used"]
        checked += 1
    assert checked and raised


def test_conditioning_cases_match(fixtures_dir: Path) -> None:
    meta = json.loads((fixtures_dir / "conditioning" / "meta.json").read_text())
    for name, case in meta["cases"].items():
        max_frames = None if case["max_frames_arg"] == "None" else int(case["max_frames_arg"])
        slots = select_frame_indices(case["num_pose_files"], case["frame_interval"], max_frames, case["entrance"])
        assert slots == case["pose_file_index_per_frame"], name


def test_cliff_and_edge_cases() -> None:
    # One frame short of the cover, the interval silently drops to 1 (reference behaviour).
    assert select_frame_indices(7, 2, 4) == [0, 2, 4, 6]
    assert select_frame_indices(6, 2, 4) == [0, 1, 2, 3]
    assert select_frame_indices(5, 1, 1) == [0]
    assert select_frame_indices(5, 2, None, "long") == [0, 2, 4]
    assert select_frame_indices(3, 5, 2, "long") == [0, 2]  # the precedence slip is harmless for 2
    with pytest.raises(InputError):
        select_frame_indices(0, 1, 4)
    with pytest.raises(InputError):
        select_frame_indices(5, 0, 4)
    with pytest.raises(InputError):
        select_frame_indices(5, 1, None, "standard")
    with pytest.raises(InputError, match="too few"):
        select_frame_indices(1, 2, 2, "long")
