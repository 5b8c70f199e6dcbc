"""Frame windows against every entry of fixtures/diffusion/long_tiny/windows.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from unianimate_cli.errors import InputError
from unianimate_cli.sampling.windows import (
    batch_windows,
    context_windows,
    coverage_counts,
    last_window_dilation,
    reference_context_windows,
    scheduler_windows,
)


@pytest.fixture(scope="module")
def cases(fixtures_dir: Path) -> list[dict]:
    data = json.loads((fixtures_dir / "diffusion" / "long_tiny" / "windows.json").read_text())
    assert data["cases"]
    return data["cases"]


def _setting(case: dict) -> tuple[int, int, int, int]:
    return case["num_frames"], case["context_size"], case["context_overlap"], case["context_stride"]


def test_scheduler_and_dilation_match_every_case(cases: list[dict]) -> None:
    for case in cases:
        f, size, overlap, stride = _setting(case)
        assert scheduler_windows(f, size, overlap, stride) == case["scheduler_windows"], case
        assert last_window_dilation(f, size, stride) == case["last_window_dilation"], case


def test_reference_windows_match_every_case(cases: list[dict]) -> None:
    for case in cases:
        f, size, overlap, stride = _setting(case)
        if case["error"] is not None:
            with pytest.raises(InputError):
                reference_context_windows(f, size, overlap, stride)
            continue
        windows = reference_context_windows(f, size, overlap, stride)
        assert windows == case["windows"], case
        assert coverage_counts(windows, f) == case["frames_per_window_coverage_count"], case
        batches = batch_windows(windows, case["context_batch_size"])
        assert [len(b) for b in batches] == case["model_call_batches"], case
        repeated = [w for w in windows if len(set(w)) != len(w)]
        assert repeated == (case["windows_with_repeated_frames"] or []), case


def test_fixed_windows(cases: list[dict]) -> None:
    """Valid settings as the reference; short clips (error or repeats there) get one window."""
    for case in cases:
        f, size, overlap, stride = _setting(case)
        windows = context_windows(f, size, overlap, stride)
        if f <= size:
            assert windows == [list(range(f))]
        else:
            assert case["error"] is None
            assert windows == case["windows"], case
        assert all(c >= 1 for c in coverage_counts(windows, f))


def test_default_settings_and_bad_input() -> None:
    assert context_windows(64) == [list(range(0, 32)), list(range(24, 56)), list(range(32, 64))]
    with pytest.raises(InputError):
        context_windows(40, 32, 32)
    with pytest.raises(InputError):
        context_windows(0)
    with pytest.raises(InputError):
        batch_windows([[0]], 0)
