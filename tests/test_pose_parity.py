"""The pose parity checkers find their folders and derive everything from them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from unianimate_cli.parity import run_parity
from unianimate_cli.parity.pose import CHECKERS, run_onnx_io


def _kinds(folder: Path) -> list[str]:
    return [c.kind for c in CHECKERS if c.detect(folder)]


def test_detection(fixtures_dir: Path) -> None:
    pose = fixtures_dir / "pose"
    assert _kinds(pose)[0] == "pose"
    assert _kinds(pose / "align")[0] == "pose-align"
    assert _kinds(pose / "align" / "a_typical") == ["pose-align-case"]
    assert _kinds(pose / "draw") == ["pose-draw"]
    assert _kinds(pose / "onnx") == ["pose-onnx"]
    assert _kinds(pose / "video") == []


def test_align_parent_iterates_its_own_index(fixtures_dir: Path, tmp_path: Path) -> None:
    src = fixtures_dir / "pose" / "align"
    index = json.loads((src / "index.json").read_text())
    chosen = [c for c in index["cases"] if c["group"] in {"b", "d"}][::3]
    twin = tmp_path / "align"
    twin.mkdir()
    for c in chosen:
        (twin / c["case"]).symlink_to(src / c["case"], target_is_directory=True)
    (twin / "index.json").write_text(json.dumps({**index, "cases": chosen}))
    kind, comparisons = run_parity(twin)
    assert kind == "pose-align"
    assert {c.name.split("/")[0] for c in comparisons} == {c["case"] for c in chosen}
    assert all(c.ok for c in comparisons)


def test_onnx_models_are_found_by_signature(fixtures_dir: Path, tmp_path: Path) -> None:
    src = fixtures_dir / "pose" / "onnx"
    twin = tmp_path / "onnx_twin"
    shutil.copytree(src, twin)
    (twin / "tiny_yolox.onnx").rename(twin / "b_detector.onnx")
    (twin / "tiny_dwpose.onnx").rename(twin / "a_pose.onnx")
    kind, comparisons = run_parity(twin)
    assert kind == "pose-onnx"
    assert comparisons and all(c.ok for c in comparisons)


def test_onnx_io_tables(fixtures_dir: Path) -> None:
    comparisons = run_onnx_io(fixtures_dir / "pose" / "onnx_io.json")
    assert {c.name for c in comparisons} >= {"onnx_io/wholebody_table", "onnx_io/body20_table"}
    assert all(c.ok for c in comparisons)


def test_a_broken_render_is_caught(fixtures_dir: Path, tmp_path: Path) -> None:
    import cv2

    twin = tmp_path / "draw"
    shutil.copytree(fixtures_dir / "pose" / "draw", twin)
    index = json.loads((twin / "index.json").read_text())
    name = index["poses"][0]["name"]
    img = cv2.imread(str(twin / f"{name}.png"))
    h, w = img.shape[:2]
    img[h // 2, w // 2] = (1, 2, 3)
    cv2.imwrite(str(twin / f"{name}.png"), img)
    kind, comparisons = run_parity(twin)
    bad = [c for c in comparisons if not c.ok]
    assert kind == "pose-draw" and [c.name for c in bad] == [f"{name}.png"]


@pytest.mark.parametrize("sub", ["draw"])
def test_parity_command_exit_code(fixtures_dir: Path, sub: str, capsys: pytest.CaptureFixture[str]) -> None:
    from unianimate_cli.parity.__main__ import main

    assert main([str(fixtures_dir / "pose" / sub)]) == 0
    assert "0 failed" in capsys.readouterr().out
