"""Built-in stage ``extract-pose``: DWPose on every sampled frame of the driving input.

Writes ``pose/driving.jsonl`` (one pose per sampled frame, with the sequence's fps) and
``pose/preview.mp4`` (skeletons, for eyes). The driving input is a video, or a still image
posed as a one-frame sequence at ``--image-fps``. Resumable per chunk of frames through
``ctx.partial_dir``. The photo's pose is the ``align`` stage's work, so another photo never
re-extracts the video.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from unianimate_cli.stage import Artifact, BaseStage, StageContext, param
from unianimate_cli.stages._common import done_total_callback, onnx_device, person_choice, weight_paths


@dataclass(frozen=True)
class ExtractPoseSettings:
    """Frame sampling and whom to follow; batch and chunk sizes do not change results."""

    frame_interval: int = param(1, "take every N-th source frame (output fps = source fps / N)")
    max_frames: int = param(0, "at most this many frames (0 = to the end of the video)")
    start_frame: int = param(0, "first source frame to use")
    person: str = param("auto", "who to follow in the video: auto (largest, most central) or an index in detector order")
    image_fps: float = param(1.0, "frame rate of the one-frame sequence made from a still image")
    batch_size: int = param(16, "pose-model crops per batch", key=False)
    chunk_frames: int = param(64, "frames per resume checkpoint", key=False)
    preview: bool = param(True, "also write pose/preview.mp4 with the skeletons")


def library_params(p: ExtractPoseSettings, device: str) -> Any:
    from unianimate_cli.pose.pipeline import ExtractPoseParams

    return ExtractPoseParams(
        frame_interval=p.frame_interval,
        max_frames=p.max_frames or None,
        start_frame=p.start_frame,
        person=person_choice(p.person),
        image_fps=p.image_fps,
        batch_size=p.batch_size,
        device=onnx_device(device),
        chunk_frames=p.chunk_frames,
    )


class ExtractPoseStage(BaseStage):
    name = "extract-pose"
    version = 2  # 2: driving input only (the photo's pose moved to align); a still image is one frame
    summary = "Find the pose in every sampled frame of the driving video, or in one image (DWPose)."
    description = "Writes pose/driving.jsonl and a skeleton preview; resumes per chunk of frames. An image gives a one-frame sequence."
    examples = (
        "unianimate extract-pose dance.mp4",
        "unianimate extract-pose dance.mp4 --frame-interval 2 --max-frames 64",
        "unianimate extract-pose pose.png --image-fps 8",
        "unianimate extract-pose photo.jpg dance.mp4",
    )
    inputs = ("user:video",)
    outputs = (
        Artifact("pose.driving", "pose/driving.jsonl", "one pose per sampled video frame"),
        Artifact("pose.preview", "pose/preview.mp4", "the driving skeletons as a video"),
    )
    params_type = ExtractPoseSettings

    def validate(self, ctx: StageContext, params: ExtractPoseSettings) -> None:
        from unianimate_cli.pose.pipeline import check_driving_input

        check_driving_input(ctx.input("user:video"), library_params(params, ctx.device))

    def weight_files(self, ctx: StageContext, params: Any) -> Mapping[str, Path]:
        return weight_paths(ctx, ("detector", "pose"))

    def run(self, ctx: StageContext, params: ExtractPoseSettings) -> None:
        from unianimate_cli.pose.pipeline import extract_driving_poses

        weights = weight_paths(ctx, ("detector", "pose"))
        with ctx.progress("frames", None) as task:
            result = extract_driving_poses(
                ctx.input("user:video"),
                weights["detector"],
                weights["pose"],
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
            is_image=result.is_image,
        )


STAGE = ExtractPoseStage()
