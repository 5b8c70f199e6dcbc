"""Tiny stand-in stages for the runner, CLI and resume tests (no models, milliseconds).

``count`` turns the photo into ``units`` lines, one resumable unit at a time (each unit a
file in ``partial_dir``); ``double`` reads them and writes them twice. ``HOOKS`` lets a
test count computed units and raise ``KeyboardInterrupt`` after unit k.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any, Callable

from unianimate_cli.project import atomic_write_text
from unianimate_cli.stage import Artifact, BaseStage, StageContext, param

HOOKS: dict[str, Any] = {"computed": [], "after_unit": None}


def reset_hooks() -> None:
    HOOKS["computed"] = []
    HOOKS["after_unit"] = None


@dataclass(frozen=True)
class CountParams:
    units: int = param(4, "how many units")
    salt: str = param("a", "changes every line")
    delay_s: float = param(0.0, "sleep per unit", key=False)


class CountStage(BaseStage):
    name = "count"
    version = 1
    summary = "Stand-in: hash the photo into lines, one resumable unit at a time."
    examples = ("unianimate count photo.jpg dance.mp4",)
    inputs = ("user:photo", "user:video")
    outputs = (Artifact("count.lines", "count/lines.txt"),)
    params_type = CountParams

    def run(self, ctx: StageContext, params: CountParams) -> None:
        data = ctx.input("user:photo").read_bytes() + ctx.input("user:video").read_bytes()
        with ctx.progress("units", params.units) as task:
            for i in range(params.units):
                unit = ctx.partial_dir / f"unit-{i:04d}.txt"
                if not unit.exists():
                    line = hashlib.sha256(data + f"{params.salt}:{i}".encode()).hexdigest()
                    if params.delay_s:
                        time.sleep(params.delay_s)
                    atomic_write_text(unit, line + "\n")
                    HOOKS["computed"].append(i)
                    hook: Callable[[int], None] | None = HOOKS["after_unit"]
                    if hook is not None:
                        hook(i)
                task.advance()
        lines = [(ctx.partial_dir / f"unit-{i:04d}.txt").read_text() for i in range(params.units)]
        ctx.output("count.lines").write_text("".join(lines))
        ctx.info["units"] = params.units


@dataclass(frozen=True)
class DoubleParams:
    times: int = param(2, "repeat the lines this often")


class DoubleStage(BaseStage):
    name = "double"
    version = 1
    summary = "Stand-in: repeat the count lines."
    inputs = ("count.lines",)
    outputs = (Artifact("double.text", "double/out.txt"), Artifact("double.parts", "double/parts/"))
    params_type = DoubleParams

    def run(self, ctx: StageContext, params: DoubleParams) -> None:
        text = ctx.input("count.lines").read_text()
        HOOKS["computed"].append("double")
        ctx.output("double.text").write_text(text * params.times)
        for i in range(params.times):
            (ctx.output("double.parts") / f"{i}.txt").write_text(text)


COUNT = CountStage()
DOUBLE = DoubleStage()


def standin_registry() -> Any:
    from unianimate_cli.stage import registry_of

    return registry_of([COUNT, DOUBLE])
