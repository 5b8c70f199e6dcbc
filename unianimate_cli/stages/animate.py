"""Built-in stage ``animate``: render the video from the photo and the pose condition frames.

The work is ``unianimate_cli.animation.animate``: conditions (CLIP embedding, VAE latent,
pose frames), DDIM over overlapping windows (``--mode windows``, the reference) or
last-frame segments (``--mode segments``), decode, H.264 with the driving video's audio.
It resumes from ``animate/partial/``: the sampler state every ``checkpoint_every`` steps,
or every finished segment.
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

    width: int = param(0, "video width in pixels, a multiple of 64 (0 = the model's: 512 for the official one)")
    height: int = param(0, "video height in pixels, a multiple of 64 (0 = the model's: 768 for the official one)")
    steps: int = param(30, "DDIM steps as the reference counts them (30 runs 31 model steps)")
    guide_scale: float = param(2.5, "classifier-free guidance scale")
    seed: int = param(11, "random seed")
    max_frames: int = param(0, "animate at most this many pose frames (0 = all)")
    mode: Literal["windows", "segments"] = param("windows", "long videos: overlapping windows (the reference) or last-frame segments")
    window_size: int = param(32, "frames per window")
    window_overlap: int = param(8, "frames shared by neighbouring windows")
    segment_frames: int = param(32, "frames per segment (segments mode)")
    embedding_mix: float = param(0.0, "segments mode: blend of the hand-over frame into the CLIP embedding (0 = photo only)")
    color_match: bool = param(False, "segments mode: match each hand-over frame's colours to the photo")
    variant: Literal["A", "B"] = param("B", "conditions of the guided pass: B (randomref, the reference's long entrance) or A (local image)")
    fit: Literal["stretch", "crop", "pad"] = param("stretch", "how the photo reaches the video size (stretch = the reference)")
    window_batch: int = param(1, "windows per UNet call (memory for speed)", key=False)
    checkpoint_every: int = param(1, "save the sampler state every N steps", key=False)
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = param("auto", "compute dtype (auto: float16 on CUDA, float32 on CPU)")
    sampler: Literal["ddim", "dpm++2m"] = param("ddim", "ddim (the reference's) or dpm++2m (opt-in, similar pictures with fewer --steps, e.g. 15)")
    batch_guidance: Literal["auto", "on", "off"] = param("auto", "both guidance passes in one UNet call (auto: when GPU memory allows)", key=False)
    low_memory: bool = param(False, "for 4-8 GB GPUs: UNet weights streamed from host memory, two-pass guidance (slower)", key=False)
    compile: bool = param(False, "torch.compile the UNet blocks (minutes at the first step; pays off on long renders)", key=False)
    decode_chunk: int = param(0, "frames per VAE decode call (0 = sized to free GPU memory)", key=False)
    audio: bool = param(True, "carry the driving video's audio into the result")
    layout: Literal["result", "compare"] = param("result", "result alone, or photo | pose | result side by side")
    crf: int = param(18, "H.264 quality (lower is better, 0-51)")
    frames: str = param("", "also write the result frames as PNGs (00000.png ...) into this folder")


def resolution(ctx: StageContext, width: int, height: int) -> tuple[int, int]:
    """--width/--height, where 0 means the model family's own resolution."""
    if width and height:
        return width, height
    from unianimate_cli.stages._common import model_set

    model_w, model_h = (int(v) for v in model_set(ctx).unet_config().resolution)
    return width or model_w, height or model_h


def library_params(ctx: StageContext, p: AnimateSettings, width: int, height: int) -> Any:
    from unianimate_cli.animation import AnimateParams

    return AnimateParams(
        width_px=width,
        height_px=height,
        num_steps=p.steps,
        guide_scale=p.guide_scale,
        seed=p.seed,
        variant=p.variant,
        max_frames=p.max_frames or None,
        context_size=p.window_size,
        context_overlap=p.window_overlap,
        window_batch_size=p.window_batch,
        long_mode="continuation" if p.mode == "segments" else "windows",
        segment_length=p.segment_frames,
        embedding_mix=p.embedding_mix,
        color_match=p.color_match,
        checkpoint_every_steps=p.checkpoint_every,
        fit=p.fit,
        layout=p.layout,
        crf=p.crf,
        keep_audio=p.audio,
        device=ctx.device,
        dtype=p.dtype,
        sampler=p.sampler,
        batch_guidance=p.batch_guidance,
        low_memory=p.low_memory,
        compile=p.compile,
        decode_chunk_frames=p.decode_chunk,
    )


class AnimateStage(BaseStage):
    name = "animate"
    version = 1
    summary = "Render the animated video (runs extract-pose and align first when needed)."
    description = "Writes animate/latents.safetensors and render/out.mp4; resumes from the last checkpoint."
    examples = (
        "unianimate animate photo.jpg dance.mp4",
        "unianimate animate photo-dance.unianimate --steps 50 --seed 7",
        "unianimate animate photo.jpg dance.mp4 --mode segments --layout compare --json",
    )
    inputs = ("user:photo", "user:video", "pose.aligned", "pose.frames")
    outputs = (
        Artifact("render.latents", "animate/latents.safetensors", "the sampled latents"),
        Artifact("render.video", "render/out.mp4", "the animated video"),
    )
    params_type = AnimateSettings

    def validate(self, ctx: StageContext, params: AnimateSettings) -> None:
        if params.max_frames < 0:
            raise InputError(f"--max-frames {params.max_frames} is negative", "use 0 for every frame")
        # Width and height 0 are resolved from the weights in run; check the rest now.
        library_params(ctx, params, params.width or 512, params.height or 768).validate()

    def weight_files(self, ctx: StageContext, params: Any) -> Mapping[str, Path]:
        from unianimate_cli.stages._common import weight_paths

        return weight_paths(ctx, MODEL_COMPONENTS)

    def run(self, ctx: StageContext, params: AnimateSettings) -> None:
        from unianimate_cli import animation, launch
        from unianimate_cli.stages._common import model_set

        width, height = resolution(ctx, params.width, params.height)
        fps, audio = animation.timing_from_poses(ctx.input("pose.aligned"), ctx.input("user:video"))
        bars = animation.ProgressBars(ctx.progress)
        try:
            result = animation.animate(
                model_set(ctx),
                ctx.input("user:photo"),
                ctx.input("pose.frames"),
                ctx.output("render.video"),
                ctx.partial_dir,
                library_params(ctx, params, width, height),
                fps=fps,
                audio=audio,
                progress=bars,
                latents_out=ctx.output("render.latents"),
                frames_dir=Path(params.frames).expanduser().resolve() if params.frames else None,
                dist=launch.active_dist(),  # under torchrun: the ranks share the windows
            )
        finally:
            bars.close()
        ctx.info.update(
            num_frames=result.num_frames,
            fps=float(result.fps),
            width=result.width_px,
            height=result.height_px,
            has_audio=result.has_audio,
            segments=result.num_segments,
            steps_run=result.steps_run,
            resumed=result.resumed,
            **({"frames_dir": str(result.frames_dir)} if result.frames_dir else {}),
            **result.info,
        )


STAGE = AnimateStage()
