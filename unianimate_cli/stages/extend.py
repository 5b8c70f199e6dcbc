"""Built-in stage ``extend``: continue a finished render from its last frame.

Renders the aligned pose frames that ``animate`` did not use (``animate --max-frames``),
in last-frame segments (each starting from the previous segment's last frame), and
writes the whole longer video to ``extend/out.mp4``; ``render/out.mp4`` stays as it was,
so ``animate`` stays up to date.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping

from unianimate_cli.errors import InputError
from unianimate_cli.stage import Artifact, BaseStage, StageContext, param


@dataclass(frozen=True)
class ExtendSettings:
    """How the continuation is sampled."""

    frames: int = param(0, "add at most this many frames (0 = every remaining pose frame)")
    steps: int = param(30, "DDIM steps as the reference counts them")
    guide_scale: float = param(2.5, "classifier-free guidance scale")
    seed: int = param(11, "random seed (segment i uses a generator seeded from (seed, i))")
    segment_frames: int = param(32, "frames per segment")
    color_match: bool = param(True, "match the hand-over frame's colours to the photo (fights drift)")
    embedding_mix: float = param(0.0, "blend of the hand-over frame into the CLIP embedding (0 = photo only)")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = param("auto", "compute dtype (auto: float16 on CUDA, float32 on CPU)")
    audio: bool = param(True, "carry the driving video's audio into the result")
    crf: int = param(18, "H.264 quality (lower is better, 0-51)")


class ExtendStage(BaseStage):
    name = "extend"
    version = 1
    summary = "Continue a finished render from its last frame with the remaining poses."
    description = "Writes extend/out.mp4: the animate result followed by the new frames."
    examples = (
        "unianimate animate photo.jpg dance.mp4 --max-frames 32 && unianimate extend photo-dance.unianimate",
    )
    inputs = ("user:photo", "user:video", "pose.aligned", "pose.frames", "render.latents", "render.video")
    outputs = (
        Artifact("render.extended_latents", "extend/latents.safetensors", "the latents of the longer video"),
        Artifact("render.extended", "extend/out.mp4", "the longer video"),
    )
    params_type = ExtendSettings

    def weight_files(self, ctx: StageContext, params: Any) -> Mapping[str, Path]:
        from unianimate_cli.stages._common import weight_paths

        return weight_paths(ctx, ("unet", "vae", "clip"))

    def validate(self, ctx: StageContext, params: ExtendSettings) -> None:
        if params.segment_frames < 2:
            raise InputError(f"--segment-frames {params.segment_frames} leaves no new frame per segment", "use 2 or more (32 is the default)")
        if params.frames < 0:
            raise InputError(f"--frames {params.frames} is negative", "use 0 for every remaining pose frame")
        if not 0.0 <= params.embedding_mix <= 1.0:
            raise InputError(f"--embedding-mix {params.embedding_mix} is outside 0..1")

    def run(self, ctx: StageContext, params: ExtendSettings) -> None:
        from unianimate_cli.stages._render import render_extension

        render_extension(ctx, params)


STAGE = ExtendStage()
