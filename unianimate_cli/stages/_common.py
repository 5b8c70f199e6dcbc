"""Helpers the built-in stages share: weights lookup and progress adapters (no heavy imports)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from unianimate_cli.stage import ProgressTask, StageContext


_MODEL_SETS: dict[tuple[Any, ...], Any] = {}


def model_set(ctx: StageContext) -> Any:
    """The ``weights.ModelSet`` for this run's search dirs (imports torch via weights.py).

    Resolved once per set of folders and ``models.json`` versions, so a command that asks
    for it in several stages reads and logs it once.
    """
    from unianimate_cli import weights

    explicit = list(ctx.weights_dirs)
    dirs = weights.search_dirs(explicit[0] if explicit else None, explicit[1] if len(explicit) > 1 else None)
    stamp = []
    for d in dirs:
        f = Path(d) / weights.MODELS_JSON
        stamp.append((str(f), f.stat().st_mtime_ns if f.is_file() else None))
    key = tuple(stamp)
    if key not in _MODEL_SETS:
        _MODEL_SETS[key] = weights.resolve_model_set(dirs)
    return _MODEL_SETS[key]


def weight_paths(ctx: StageContext, components: tuple[str, ...]) -> dict[str, Path]:
    """Existing paths of ``components`` (WeightsError naming file, folders and how to get it)."""
    ms = model_set(ctx)
    return {c: ms.path(c) for c in components}


def done_total_callback(task: ProgressTask) -> Callable[[int, int], None]:
    """Adapt a library's ``progress(done, total)`` callback to a progress bar."""

    def cb(done: int, total: int) -> None:
        task.update(done, total)

    return cb


def person_choice(value: str) -> Any:
    """``--person`` as the pose library takes it: ``"auto"`` or an int index (InputError otherwise)."""
    from unianimate_cli.errors import InputError

    if value == "auto":
        return value
    try:
        index = int(value)
    except ValueError:
        index = -1
    if index < 0:
        raise InputError(f"--person {value!r} is not 'auto' or a person index", "use auto, 0, 1, ...")
    return index


def onnx_device(device: str) -> Any:
    """The global ``--device`` (auto, cpu, cuda, cuda:N) as DWPose's auto/cpu/cuda."""
    return "auto" if device == "auto" else "cpu" if device == "cpu" else "cuda"
