"""The animate stage's work: load models, build conditions, sample resumably, decode, encode."""

from __future__ import annotations

from typing import Any

from unianimate_cli.errors import UnianimateError
from unianimate_cli.stage import StageContext


def render_animation(ctx: StageContext, params: Any) -> None:
    raise UnianimateError("animate is not available yet in this build", "run extract-pose and align for now")
