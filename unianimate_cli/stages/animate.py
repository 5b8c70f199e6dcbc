"""Built-in stage ``animate``: sample the video from the photo and the pose frames.

Loads the model family (weights.py), builds the conditions (CLIP embedding, VAE latent,
pose frames), samples with DDIM over overlapping windows, checkpointing ``x_t`` and the
step index atomically in ``animate/partial/`` every ``checkpoint_every`` steps, then
decodes and encodes ``render/out.mp4`` with the driving video's audio.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping

from unianimate_cli.errors import InputError
from unianimate_cli.stage import Artifact, BaseStage, StageContext, param

MODEL_COMPONENTS = ("unet", "vae", "clip")


@dataclass(frozen=True)
class AnimateSettings:
    """Sampling settings; the defaults are the reference's long-video settings."""

    width: int = param(0, "video width in pixels, a multiple of 8 (0 = the model's: 512 for the official one)")
    height: int = param(0, "video height in pixels, a multiple of 8 (0 = the model's: 768 for the official one)")
    steps: int = param(30, "DDIM steps as the reference counts them (30 runs 31 model steps)")
    guide_scale: float = param(2.5, "classifier-free guidance scale")
    seed: int = param(11, "random seed")
    max_frames: int = param(0, "animate at most this many pose frames (0 = all)")
    mode: Literal["windows", "segments"] = param("windows", "long videos: overlapping windows (the reference) or last-frame segments of --window-size frames")
    window_size: int = param(32, "frames per window (segment length in segments mode)")
    window_overlap: int = param(8, "frames shared by neighbouring windows")
    window_batch: int = param(1, "windows per UNet call (memory for speed)", key=False)
    checkpoint_every: int = param(1, "save the sampler state every N steps", key=False)
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = param("auto", "compute dtype (auto: float16 on CUDA, float32 on CPU)")
    audio: bool = param(True, "carry the driving video's audio into the result")
    layout: Literal["result", "compare"] = param("result", "result alone, or photo | pose | result side by side")
    crf: int = param(18, "H.264 quality (lower is better, 0-51)")


class AnimateStage(BaseStage):
    name = "animate"
    version = 1
    summary = "Render the animated video (runs extract-pose and align first when needed)."
    description = "Writes animate/latents.safetensors and render/out.mp4; resumes from the last checkpointed step."
    examples = (
        "unianimate animate photo.jpg dance.mp4",
        "unianimate animate photo-dance.unianimate --steps 50 --seed 7",
        "unianimate animate photo.jpg dance.mp4 --device cpu --weights-dir ./tiny-weights --json",
    )
    inputs = ("user:photo", "user:video", "pose.aligned", "pose.frames")
    outputs = (
        Artifact("render.latents", "animate/latents.safetensors", "the sampled latents"),
        Artifact("render.video", "render/out.mp4", "the animated video"),
    )
    params_type = AnimateSettings

    def validate(self, ctx: StageContext, params: AnimateSettings) -> None:
        for name, value, low in (("steps", params.steps, 1), ("window-size", params.window_size, 1), ("checkpoint-every", params.checkpoint_every, 1), ("window-batch", params.window_batch, 1)):
            if value < low:
                raise InputError(f"--{name} {value} is below {low}")
        if params.mode == "segments" and params.window_size < 2:
            raise InputError(f"--window-size {params.window_size} leaves no new frame per segment", "use 2 or more")
        if params.mode == "windows" and not 0 <= params.window_overlap < params.window_size:
            raise InputError(f"--window-overlap {params.window_overlap} must be >= 0 and below --window-size {params.window_size}")
        for name, value in (("width", params.width), ("height", params.height)):
            if value < 0 or value % 8:
                raise InputError(f"--{name} {value} is not a positive multiple of 8", "the official model is trained at 512x768 (or 768x1216)")
        if not 0 <= params.crf <= 51:
            raise InputError(f"--crf {params.crf} is outside 0..51")
        if params.max_frames < 0:
            raise InputError(f"--max-frames {params.max_frames} is negative", "use 0 for every frame")

    def weight_files(self, ctx: StageContext, params: Any) -> Mapping[str, Path]:
        from unianimate_cli.stages._common import weight_paths

        return weight_paths(ctx, MODEL_COMPONENTS)

    def run(self, ctx: StageContext, params: AnimateSettings) -> None:
        from unianimate_cli.stages._render import render_animation

        render_animation(ctx, params)


STAGE = AnimateStage()
