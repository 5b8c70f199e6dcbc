"""The work of the ``animate`` and ``extend`` stages: models, conditions, resumable sampling, video.

Resume, windows mode: after every ``checkpoint_every`` DDIM steps (and the last) the sampler
state ``(completed_steps, x_t)`` is written atomically to ``partial/state.safetensors``; the
finished latents go to ``partial/latents.safetensors`` before decoding, so an interruption
while decoding or encoding does not sample again. The initial latent is recomputed from the
seed on resume (the same draws in the same order), so a resumed render equals an
uninterrupted one on the same device and thread count.

Resume, segments mode (and ``extend``): every finished segment (its latents and decoded
frames) is written to ``partial/segment-NNNN.safetensors``. Segment ``i`` draws from a fresh
generator seeded from ``(seed, i)``, so resuming at any segment gives the same frames.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

from unianimate_cli.errors import InputError, ProjectError
from unianimate_cli.project import atomic_path
from unianimate_cli.stage import StageContext
from unianimate_cli.stages._common import model_set

log = logging.getLogger(__name__)

STATE_FILE = "state.safetensors"
LATENTS_FILE = "latents.safetensors"
REF_POSE_PREFIX = "ref_pose."


def pose_frame_files(frames_dir: Path) -> tuple[Path, list[Path]]:
    """(ref_pose image, driving pose images in order) of an ``align/frames/`` folder."""
    refs = sorted(frames_dir.glob(REF_POSE_PREFIX + "*"))
    if not refs:
        raise ProjectError(f"{frames_dir} holds no ref_pose image", "run `unianimate align --force` on the project")
    frames = sorted(p for p in frames_dir.iterdir() if p.is_file() and not p.name.startswith(REF_POSE_PREFIX))
    if not frames:
        raise ProjectError(f"{frames_dir} holds no pose frames", "run `unianimate align --force` on the project")
    return refs[0], frames


def _save(path: Path, tensors: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))


def _load(path: Path) -> dict[str, Any] | None:
    from safetensors.torch import load_file

    if not path.is_file():
        return None
    try:
        return dict(load_file(str(path)))
    except Exception as exc:  # a torn or foreign file: recompute rather than fail
        log.warning("ignoring unreadable checkpoint %s (%s)", path, exc)
        path.unlink(missing_ok=True)
        return None


@dataclass
class Renderer:
    """Loaded models and the project's photo and poses: what both stages sample with."""

    ctx: StageContext
    device: Any
    dtype: Any
    clip: Any
    vae: Any
    unet: Any
    width: int
    height: int
    photo_rgb: Any
    ref_pose_rgb: Any
    pose_files: list[Path]
    fps: Fraction
    seq: Any

    @classmethod
    def load(cls, ctx: StageContext, width: int, height: int, dtype_name: str) -> Renderer:
        from unianimate_cli import runtime
        from unianimate_cli.media.image import load_image
        from unianimate_cli.pose.keypoints import load_poses

        device = runtime.choose_device(ctx.device)
        dtype = runtime.choose_dtype(device, dtype_name)
        ref_pose_file, pose_files = pose_frame_files(ctx.input("pose.frames"))
        seq = load_poses(ctx.input("pose.aligned"))
        fps = Fraction(seq.fps).limit_denominator(100000) if seq.fps else Fraction(8)
        models = model_set(ctx)
        model_w, model_h = (int(v) for v in models.unet_config().resolution)
        with ctx.progress("loading models", 3) as task:
            clip = models.load_clip(device, dtype)
            task.advance()
            vae = models.load_vae(device, dtype)
            task.advance()
            unet = models.load_unet(device, dtype)
            task.advance()
        unet.set_zero_y(clip.empty_text_features().to(device))
        return cls(
            ctx, device, dtype, clip, vae, unet, width or model_w, height or model_h,
            load_image(ctx.input("user:photo")), load_image(ref_pose_file), pose_files, fps, seq,
        )

    # -- encoders, with the generator draws on the CPU so every device sees the same noise
    def encode_image(self, pixels: Any) -> Any:
        import torch

        size = tuple(self.clip.image_size)
        if tuple(pixels.shape[-2:]) != size:
            # A non-official family (models.json) may use another CLIP input size; the
            # official ViT-H-14 takes the reference's 224x224 input unchanged.
            pixels = torch.nn.functional.interpolate(pixels, size=size, mode="bilinear", align_corners=False)
        with torch.no_grad():
            return self.clip.encode_image(pixels).float().cpu()

    def latent_encoder(self, generator: Any) -> Callable[[Any], Any]:
        import torch

        from unianimate_cli.models.vae import encode_to_latent

        def encode(pixels: Any) -> Any:
            shape = (pixels.shape[0], 4, pixels.shape[2] // 8, pixels.shape[3] // 8)
            noise = torch.randn(shape, generator=generator).to(device=self.device, dtype=self.dtype)
            with torch.no_grad():
                latent = encode_to_latent(self.vae, pixels.to(device=self.device, dtype=self.dtype), noise=noise)
            return latent.float().cpu()

        return encode

    def conditions(self, reference_rgb: Any, ref_pose_rgb: Any, pose_files: list[Path], generator: Any) -> Any:
        from unianimate_cli.media.image import load_image
        from unianimate_cli.sampling.conditions import build_conditions

        return build_conditions(
            reference_rgb, ref_pose_rgb, [load_image(f) for f in pose_files], self.width, self.height,
            self.encode_image, self.latent_encoder(generator),
        )

    def sample(self, conditions: Any, x_T: Any, params: Any, on_step: Callable[[Any], None] | None = None, resume: Any = None) -> Any:
        import torch

        from unianimate_cli.sampling.render import render_latents

        x_T = x_T.to(device=self.device, dtype=torch.float32 if self.device.type == "cpu" else self.dtype)
        with torch.no_grad():
            out = render_latents(self.unet, conditions.to(self.device), x_T, params, on_step=on_step, resume=resume)
        return out.float().cpu()

    def decode(self, latents: Any, label: str = "decoding") -> Any:
        """Latents [1,4,f,h,w] -> uint8 frames [f,H,W,3] (numpy), exactly as the reference saves."""
        import torch

        from unianimate_cli.media.layout import to_uint8_frames
        from unianimate_cli.models.vae import decode_latents

        with self.ctx.progress(label, int(latents.shape[2])) as task, torch.no_grad():
            pixels = decode_latents(self.vae, latents.to(self.device), chunk_frames=2, out_device="cpu", progress=lambda d, n: task.update(d, n))
        return to_uint8_frames(pixels[0])


def _render_params(p: Any, context_size: int, overlap: int) -> Any:
    from unianimate_cli.sampling.render import RenderParams

    return RenderParams(
        num_steps=p.steps,
        guide_scale=p.guide_scale,
        context_size=context_size,
        context_overlap=overlap,
        window_batch_size=getattr(p, "window_batch", 1),
    )


# ---------------------------------------------------------------------------- animate


def render_animation(ctx: StageContext, p: Any) -> None:
    """Write ``render.latents`` and ``render.video`` for the project's photo and pose frames."""
    r = Renderer.load(ctx, p.width, p.height, p.dtype)
    if p.max_frames:
        r.pose_files = r.pose_files[: p.max_frames]
    num_frames = len(r.pose_files)
    ctx.info.update(num_frames=num_frames, fps=float(r.fps), width=r.width, height=r.height, mode=p.mode,
                    device=str(r.device), dtype=str(r.dtype).replace("torch.", ""))
    if p.mode == "segments":
        latents, frames = render_segments(r, p, segment_frames=p.window_size, first_start=0, existing=None, color_match=False, embedding_mix=0.0)
    else:
        latents = _render_windows(r, p, num_frames)
        frames = r.decode(latents)
    _save(ctx.output("render.latents"), {"latents": latents})
    encode_video(r, ctx.output("render.video"), frames, p.crf, p.audio, p.layout)


def _render_windows(r: Renderer, p: Any, num_frames: int) -> Any:
    import torch

    from unianimate_cli.sampling.render import ResumeState, make_initial_latent, plan_steps
    from unianimate_cli.sampling.schedule import NoisePrior

    ctx = r.ctx
    # Draw order on one CPU generator, as the reference: VAE posterior sample, then eps, then offset.
    generator = torch.Generator(device="cpu").manual_seed(int(p.seed))
    conditions = r.conditions(r.photo_rgb, r.ref_pose_rgb, r.pose_files, generator)
    prior = NoisePrior.for_entrance("long" if num_frames > p.window_size else "short")
    assert conditions.randomref is not None  # build_conditions always makes it
    x_T = make_initial_latent(conditions.randomref, generator, prior)
    params = _render_params(p, p.window_size, p.window_overlap)
    plan = plan_steps(params)
    ctx.info["steps"] = len(plan)

    state_path = ctx.partial_dir / STATE_FILE
    latents_path = ctx.partial_dir / LATENTS_FILE
    done = _load(latents_path)
    if done is not None and tuple(done["latents"].shape) == tuple(x_T.shape):
        log.info("latents already sampled by an interrupted run; decoding them")
        return done["latents"]
    resume = None
    saved = _load(state_path)
    if saved is not None:
        resume = ResumeState.from_tensors(saved)
        if resume.timesteps != tuple(s.t for s in plan) or tuple(resume.x_t.shape) != tuple(x_T.shape):
            log.warning("the saved sampler state does not fit this render; starting over")
            resume = None
    with ctx.progress("steps", len(plan)) as steps_task:
        if resume is not None:
            steps_task.update(resume.completed_steps)

        def on_step(state: Any) -> None:
            steps_task.update(state.completed_steps)
            if state.completed_steps % p.checkpoint_every == 0 or state.completed_steps == len(plan):
                _save(state_path, ResumeState.from_step(state, plan).to_tensors())

        latents = r.sample(conditions, x_T, params, on_step=on_step, resume=resume)
    _save(latents_path, {"latents": latents})
    return latents


# ---------------------------------------------------------------------------- segments


def render_segments(
    r: Renderer,
    p: Any,
    segment_frames: int,
    first_start: int,
    existing: tuple[Any, Any] | None,
    color_match: bool,
    embedding_mix: float,
) -> tuple[Any, Any]:
    """Last-frame continuation over ``r.pose_files``; returns (latents [1,4,F,h,w], uint8 frames [F,H,W,3]).

    ``existing`` = (latents, frames) of an earlier render of the first ``first_start`` frames
    (``extend``); segments then continue from its last frame. Each finished segment is
    checkpointed in ``partial/``.
    """
    import numpy as np
    import torch

    from unianimate_cli.media.image import load_image
    from unianimate_cli.sampling.conditions import match_color_statistics, reference_pixels
    from unianimate_cli.sampling.render import make_initial_latent
    from unianimate_cli.sampling.schedule import NoisePrior
    from unianimate_cli.sampling.segments import mix_image_embedding, plan_segments, segment_generator

    ctx = r.ctx
    num_frames = len(r.pose_files)
    segments = plan_segments(num_frames, clip_frames=segment_frames, handover=True, first_start=first_start)
    params = _render_params(p, max(segment_frames, 1), 0)
    photo_embedding = r.encode_image(_clip_input(r.photo_rgb))
    latent_parts: list[Any] = [existing[0]] if existing is not None else []
    frame_parts: list[Any] = [existing[1]] if existing is not None else []
    ctx.info["segments"] = len(segments)

    def frame_at(index: int) -> Any:
        offset = 0
        for part in frame_parts:
            if index < offset + part.shape[0]:
                return part[index - offset]
            offset += part.shape[0]
        raise IndexError(index)

    with ctx.progress("segments", len(segments)) as task:
        for seg in segments:
            ckpt = ctx.partial_dir / f"segment-{seg.index:04d}.safetensors"
            saved = _load(ckpt)
            if saved is not None:
                latent_parts.append(saved["latents"])
                frame_parts.append(saved["frames"].numpy())
                task.advance()
                continue
            if seg.reference_frame is None:
                reference_rgb, ref_pose_rgb = r.photo_rgb, r.ref_pose_rgb
            else:
                reference_rgb = frame_at(seg.reference_frame)
                ref_pose_rgb = load_image(r.pose_files[seg.reference_frame])
                if color_match:
                    matched = match_color_statistics(
                        reference_pixels(reference_rgb, r.width, r.height), reference_pixels(r.photo_rgb, r.width, r.height)
                    )
                    # [0, 1] pixels back to uint8, the form every reference image takes.
                    reference_rgb = (matched.clamp(0, 1) * 255).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()
            generator = segment_generator(int(p.seed), seg.index)
            conditions = r.conditions(reference_rgb, ref_pose_rgb, [r.pose_files[i] for i in seg.clip_frames], generator)
            if seg.reference_frame is not None:
                image = mix_image_embedding(photo_embedding.reshape(conditions.image.shape), conditions.image, embedding_mix)
                conditions = dataclasses.replace(conditions, image=image)
            assert conditions.randomref is not None
            x_T = make_initial_latent(conditions.randomref, generator, NoisePrior.for_entrance("short"))
            latents = r.sample(conditions, x_T, params)[:, :, seg.drop_first :]
            frames = r.decode(latents, label=f"decoding segment {seg.index + 1}")
            _save(ckpt, {"latents": latents, "frames": torch.from_numpy(np.ascontiguousarray(frames))})
            latent_parts.append(latents)
            frame_parts.append(frames)
            task.advance()
    return torch.cat(latent_parts, dim=2), np.concatenate(frame_parts, axis=0)


def _clip_input(photo_rgb: Any) -> Any:
    from unianimate_cli.sampling.conditions import clip_input

    return clip_input(photo_rgb)


# ---------------------------------------------------------------------------- extend


def render_extension(ctx: StageContext, p: Any) -> None:
    """Continue ``render.latents`` with the pose frames it did not cover; write ``render.extended``."""
    previous = _load(ctx.input("render.latents"))
    if previous is None or "latents" not in previous:
        raise ProjectError(f"{ctx.input('render.latents')} is unreadable", "run `unianimate animate --force` on the project")
    old_latents = previous["latents"]
    # The continuation keeps the earlier render's size: latents are pixels / 8.
    r = Renderer.load(ctx, int(old_latents.shape[-1]) * 8, int(old_latents.shape[-2]) * 8, p.dtype)
    first_start = int(old_latents.shape[2])
    total = len(r.pose_files) if not p.frames else min(len(r.pose_files), first_start + p.frames)
    if total <= first_start:
        raise InputError(
            f"nothing to extend: the render already has {first_start} of the {len(r.pose_files)} pose frames",
            "render fewer frames with `unianimate animate --max-frames N`, or align a longer video",
        )
    r.pose_files = r.pose_files[:total]
    old_frames = r.decode(old_latents, label="decoding the earlier render")
    latents, frames = render_segments(
        r, p, p.segment_frames, first_start, (old_latents, old_frames), p.color_match, p.embedding_mix
    )
    ctx.info.update(num_frames=int(frames.shape[0]), added_frames=int(frames.shape[0]) - first_start, fps=float(r.fps))
    _save(ctx.output("render.extended_latents"), {"latents": latents})
    encode_video(r, ctx.output("render.extended"), frames, p.crf, p.audio, "result")


# ---------------------------------------------------------------------------- video


def encode_video(r: Renderer, out: Path, frames: Any, crf: int, audio: bool, layout: str) -> None:
    """uint8 frames [F,H,W,3] -> H.264 mp4 at the pose fps, with the matching span of audio."""
    from unianimate_cli.errors import UnianimateError
    from unianimate_cli.media.image import load_image, resize_exact
    from unianimate_cli.media.layout import compose_compare_frames
    from unianimate_cli.media.video import probe_video, source_span_s, write_video

    ctx = r.ctx
    num_frames = int(frames.shape[0])
    stream: Any = iter(frames)
    if layout == "compare":
        size = (int(frames.shape[2]), int(frames.shape[1]))
        photo = resize_exact(r.photo_rgb, *size)
        poses = (resize_exact(load_image(f), *size) for f in r.pose_files)
        stream = compose_compare_frames(photo, poses, iter(frames))
    audio_kwargs: dict[str, Any] = {}
    if audio:
        video = ctx.input("user:video")
        source: tuple[int, ...] = tuple(r.seq.source_frames or ())
        start = int(source[0]) if source else 0
        interval = int(source[1] - source[0]) if len(source) > 1 else 1
        try:
            info = probe_video(video)
        except UnianimateError as exc:
            log.warning("no audio: %s", exc.message)
        else:
            if info.audio is not None:
                start_s, duration_s = source_span_s(info, start, interval, num_frames)
                audio_kwargs = {"audio_source": video, "audio_start_s": start_s, "audio_duration_s": duration_s}
    with ctx.progress("encoding", num_frames) as task:
        write_video(out, stream, r.fps, crf=crf, on_frame=lambda n: task.update(n), **audio_kwargs)
