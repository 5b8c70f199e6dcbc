"""Built-in stage ``align``: move the driving poses onto the photo's body, draw condition frames.

Writes ``align/poses.jsonl`` and ``align/frames/`` (``ref_pose.png`` then one image per
frame, at the model resolution the ``animate`` stage uses).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from unianimate_cli.errors import InputError
from unianimate_cli.stage import Artifact, BaseStage, StageContext, param
from unianimate_cli.stages._common import done_total_callback


@dataclass(frozen=True)
class AlignSettings:
    """How the driving poses are fitted to the photo and drawn."""

    mode: Literal["robust", "reference"] = param("robust", "robust (never NaN) or reference (run_align_pose.py exactly)")
    calibration: str = param("first", "frame the scales are measured on: first, auto (most complete) or an index")
    width: int = param(512, "condition frame width in pixels (the model resolution)")
    height: int = param(768, "condition frame height in pixels (the model resolution)")
    jpeg_quality: int = param(0, "0 writes lossless PNG; 95 writes the reference's JPEG frames")


def library_params(p: AlignSettings) -> Any:
    from unianimate_cli.pose.pipeline import AlignParams, check_align_params

    calibration: Any = p.calibration
    if calibration not in ("first", "auto"):
        try:
            calibration = int(calibration)
        except ValueError:
            raise InputError(f"--calibration {p.calibration!r} is not first, auto or a frame index", "use first, auto or 0, 1, ...") from None
    lib = AlignParams(mode=p.mode, calibration=calibration, height_px=p.height, width_px=p.width, jpeg_quality=p.jpeg_quality or None)
    check_align_params(lib)
    return lib


class AlignStage(BaseStage):
    name = "align"
    version = 1
    summary = "Fit the driving poses to the photo's body and draw the pose condition frames."
    description = "Writes align/poses.jsonl and align/frames/ (ref_pose then one image per frame)."
    examples = (
        "unianimate align photo.jpg dance.mp4",
        "unianimate align photo-dance.unianimate --calibration auto",
    )
    inputs = ("pose.reference", "pose.driving")
    outputs = (
        Artifact("pose.aligned", "align/poses.jsonl", "driving poses moved onto the photo's body"),
        Artifact("pose.frames", "align/frames/", "condition frames: ref_pose, then one per frame"),
    )
    params_type = AlignSettings

    def validate(self, ctx: StageContext, params: AlignSettings) -> None:
        library_params(params)

    def run(self, ctx: StageContext, params: AlignSettings) -> None:
        from unianimate_cli.pose.pipeline import align_and_draw

        with ctx.progress("frames", None) as task:
            result = align_and_draw(
                ctx.input("pose.reference"),
                ctx.input("pose.driving"),
                ctx.output("pose.aligned"),
                ctx.output("pose.frames"),
                library_params(params),
                progress=done_total_callback(task),
            )
        ctx.info.update(num_frames=result.num_frames, fps=result.fps, calibration_frame=result.align.calibration_frame)


STAGE = AlignStage()
