"""``unianimate batch``: reading job lists and folders, and the summary of failing jobs.

Renders through batch mode (one process and torchrun) are in test_launch.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from unianimate_cli.batch import BatchJob, read_jobs
from unianimate_cli.cli import build_app
from unianimate_cli.errors import InputError


def test_list_file_with_comments_quotes_and_projects(tmp_path: Path) -> None:
    clips = tmp_path / "clips"
    clips.mkdir()
    jobs_file = clips / "jobs.txt"
    jobs_file.write_text(
        "# photo video [project]\n"
        "\n"
        "alice.jpg dance.mp4\n"
        "'my photo.png' /abs/walk.mov ../out/walk.unianimate  # trailing comment\n"
    )
    out = tmp_path / "renders"
    jobs = read_jobs(jobs_file, out)
    assert jobs == [
        BatchJob(clips / "alice.jpg", clips / "dance.mp4", out / "alice-dance.unianimate", f"{jobs_file}:3"),
        BatchJob(clips / "my photo.png", Path("/abs/walk.mov"), tmp_path / "out" / "walk.unianimate", f"{jobs_file}:4"),
    ]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("alice.jpg\n", r"jobs.txt:1: expected PHOTO VIDEO \[PROJECT\], got 1"),
        ("a.jpg b.mp4 c d\n", "got 4 field"),
        ("'a.jpg b.mp4\n", "jobs.txt:1: No closing quotation"),
        ("# only comments\n\n", "lists no jobs"),
        ("a.jpg b.mp4 p\nc.jpg d.mp4 p\n", "jobs.txt:1 and .*jobs.txt:2 share the project"),
    ],
)
def test_bad_job_lists_are_one_line_input_errors(tmp_path: Path, text: str, match: str) -> None:
    jobs_file = tmp_path / "jobs.txt"
    jobs_file.write_text(text)
    with pytest.raises(InputError, match=match):
        read_jobs(jobs_file)


def test_folder_pairs_photos_and_videos_by_name(tmp_path: Path) -> None:
    for name in ("bob.png", "bob.mp4", "alice.jpg", "alice.MOV", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "old.unianimate").mkdir()  # a project folder from an earlier batch is ignored
    out = tmp_path / "out"
    assert [(j.photo.name, j.video.name, j.project) for j in read_jobs(tmp_path, out)] == [
        ("alice.jpg", "alice.MOV", out / "alice.unianimate"),
        ("bob.png", "bob.mp4", out / "bob.unianimate"),
    ]


@pytest.mark.parametrize(
    ("names", "match"),
    [
        (("bob.png", "bob.mp4", "carol.jpg"), "no partner for carol.jpg"),
        (("bob.png", "bob.jpg", "bob.mp4"), "share a name: bob.jpg, bob.png"),
        (("notes.txt",), "lists no jobs"),
    ],
)
def test_folder_without_clean_pairs_is_refused(tmp_path: Path, names: tuple[str, ...], match: str) -> None:
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    with pytest.raises(InputError, match=match):
        read_jobs(tmp_path)


def test_missing_job_list_is_a_one_line_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(build_app(), ["batch", str(tmp_path / "nope.txt")])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith(f"error: job list {tmp_path / 'nope.txt'} does not exist")


def test_every_job_failing_gives_a_summary_and_exit_1(tmp_path: Path) -> None:
    """Jobs fail on their own (missing files) and the next one still runs; JSON lines with --json."""
    photo = tmp_path / "photo.png"
    photo.write_bytes(b"not read: the video is missing first")
    jobs_file = tmp_path / "jobs.txt"
    jobs_file.write_text("photo.png gone.mp4\nmissing.png gone.mp4 other.unianimate\n")
    result = CliRunner().invoke(build_app(), ["batch", str(jobs_file), "--out-dir", str(tmp_path), "--json", "--device", "cpu"])
    assert result.exit_code == 1, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["index"], r["ok"], r["rank"]) for r in records] == [(0, False, 0), (1, False, 0)]
    assert "gone.mp4 does not exist" in records[0]["error"]
    assert "missing.png does not exist" in records[1]["error"]
    assert records[1]["project"] == str(tmp_path / "other.unianimate")
    assert "2 of 2 job(s) failed" in result.stderr

    plain = CliRunner().invoke(build_app(), ["batch", str(jobs_file), "--out-dir", str(tmp_path), "--device", "cpu"])
    assert plain.exit_code == 1
    assert [line.split()[0] for line in plain.stdout.splitlines()] == ["failed", "failed"]


def test_batch_refuses_project_option(tmp_path: Path) -> None:
    jobs_file = tmp_path / "jobs.txt"
    jobs_file.write_text("a.png b.mp4\n")
    result = CliRunner().invoke(build_app(), ["batch", str(jobs_file), "--project", str(tmp_path / "p")])
    assert result.exit_code == 2
    assert "--project" in result.stderr
