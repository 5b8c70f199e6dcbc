"""The animate stage's work: load models, build conditions, sample resumably, decode, encode.

Resume: after every ``checkpoint_every`` DDIM steps (and the last) the sampler state
``(completed_steps, x_t)`` is written atomically to ``partial/state.safetensors``; the
finished latents go to ``partial/latents.safetensors`` before decoding, so an interruption
during decoding or encoding does not sample again. The initial latent is recomputed from
the seed on resume (the same draws in the same order), so a resumed render equals an
uninterrupted one on the same device and thread count.
"""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path
from typing import Any

from unianimate_cli.errors import ProjectError, UnianimateError
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


def render_animation(ctx: StageContext, p: Any) -> None:
    """Write ``render.latents`` and ``render.video`` for the project's photo and pose frames."""
    import torch

    from unianimate_cli import runtime
    from unianimate_cli.media.image import load_image
    from unianimate_cli.models.vae import encode_to_latent
    from unianimate_cli.pose.keypoints import load_poses
    from unianimate_cli.sampling.conditions import build_conditions
    from unianimate_cli.sampling.render import RenderParams, ResumeState, make_initial_latent, plan_steps, render_latents
    from unianimate_cli.sampling.schedule import NoisePrior

    if p.mode != "windows":
        raise UnianimateError(
            f"--mode {p.mode} is not available yet in this build",
            "use --mode windows (the reference's long-video sampler)",
        )
    device = runtime.choose_device(ctx.device)
    dtype = runtime.choose_dtype(device, p.dtype)

    ref_pose_file, frame_files = pose_frame_files(ctx.input("pose.frames"))
    if p.max_frames:
        frame_files = frame_files[: p.max_frames]
    num_frames = len(frame_files)
    seq = load_poses(ctx.input("pose.aligned"))
    fps = Fraction(seq.fps).limit_denominator(100000) if seq.fps else Fraction(8)

    models = model_set(ctx)
    model_w, model_h = (int(v) for v in models.unet_config().resolution)
    width, height = p.width or model_w, p.height or model_h
    with ctx.progress("loading models", 3) as task:
        clip = models.load_clip(device, dtype)
        task.advance()
        vae = models.load_vae(device, dtype)
        task.advance()
        unet = models.load_unet(device, dtype)
        task.advance()
    unet.set_zero_y(clip.empty_text_features().to(device))

    # Draw order on one CPU generator, as the reference: VAE posterior sample, then eps, then offset.
    generator = torch.Generator(device="cpu").manual_seed(int(p.seed))

    def encode_latent(pixels: torch.Tensor) -> torch.Tensor:
        shape = (pixels.shape[0], 4, pixels.shape[2] // 8, pixels.shape[3] // 8)
        noise = torch.randn(shape, generator=generator).to(device=device, dtype=dtype)
        with torch.no_grad():
            return encode_to_latent(vae, pixels.to(device=device, dtype=dtype), noise=noise).float().cpu()

    def encode_image(pixels: torch.Tensor) -> torch.Tensor:
        size = tuple(clip.image_size)
        if tuple(pixels.shape[-2:]) != size:
            # A non-official family (models.json) may use another CLIP input size; the
            # official ViT-H-14 takes the reference's 224x224 input unchanged.
            pixels = torch.nn.functional.interpolate(pixels, size=size, mode="bilinear", align_corners=False)
        with torch.no_grad():
            return clip.encode_image(pixels).float().cpu()

    photo_rgb = load_image(ctx.input("user:photo"))
    conditions = build_conditions(
        photo_rgb,
        load_image(ref_pose_file),
        [load_image(f) for f in frame_files],
        width,
        height,
        encode_image,
        encode_latent,
    )
    is_windowed = num_frames > p.window_size
    prior = NoisePrior.for_entrance("long" if is_windowed else "short")
    assert conditions.randomref is not None  # build_conditions always makes it
    x_T = make_initial_latent(conditions.randomref, generator, prior)
    params = RenderParams(
        num_steps=p.steps,
        guide_scale=p.guide_scale,
        context_size=p.window_size,
        context_overlap=p.window_overlap,
        window_batch_size=p.window_batch,
    )
    plan = plan_steps(params)
    ctx.info.update(num_frames=num_frames, fps=float(fps), steps=len(plan), width=width, height=height, device=str(device), dtype=str(dtype).replace("torch.", ""))

    state_path = ctx.partial_dir / STATE_FILE
    latents_path = ctx.partial_dir / LATENTS_FILE
    done = _load(latents_path)
    if done is not None and tuple(done["latents"].shape) == tuple(x_T.shape):
        latents = done["latents"]
        log.info("latents already sampled by an interrupted run; decoding them")
    else:
        resume = None
        saved = _load(state_path)
        if saved is not None:
            resume = ResumeState.from_tensors(saved)
            if resume.timesteps != tuple(s.t for s in plan) or tuple(resume.x_t.shape) != tuple(x_T.shape):
                log.warning("the saved sampler state does not fit this render; starting over")
                resume = None
        x_T = x_T.to(device=device, dtype=torch.float32 if device.type == "cpu" else dtype)
        with ctx.progress("steps", len(plan)) as steps_task:
            if resume is not None:
                steps_task.update(resume.completed_steps)

            def on_step(state: Any) -> None:
                steps_task.update(state.completed_steps)
                if state.completed_steps % p.checkpoint_every == 0 or state.completed_steps == len(plan):
                    _save(state_path, ResumeState.from_step(state, plan).to_tensors())

            with torch.no_grad():
                latents = render_latents(unet, conditions.to(device), x_T, params, on_step=on_step, resume=resume)
        latents = latents.float().cpu()
        _save(latents_path, {"latents": latents})
    del unet
    _save(ctx.output("render.latents"), {"latents": latents})

    from unianimate_cli.models.vae import decode_latents

    with ctx.progress("decoding", num_frames) as task:
        with torch.no_grad():
            pixels = decode_latents(vae, latents.to(device), chunk_frames=2, out_device="cpu", progress=lambda d, n: task.update(d, n))
    _encode_video(ctx, p, pixels, photo_rgb, frame_files, seq, fps, (width, height))


def _encode_video(
    ctx: StageContext, p: Any, pixels: Any, photo_rgb: Any, frame_files: list[Path], seq: Any, fps: Fraction, size: tuple[int, int]
) -> None:
    from unianimate_cli.media.image import load_image, resize_exact
    from unianimate_cli.media.layout import compose_compare_frames, to_uint8_frames
    from unianimate_cli.media.video import probe_video, source_span_s, write_video

    frames = to_uint8_frames(pixels[0])  # f h w 3
    num_frames = int(frames.shape[0])
    stream: Any = iter(frames)
    if p.layout == "compare":
        photo = resize_exact(photo_rgb, *size)
        poses = (resize_exact(load_image(f), *size) for f in frame_files)
        stream = compose_compare_frames(photo, poses, iter(frames))
    audio_kwargs: dict[str, Any] = {}
    if p.audio:
        video = ctx.input("user:video")
        source: tuple[int, ...] = tuple(seq.source_frames or ())
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
        write_video(ctx.output("render.video"), stream, fps, crf=p.crf, on_frame=lambda n: task.update(n), **audio_kwargs)
