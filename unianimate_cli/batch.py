"""``unianimate batch JOBS``: animate many photo/video pairs, each in its own project.

JOBS is a list file or a folder:

* **list file**: one job per line, ``PHOTO VIDEO [PROJECT]``, split as a shell would (quote
  paths with spaces); ``#`` starts a comment, blank lines are skipped. Relative paths are
  relative to the list file's folder. Without PROJECT the project is
  ``<photo>-<video>.unianimate`` in ``--out-dir`` (default: the current directory), as for
  ``animate``.
* **folder**: every photo is paired with the video of the same name (``alice.jpg`` +
  ``alice.mp4``); the project is ``<name>.unianimate`` in ``--out-dir``. A photo or a video
  without its partner is an error, so nothing is silently left out.

Each job is exactly ``unianimate animate PHOTO VIDEO --project PROJECT`` with the batch's
options (:func:`~unianimate_cli.cli.stage_payload`): it skips what is up to date and resumes
what was interrupted, on its own. A job's failure is recorded and the next job runs; the
summary has one line per job on stdout (``--json``: one JSON object per line) and the
exit code is 1 if any job failed.

Under ``torchrun`` whole jobs are spread over the ranks
(:func:`~unianimate_cli.distributed.run_batch_jobs`): rank 0 reads the job list and sends
it to the others (``launch.shared_task``), every rank renders its jobs on its own device
alone, and rank 0 prints the summary. Each job's project is written by the one rank that
runs it; other ranks show no progress.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from unianimate_cli.errors import InputError, ResourceError, UnianimateError

if TYPE_CHECKING:
    import torch

    from unianimate_cli.cli import GlobalOptions, Session
    from unianimate_cli.distributed import DistContext, JobResult

log = logging.getLogger(__name__)

STAGE = "animate"


@dataclass(frozen=True)
class BatchJob:
    """One photo/video pair and its project; ``source`` says where it was listed (messages)."""

    photo: Path
    video: Path
    project: Path
    source: str

    def describe(self) -> str:
        """The same text on every rank for the same job (``plan_batch_jobs`` compares them)."""
        return f"{self.photo}\t{self.video}\t{self.project}"


def read_jobs(source: Path, out_dir: Path | None = None) -> list[BatchJob]:
    """The jobs of a list file or a folder of pairs (module docstring), in a stable order.

    Raises InputError for an unreadable list, a malformed line, an unpaired file in a
    folder, or two jobs sharing one project. Missing photos or videos are the job's own
    failure, reported when it runs.
    """
    from unianimate_cli.project import default_project_dir

    base = Path.cwd() if out_dir is None else out_dir
    if not source.exists():
        raise InputError(f"job list {source} does not exist", "pass a list file (PHOTO VIDEO [PROJECT] per line) or a folder of pairs")
    jobs = _pair_folder(source, base) if source.is_dir() else _read_list(source, base, default_project_dir)
    if not jobs:
        raise InputError(f"{source} lists no jobs", "add lines PHOTO VIDEO [PROJECT], or photo/video pairs of the same name")
    seen: dict[Path, BatchJob] = {}
    for job in jobs:
        other = seen.setdefault(job.project.absolute(), job)
        if other is not job:
            raise InputError(
                f"{other.source} and {job.source} share the project {job.project}",
                "give one of them its own PROJECT (third field)",
            )
    return jobs


def _read_list(path: Path, base: Path, default_project_dir: Any) -> list[BatchJob]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the job list {path} ({exc})", "pass a UTF-8 text file") from None
    folder = path.parent
    jobs: list[BatchJob] = []
    for number, line in enumerate(text.splitlines(), start=1):
        where = f"{path}:{number}"
        try:
            fields = shlex.split(line, comments=True)
        except ValueError as exc:
            raise InputError(f"{where}: {exc}", "quote paths with spaces, and close every quote") from None
        if not fields:
            continue
        if len(fields) not in (2, 3):
            raise InputError(f"{where}: expected PHOTO VIDEO [PROJECT], got {len(fields)} field(s)", "quote paths with spaces")
        photo, video = (_relative_to(folder, f) for f in fields[:2])
        project = _relative_to(folder, fields[2]) if len(fields) == 3 else default_project_dir(photo, video, base)
        jobs.append(BatchJob(photo, video, project, where))
    return jobs


def _relative_to(folder: Path, field: str) -> Path:
    path = Path(field).expanduser()
    return path if path.is_absolute() else Path(os.path.normpath(folder / path))


def _pair_folder(folder: Path, base: Path) -> list[BatchJob]:
    from unianimate_cli.media.image import VIDEO_SUFFIXES
    from unianimate_cli.media.video import IMAGE_SUFFIXES
    from unianimate_cli.project import PROJECT_SUFFIX

    photos: dict[str, list[Path]] = {}
    videos: dict[str, list[Path]] = {}
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        suffix = path.suffix.lower()
        if suffix in IMAGE_SUFFIXES:
            photos.setdefault(path.stem, []).append(path)
        elif suffix in VIDEO_SUFFIXES:
            videos.setdefault(path.stem, []).append(path)
    twice = [p.name for group in (*photos.values(), *videos.values()) if len(group) > 1 for p in group]
    if twice:
        raise InputError(f"{folder}: several photos or videos share a name: {', '.join(twice)}", "rename them so each name has one photo and one video")
    unpaired = sorted(p[0].name for stem, p in photos.items() if stem not in videos) + sorted(v[0].name for stem, v in videos.items() if stem not in photos)
    if unpaired:
        raise InputError(
            f"{folder}: no partner for {', '.join(unpaired)}",
            "pair each photo with a video of the same name (alice.jpg + alice.mp4), or use a list file",
        )
    return [BatchJob(photos[s][0], videos[s][0], base / f"{s}{PROJECT_SUFFIX}", str(folder / s)) for s in sorted(photos)]


# ---------------------------------------------------------------------------- running


@dataclass(frozen=True)
class _BatchOrder:
    """What rank 0 sends the other ranks: the jobs and the settings every job runs with."""

    opts: GlobalOptions
    given: dict[str, dict[str, Any]]
    jobs: list[BatchJob]


def _run_job(sess: Session, registry: Any, given: dict[str, dict[str, Any]], job: BatchJob) -> dict[str, Any]:
    """``animate PHOTO VIDEO --project PROJECT`` for one job; its --json record.

    Our own bugs inside a job are recorded as the job's failure, with the traceback in the
    job's log file, so the other jobs still run (``--debug`` re-raises them instead).
    """
    from unianimate_cli import cli, launch

    job_sess = dataclasses.replace(sess, opts=dataclasses.replace(sess.opts, project=job.project))
    try:
        with launch.renders_alone():
            return cli.stage_payload(job_sess, registry, STAGE, [job.photo, job.video], given)
    except (UnianimateError, KeyboardInterrupt):
        raise
    except Exception as exc:
        if sess.opts.debug:
            raise
        first = str(exc).splitlines()[0][:160] if str(exc) else ""
        if cli._is_oom(exc):
            raise ResourceError(f"out of GPU memory ({first})", cli.OOM_HINT) from exc
        log.debug("unexpected error in job %s", job.source, exc_info=exc)
        where = f"; the traceback is in {sess.logging.log_file}" if sess.logging.log_file else ""
        raise UnianimateError(f"unexpected {type(exc).__name__}: {first}{where}", "this is a bug in unianimate; please report it") from exc
    finally:
        sess.logging.drop_file()


def _run_share(order: _BatchOrder, ctx: DistContext, sess: Session, registry: Any) -> list[JobResult[BatchJob, dict[str, Any]]]:
    from unianimate_cli.distributed import run_batch_jobs

    # A job's UnianimateError is recorded as str(exc): its message and hint on one line.
    return run_batch_jobs(order.jobs, ctx, lambda job: _run_job(sess, registry, order.given, job), describe=BatchJob.describe)


def _follow_batch(order: _BatchOrder, tensors: dict[str, torch.Tensor], ctx: DistContext) -> None:
    """A follower rank's part of a batch: its share of the jobs, quietly, on its own device."""
    from unianimate_cli.cli import Session
    from unianimate_cli.console import make_console, setup_logging
    from unianimate_cli.stage import discover_stages

    console = make_console()
    opts = dataclasses.replace(order.opts, device=str(ctx.device), quiet=True, json_output=False)
    logs = setup_logging(console, 0, quiet=True)
    try:
        _run_share(dataclasses.replace(order, opts=opts), ctx, Session(opts, console, logs), discover_stages())
    finally:
        logs.close()


def run_batch(sess: Session, registry: Any, source: Path, out_dir: Path | None, given: dict[str, dict[str, Any]]) -> None:
    """The batch command's body (on rank 0 under torchrun): read, run, summarise; exit 1 on a failure."""
    import contextlib

    from unianimate_cli import launch
    from unianimate_cli.distributed import DistContext

    jobs = read_jobs(source, out_dir)
    ctx = launch.active_context() or DistContext.single()
    order = _BatchOrder(sess.opts, given, jobs)
    log.info("%d job(s) from %s over %d rank(s)", len(jobs), source, ctx.world_size)
    shared: Any = launch.shared_task(ctx, _follow_batch, order, {}) if ctx.is_distributed else contextlib.nullcontext()
    with shared:
        results = _run_share(order, ctx, sess, registry)
    failed = 0
    for r in results:
        record = {
            "index": r.index,
            "photo": str(r.job.photo),
            "video": str(r.job.video),
            "project": str(r.job.project),
            "ok": r.ok,
            "rank": r.rank,
            "outputs": (r.value or {}).get("outputs", {}),
            "ran": [stage["name"] for stage in (r.value or {}).get("stages", []) if stage["ran"]],
            "error": r.error,
        }
        failed += not r.ok
        if sess.opts.json_output:
            typer.echo(json.dumps(record))
        elif r.ok:
            video = record["outputs"].get("render.video", r.job.project)
            typer.echo(f"ok      {r.job.source}  {video}")
        else:
            typer.echo(f"failed  {r.job.source}  {r.error}")
    if failed:
        sess.console.print(f"{failed} of {len(results)} job(s) failed", markup=False, highlight=False)
        raise typer.Exit(1)


def make_batch_command(registry: Any) -> Any:
    """The Typer ``batch`` command: JOBS, --out-dir, and every ``animate`` option."""
    import inspect

    from unianimate_cli import cli

    stage = registry[STAGE]
    options, owners = cli.stage_options(registry, stage)
    params: list[inspect.Parameter] = [
        inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context),
        inspect.Parameter(
            "jobs",
            inspect.Parameter.KEYWORD_ONLY,
            annotation=Annotated[Path, typer.Argument(help="A list file (PHOTO VIDEO [PROJECT] per line, # comments) or a folder of photo/video pairs of the same name.", show_default=False, metavar="JOBS")],
        ),
        inspect.Parameter(
            "out_dir",
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[Optional[Path], typer.Option("--out-dir", "-o", help="Where projects without a PROJECT field go (default: the current directory).", show_default=False)],
        ),
        *options,
        *cli._global_parameters(),
    ]

    def batch(ctx: typer.Context, **kwargs: Any) -> None:
        opts = cli._options(ctx, {k: kwargs.pop(k) for k in cli.GLOBAL_NAMES})
        source, out_dir = kwargs.pop("jobs"), kwargs.pop("out_dir")
        given = cli.given_settings(owners, kwargs)
        if opts.project is not None:
            raise typer.BadParameter("batch takes no --project; give each job's project in the job list", param_hint="--project")
        cli.run_command(opts, lambda sess: run_batch(sess, registry, source, out_dir, given))

    batch.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    batch.__doc__ = BATCH_HELP
    return batch


BATCH_HELP = """Animate many photo/video pairs, each in its own project (resumable one by one).

JOBS is a list file, one PHOTO VIDEO [PROJECT] per line ('#' comments, shell quoting, paths relative to the file), or a folder where each photo has a video of the same name. Options are animate's and apply to every job. One line per job on stdout (--json: one JSON object per line); exit 1 if any job failed. Under torchrun, whole jobs are spread over the ranks.

[bold]Examples[/bold]

  unianimate batch jobs.txt --steps 25

  unianimate batch clips/ --out-dir renders --json

  torchrun --nproc_per_node 4 -m unianimate_cli batch jobs.txt
"""

