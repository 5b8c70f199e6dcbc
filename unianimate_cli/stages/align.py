"""Built-in stage ``align``: pose the photo, move the driving poses onto its body, draw condition frames.

Writes ``pose/reference.jsonl`` (the photo's person, DWPose on one image),
``align/poses.jsonl`` and ``align/frames/`` (``ref_pose.png`` then one image per frame, at
the model resolution the ``animate`` stage uses). The photo is posed here rather than in
``extract-pose``, so another photo reruns only this stage and those after it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping

from unianimate_cli.errors import InputError
from unianimate_cli.stage import Artifact, BaseStage, StageContext, param
from unianimate_cli.stages._common import done_total_callback, onnx_device, person_choice, weight_paths


@dataclass(frozen=True)
class AlignSettings:
    """Who in the photo, and how the driving poses are fitted to them and drawn."""

    person: str = param("auto", "who in the photo: auto (largest, most central) or an index in detector order")
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
    version = 2  # 2: poses the photo itself (pose/reference.jsonl moved here from extract-pose)
    summary = "Pose the photo, fit the driving poses to its body and draw the pose condition frames."
    description = "Writes pose/reference.jsonl, align/poses.jsonl and align/frames/ (ref_pose then one image per frame)."
    examples = (
        "unianimate align photo.jpg --project dance.unianimate",
        "unianimate align photo.jpg dance.mp4",
        "unianimate align photo-dance.unianimate --calibration auto --person 1",
    )
    inputs = ("user:photo", "pose.driving")
    outputs = (
        Artifact("pose.reference", "pose/reference.jsonl", "the photo's pose"),
        Artifact("pose.aligned", "align/poses.jsonl", "driving poses moved onto the photo's body"),
        Artifact("pose.frames", "align/frames/", "condition frames: ref_pose, then one per frame"),
    )
    params_type = AlignSettings

    def validate(self, ctx: StageContext, params: AlignSettings) -> None:
        from unianimate_cli.media.image import load_image

        person_choice(params.person)
        library_params(params)
        load_image(ctx.input("user:photo"))  # a video or unreadable file fails before any model loads

    def weight_files(self, ctx: StageContext, params: Any) -> Mapping[str, Path]:
        return weight_paths(ctx, ("detector", "pose"))

    def run(self, ctx: StageContext, params: AlignSettings) -> None:
        from unianimate_cli.pose.pipeline import align_and_draw, extract_reference_pose

        weights = weight_paths(ctx, ("detector", "pose"))
        reference = extract_reference_pose(
            ctx.input("user:photo"),
            weights["detector"],
            weights["pose"],
            ctx.output("pose.reference"),
            person=person_choice(params.person),
            device=onnx_device(ctx.device),
        )
        with ctx.progress("frames", None) as task:
            result = align_and_draw(
                ctx.output("pose.reference"),
                ctx.input("pose.driving"),
                ctx.output("pose.aligned"),
                ctx.output("pose.frames"),
                library_params(params),
                progress=done_total_callback(task),
            )
        ctx.info.update(
            num_frames=result.num_frames,
            fps=result.fps,
            calibration_frame=result.align.calibration_frame,
            people_in_photo=reference.people_found,
        )


STAGE = AlignStage()
