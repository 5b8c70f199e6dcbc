"""The CLI under ``torchrun --nproc_per_node 2`` (gloo, CPU) equals the CLI in one process.

Every run is a subprocess with one intra-op thread (torchrun gives its workers
OMP_NUM_THREADS=1; the single-process runs get the same), so the sampled latents and the
decoded frames must agree bit for bit. The H.264 files themselves are not compared: the
encoder's output differs between processes even for identical frames.
Sizes are tiny: 64x64 px, 10 frames in 4 windows of 4 (overlap 2), 4 DDIM steps.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from videos import sliding_video, tiny_weights

from unianimate_cli.project import sha256_file

NUM_FRAMES = 10
STEPS = 4
STOP_AFTER = 2
LAUNCH_CLI = Path(__file__).with_name("launch_cli.py")
ANIMATE_ARGS = ("--device", "cpu", "--width", "64", "--height", "64", "--steps", str(STEPS), "--window-size", "4", "--window-overlap", "2")

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(root: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNIANIMATE_")}
    env.update(
        UNIANIMATE_STAGES="builtin",
        UNIANIMATE_CONFIG_DIR=str(root / "config"),
        UNIANIMATE_DATA_DIR=str(root / "data"),
        UNIANIMATE_ALIGN_WIDTH="64",
        UNIANIMATE_ALIGN_HEIGHT="64",
        OMP_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
        **extra,
    )
    return env


def _run(args: list[str], root: Path, ranks: int = 1, **env: str) -> subprocess.CompletedProcess[str]:
    """``unianimate ARGS`` in one process, or under torchrun with ``ranks`` processes (127.0.0.1)."""
    if ranks == 1:
        command = [sys.executable, str(LAUNCH_CLI), *args]
    else:
        command = [
            sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={ranks}", "--nnodes=1",
            "--master_addr=127.0.0.1", f"--master_port={_free_port()}", str(LAUNCH_CLI), *args,
        ]
    return subprocess.run(command, capture_output=True, text=True, timeout=240, env=_env(root, **env), cwd=root)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, fixtures_dir: Path) -> dict[str, Path]:
    """A photo, two driving videos and a tiny model family."""
    onnx = fixtures_dir / "pose" / "onnx"
    root = tmp_path_factory.mktemp("launch")
    sliding_video(root / "dance.mp4", onnx / "image1.png", [5 * i for i in range(NUM_FRAMES)], 4)
    sliding_video(root / "sway.mp4", onnx / "image1.png", [-3 * i for i in range(6)], 4)
    tiny_weights(root / "weights", fixtures_dir)
    return {"root": root, "photo": onnx / "image1.png", "dance": root / "dance.mp4", "sway": root / "sway.mp4", "weights": root / "weights"}


def _animate(setup: dict[str, Path], project: str, ranks: int, *extra: str, **env: str) -> subprocess.CompletedProcess[str]:
    args = ["animate", str(setup["photo"]), str(setup["dance"]), "--project", project, "--weights-dir", str(setup["weights"])]
    return _run([*args, *ANIMATE_ARGS, "--json", *extra], setup["root"], ranks, **env)


@pytest.fixture(scope="module")
def single(setup: dict[str, Path]) -> Path:
    """The reference: the same render in one plain process (its PNG frames in single-png/)."""
    result = _animate(setup, "single", 1, "--frames", str(setup["root"] / "single-png"))
    assert result.returncode == 0, result.stderr[-3000:]
    return setup["root"] / "single"


def _same_render(project: Path, reference: Path) -> None:
    assert sha256_file(project / "animate" / "latents.safetensors") == sha256_file(reference / "animate" / "latents.safetensors")


def test_windowed_render_split_over_two_ranks_equals_one_process(setup: dict[str, Path], single: Path) -> None:
    root = setup["root"]
    result = _animate(setup, "two", 2, "--frames", str(root / "two-png"))
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(result.stdout)  # one JSON object: rank 1 printed nothing on stdout
    assert data["info"]["steps_run"] == STEPS and data["info"]["num_frames"] == NUM_FRAMES
    assert "rank 1" not in result.stderr
    _same_render(root / "two", single)
    frames = sorted(p.name for p in (root / "single-png").iterdir())
    assert len(frames) == NUM_FRAMES
    assert all(sha256_file(root / "two-png" / f) == sha256_file(root / "single-png" / f) for f in frames)
    assert (root / "two" / "render" / "out.mp4").stat().st_size > 0
    assert not (root / "two" / ".lock").exists()


def test_stopped_render_over_two_ranks_resumes_to_the_same_latents(setup: dict[str, Path], single: Path) -> None:
    root = setup["root"]
    stopped = _animate(setup, "resumed", 2, UNIANIMATE_TEST_STOP_AFTER_STEP=str(STOP_AFTER))
    assert stopped.returncode != 0
    assert "interrupted; run the same command again to resume" in stopped.stderr
    assert stopped.stdout == ""
    assert (root / "resumed" / "animate" / "partial" / "state.safetensors").is_file()
    assert not (root / "resumed" / "render" / "out.mp4").exists()

    resumed = _animate(setup, "resumed", 2)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    info = json.loads(resumed.stdout)["info"]
    assert info["resumed"] is True and info["steps_run"] == STEPS - STOP_AFTER  # rank 0's checkpoint, on both ranks
    _same_render(root / "resumed", single)


def _batch_records(stdout: str) -> dict[int, dict[str, Any]]:
    return {r["index"]: r for r in (json.loads(line) for line in stdout.splitlines())}


def test_batch_over_two_ranks_equals_one_process(setup: dict[str, Path], single: Path) -> None:
    """Three jobs: two renders and one missing video; whole jobs per rank, same latents as alone.

    Round robin: rank 0 takes jobs 0 (dance) and 2 (missing video), rank 1 job 1 (sway).
    """
    root = setup["root"]
    jobs = root / "jobs.txt"
    jobs.write_text(
        "# photo video project\n"
        f"{setup['photo']} dance.mp4\n"
        f"'{setup['photo']}' sway.mp4\n"
        f"{setup['photo']} missing.mp4 lost.unianimate\n"
    )
    common = ["--weights-dir", str(setup["weights"]), *ANIMATE_ARGS, "--json"]
    one = _run(["batch", str(jobs), "--out-dir", str(root / "alone"), *common], root)
    two = _run(["batch", str(jobs), "--out-dir", str(root / "split"), *common], root, ranks=2)
    for result in (one, two):
        assert result.returncode != 0, result.stderr[-3000:]  # the failed job makes the exit code 1
        assert "1 of 3 job(s) failed" in result.stderr
    alone, split = _batch_records(one.stdout), _batch_records(two.stdout)
    assert sorted(alone) == sorted(split) == [0, 1, 2]
    assert {r["rank"] for r in alone.values()} == {0}
    assert [split[i]["rank"] for i in range(3)] == [0, 1, 0]
    assert not split[2]["ok"] and "missing.mp4 does not exist" in split[2]["error"]
    assert split[2]["project"] == str(root / "lost.unianimate")
    for index in (0, 1):
        assert alone[index]["ran"] == split[index]["ran"] == ["extract-pose", "align", "animate"]
        assert alone[index]["ok"] and split[index]["ok"]
        latents = Path(split[index]["outputs"]["render.latents"])
        assert latents.is_relative_to(root / "split")
        assert sha256_file(latents) == sha256_file(Path(alone[index]["outputs"]["render.latents"]))
    _same_render(root / "split" / "image1-dance.unianimate", single)

    # Each job is a project of its own: a rerun finds both renders up to date, on either rank.
    again = _batch_records(_run(["batch", str(jobs), "--out-dir", str(root / "split"), *common], root, ranks=2).stdout)
    assert [(again[i]["ok"], again[i]["ran"]) for i in range(3)] == [(True, []), (True, []), (False, [])]


def test_bad_input_under_torchrun_is_one_line_and_fails_every_rank(setup: dict[str, Path]) -> None:
    result = _run(["animate", str(setup["photo"]), str(setup["root"] / "nope.mp4"), "--device", "cpu"], setup["root"], ranks=2)
    assert result.returncode != 0
    assert result.stdout == ""
    ours = [line for line in result.stderr.splitlines() if line.startswith(("error:", "hint:", "rank "))]
    assert ours[0] == f"error: video {setup['root'] / 'nope.mp4'} does not exist"
    assert not any(line.startswith("rank 1") for line in ours)  # rank 1 exits with rank 0's code, silently
    assert "unianimate_cli/" not in result.stderr  # no traceback of ours (torchrun prints its own report)
