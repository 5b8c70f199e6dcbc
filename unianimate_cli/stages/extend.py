"""Built-in stage ``extend``: continue a finished render from its last frame.

Renders the aligned pose frames that ``animate`` did not use (``animate --max-frames``) in
last-frame segments, each starting from the previous segment's last frame, and writes the
whole longer video to ``extend/out.mp4`` (``unianimate_cli.animation.extend``).
``render/out.mp4`` stays as it was, so ``animate`` stays up to date.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping

from unianimate_cli.errors import InputError
from unianimate_cli.stage import Artifact, BaseStage, StageContext, param

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExtendSettings:
    """How the continuation is sampled."""

    frames: int = param(0, "add at most this many frames (0 = every remaining pose frame)")
    steps: int = param(30, "DDIM steps as the reference counts them")
    guide_scale: float = param(2.5, "classifier-free guidance scale")
    seed: int = param(11, "random seed (segment i uses a generator seeded from (seed, i))")
    segment_frames: int = param(32, "frames per segment")
    color_match: bool = param(True, "match each hand-over frame's colours to the photo (fights drift)")
    embedding_mix: float = param(0.0, "blend of the hand-over frame into the CLIP embedding (0 = photo only)")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = param("auto", "compute dtype (auto: float16 on CUDA, float32 on CPU)")
    sampler: Literal["ddim", "dpm++2m"] = param("ddim", "ddim (the reference's) or dpm++2m (opt-in, similar pictures with fewer --steps, e.g. 15)")
    low_memory: bool = param(False, "for 4-8 GB GPUs: UNet weights streamed from host memory, two-pass guidance (slower)", key=False)
    compile: bool = param(False, "torch.compile the UNet blocks (minutes at the first step; pays off on long renders)", key=False)
    audio: bool = param(True, "carry the driving video's audio into the result")
    layout: Literal["result", "compare"] = param("result", "result alone, or photo | pose | result side by side")
    crf: int = param(18, "H.264 quality (lower is better, 0-51)")


class ExtendStage(BaseStage):
    name = "extend"
    version = 1
    summary = "Continue a finished render from its last frame with the remaining poses."
    description = "Writes extend/out.mp4: the animate result followed by the new frames."
    examples = (
        "unianimate animate photo.jpg dance.mp4 --max-frames 32 && unianimate extend photo-dance.unianimate",
        "unianimate extend photo-dance.unianimate --frames 64 --no-color-match",
    )
    inputs = ("user:photo", "user:video", "pose.aligned", "pose.frames", "render.latents", "render.video")
    outputs = (
        Artifact("render.extended_latents", "extend/latents.safetensors", "the latents of the longer video"),
        Artifact("render.extended", "extend/out.mp4", "the longer video"),
    )
    params_type = ExtendSettings

    def validate(self, ctx: StageContext, params: ExtendSettings) -> None:
        if params.segment_frames < 2:
            raise InputError(f"--segment-frames {params.segment_frames} leaves no new frame per segment", "use 2 or more (32 is the default)")
        if params.frames < 0:
            raise InputError(f"--frames {params.frames} is negative", "use 0 for every remaining pose frame")
        if not 0.0 <= params.embedding_mix <= 1.0:
            raise InputError(f"--embedding-mix {params.embedding_mix} is outside 0..1")

    def weight_files(self, ctx: StageContext, params: Any) -> Mapping[str, Path]:
        from unianimate_cli.stages._common import weight_paths

        return weight_paths(ctx, ("unet", "vae", "clip"))

    def run(self, ctx: StageContext, params: ExtendSettings) -> None:
        from safetensors import safe_open

        from unianimate_cli import animation, launch
        from unianimate_cli.stages._common import model_set

        with safe_open(str(ctx.input("render.latents")), framework="pt") as fh:
            shape = fh.get_slice("latents").get_shape()  # [1, 4, f, h, w]: the earlier render's size
        previous = ctx.project.stages.get("animate", {}).get("params", {})
        lib = animation.AnimateParams(
            width_px=int(shape[-1]) * 8,
            height_px=int(shape[-2]) * 8,
            num_steps=params.steps,
            guide_scale=params.guide_scale,
            seed=params.seed,
            variant=previous.get("variant", "B"),
            fit=previous.get("fit", "stretch"),
            long_mode="continuation",
            segment_length=params.segment_frames,
            embedding_mix=params.embedding_mix,
            color_match=params.color_match,
            layout=params.layout,
            crf=params.crf,
            keep_audio=params.audio,
            device=ctx.device,
            dtype=params.dtype,
            sampler=params.sampler,
            low_memory=params.low_memory,
            compile=params.compile,
        )
        fps, audio = animation.timing_from_poses(ctx.input("pose.aligned"), ctx.input("user:video"))
        dist = launch.active_dist()
        if dist is not None:
            log.warning("extend renders last-frame segments on rank 0 alone; the other %d rank(s) wait", dist.world_size - 1)
        bars = animation.ProgressBars(ctx.progress)
        try:
            result = animation.extend(
                model_set(ctx),
                ctx.input("user:photo"),
                ctx.input("pose.frames"),
                ctx.input("render.video"),
                ctx.output("render.extended"),
                ctx.partial_dir,
                lib,
                fps=fps,
                audio=audio,
                progress=bars,
                previous_latents=ctx.input("render.latents"),
                num_new_frames=params.frames or None,
                latents_out=ctx.output("render.extended_latents"),
            )
        finally:
            bars.close()
        ctx.info.update(num_frames=result.num_frames, added_frames=result.added_frames, fps=float(result.fps), segments=result.num_segments, **result.info)


STAGE = ExtendStage()
