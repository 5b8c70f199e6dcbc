"""An example third-party stage for unianimate: a greeting per unit, resumable."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from unianimate_cli.project import atomic_write_text
from unianimate_cli.stage import Artifact, BaseStage, StageContext, param


@dataclass(frozen=True)
class HelloParams:
    greeting: str = param("hello", "the word to start each line with")
    lines: int = param(3, "how many lines (units of work)")
    delay_s: float = param(0.0, "pause per line, to watch progress or test interruptions", key=False)


class HelloStage(BaseStage):
    name = "hello"
    version = 1
    summary = "Greet the photo and the video (example plugin)."
    examples = ("unianimate hello photo.jpg dance.mp4 --greeting hi",)
    inputs = ("user:photo", "user:video")
    outputs = (Artifact("hello.greeting", "hello/greeting.txt", "one greeting per line"),)
    params_type = HelloParams

    def run(self, ctx: StageContext, params: HelloParams) -> None:
        digest = hashlib.sha256(ctx.input("user:photo").read_bytes() + ctx.input("user:video").read_bytes()).hexdigest()
        with ctx.progress("lines", params.lines) as task:
            for i in range(params.lines):
                unit = ctx.partial_dir / f"line-{i:05d}.txt"
                if not unit.exists():
                    if params.delay_s:
                        time.sleep(params.delay_s)
                    atomic_write_text(unit, f"{params.greeting} {i} {digest[:16]}\n")
                task.advance()
        parts = [(ctx.partial_dir / f"line-{i:05d}.txt").read_text() for i in range(params.lines)]
        ctx.output("hello.greeting").write_text("".join(parts))
        ctx.info["lines"] = params.lines


STAGE = HelloStage()
