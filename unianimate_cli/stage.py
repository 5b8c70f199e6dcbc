"""The stage contract and its discovery through the ``unianimate.stages`` entry points.

A stage declares its input artifacts, its output artifacts and a frozen params dataclass;
the runner decides whether it must run, gives it a :class:`StageContext` and records what
it produced. Built-in stages register exactly as third-party ones do (see pyproject.toml);
a third-party distribution adds one with::

    [project.entry-points."unianimate.stages"]
    hello = "unianimate_stage_hello:STAGE"

Params fields become CLI options, TOML keys and environment variables mechanically:
field ``guide_scale`` of stage ``animate`` is ``--guide-scale``, ``animate.guide_scale``
and ``UNIANIMATE_ANIMATE_GUIDE_SCALE``. Mark fields that must not invalidate outputs
(device, batch sizes) with ``param(..., key=False)``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol, runtime_checkable

from unianimate_cli.errors import ProjectError, UnianimateError

if TYPE_CHECKING:
    from unianimate_cli.config import Settings
    from unianimate_cli.project import Project

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "unianimate.stages"
BUILTIN_DISTRIBUTION = "unianimate"
#: The built-in stages as pyproject.toml registers them (a test keeps the two equal). Used only
#: when no metadata lists them: a source tree run uninstalled (``PYTHONPATH=. python -m
#: unianimate_cli`` on a rented GPU box) would otherwise have no commands at all.
BUILTIN_STAGE_TARGETS = {
    "extract-pose": "unianimate_cli.stages.extract_pose:STAGE",
    "align": "unianimate_cli.stages.align:STAGE",
    "animate": "unianimate_cli.stages.animate:STAGE",
    "extend": "unianimate_cli.stages.extend:STAGE",
}
USER_INPUT_PREFIX = "user:"


@dataclass(frozen=True)
class Artifact:
    """A named output of a stage; ``path`` is relative to the project, a trailing ``/`` is a folder."""

    name: str
    path: str
    description: str = ""

    @property
    def is_dir(self) -> bool:
        return self.path.endswith("/")


def param(default: Any, help: str = "", *, key: bool = True, metavar: str | None = None) -> Any:
    """A params-dataclass field with CLI help; ``key=False`` keeps it out of the stage key."""
    return field(default=default, metadata={"help": help, "key": key, "metavar": metavar})


def is_key_field(f: dataclasses.Field[Any]) -> bool:
    return bool(f.metadata.get("key", True))


def params_dict(params: Any, key_only: bool = False) -> dict[str, Any]:
    """A params dataclass as a JSON-ready dict (enums by value, paths as str)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(params):
        if key_only and not is_key_field(f):
            continue
        out[f.name] = to_jsonable(getattr(params, f.name))
    return out


def to_jsonable(value: Any) -> Any:
    import enum

    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return [to_jsonable(v) for v in value]
    return value


# ---------------------------------------------------------------------------- progress


class ProgressTask(AbstractContextManager["ProgressTask"]):
    """One progress bar (frames, windows, steps); a no-op base class that stages may rely on."""

    def advance(self, n: int = 1) -> None:
        """Count ``n`` more finished units."""

    def update(self, completed: int, total: int | None = None) -> None:
        """Set the number of finished units (and the total, once known)."""

    def close(self) -> None:
        """Finish the bar; called by ``__exit__``."""

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


ProgressFactory = Callable[[str, "int | None"], ProgressTask]
"""``progress(label, total) -> ProgressTask``: what a stage calls to show a bar."""


def no_progress(label: str, total: int | None = None) -> ProgressTask:
    """A progress factory that shows nothing (tests, ``--quiet``)."""
    return ProgressTask()


# ---------------------------------------------------------------------------- context


@dataclass
class StageContext:
    """What a running stage may touch: its declared inputs and outputs, and little else.

    ``output(name)`` is a temp path under ``.tmp/``; the runner renames it into place only
    when ``run`` returns, so a failed or interrupted stage never leaves half an artifact.
    ``partial_dir`` survives interruptions and holds resumable units (chunks, checkpoints);
    it belongs to one stage key and is discarded when the key changes.
    ``info`` is recorded in the manifest (e.g. fps, frame count) for status and --json.
    """

    stage: str
    project: Project
    settings: Settings
    device: str
    key: str
    inputs: Mapping[str, Path]
    outputs: Mapping[str, Path]
    partial_dir: Path
    progress: ProgressFactory = no_progress
    weights_dirs: tuple[Path, ...] = ()
    info: dict[str, Any] = field(default_factory=dict)

    def input(self, name: str) -> Path:
        """Path of a declared input artifact, or of ``user:photo`` / ``user:video``."""
        try:
            path = self.inputs[name]
        except KeyError:
            raise ProjectError(f"stage {self.stage} asked for input {name!r}, which it does not declare") from None
        if not path.exists():
            raise ProjectError(
                f"{self.stage}: input {name} is missing ({path})",
                "run the command again so the stage that makes it runs first",
            )
        return path

    def output(self, name: str) -> Path:
        """Temp path to write a declared output to (a created folder for folder artifacts)."""
        try:
            return self.outputs[name]
        except KeyError:
            raise ProjectError(f"stage {self.stage} wrote output {name!r}, which it does not declare") from None

    @property
    def log(self) -> logging.Logger:
        return logging.getLogger(f"unianimate.stage.{self.stage}")


# ---------------------------------------------------------------------------- protocol


@runtime_checkable
class Stage(Protocol):
    """The plugin contract; see the module docstring.

    ``version``: bump when the same inputs would now give different outputs.
    ``inputs``: artifact names made by other stages, or ``user:photo`` / ``user:video``.
    ``params_type``: a frozen dataclass whose every field has a default.
    """

    name: str
    version: int
    summary: str
    inputs: tuple[str, ...]
    outputs: tuple[Artifact, ...]
    params_type: type

    def validate(self, ctx: StageContext, params: Any) -> None:
        """Cheap checks (user files, params) before any model loads; raise UnianimateError."""

    def run(self, ctx: StageContext, params: Any) -> None:
        """Read ``ctx.input``s, write every ``ctx.output``; may resume from ``ctx.partial_dir``."""

    def weight_files(self, ctx: StageContext, params: Any) -> Mapping[str, Path]:
        """Weight files whose content is part of the key (name -> path); may be empty."""


class BaseStage:
    """Convenience base: no-op ``validate``, no weights, no examples. Subclass and fill in."""

    name: str = ""
    version: int = 1
    summary: str = ""
    description: str = ""
    examples: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ()
    outputs: tuple[Artifact, ...] = ()
    params_type: type = object

    def validate(self, ctx: StageContext, params: Any) -> None:
        return None

    def run(self, ctx: StageContext, params: Any) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def weight_files(self, ctx: StageContext, params: Any) -> Mapping[str, Path]:
        return {}


def stage_section(name: str) -> str:
    """Config section of a stage: ``extract-pose`` -> ``extract_pose``."""
    return name.replace("-", "_")


def check_stage(obj: object, where: str) -> Stage:
    """Reject an entry point that does not look like a stage, with a message naming it."""
    missing = [a for a in ("name", "version", "inputs", "outputs", "params_type", "run") if not hasattr(obj, a)]
    if missing:
        raise TypeError(f"{where} is not a stage (missing {', '.join(missing)})")
    params_type = obj.params_type  # type: ignore[attr-defined]
    if not dataclasses.is_dataclass(params_type):
        raise TypeError(f"{where}: params_type must be a dataclass")
    for f in dataclasses.fields(params_type):
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise TypeError(f"{where}: param {f.name} needs a default")
    return obj  # type: ignore[return-value]


# ---------------------------------------------------------------------------- discovery


@dataclass
class Registry:
    """The stages of one invocation, in discovery order, plus what was skipped and why."""

    stages: dict[str, Stage] = field(default_factory=dict)
    builtin: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)

    def __getitem__(self, name: str) -> Stage:
        try:
            return self.stages[name]
        except KeyError:
            import difflib

            close = difflib.get_close_matches(name, list(self.stages), n=1)
            hint = f"did you mean {close[0]}?" if close else f"known stages: {', '.join(self.stages)}"
            raise UnianimateError(f"no stage named {name!r}", hint) from None

    def __contains__(self, name: object) -> bool:
        return name in self.stages

    def __iter__(self) -> Any:
        return iter(self.stages.values())

    def producers(self) -> dict[str, Stage]:
        """Artifact name -> the stage that makes it."""
        out: dict[str, Stage] = {}
        for stage in self.stages.values():
            for art in stage.outputs:
                out.setdefault(art.name, stage)
        return out

    def add(self, stage: Stage, builtin: bool = False) -> None:
        self.stages[stage.name] = stage
        if builtin:
            self.builtin.add(stage.name)


def _is_builtin(ep: metadata.EntryPoint) -> bool:
    dist = getattr(ep, "dist", None)
    dist_name = getattr(dist, "name", None) if dist is not None else None
    if dist_name is not None:
        return str(dist_name).lower() == BUILTIN_DISTRIBUTION
    return ep.value.startswith("unianimate_cli.")


def discover_stages(include_third_party: bool | None = None) -> Registry:
    """Load every stage registered in the ``unianimate.stages`` entry-point group.

    Built-ins load first and win a name clash (with a warning). A third-party plugin that
    fails to import is logged and skipped; a built-in that fails is our bug and raises.
    ``UNIANIMATE_STAGES=builtin`` (or ``include_third_party=False``) skips third parties.
    """
    if include_third_party is None:
        include_third_party = os.environ.get("UNIANIMATE_STAGES", "").strip().lower() != "builtin"
    eps = list(metadata.entry_points(group=ENTRY_POINT_GROUP))
    builtin_eps = [ep for ep in eps if _is_builtin(ep)]
    other_eps = [ep for ep in eps if not _is_builtin(ep)]
    if not builtin_eps:  # running from a source tree that was never installed
        builtin_eps = [metadata.EntryPoint(name, target, ENTRY_POINT_GROUP) for name, target in BUILTIN_STAGE_TARGETS.items()]
    registry = Registry()
    seen_builtin: set[str] = set()
    for ep in builtin_eps:
        if ep.name in seen_builtin:  # the same dist seen twice on sys.path
            continue
        seen_builtin.add(ep.name)
        stage = check_stage(ep.load(), f"entry point {ep.name} = {ep.value}")
        registry.add(stage, builtin=True)
    if not include_third_party:
        return registry
    for ep in other_eps:
        where = f"plugin {ep.name} ({ep.value})"
        if ep.name in registry.builtin:
            msg = f"{where} clashes with the built-in stage {ep.name}; keeping the built-in"
            log.warning(msg)
            registry.problems.append(msg)
            continue
        if ep.name in registry.stages:
            continue
        try:
            stage = check_stage(ep.load(), where)
            if stage.name != ep.name:
                raise TypeError(f"{where}: its stage calls itself {stage.name!r}; the entry point name must match")
        except Exception as exc:  # a broken plugin must not break the tool
            msg = f"skipping {where}: {type(exc).__name__}: {exc}"
            log.warning(msg)
            registry.problems.append(msg)
            continue
        registry.add(stage)
    return registry


def registry_of(stages: list[Any], builtin: bool = True) -> Registry:
    """A registry from stage objects (tests, or embedding the runner in another tool)."""
    registry = Registry()
    for s in stages:
        registry.add(check_stage(s, repr(s)), builtin=builtin)
    return registry
