"""The parity runner's own rules: acceptance arithmetic, informational rows, exit codes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from unianimate_cli.parity import Checker, Comparison, compare_tensors, failures
from unianimate_cli.parity import __main__ as runner


def test_compare_tensors_applies_both_bounds() -> None:
    ref = np.linspace(-2.0, 2.0, 1000)
    assert compare_tensors("same", ref.copy(), ref).ok
    # elementwise within atol + rtol*|ref| but a systematic shift breaks relative L2
    shifted = ref + 9e-5
    result = compare_tensors("shifted", shifted, ref)
    assert not result.ok and result.rel_l2 > 2e-5
    assert not compare_tensors("shape", ref[:10], ref).ok


def test_compare_tensors_requires_non_finite_values_in_the_same_places() -> None:
    ref = np.array([1.0, np.nan, np.inf])
    assert compare_tensors("same", ref.copy(), ref).ok
    assert not compare_tensors("moved", np.array([np.nan, 1.0, np.inf]), ref).ok


def test_informational_rows_never_fail_a_fixture(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    rows = [Comparison("gating", 0.0, 0.0, True), Comparison("diagnostic", 1.0, 1.0, False, informational=True)]
    assert failures(rows) == []
    checker = Checker("fake", lambda folder: True, lambda folder: rows)
    monkeypatch.setattr("unianimate_cli.parity.available_checkers", lambda: [checker])
    assert runner.main([str(tmp_path)]) == 0
    rows.append(Comparison("broken", 1.0, 1.0, False))
    assert runner.main([str(tmp_path)]) == 1


def test_unknown_folder_is_a_clean_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert runner.main([str(tmp_path)]) == 1
    assert "not a fixture folder" in capsys.readouterr().err
