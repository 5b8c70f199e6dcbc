"""Built-in stage ``extract-pose``: DWPose on the photo and on every sampled video frame.

Writes ``pose/reference.jsonl`` (the photo's person), ``pose/driving.jsonl`` (one pose per
sampled frame, with the sequence's fps) and ``pose/preview.mp4`` (skeletons, for eyes).
Resumable per chunk of frames through ``ctx.partial_dir``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping

from unianimate_cli.errors import InputError
from unianimate_cli.stage import Artifact, BaseStage, StageContext, param
from unianimate_cli.stages._common import done_total_callback, weight_paths


@dataclass(frozen=True)
class ExtractPoseSettings:
    """Frame sampling and whom to follow; batch and chunk sizes do not change results."""

    frame_interval: int = param(1, "take every N-th source frame (output fps = source fps / N)")
    max_frames: int = param(0, "at most this many frames (0 = to the end of the video)")
    start_frame: int = param(0, "first source frame to use")
    person: str = param("auto", "who to follow: auto (largest, most central) or an index in detector order")
    batch_size: int = param(16, "pose-model crops per batch", key=False)
    chunk_frames: int = param(64, "frames per resume checkpoint", key=False)
    preview: bool = param(True, "also write pose/preview.mp4 with the skeletons")


def library_params(p: ExtractPoseSettings, device: str) -> Any:
    from unianimate_cli.pose.pipeline import ExtractPoseParams

    person: Any = p.person
    if person != "auto":
        try:
            person = int(person)
        except ValueError:
            raise InputError(f"--person {p.person!r} is not 'auto' or a person index", "use auto, 0, 1, ...") from None
    dev: Literal["auto", "cuda", "cpu"] = "auto" if device == "auto" else "cpu" if device == "cpu" else "cuda"
    return ExtractPoseParams(
        frame_interval=p.frame_interval,
        max_frames=p.max_frames or None,
        start_frame=p.start_frame,
        person=person,
        batch_size=p.batch_size,
        device=dev,
        chunk_frames=p.chunk_frames,
    )


class ExtractPoseStage(BaseStage):
    name = "extract-pose"
    version = 1
    summary = "Find the person's pose in the photo and in every sampled frame of the video (DWPose)."
    description = "Writes pose/reference.jsonl, pose/driving.jsonl and a skeleton preview; resumes per chunk of frames."
    examples = (
        "unianimate extract-pose photo.jpg dance.mp4",
        "unianimate extract-pose photo.jpg dance.mp4 --frame-interval 2 --max-frames 64",
    )
    inputs = ("user:photo", "user:video")
    outputs = (
        Artifact("pose.reference", "pose/reference.jsonl", "the photo's pose"),
        Artifact("pose.driving", "pose/driving.jsonl", "one pose per sampled video frame"),
        Artifact("pose.preview", "pose/preview.mp4", "the driving skeletons as a video"),
    )
    params_type = ExtractPoseSettings

    def validate(self, ctx: StageContext, params: ExtractPoseSettings) -> None:
        from unianimate_cli.pose.pipeline import check_extract_inputs

        check_extract_inputs(ctx.input("user:photo"), ctx.input("user:video"), library_params(params, ctx.device))

    def weight_files(self, ctx: StageContext, params: Any) -> Mapping[str, Path]:
        return weight_paths(ctx, ("detector", "pose"))

    def run(self, ctx: StageContext, params: ExtractPoseSettings) -> None:
        from unianimate_cli.pose.pipeline import extract_poses

        weights = weight_paths(ctx, ("detector", "pose"))
        with ctx.progress("frames", None) as task:
            result = extract_poses(
                ctx.input("user:photo"),
                ctx.input("user:video"),
                weights["detector"],
                weights["pose"],
                ctx.output("pose.reference"),
                ctx.output("pose.driving"),
                ctx.output("pose.preview") if params.preview else None,
                library_params(params, ctx.device),
                ctx.partial_dir,
                progress=done_total_callback(task),
            )
        preview = ctx.output("pose.preview")
        if not preview.exists():  # --no-preview, or no frame to draw: keep the layout fixed
            preview.write_bytes(b"")
        ctx.info.update(
            num_frames=result.num_frames,
            fps=float(result.fps),
            fps_fraction=str(result.fps),
            source_fps=float(result.source_fps),
            people_in_photo=result.people_in_photo,
        )


STAGE = ExtractPoseStage()
