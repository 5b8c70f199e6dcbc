"""The ``unianimate`` command: stage commands built from the installed stages, plus
``status``, ``weights`` and the hidden ``dev`` group.

Heavy libraries (torch, cv2, av, onnxruntime, open_clip) are imported only inside the
stages' ``run`` and the weights commands, so ``unianimate --help`` stays fast.

stdout carries results only (artifact paths, or one JSON object with ``--json``);
everything for people goes to stderr. Exit codes: 0 success, 1 user/input error (or an
internal error, named with the log file holding its traceback), 2 usage error,
130 interrupted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import inspect
import json
import logging
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable, Iterator, Optional

import typer

from unianimate_cli import __version__
from unianimate_cli.errors import EXIT_INTERRUPTED, EXIT_USER_ERROR, InputError, ResourceError, UnianimateError

log = logging.getLogger("unianimate")

GLOBAL_NAMES = ("project", "json_output", "quiet", "verbose", "debug", "force", "weights_dir", "device", "model")
OOM_HINT = (
    "lower --width/--height, --window-size or --window-batch, or run on another device with --device"
)


@dataclass
class GlobalOptions:
    """Options accepted before or after the subcommand; the later one wins."""

    project: Path | None = None
    json_output: bool = False
    quiet: bool = False
    verbose: int = 0
    debug: bool = False
    force: bool = False
    weights_dir: Path | None = None
    device: str | None = None
    model: str | None = None

    def merge(self, values: dict[str, Any]) -> None:
        for name in GLOBAL_NAMES:
            value = values.get(name)
            if name == "verbose":
                self.verbose += int(value or 0)
            elif isinstance(value, bool):
                setattr(self, name, getattr(self, name) or value)
            elif value is not None:
                setattr(self, name, value)


# Annotated global options, added to the root callback and to every command.
_PANEL = "Global options"
GLOBAL_PARAMS: dict[str, Any] = {
    "project": (Annotated[Optional[Path], typer.Option("--project", "-p", help="Project directory (default: <photo>-<video>.unianimate, or <video>.unianimate for a video alone).", rich_help_panel=_PANEL, show_default=False)], None),
    "json_output": (Annotated[bool, typer.Option("--json", help="Print one JSON object with the results on stdout.", rich_help_panel=_PANEL)], False),
    "quiet": (Annotated[bool, typer.Option("--quiet", "-q", help="Only errors on stderr; no progress.", rich_help_panel=_PANEL)], False),
    "verbose": (Annotated[int, typer.Option("--verbose", "-v", count=True, help="More messages (-v info, -vv debug).", rich_help_panel=_PANEL)], 0),
    "debug": (Annotated[bool, typer.Option("--debug", help="Show the traceback of unexpected errors.", rich_help_panel=_PANEL)], False),
    "force": (Annotated[bool, typer.Option("--force", "-f", help="Rerun the named stage even if it is up to date.", rich_help_panel=_PANEL)], False),
    "weights_dir": (Annotated[Optional[Path], typer.Option("--weights-dir", help="Look for weight files here first.", rich_help_panel=_PANEL, show_default=False)], None),
    "device": (Annotated[Optional[str], typer.Option("--device", help="auto, cpu, cuda or cuda:N.", rich_help_panel=_PANEL, show_default=False)], None),
    "model": (Annotated[Optional[str], typer.Option("--model", help="Model family: demo (small, shipped, for trying out on the CPU) or a folder with a models.json (default: what the weights folders hold).", rich_help_panel=_PANEL, show_default=False)], None),
}


def _global_parameters() -> list[inspect.Parameter]:
    return [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=ann)
        for name, (ann, default) in GLOBAL_PARAMS.items()
    ]


def _options(ctx: typer.Context, values: dict[str, Any]) -> GlobalOptions:
    root = ctx.find_root()
    if not isinstance(root.obj, GlobalOptions):
        root.obj = GlobalOptions()
    opts: GlobalOptions = root.obj
    opts.merge(values)
    return opts


# ---------------------------------------------------------------------------- the session


@dataclass
class Session:
    """Console, logging and display of one invocation."""

    opts: GlobalOptions
    console: Any
    logging: Any
    results: dict[str, Any] = field(default_factory=dict)

    def emit(self, payload: dict[str, Any], lines: list[str]) -> None:
        """Results to stdout: JSON with --json, else one path or line per result."""
        if self.opts.json_output:
            typer.echo(json.dumps(payload, indent=2, default=str))
        else:
            for line in lines:
                typer.echo(line)


def _fallback_log_path() -> Path:
    import datetime as _dt
    import os

    from unianimate_cli.config import user_data_dir

    folder = user_data_dir() / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{_dt.datetime.now():%Y%m%d-%H%M%S}-{os.getpid()}.log"


def _is_oom(exc: BaseException) -> bool:
    return type(exc).__name__ == "OutOfMemoryError" or "out of memory" in str(exc).lower() and "CUDA" in str(exc)


@contextlib.contextmanager
def session(opts: GlobalOptions) -> Iterator[Session]:
    """The error boundary: the only broad ``except`` of the tool.

    UnianimateError -> ``error:``/``hint:`` and exit 1; Ctrl-C -> exit 130 keeping the
    checkpoints; CUDA out of memory and a full disk -> ResourceError; anything else is our
    bug: one line naming the log file with the traceback (``--debug`` re-raises).
    """
    from unianimate_cli.console import make_console, setup_logging

    console = make_console()
    logs = setup_logging(console, opts.verbose, opts.quiet)
    sess = Session(opts, console, logs)
    try:
        try:
            yield sess
        except typer.Exit:
            raise
        except KeyboardInterrupt:
            log.debug("interrupted", exc_info=True)
            console.print("interrupted; run the same command again to resume", markup=False)
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except UnianimateError as exc:
            _print_error(console, exc)
            log.debug("user error", exc_info=True)
            raise typer.Exit(exc.exit_code) from None
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                err = ResourceError(
                    f"disk full while writing {exc.filename or 'a file'}",
                    "free some space and run the same command again to resume",
                )
                _print_error(console, err)
                raise typer.Exit(err.exit_code) from None
            _internal_error(sess, exc)
        except Exception as exc:
            if _is_oom(exc):
                err = ResourceError(f"out of GPU memory ({str(exc).splitlines()[0][:120]})", OOM_HINT)
                _print_error(console, err)
                log.debug("out of memory", exc_info=True)
                raise typer.Exit(err.exit_code) from None
            _internal_error(sess, exc)
    finally:
        logs.close()


def _print_error(console: Any, exc: UnianimateError) -> None:
    console.print(f"error: {exc.message}", markup=False, highlight=False)
    if exc.hint:
        console.print(f"hint: {exc.hint}", markup=False, highlight=False)


def _internal_error(sess: Session, exc: BaseException) -> None:
    if sess.opts.debug:
        raise exc
    path = sess.logging.log_file
    if path is None:
        try:
            path = sess.logging.add_file(_fallback_log_path())
        except OSError:
            path = None
    log.debug("unexpected error", exc_info=exc)
    if path is not None:
        # The file handler has it now; make sure it is on disk.
        for h in sess.logging.handlers:
            h.flush()
        if not path.exists():  # pragma: no cover - handler not yet opened
            path.write_text("".join(traceback.format_exception(exc)))
    where = f"; the traceback is in {path}" if path is not None else ""
    sess.console.print(
        f"error: unexpected {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}{where}",
        markup=False,
        highlight=False,
    )
    sess.console.print("hint: this is a bug in unianimate; please report it with that log (or rerun with --debug)", markup=False)
    raise typer.Exit(EXIT_USER_ERROR) from None


def run_command(opts: GlobalOptions, body: Callable[[Session], None]) -> None:
    """Run a stage command's ``body`` in the error boundary; under torchrun, on rank 0 alone.

    The other ranks follow rank 0 (``launch.run_follower``): they take their share of its
    windows-mode render and exit with its exit code, printing nothing on stdout.
    """
    from unianimate_cli import distributed

    if not distributed.is_launched_by_torchrun():
        with session(opts) as sess:
            body(sess)
        return
    from unianimate_cli import launch

    if launch.rank_from_env() != 0:
        raise typer.Exit(launch.run_follower(opts.device, debug=opts.debug))
    started: Any = None
    code = EXIT_USER_ERROR
    try:
        with session(opts) as sess:
            started = launch.start(opts.device)
            if started.ctx.is_distributed:
                opts.device = str(started.ctx.device)  # cuda:LOCAL_RANK, or cpu (gloo)
                log.info("rank 0 of %d (%s on %s)", started.ctx.world_size, started.ctx.backend, started.ctx.device)
            body(sess)
        code = 0
    except typer.Exit as exc:
        code = int(exc.exit_code)
        raise
    finally:
        if started is not None:
            launch.stop(started, code)


@contextlib.contextmanager
def single_session(opts: GlobalOptions) -> Iterator[Session]:
    """``session`` for commands that do not split work (status, weights): under torchrun only
    rank 0 runs them, so their output is printed once; the other ranks exit 0 at once."""
    from unianimate_cli import distributed

    if distributed.is_launched_by_torchrun():
        from unianimate_cli import launch

        if launch.rank_from_env() != 0:
            raise typer.Exit(0)
    with session(opts) as sess:
        yield sess


# ---------------------------------------------------------------------------- projects


def lone_file_role(stage: Any) -> str:
    """What one file alone means for ``stage``: ``video`` for a stage that reads the driving
    video but not the photo (``extract-pose dance.mp4``), else ``photo`` (``align photo.jpg``)."""
    users = {name.split(":", 1)[1] for name in stage.inputs if name.startswith("user:")}
    return "video" if users == {"video"} else "photo"


def _inputs_help(stage: Any) -> str:
    if lone_file_role(stage) == "video":
        alone = "VIDEO alone (or an image: one frame) starts or updates <video>.unianimate or PROJECT"
    else:
        alone = "PHOTO alone goes into an existing PROJECT (made by extract-pose VIDEO)"
    return f"PHOTO VIDEO to start (or update) a project; {alone}; or a PROJECT directory."


def _check_user_file(what: str, path: Path) -> None:
    if not path.exists():
        raise InputError(f"{what} {path} does not exist", "check the path")
    if path.is_dir():
        raise InputError(f"{what} {path} is a directory", "pass PHOTO VIDEO, or the project directory alone")


def resolve_project(opts: GlobalOptions, inputs: list[Path], lone: str = "photo") -> tuple[Path, Path | None, Path | None]:
    """(project dir, photo, video) from the positional paths, --project or the current directory.

    ``PHOTO VIDEO`` starts or updates a project (default ``<photo>-<video>.unianimate``);
    ``PROJECT`` (or nothing: --project, or the current directory) reuses one. One ``FILE``,
    optionally followed by ``PROJECT``, is the photo or the driving video as ``lone`` says
    (``lone_file_role``): a lone video may start a project (default ``<video>.unianimate``), a
    lone photo needs an existing one. A video given as the photo fails here, before anything is
    recorded in the project.
    """
    from unianimate_cli.media.image import media_kind
    from unianimate_cli.project import PROJECT_SUFFIX, default_project_dir, is_project_dir

    photo = video = None
    given_root: Path | None = None
    if len(inputs) > 2:
        raise InputError(f"expected PHOTO VIDEO, FILE [PROJECT] or a project directory, got {len(inputs)} paths", "see --help")
    first, second = (list(inputs) + [None, None])[:2]
    if second is not None and first is not None and first.is_file() and (second.is_dir() or (not second.exists() and second.name.endswith(PROJECT_SUFFIX))):
        inputs, given_root = [first], second  # FILE PROJECT
    if len(inputs) == 2:
        photo, video = inputs
        _check_user_file("photo", photo)
        _check_user_file("video", video)
        if media_kind(photo) == "video":
            if media_kind(video) == "image":
                raise InputError(f"{photo} is a video and {video} an image: PHOTO and VIDEO are the wrong way round", f"pass the photo first: {video} {photo}")
            raise InputError(f"photo {photo} is a video, not a photo", "pass PHOTO (an image) first, then the driving VIDEO")
        root = opts.project or default_project_dir(photo, video)
    elif len(inputs) == 1 and (given_root is not None or not inputs[0].is_dir()):
        (only,) = inputs
        if not only.exists():
            raise InputError(f"{only} does not exist", "pass PHOTO VIDEO, a FILE, or a project directory")
        if lone == "video":
            video = only
        elif media_kind(only) == "video":
            raise InputError(f"{only} is a video, not a photo", f"pass a photo; to use it as the driving video: unianimate extract-pose {only}")
        else:
            photo = only
        if given_root is not None and opts.project is not None and opts.project.resolve() != given_root.resolve():
            raise InputError(f"two project directories given: {given_root} and --project {opts.project}", "give one")
        found = given_root or opts.project
        if found is None and video is not None:
            found = default_project_dir(None, video)
        elif found is None and is_project_dir(Path.cwd()):
            found = Path.cwd()
        if found is None:
            raise InputError(
                f"no project for the photo {only}: the driving poses come from a project",
                f"pass --project DIR (made by `unianimate extract-pose VIDEO`), or both files: {only} VIDEO",
            )
        if photo is not None and not (found / "manifest.json").is_file():
            why = "does not exist" if not found.exists() else "is not a unianimate project (no manifest.json)"
            raise InputError(f"project {found} {why}", f"make it first with `unianimate extract-pose VIDEO --project {found}`, or pass {only} VIDEO")
        root = found
    elif len(inputs) == 1:
        (only,) = inputs
        if opts.project is not None and opts.project.resolve() != only.resolve():
            raise InputError(f"two project directories given: {only} and --project {opts.project}", "give one")
        root = only
    else:
        if opts.project is not None:
            root = opts.project
        elif is_project_dir(Path.cwd()):
            root = Path.cwd()
        else:
            raise InputError("no inputs given", "pass PHOTO VIDEO, or a project directory from an earlier command")
    if root.exists() and not root.is_dir():
        raise InputError(f"project {root} is a file", "pass a directory to --project")
    if photo is None and video is None and not (root / "manifest.json").is_file():
        raise InputError(f"{root} is not a unianimate project (no manifest.json)", "pass PHOTO VIDEO to start one")
    return root, photo, video


def section_types(registry: Any) -> dict[str, type]:
    from unianimate_cli.stage import stage_section

    return {stage_section(s.name): s.params_type for s in registry}


def weights_dirs(opts: GlobalOptions, settings: Any) -> tuple[Path, ...]:
    """The --model family's folder, --weights-dir, then general.weights_dir (weights.py adds the data dir)."""
    from unianimate_cli.weights import model_family_dir

    out: list[Path] = []
    family = model_family_dir(settings.general.model)
    if family is not None:
        out.append(family)
    if opts.weights_dir is not None:
        out.append(opts.weights_dir)
    if settings.general.weights_dir:
        out.append(Path(settings.general.weights_dir).expanduser())
    return tuple(out)


def _general_cli(opts: GlobalOptions) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if opts.device is not None:
        out["device"] = opts.device
    if opts.weights_dir is not None:
        out["weights_dir"] = str(opts.weights_dir)
    if opts.model is not None:
        out["model"] = opts.model
    return out


def run_stage_command(sess: Session, registry: Any, stage_name: str, inputs: list[Path], given: dict[str, dict[str, Any]]) -> None:
    """Resolve the project, merge settings, run the stage and what it needs, print results.

    ``given`` holds the flags actually given, by stage section (upstream stages' too).
    """
    payload = stage_payload(sess, registry, stage_name, inputs, given)
    sess.emit(payload, list(payload["outputs"].values()))


def stage_payload(sess: Session, registry: Any, stage_name: str, inputs: list[Path], given: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """:func:`run_stage_command` without the printing: the ``--json`` record of the run."""
    from unianimate_cli.config import load_settings
    from unianimate_cli.console import ProgressDisplay
    from unianimate_cli.project import Project
    from unianimate_cli.runner import Runner
    from unianimate_cli.stage import stage_section

    opts = sess.opts
    root, photo, video = resolve_project(opts, inputs, lone_file_role(registry[stage_name]))
    project = Project(root)
    project.create()
    sess.logging.add_file(project.new_log_path())
    log.debug("unianimate %s: %s", __version__, " ".join(sys.argv))
    with project.lock():
        project.load()
        for what, path in (("photo", photo), ("video", video)):
            if path is not None:
                project.set_user_input(what, path)
        if photo is not None or video is not None:
            project.save()
        recorded = {name: rec.get("params", {}) for name, rec in project.stages.items() if name != stage_name}
        settings = load_settings(
            section_types(registry),
            cli={**given, "general": _general_cli(opts)},
            project_dir=project.root,
            recorded=recorded,
        )
        runner = Runner(project, registry, settings, weights_dirs=weights_dirs(opts, settings))
        display = ProgressDisplay(sess.console, quiet=opts.quiet)
        runner.hooks = display
        with display:
            results = runner.run(stage_name, force=opts.force)
    target = results[-1]
    payload = {
        "project": str(project.root),
        "stage": stage_name,
        "outputs": {k: str(v) for k, v in target.outputs.items()},
        "info": target.info,
        "stages": [
            {"name": r.name, "ran": r.ran, "reason": r.reason, "seconds": round(r.seconds, 3), "outputs": {k: str(v) for k, v in r.outputs.items()}}
            for r in results
        ],
    }
    return payload


# ---------------------------------------------------------------------------- stage commands


def _cli_annotation(tp: Any) -> Any:
    """Typer-friendly type for a params field: ``X | None`` becomes X (None = not given)."""
    import types as _types
    import typing

    if typing.get_origin(tp) in (typing.Union, _types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
        return str
    return tp


def _upstream_stages(registry: Any, stage: Any) -> list[Any]:
    """The stages ``stage`` runs first, nearest last; none if its chain cannot be resolved."""
    from unianimate_cli.runner import stage_chain

    try:
        return stage_chain(registry, stage.name)[:-1]
    except UnianimateError:
        return []  # a plugin needs an artifact no stage makes: running the command says so


def _stage_option(stage_name: str, pname: str, f: dataclasses.Field[Any], hint: Any, default: Any) -> inspect.Parameter:
    """One ``--flag`` for a params field, shown in the help panel of the stage that owns it."""
    dash = f.name.replace("_", "-")
    tp = _cli_annotation(hint)
    shown = default.value if hasattr(default, "value") else default
    help_text = f.metadata.get("help", "")
    # "\\[" keeps rich markup from eating the bracket.
    help_text = f"{help_text} \\[default: {str(shown).lower() if isinstance(shown, bool) else shown}]".strip()
    decls = [f"--{dash}/--no-{dash}"] if tp is bool else [f"--{dash}"]
    option = typer.Option(*decls, help=help_text, show_default=False, rich_help_panel=f"{stage_name} options", metavar=f.metadata.get("metavar"))
    return inspect.Parameter(pname, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[Optional[tp], option])


def make_stage_command(registry: Any, stage: Any) -> Callable[..., None]:
    """A Typer command for a stage: PHOTO VIDEO | PROJECT, one option per params field."""
    params: list[inspect.Parameter] = [
        inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context),
        inspect.Parameter(
            "inputs",
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[
                Optional[list[Path]],
                typer.Argument(help=_inputs_help(stage), show_default=False, metavar=f"[PHOTO VIDEO | {lone_file_role(stage).upper()} [PROJECT] | PROJECT]"),
            ],
        ),
    ]
    options, owners = stage_options(registry, stage)
    params.extend(options)
    params.extend(_global_parameters())

    def command(ctx: typer.Context, **kwargs: Any) -> None:
        opts = _options(ctx, {k: kwargs.pop(k) for k in GLOBAL_NAMES})
        inputs = list(kwargs.pop("inputs") or [])
        given = given_settings(owners, kwargs)
        run_command(opts, lambda sess: run_stage_command(sess, registry, stage.name, inputs, given))

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__name__ = stage.name.replace("-", "_")
    examples = getattr(stage, "examples", ()) or ()
    doc = getattr(stage, "summary", "") or stage.name
    description = getattr(stage, "description", "")
    if description:
        doc += "\n\n" + description
    if examples:
        doc += "\n\n[bold]Examples[/bold]\n\n" + "\n\n".join(f"  {e}" for e in examples)
    command.__doc__ = doc
    return command


def stage_options(registry: Any, stage: Any) -> tuple[list[inspect.Parameter], dict[str, tuple[str, str]]]:
    """A command's ``--flags`` for ``stage`` and the stages it runs first, and who owns each.

    The owners map a Python parameter name to (stage section, field) for :func:`given_settings`.
    """
    from unianimate_cli.config import defaults_of, field_types
    from unianimate_cli.stage import stage_section

    params: list[inspect.Parameter] = []
    # Options of the stage itself, then those of the stages it runs first (``animate
    # --frame-interval 2`` reaches extract-pose), unless a nearer stage already uses the name.
    owners: dict[str, tuple[str, str]] = {}  # python parameter name -> (stage section, field)
    taken = set(GLOBAL_NAMES)
    for owner in [stage, *reversed(_upstream_stages(registry, stage))]:
        section = stage_section(owner.name)
        hints = field_types(owner.params_type)
        defaults = defaults_of(owner.params_type)
        for f in dataclasses.fields(owner.params_type):
            if f.name in taken:
                continue  # e.g. device: the global --device supplies it
            taken.add(f.name)
            pname = f.name if owner is stage else f"{section}__{f.name}"
            owners[pname] = (section, f.name)
            params.append(_stage_option(owner.name, pname, f, hints[f.name], defaults[f.name]))
    return params, owners


def given_settings(owners: dict[str, tuple[str, str]], values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The stage flags actually given (not None), by stage section, from a command's kwargs."""
    given: dict[str, dict[str, Any]] = {}
    for pname, value in values.items():
        if value is not None and pname in owners:
            section, name = owners[pname]
            given.setdefault(section, {})[name] = value
    return given


# ---------------------------------------------------------------------------- status


def _status_command(registry: Any) -> Callable[..., None]:
    def status(
        ctx: typer.Context,
        project_dir: Annotated[Optional[Path], typer.Argument(help="Project directory (default: --project or the current one).", show_default=False, metavar="[PROJECT]")] = None,
        **kwargs: Any,
    ) -> None:
        """What a project holds: each stage up to date, stale (and why) or never run.

        [bold]Examples[/bold]

          unianimate status photo-dance.unianimate

          unianimate status photo-dance.unianimate --json | jq .stages
        """
        from unianimate_cli.config import load_settings, user_config_dir
        from unianimate_cli.project import Project
        from unianimate_cli.runner import Runner

        opts = _options(ctx, kwargs)
        with single_session(opts) as sess:
            root, _, _ = resolve_project(opts, [project_dir] if project_dir else [])
            project = Project(root)
            project.load()
            settings = load_settings(section_types(registry), cli={"general": _general_cli(opts)}, project_dir=project.root, recorded={n: r.get("params", {}) for n, r in project.stages.items()})
            runner = Runner(project, registry, settings, weights_dirs=weights_dirs(opts, settings))
            rows = []
            ordered: list[Any] = []
            for stage in registry:  # pipeline order: each stage after what it needs
                try:
                    chain = runner.chain(stage.name)
                except UnianimateError:
                    chain = [stage]
                ordered += [s for s in chain if s not in ordered]
            for stage in ordered:
                rec = project.stages.get(stage.name)
                state: str
                try:
                    st = runner.status(stage)
                    state, reason = st.state, st.reason
                except UnianimateError as exc:
                    state, reason = "stale", exc.message
                if rec is None and state == "stale":
                    state = "missing"
                outputs = {a.name: str(project.path(a.path)) for a in stage.outputs}
                rows.append({"name": stage.name, "state": state, "reason": reason, "finished": rec.get("finished") if rec else None, "outputs": outputs, "info": rec.get("info", {}) if rec else {}})
            payload = {
                "project": str(project.root),
                "inputs": {k: v.get("path") for k, v in project.manifest.get("inputs", {}).items()},
                "stages": rows,
                "user_config": str(user_config_dir() / "config.toml"),
                "plugins_skipped": list(registry.problems),
            }
            lines = [f"project {project.root}"]
            inputs_map: dict[str, Any] = payload["inputs"]  # type: ignore[assignment]
            for k, v in inputs_map.items():
                lines.append(f"  {k}: {v}")
            for r in rows:
                extra = "" if r["state"] == "fresh" else f" ({r['reason']})"
                lines.append(f"{r['name']:<14} {r['state']}{extra}")
            sess.emit(payload, lines)

    _add_globals(status)
    return status


def _add_globals(func: Callable[..., Any]) -> None:
    sig = inspect.signature(func, eval_str=True)
    params = [p for p in sig.parameters.values() if p.kind != inspect.Parameter.VAR_KEYWORD]
    func.__signature__ = sig.replace(parameters=[*params, *_global_parameters()])  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------- weights


def _weights_app() -> typer.Typer:
    app = typer.Typer(no_args_is_help=False)

    def list_weights(
        ctx: typer.Context,
        check: Annotated[bool, typer.Option("--check/--no-check", help="Check that each present file fits its model (meta build, no tensors read).")] = True,
        **kwargs: Any,
    ) -> None:
        """Where weights are looked for, which files are present, and whether each loads.

        [bold]Examples[/bold]

          unianimate weights

          unianimate weights --weights-dir ~/models/unianimate --json
        """
        if ctx.invoked_subcommand is not None:
            _options(ctx, kwargs)
            return
        opts = _options(ctx, kwargs)
        with single_session(opts) as sess:
            from unianimate_cli.config import load_settings
            from unianimate_cli import weights as w

            settings = load_settings({}, cli={"general": _general_cli(opts)})
            dirs = w.search_dirs(opts.weights_dir, settings.general.weights_dir or None)
            family = w.model_family_dir(settings.general.model)
            if family is not None:
                dirs.insert(0, family)
            model_set = w.resolve_model_set(dirs)
            rows = []
            for st in w.model_set_status(model_set):
                state, detail = ("missing", "") if st.path is None else ("present", "")
                if st.path is not None and check:
                    try:
                        w.check_component(model_set, st.component)
                        state = "loads"
                    except UnianimateError as exc:
                        state, detail = "broken", exc.message
                rows.append({"component": st.component, "file": st.filename, "path": str(st.path) if st.path else None, "state": state, "detail": detail})
            payload = {"family": model_set.name, "search_dirs": [str(d) for d in model_set.dirs()], "files": rows}
            lines = [f"model family: {model_set.name}", "searched: " + ", ".join(str(d) for d in model_set.dirs())]
            for r in rows:
                where = r["path"] or "not found"
                lines.append(f"{r['component']:<9} {r['state']:<8} {r['file']}  {where}" + (f"  ({r['detail']})" if r["detail"] else ""))
            sess.emit(payload, lines)
            if any(r["state"] != "loads" and r["state"] != "present" for r in rows):
                missing = [str(r["file"]) for r in rows if r["state"] in ("missing", "broken")]
                log.warning("%d weight file(s) missing or broken: %s; run `unianimate weights fetch`", len(missing), ", ".join(missing))

    _add_globals(list_weights)
    app.callback(invoke_without_command=True)(list_weights)

    def fetch(
        ctx: typer.Context,
        names: Annotated[Optional[list[str]], typer.Argument(help="File names to fetch (default: all five).", show_default=False)] = None,
        dest: Annotated[Optional[Path], typer.Option("--dest", help="Where to put them (default: --weights-dir, else the user data dir).", show_default=False)] = None,
        **kwargs: Any,
    ) -> None:
        """Download the official weight files (modelscope or huggingface_hub, resumable).

        [bold]Examples[/bold]

          unianimate weights fetch

          unianimate weights fetch yolox_l.onnx dw-ll_ucoco_384.onnx --dest ./weights
        """
        opts = _options(ctx, kwargs)
        with single_session(opts) as sess:
            from unianimate_cli import weights as w
            from unianimate_cli.console import ProgressDisplay

            target = dest or opts.weights_dir or w.default_weights_dir()
            display = ProgressDisplay(sess.console, quiet=opts.quiet)
            display.stage = "weights"
            bar: list[Any] = []

            def progress_cb(name: str, index: int, total: int) -> None:
                if not bar:
                    bar.append(display.factory("files", total))
                bar[0].update(index, total)
                if not opts.quiet:
                    sess.console.print(f"fetching {name} ({index + 1}/{total})", markup=False)

            with display:
                paths = w.fetch_weights(target, names or None, progress_cb=progress_cb)
                if bar:
                    bar[0].update(len(paths))
                    bar[0].close()
            sess.emit({"dest": str(target), "files": [str(p) for p in paths]}, [str(p) for p in paths])

    _add_globals(fetch)
    app.command("fetch")(fetch)
    return app


# ---------------------------------------------------------------------------- dev


def _dev_app() -> typer.Typer:
    app = typer.Typer(help="Developer tools.", no_args_is_help=True)

    def parity(
        ctx: typer.Context,
        folders: Annotated[list[Path], typer.Argument(help="Fixture folders.", show_default=False)],
        **kwargs: Any,
    ) -> None:
        """Compare our outputs with golden fixture folders (same as python -m unianimate_cli.parity)."""
        opts = _options(ctx, kwargs)
        with single_session(opts) as sess:
            from unianimate_cli.parity import run_parity

            failed = 0
            report: list[dict[str, Any]] = []
            lines: list[str] = []
            for folder in folders:
                kind, comparisons = run_parity(folder)
                bad = [c for c in comparisons if not c.ok]
                failed += bool(bad or not comparisons)
                report.append({"folder": str(folder), "kind": kind, "comparisons": [dataclasses.asdict(c) for c in comparisons]})
                lines.append(f"{folder} ({kind})")
                lines += [f"  {'ok  ' if c.ok else 'FAIL'} {c.name:<40} max_abs={c.max_abs:.3e} rel_l2={c.rel_l2:.3e}" for c in comparisons]
                lines.append(f"  {len(comparisons) - len(bad)} passed, {len(bad)} failed")
            sess.emit({"folders": report, "ok": failed == 0}, lines)
            if failed:
                raise typer.Exit(1)

    _add_globals(parity)
    app.command("parity")(parity)
    return app


# ---------------------------------------------------------------------------- the app


HELP = """Animate the person in a photo with the moves of a driving video.

Each command is a stage. A command first runs whatever stale stages it needs, like make, and skips stages whose inputs and settings have not changed. Results go to stdout, messages to stderr. After an interruption, run the same command again to resume.

[bold]Examples[/bold]

  unianimate animate photo.jpg dance.mp4   [dim](everything; writes photo-dance.unianimate/)[/dim]

  unianimate extract-pose dance.mp4 && unianimate align photo.jpg dance.unianimate

  unianimate animate photo-dance.unianimate --steps 50 --seed 7 --json

  unianimate status photo-dance.unianimate
"""


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"unianimate {__version__}")
        raise typer.Exit()


def build_app(registry: Any = None) -> typer.Typer:
    """The Typer app with one command per stage of ``registry`` (default: discovered)."""
    from unianimate_cli.stage import discover_stages

    if registry is None:
        registry = discover_stages()
    app = typer.Typer(
        name="unianimate",
        help=HELP,
        no_args_is_help=True,
        rich_markup_mode="rich",
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )

    def root(
        ctx: typer.Context,
        version: Annotated[bool, typer.Option("--version", callback=_version_callback, is_eager=True, help="Print the version and exit.")] = False,
        **kwargs: Any,
    ) -> None:
        _options(ctx, kwargs)

    _add_globals(root)
    root.__doc__ = HELP
    app.callback()(root)
    for stage in registry:
        app.command(stage.name, rich_help_panel="Stages")(make_stage_command(registry, stage))
    app.command("status", rich_help_panel="Projects")(_status_command(registry))
    if "animate" in registry:
        from unianimate_cli.batch import make_batch_command

        app.command("batch", rich_help_panel="Projects")(make_batch_command(registry))
    if "animate" in registry:
        from unianimate_cli.demo_command import make_demo_command

        app.command("demo", rich_help_panel="Projects")(make_demo_command(registry))
    app.add_typer(_weights_app(), name="weights", rich_help_panel="Projects")
    app.add_typer(_dev_app(), name="dev", hidden=True)
    return app


def main() -> None:
    """Console-script entry point."""
    build_app()()
