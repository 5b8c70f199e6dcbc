"""Plan, run, record and resume stages, the way make would, judged by content hashes.

For a target stage the runner walks its upstream chain (artifact name -> producing stage),
and for each stage computes the key: sha256 of canonical JSON of the stage name and
version, its key params, the content hash of every input and of every weight file. A
stage is fresh when the manifest holds the same key and every output is present with its
recorded hash (re-hashed only when size or mtime moved). Otherwise it runs, and the runner
says why: ``params changed (steps 30 -> 50)``, ``input changed (pose.driving)``,
``output missing (align/poses.jsonl)``, ``never run``.

Outputs are written under ``.tmp/<stage>/`` and renamed into place when ``run`` returns;
the manifest is written last. Partial work (``<stage>/partial/``) belongs to one key: a
rerun with the same key resumes from it, a different key discards it with a message.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from unianimate_cli import __version__
from unianimate_cli.config import Settings
from unianimate_cli.errors import ProjectError, UnianimateError
from unianimate_cli.project import FileStat, Project, atomic_write_json, canonical_sha256, hash_path, replace_tree, utc_now
from unianimate_cli.stage import (
    USER_INPUT_PREFIX,
    ProgressFactory,
    Registry,
    Stage,
    StageContext,
    is_key_field,
    no_progress,
    params_dict,
)

log = logging.getLogger(__name__)

PARTIAL_KEY_FILE = "KEY.json"
State = Literal["fresh", "stale"]


@dataclass(frozen=True)
class StageStatus:
    """Whether a stage is up to date, and if not, every reason why."""

    name: str
    state: State
    reasons: tuple[str, ...] = ()
    key: str | None = None

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons) if self.reasons else "up to date"


@dataclass
class StageResult:
    """What one stage did in a run: ``ran`` or skipped as fresh, and where its outputs are."""

    name: str
    ran: bool
    reason: str
    outputs: dict[str, Path] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


class StageHooks:
    """Display callbacks; the CLI passes a ``ProgressDisplay``, tests may pass nothing."""

    def stage_started(self, name: str, reason: str) -> None: ...

    def stage_finished(self, name: str, ok: bool = True) -> None: ...

    def stage_skipped(self, name: str, why: str) -> None: ...

    def factory(self, label: str, total: int | None = None) -> Any:
        return no_progress(label, total)


def _short(value: Any) -> str:
    text = repr(value) if not isinstance(value, (int, float)) or isinstance(value, bool) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def stage_chain(registry: Registry, target: str) -> list[Stage]:
    """``target`` and every stage upstream of it, in the order they must run."""
    producers = registry.producers()
    order: list[Stage] = []
    visiting: set[str] = set()

    def visit(stage: Stage) -> None:
        if stage in order:
            return
        if stage.name in visiting:
            raise UnianimateError(f"stage {stage.name} depends on itself through its inputs")
        visiting.add(stage.name)
        for name in stage.inputs:
            if name.startswith(USER_INPUT_PREFIX):
                continue
            producer = producers.get(name)
            if producer is None:
                raise ProjectError(
                    f"stage {stage.name} needs artifact {name}, which no installed stage makes",
                    "install the plugin that provides it (`unianimate status` lists the stages)",
                )
            visit(producer)
        visiting.discard(stage.name)
        order.append(stage)

    visit(registry[target])
    return order


class Runner:
    """Runs stages of one project; the caller holds the project lock."""

    def __init__(
        self,
        project: Project,
        registry: Registry,
        settings: Settings,
        *,
        weights_dirs: tuple[Path, ...] = (),
        hooks: Any = None,
    ) -> None:
        self.project = project
        self.registry = registry
        self.settings = settings
        self.weights_dirs = weights_dirs
        self.hooks = hooks if hooks is not None else StageHooks()

    # ------------------------------------------------------------------ graph

    def chain(self, target: str) -> list[Stage]:
        """``target`` and every stage upstream of it, in the order they must run."""
        return stage_chain(self.registry, target)

    def input_paths(self, stage: Stage) -> dict[str, Path]:
        producers = self.registry.producers()
        out: dict[str, Path] = {}
        for name in stage.inputs:
            if name.startswith(USER_INPUT_PREFIX):
                what = name[len(USER_INPUT_PREFIX) :]
                path = self.project.user_input(what)
                if path is None:
                    raise ProjectError(
                        f"{self.project.root} records no {what}",
                        f"pass it on the command line: unianimate {stage.name} {what.upper()} --project {self.project.root}",
                    )
                out[name] = path
            else:
                art = next(a for a in producers[name].outputs if a.name == name)
                out[name] = self.project.path(art.path)
        return out

    def _context(self, stage: Stage, key: str = "", outputs: dict[str, Path] | None = None, progress: ProgressFactory = no_progress) -> StageContext:
        return StageContext(
            stage=stage.name,
            project=self.project,
            settings=self.settings,
            device=self.settings.general.device,
            key=key,
            inputs=self.input_paths(stage),
            outputs=outputs or {},
            partial_dir=self.project.partial_dir(stage.name),
            progress=progress,
            weights_dirs=self.weights_dirs,
        )

    # ------------------------------------------------------------------ keys and status

    def _input_hashes(self, stage: Stage) -> tuple[dict[str, dict[str, Any]], list[str]]:
        """Content hash and size of every input; names of missing inputs."""
        hashes: dict[str, dict[str, Any]] = {}
        missing: list[str] = []
        producers = self.registry.producers()
        for name, path in self.input_paths(stage).items():
            if not path.exists():
                missing.append(name)
                continue
            if name.startswith(USER_INPUT_PREFIX):
                digest = self.project.file_hash(path)
            else:
                producer = producers[name]
                rec = self.project.stages.get(producer.name, {}).get("outputs", {}).get(name)
                art = next(a for a in producer.outputs if a.name == name)
                digest = self.project.output_hash(art.path, rec) or ""
            hashes[name] = {"sha256": digest, "size": FileStat.of(path).size}
        return hashes, missing

    def _weight_hashes(self, stage: Stage, params: Any) -> dict[str, dict[str, Any]]:
        getter = getattr(stage, "weight_files", None)
        if getter is None:
            return {}
        files = getter(self._context(stage), params) or {}
        return {name: {"path": str(path), "sha256": self.project.file_hash(Path(path))} for name, path in files.items()}

    def compute_key(self, stage: Stage, params: Any, inputs: dict[str, dict[str, Any]], weights: dict[str, dict[str, Any]]) -> str:
        return canonical_sha256(
            {
                "stage": stage.name,
                "version": stage.version,
                "params": params_dict(params, key_only=True),
                "inputs": {k: v["sha256"] for k, v in inputs.items()},
                "weights": {k: v["sha256"] for k, v in weights.items()},
            }
        )

    def status(self, stage: Stage, force: bool = False) -> StageStatus:
        """Fresh or stale (with reasons), judged on the files as they are now."""
        params = self.settings.params(stage.name)
        inputs, missing = self._input_hashes(stage)
        reasons: list[str] = []
        if missing:
            return StageStatus(stage.name, "stale", tuple(f"input missing ({m})" for m in missing))
        weights = self._weight_hashes(stage, params)
        key = self.compute_key(stage, params, inputs, weights)
        rec = self.project.stages.get(stage.name)
        if force:
            reasons.append("forced (--force)")
        if rec is None:
            return StageStatus(stage.name, "stale", (*reasons, "never run"), key)
        if rec.get("version") != stage.version:
            reasons.append(f"code changed (version {rec.get('version')} -> {stage.version})")
        old_params = rec.get("params", {})
        new_params = params_dict(params)
        key_fields = [f.name for f in dataclasses.fields(params) if is_key_field(f)]
        changed = [f"{k} {_short(old_params.get(k))} -> {_short(new_params[k])}" for k in key_fields if old_params.get(k) != new_params[k]]
        if changed:
            reasons.append(f"params changed ({', '.join(changed)})")
        old_inputs = rec.get("inputs", {})
        changed_inputs = [n for n, h in inputs.items() if old_inputs.get(n, {}).get("sha256") != h["sha256"]]
        if changed_inputs:
            reasons.append(f"input changed ({', '.join(changed_inputs)})")
        old_weights = rec.get("weights", {})
        changed_w = [n for n, h in weights.items() if old_weights.get(n, {}).get("sha256") != h["sha256"]]
        if changed_w or set(old_weights) - set(weights):
            reasons.append(f"weights changed ({', '.join(changed_w or sorted(set(old_weights) - set(weights)))})")
        for art in stage.outputs:
            orec = rec.get("outputs", {}).get(art.name)
            digest = self.project.output_hash(art.path, orec)
            if digest is None:
                reasons.append(f"output missing ({art.path.rstrip('/')})")
            elif orec is None or digest != orec.get("sha256"):
                reasons.append(f"output changed ({art.path.rstrip('/')})")
        if rec.get("key") != key and not reasons:
            reasons.append("key changed")
        return StageStatus(stage.name, "stale" if reasons else "fresh", tuple(reasons), key)

    def plan(self, target: str, force: bool = False) -> list[StageStatus]:
        """Status of every stage in ``target``'s chain; stale upstream makes downstream stale."""
        out: list[StageStatus] = []
        stale: set[str] = set()
        producers = self.registry.producers()
        for stage in self.chain(target):
            st = self.status(stage, force=force and stage.name == target)
            ups = sorted({producers[n].name for n in stage.inputs if n in producers and producers[n].name in stale})
            if ups and st.state == "fresh":
                st = StageStatus(stage.name, "stale", (f"upstream {', '.join(ups)} will run first",), st.key)
            elif ups:
                st = StageStatus(stage.name, "stale", (*st.reasons, f"upstream {', '.join(ups)} will run first"), st.key)
            if st.state == "stale":
                stale.add(stage.name)
            out.append(st)
        return out

    # ------------------------------------------------------------------ running

    def validate(self, target: str) -> None:
        """Every stage's cheap checks, before anything runs or loads a model."""
        for stage in self.chain(target):
            params = self.settings.params(stage.name)
            validator = getattr(stage, "validate", None)
            if validator is not None:
                validator(self._context(stage), params)
            getter = getattr(stage, "weight_files", None)
            if getter is not None:
                getter(self._context(stage), params)  # a missing weight file fails now, not after upstream work

    def run(self, target: str, force: bool = False) -> list[StageResult]:
        """Bring ``target`` up to date, running stale upstream stages first."""
        self.validate(target)
        results: list[StageResult] = []
        for stage in self.chain(target):
            st = self.status(stage, force=force and stage.name == target)
            if st.state == "fresh":
                self.hooks.stage_skipped(stage.name, "up to date")
                log.debug("%s: up to date", stage.name)
                results.append(StageResult(stage.name, False, "up to date", self._output_paths(stage), self.project.stages[stage.name].get("info", {})))
                continue
            log.debug("%s: running (%s)", stage.name, st.reason)
            results.append(self._run_one(stage, st))
        return results

    def _output_paths(self, stage: Stage) -> dict[str, Path]:
        return {a.name: self.project.path(a.path) for a in stage.outputs}

    def _prepare_partial(self, stage: Stage, key: str) -> Path:
        partial = self.project.partial_dir(stage.name)
        key_file = partial / PARTIAL_KEY_FILE
        if partial.exists():
            try:
                import json

                old = json.loads(key_file.read_text()).get("key")
            except (OSError, ValueError):
                old = None
            if old != key:
                log.warning("%s: discarding partial work from an earlier run with other inputs or params", stage.name)
                shutil.rmtree(partial)
            elif any(p.name != PARTIAL_KEY_FILE for p in partial.iterdir()):
                log.warning("%s: resuming from the partial work of an interrupted run", stage.name)
        partial.mkdir(parents=True, exist_ok=True)
        if not key_file.exists():
            atomic_write_json(key_file, {"key": key, "stage": stage.name})
        return partial

    def _run_one(self, stage: Stage, st: StageStatus) -> StageResult:
        params = self.settings.params(stage.name)
        inputs, missing = self._input_hashes(stage)
        if missing:
            raise ProjectError(f"{stage.name}: inputs missing after upstream stages ran: {', '.join(missing)}")
        weights = self._weight_hashes(stage, params)
        key = self.compute_key(stage, params, inputs, weights)
        self._prepare_partial(stage, key)
        tmp_root = self.project.tmp_dir / stage.name
        if tmp_root.exists():
            shutil.rmtree(tmp_root)
        outputs: dict[str, Path] = {}
        for art in stage.outputs:
            tmp = tmp_root / art.path.rstrip("/")
            if art.is_dir:
                tmp.mkdir(parents=True, exist_ok=True)
            else:
                tmp.parent.mkdir(parents=True, exist_ok=True)
            outputs[art.name] = tmp
        ctx = self._context(stage, key, outputs, progress=self.hooks.factory)
        start = time.monotonic()
        self.hooks.stage_started(stage.name, st.reason)
        ok = False
        try:
            stage.run(ctx, params)
            ok = True
        finally:
            self.hooks.stage_finished(stage.name, ok)
        not_written = [a.path for a in stage.outputs if not outputs[a.name].exists()]
        if not_written:
            raise ProjectError(f"stage {stage.name} finished without writing {', '.join(not_written)}", "this is a bug in the stage")
        record_outputs: dict[str, Any] = {}
        for art in stage.outputs:
            dst = self.project.path(art.path)
            replace_tree(outputs[art.name], dst)
            stat = FileStat.of(dst)
            record_outputs[art.name] = {
                "path": art.path,
                "sha256": hash_path(dst),
                "size": stat.size,
                "mtime_ns": stat.mtime_ns,
            }
        seconds = time.monotonic() - start
        self.project.stages[stage.name] = {
            "key": key,
            "version": stage.version,
            "params": params_dict(params),
            "inputs": inputs,
            "weights": weights,
            "outputs": record_outputs,
            "info": ctx.info,
            "tool": f"unianimate {__version__}",
            "finished": utc_now(),
            "seconds": round(seconds, 3),
        }
        self.project.save()
        with contextlib.suppress(OSError):
            shutil.rmtree(self.project.partial_dir(stage.name))
            shutil.rmtree(tmp_root)
        return StageResult(stage.name, True, st.reason, self._output_paths(stage), dict(ctx.info), seconds)
