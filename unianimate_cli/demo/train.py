"""Train the demo model family on synthetic figures: ``python -m unianimate_cli.demo.train OUT``.

Writes ``OUT/family/`` (``models.json`` and the UNet, VAE and CLIP safetensors in float16,
the layout ``unianimate_cli/demo/family`` ships) and ``OUT/metrics.json``. The two ONNX pose
models are trained elsewhere; pass ``--onnx-dir`` to copy them into the family.

What it does, in order:

1. **Data.** Worker processes render samples from the generator of ``demo.synth`` on the fly:
   a photo of a figure standing, 16 frames of the same figure dancing over the same
   background, and the pose images drawn from the ground-truth keypoints exactly as the
   ``align`` stage draws them (``pose.draw.draw_pose`` at the model resolution; the photo's
   pose is the reference pose). Keypoints get about a pixel of jitter, and hands are
   sometimes dropped, because at inference they come from a pose model. The trainer keeps
   a ring buffer of recent samples on the device and draws batches from it, so rendering
   need not keep pace with the GPU. Seeds below ``HELD_OUT_SEEDS`` (10,000) are never
   trained on: the demo, the evaluation and the tests use them.
2. **VAE** (``models.vae.AutoencoderKL``, factor 8): L1 + MSE reconstruction and a small KL
   term. Afterwards its latent is rescaled (exactly, through ``quant_conv`` and
   ``post_quant_conv``) so that ``SCALE_FACTOR * z`` has unit standard deviation, as the
   UNet's noise schedule assumes.
3. **UNet and CLIP vision tower**, jointly, with the reference's schedule (linear_sd betas,
   zero terminal SNR), v-prediction and offset noise (``sampling.schedule``). Conditions are
   built as ``sampling.conditions.build_conditions`` builds them at inference: the CLIP input
   is the photo squashed to 224x224 and CLIP-normalised, then resized to the CLIP's size;
   ``randomref`` is a scaled VAE posterior sample of the photo; ``dwpose`` is the reference
   pose then the frame poses in [0, 1]. Each step uses variant B's conditions (image,
   randomref, dwpose) or, one step in four, variant A's (image, local_image, dwpose); one
   clip in ten is unconditional (``has_condition``), which classifier-free guidance needs.
   An exponential moving average of the weights is what gets saved. The CLIP text tower
   stays at its seeded initialisation: only its empty-prompt features (``zero_y``) are used.
4. **Evaluation** on held-out motion transfers (figure A's photo, figure B's dance, the
   ground truth rendered as A in B's aligned poses) through the inference code
   (``build_conditions``, ``make_initial_latent``, ``render_latents``, ``decode_latents``)
   with the family's preset settings. Reported: the mean absolute colour error inside the
   ground-truth figure (0-255), the figure-silhouette IoU, the luminance correlation inside
   the figure, and the same for two broken outputs (the photo repeated, the frames
   shuffled), which show the scale (``demo.quality``).

Runs on CUDA with bfloat16 autocast when available, else on the CPU (for smoke tests with
tiny settings: ``--vae-steps 2 --unet-steps 2 --batch-frames 8 --workers 0``). Results depend
on the device and on the order in which workers deliver samples, so a rerun reproduces the
quality, not the bits. ``--time-budget-s`` stops the UNet phase early (logged) so that a run
fits a rented machine; the number of steps run is recorded in ``metrics.json``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import math
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger("unianimate_cli.demo.train")

#: Seeds below this are never trained on (demo inputs, evaluation, tests).
HELD_OUT_SEEDS = 10_000
#: Width of the CLIP embedding, the CLIP text width and the UNet's context.
CONTEXT_DIM = 32
FAMILY_NAME = "demo"


def family_configs(width_px: int = 128, height_px: int = 192) -> dict[str, dict[str, Any]]:
    """models.json configs of the demo family (UNet context = CLIP width; VAE factor 8).

    About 4.8 M UNet, 1.3 M VAE and 1.8 M CLIP parameters (the CLIP's 49,408-token text
    embedding is most of it; only the empty prompt ever goes through it). Known limit: with 32
    channels at the VAE's and UNet's outer levels, GroupNorm(32) normalises each channel alone
    there, which makes an image's overall colour hard to learn; the shipped weights render
    muted colours (see docs/DEMO.md).
    """
    clip = {
        "embed_dim": CONTEXT_DIM,
        "vision_cfg": {"image_size": 64, "layers": 3, "width": 64, "head_width": 32, "patch_size": 8},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": CONTEXT_DIM, "heads": 2, "layers": 2},
    }
    vae = {"ch": 32, "ch_mult": [1, 2, 2, 2], "num_res_blocks": 1, "attn_resolutions": [], "resolution": 256}
    unet = {
        "dim": 32,
        "dim_mult": [1, 2, 3],
        "num_res_blocks": 1,
        "attn_scales": [1.0, 0.5, 0.25],
        "num_heads": 1,
        "head_dim": 32,
        "context_dim": CONTEXT_DIM,
        "y_dim": CONTEXT_DIM,
        "dropout": 0.0,
        "resolution": [int(width_px), int(height_px)],
    }
    return {"unet": unet, "vae": vae, "clip": clip}


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on (recorded in metrics.json)."""

    width_px: int = 128
    height_px: int = 192
    sample_frames: int = 16  # frames rendered per sample; a step trains on 8 or all 16 of them
    batch_frames: int = 256  # clips per step = batch_frames // frames of that step
    vae_steps: int = 2500
    vae_batch: int = 64
    vae_lr: float = 4e-4
    # Train only the VAE's decoder (with --init-from): the latent space, and so the UNet trained
    # on it, stay valid; the budget then goes to the decoder when unet_steps is 0.
    vae_decoder_only: bool = False
    unet_steps: int = 12000
    unet_lr: float = 3e-4
    warmup_steps: int = 300
    ema_decay: float = 0.999
    p_uncond: float = 0.1
    p_variant_a: float = 0.25
    buffer_samples: int = 2048
    fresh_per_step: int = 8
    workers: int = 14
    seed: int = 0
    time_budget_s: float = 420.0  # 0 = no limit; 420 s is what the shipped family had
    eval_pairs: int = 8
    eval_frames: int = 20
    eval_skip: int = 6  # frames 0..5 are the fade-in from the rest pose; score the rest
    eval_steps: int = 20
    eval_guide_scale: float = 2.5
    checkpoint_every_s: float = 90.0


# --------------------------------------------------------------------------- data


def _jitter(frame: Any, rng: np.random.Generator, sigma_px: float, drop_hands: bool) -> Any:
    """A PoseFrame with visible points moved by N(0, sigma_px) pixels; hands blanked if asked."""
    from unianimate_cli.pose.keypoints import INVISIBLE

    scale = np.array([1.0 / frame.width_px, 1.0 / frame.height_px])

    def move(points: np.ndarray) -> np.ndarray:
        visible = points[..., 0] >= 0
        moved = points + rng.normal(0.0, sigma_px, size=points.shape) * scale
        return np.where(visible[..., None], moved, points)

    hands = np.full_like(frame.hands, INVISIBLE) if drop_hands else move(frame.hands)
    return frame.with_points(body=move(frame.body), feet=move(frame.feet), hands=hands)


def make_sample(seed: int, cfg: TrainConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One training sample of figure ``seed``: uint8 photo, frames and pose images, CLIP input.

    photo [H,W,3]; frames [f,H,W,3]; poses [f+1,H,W,3] (the photo's pose first); clip float32
    [3,s,s], the CLIP input as ``_Models.encode_image`` gives it to a CLIP of size s.
    """
    from unianimate_cli.demo.synth import make_background, make_example_poses, render_figure
    from unianimate_cli.pose.draw import draw_pose
    from unianimate_cli.sampling.conditions import clip_input

    h, w, f = cfg.height_px, cfg.width_px, cfg.sample_frames
    start = int(rng.integers(0, 3 * f))  # also train on the dance long after the rest pose
    fps = float(rng.uniform(6.0, 12.0))
    style, kp_photo, clip = make_example_poses(seed, start + f, h, w, fps)
    background = make_background(seed, h, w)
    chosen = clip.frames[start:]
    photo = render_figure(style, kp_photo, h, w, background)
    frames = np.stack([render_figure(style, kp, h, w, background) for kp in chosen])
    drop_hands = bool(rng.random() < 0.3)
    sigma = float(rng.uniform(0.0, 1.2))
    poses = np.stack([draw_pose(_jitter(kp, rng, sigma, drop_hands), h, w) for kp in (kp_photo, *chosen)])
    size = int(family_configs()["clip"]["vision_cfg"]["image_size"])
    clip_in = F.interpolate(clip_input(photo), size=(size, size), mode="bilinear", align_corners=False)[0]
    return {"photo": photo, "frames": frames, "poses": poses, "clip": clip_in.numpy()}


class SampleStream(torch.utils.data.IterableDataset):  # type: ignore[type-arg]
    """Endless samples of random training figures; each worker has its own generator."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        import cv2

        cv2.setNumThreads(1)
        torch.set_num_threads(1)
        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else 0
        rng = np.random.default_rng([self.cfg.seed, worker, 7])
        while True:
            seed = int(rng.integers(HELD_OUT_SEEDS, 2**31 - 1))
            yield make_sample(seed, self.cfg, rng)


class RingBuffer:
    """Recent samples on the training device; batches are drawn from it at random."""

    def __init__(self, capacity: int, device: torch.device, generator: torch.Generator) -> None:
        self.capacity = capacity
        self.device = device
        self.generator = generator
        self.store: dict[str, torch.Tensor] = {}
        self.size = 0
        self.cursor = 0
        # Derived tensors (the frozen VAE's posterior moments), computed once per sample.
        self.encoder: Any = None

    def add(self, batch: dict[str, torch.Tensor]) -> None:
        n = int(batch["photo"].shape[0])
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        if self.encoder is not None:
            batch.update(self.encoder(batch))
        for key, value in batch.items():
            if key not in self.store:
                self.store[key] = torch.empty((self.capacity, *value.shape[1:]), dtype=value.dtype, device=self.device)
        index = ((torch.arange(n) + self.cursor) % self.capacity).to(self.device)
        for key, value in batch.items():
            self.store[key][index] = value
        self.cursor = (self.cursor + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def set_encoder(self, encoder: Any, chunk: int = 32) -> None:
        """Derive ``encoder(batch)`` for every stored sample now and for each one added later."""
        self.encoder = encoder
        for start in range(0, self.size, chunk):
            part = {k: v[start : start + chunk] for k, v in self.store.items()}
            for key, value in encoder(part).items():
                if key not in self.store:
                    self.store[key] = torch.empty((self.capacity, *value.shape[1:]), dtype=value.dtype, device=self.device)
                self.store[key][start : start + value.shape[0]] = value

    def draw(self, n: int) -> dict[str, torch.Tensor]:
        index = torch.randint(0, self.size, (n,), generator=self.generator).to(self.device)
        return {k: v[index] for k, v in self.store.items()}


def _loader(cfg: TrainConfig) -> Iterator[dict[str, torch.Tensor]]:
    loader = torch.utils.data.DataLoader(
        SampleStream(cfg),
        batch_size=cfg.fresh_per_step,
        num_workers=cfg.workers,
        persistent_workers=cfg.workers > 0,
        prefetch_factor=4 if cfg.workers > 0 else None,
        pin_memory=torch.cuda.is_available(),
    )
    return iter(loader)


def _unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 [..., H, W, 3] -> float [..., 3, H, W] in [0, 1] (``to_unit_tensor``)."""
    return x.movedim(-1, -3).float().div(255)


# --------------------------------------------------------------------------- models


def build_models(cfg: TrainConfig, device: torch.device) -> tuple[Any, nn.Module, Any]:
    """Fresh (seeded) VAE, UNet and CLIP of the family configs."""
    from unianimate_cli.models.clip import build_clip
    from unianimate_cli.models.unet import UNetConfig, UniAnimateUNet
    from unianimate_cli.models.vae import AutoencoderKL, VAEConfig

    configs = family_configs(cfg.width_px, cfg.height_px)
    torch.manual_seed(cfg.seed)
    vae = AutoencoderKL(VAEConfig.from_dict(configs["vae"]))
    unet_config: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in configs["unet"].items()}
    unet = UniAnimateUNet(UNetConfig(**unet_config))
    clip = build_clip(configs["clip"])
    _zero_init_residuals(unet)
    # The text tower is never trained: round it through float16 now, so the zero_y the UNet
    # learns with equals the one the float16 file gives at inference.
    with torch.no_grad():
        for name, p in clip.named_parameters():
            if not name.startswith("visual."):
                p.copy_(p.half().float())
    return vae.to(device), unet.to(device), clip.to(device)


def _zero_init_residuals(unet: nn.Module) -> None:
    """Start every residual branch and the output head at zero: a stable start for diffusion."""
    from unianimate_cli.models.layers import ResBlock, SpatialTransformer, TemporalConvBlock, TemporalTransformer

    with torch.no_grad():
        for module in unet.modules():
            targets: list[nn.Module] = []
            if isinstance(module, ResBlock):
                targets.append(module.out_layers[3])
            elif isinstance(module, (SpatialTransformer, TemporalTransformer)):
                targets.append(module.proj_out)
            elif isinstance(module, TemporalConvBlock):
                targets.append(module.conv4[-1])
            for t in targets:
                for p in t.parameters():
                    p.zero_()
        head: Any = unet.out
        for p in head[-1].parameters():
            p.zero_()


def empty_text_features(clip: Any) -> torch.Tensor:
    """zero_y [1, 77, CONTEXT_DIM] exactly as inference computes it (``ClipImageEncoder``)."""
    from unianimate_cli.models.clip import ClipImageEncoder

    encoder = ClipImageEncoder(copy.deepcopy(clip).float())
    return encoder.empty_text_features()


class Ema:
    """Exponential moving average of a module's parameters (buffers copied)."""

    def __init__(self, module: nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = copy.deepcopy(module).eval()
        for p in self.shadow.parameters():
            p.requires_grad_(False)
        self.updates = 0

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(list(self.shadow.parameters()), [p.detach() for p in module.parameters()], 1 - d)


# --------------------------------------------------------------------------- VAE


def train_vae(vae: Any, cfg: TrainConfig, stream: Iterator[dict[str, torch.Tensor]], buffer: RingBuffer, budget: _Clock) -> dict[str, float]:
    """Reconstruction training; returns the last losses and the steps run (``steps``)."""
    if cfg.vae_decoder_only:
        vae.requires_grad_(False)
        trained = [m for name, m in vae.named_children() if name in ("decoder", "post_quant_conv")]
        for module in trained:
            module.requires_grad_(True)
        params = [p for m in trained for p in m.parameters()]
    else:
        params = list(vae.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.vae_lr, betas=(0.9, 0.99), weight_decay=0.0)
    device = buffer.device
    gen = buffer.generator
    vae.train()
    share = 1.0 if cfg.vae_decoder_only and cfg.unet_steps == 0 else 0.3
    last: dict[str, float] = {}
    for step in range(cfg.vae_steps):
        if budget.exceeded(share):
            logger.warning("VAE phase stopped at %d%% of the time budget, after %d steps of %d", round(100 * share), step, cfg.vae_steps)
            break
        last["steps"] = step + 1
        buffer.add(next(stream))
        lr = cfg.vae_lr * min(1.0, (step + 1) / 200) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / cfg.vae_steps)))
        for group in opt.param_groups:
            group["lr"] = lr
        batch = buffer.draw(max(1, cfg.vae_batch // (cfg.sample_frames + 1) + 1))
        images = torch.cat([batch["photo"][:, None], batch["frames"]], dim=1).flatten(0, 1)
        pick = torch.randperm(images.shape[0], generator=gen)[: cfg.vae_batch].to(device)
        x = _unit(images[pick]) * 2 - 1
        with _autocast(device), torch.set_grad_enabled(not cfg.vae_decoder_only):
            posterior = vae.encode(x)
        with _autocast(device):
            recon = vae.decode(posterior.sample(gen))
        recon = recon.float()
        l1 = (recon - x).abs().mean()
        mse = (recon - x).pow(2).mean()
        kl = 0.5 * (posterior.mean.float().pow(2) + posterior.logvar.float().exp() - 1 - posterior.logvar.float()).mean()
        loss = l1 + mse + 1e-4 * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        if step % 200 == 0 or step == cfg.vae_steps - 1:
            bias = (recon.detach() - x).mean(dim=(2, 3)).abs().mean()  # per image and channel: colour shift
            last.update(l1=float(l1.detach()), mse=float(mse.detach()), kl=float(kl.detach()), colour_bias=float(bias))
            logger.info(
                "vae step %d/%d l1 %.4f mse %.5f kl %.3f colour bias %.4f (%.0f s)",
                step + 1, cfg.vae_steps, last["l1"], last["mse"], last["kl"], last["colour_bias"], budget.elapsed(),
            )
    vae.eval()
    return last


@torch.no_grad()
def rescale_latent(vae: Any, buffer: RingBuffer, target_std: float) -> float:
    """Scale z by a so that std(z) = target_std, exactly: quant_conv's mean rows x a, logvar + 2 ln a,
    post_quant_conv's input / a. Returns a."""
    batch = buffer.draw(64)
    x = _unit(batch["frames"].flatten(0, 1)[:256]) * 2 - 1
    means = torch.cat([vae.encode(chunk).mean.float() for chunk in x.split(64)])
    a = target_std / float(means.std())
    e = vae.config.embed_dim
    vae.quant_conv.weight[:e] *= a
    vae.quant_conv.bias[:e] *= a
    vae.quant_conv.bias[e:] += 2 * math.log(a)
    vae.post_quant_conv.weight /= a
    return a


# --------------------------------------------------------------------------- UNet


def moments_encoder(vae: Any) -> Any:
    """For the ring buffer: the frozen VAE's posterior moments of each sample's frames and photo."""

    @torch.no_grad()
    def encode(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        frames = batch["frames"]  # n f H W 3
        n, f = frames.shape[:2]
        with _autocast(frames.device):
            moments = torch.cat([vae.encode(_unit(c) * 2 - 1).moments.float() for c in frames.flatten(0, 1).split(128)])
            photo = vae.encode(_unit(batch["photo"]) * 2 - 1).moments.float()
        return {"frame_moments": moments.unflatten(0, (n, f)), "photo_moments": photo}

    return encode


def _posterior_sample(moments: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """mean + std * eps of stored moments [..., 2c, h, w] (``DiagonalGaussian``), noise from a CPU generator."""
    from unianimate_cli.models.vae import DiagonalGaussian

    shape = (*moments.shape[:-3], moments.shape[-3] // 2, *moments.shape[-2:])
    posterior = DiagonalGaussian(moments.flatten(0, -4) if moments.ndim > 4 else moments)
    noise = torch.randn(tuple(posterior.mean.shape), generator=generator)
    return posterior.sample(noise=noise).reshape(shape)


def _autocast(device: torch.device) -> Any:
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def train_unet(
    unet: nn.Module,
    clip: Any,
    vae: Any,
    cfg: TrainConfig,
    stream: Iterator[dict[str, torch.Tensor]],
    buffer: RingBuffer,
    budget: _Clock,
    on_checkpoint: Any,
) -> tuple[Ema, Ema, int, dict[str, float]]:
    """v-prediction training of the UNet and the CLIP vision tower; returns their EMAs, steps run, losses."""
    from unianimate_cli.models.vae import SCALE_FACTOR
    from unianimate_cli.sampling.schedule import NOISE_STRENGTH, NoiseSchedule

    device = buffer.device
    gen = buffer.generator
    schedule = NoiseSchedule.official()
    sqrt_ab = schedule.sqrt_alphas_cumprod.float().to(device)
    sqrt_1m_ab = schedule.sqrt_one_minus_alphas_cumprod.float().to(device)
    params = [*unet.parameters(), *clip.visual.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.unet_lr, betas=(0.9, 0.99), weight_decay=0.0)
    ema_unet, ema_visual = Ema(unet, cfg.ema_decay), Ema(clip.visual, cfg.ema_decay)
    unet.train()
    clip.visual.train()
    last: dict[str, float] = {}
    running = 0.0
    last_ckpt = time.monotonic()
    steps_run = 0
    data_s = 0.0
    window_start = time.monotonic()
    for step in range(cfg.unet_steps):
        if budget.exceeded():
            logger.warning("time budget reached after %d UNet steps of %d", step, cfg.unet_steps)
            break
        if step in (20, 21) and device.type == "cuda":
            torch.cuda.synchronize()
        waited = time.monotonic()
        buffer.add(next(stream))
        data_s += time.monotonic() - waited
        t_step = time.monotonic()
        lr = cfg.unet_lr * min(1.0, (step + 1) / cfg.warmup_steps)
        for group in opt.param_groups:
            group["lr"] = lr
        f = cfg.sample_frames if torch.rand((), generator=gen) < 0.5 else cfg.sample_frames // 2
        b = max(1, cfg.batch_frames // f)
        batch = buffer.draw(b)
        first = int(torch.randint(0, cfg.sample_frames - f + 1, (), generator=gen))
        poses = torch.cat([batch["poses"][:, :1], batch["poses"][:, 1 + first : 1 + first + f]], dim=1)
        photo = _unit(batch["photo"])  # b 3 H W in [0, 1]
        # scaled posterior samples, as encode_to_latent draws them at inference
        x0 = _posterior_sample(batch["frame_moments"][:, first : first + f], gen) * SCALE_FACTOR
        ref = _posterior_sample(batch["photo_moments"], gen) * SCALE_FACTOR
        x0 = x0.transpose(1, 2)  # b 4 f h w
        t = torch.randint(0, schedule.num_timesteps, (b,), generator=gen).to(device)
        eps = torch.randn(x0.shape, generator=gen).to(device)
        eps = eps + NOISE_STRENGTH * torch.randn((b, x0.shape[1], f, 1, 1), generator=gen).to(device)
        a, s = sqrt_ab[t].view(b, 1, 1, 1, 1), sqrt_1m_ab[t].view(b, 1, 1, 1, 1)
        x_t = a * x0 + s * eps
        v = a * eps - s * x0
        is_a = bool(torch.rand((), generator=gen) < cfg.p_variant_a)
        has_condition = (torch.rand((b,), generator=gen) >= cfg.p_uncond).to(device)
        with _autocast(device):
            image = clip.visual(batch["clip"]).float().reshape(b, 1, -1)
            pred = unet(
                x_t,
                t,
                image=image,
                local_image=photo.unsqueeze(2).expand(-1, -1, f, -1, -1) if is_a else None,
                dwpose=_unit(poses).transpose(1, 2),
                randomref=None if is_a else ref.unsqueeze(2).expand(-1, -1, f, -1, -1),
                has_condition=has_condition,
            )
        loss = (pred.float() - v).pow(2).mean()
        if step in (20, 21) and device.type == "cuda":
            torch.cuda.synchronize()
            t_fwd = time.monotonic()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if step in (20, 21) and device.type == "cuda":
            torch.cuda.synchronize()
            t_bwd = time.monotonic()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema_unet.update(unet)
        ema_visual.update(clip.visual)
        if step in (20, 21) and device.type == "cuda":
            torch.cuda.synchronize()
            logger.info(
                "step %d timing: to loss %.0f ms, backward %.0f ms, optimiser+ema %.0f ms",
                step, 1000 * (t_fwd - t_step), 1000 * (t_bwd - t_fwd), 1000 * (time.monotonic() - t_bwd),
            )
        steps_run = step + 1
        running = 0.98 * running + 0.02 * float(loss.detach()) if step else float(loss.detach())
        if step % 250 == 0 or step == cfg.unet_steps - 1:
            last = {"loss": running}
            window = time.monotonic() - window_start
            logger.info(
                "unet step %d/%d loss %.4f lr %.2e (%.0f s; %.1f steps/s, %.0f%% waiting for data)",
                step + 1, cfg.unet_steps, running, lr, budget.elapsed(), (250 if step else 1) / max(window, 1e-9),
                100 * data_s / max(window, 1e-9),
            )
            data_s, window_start = 0.0, time.monotonic()
        if on_checkpoint is not None and time.monotonic() - last_ckpt > cfg.checkpoint_every_s:
            on_checkpoint(ema_unet.shadow, ema_visual.shadow, steps_run)
            last_ckpt = time.monotonic()
    unet.eval()
    clip.visual.eval()
    return ema_unet, ema_visual, steps_run, last


# --------------------------------------------------------------------------- saving


def save_family(dest: Path, vae: Any, unet: nn.Module, clip: Any, cfg: TrainConfig, description: str, onnx_dir: Path | None = None) -> Path:
    """Write models.json and float16 safetensors of the three networks into ``dest``."""
    from safetensors.torch import save_file

    from unianimate_cli.project import atomic_path, atomic_write_text
    from unianimate_cli.weights import MODELS_JSON, MODELS_JSON_SCHEMA

    dest.mkdir(parents=True, exist_ok=True)
    configs = family_configs(cfg.width_px, cfg.height_px)
    entries: dict[str, Any] = {"schema": MODELS_JSON_SCHEMA, "name": FAMILY_NAME, "description": description}
    for component, module in (("unet", unet), ("vae", vae), ("clip", clip)):
        state = {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in module.state_dict().items() if v.is_floating_point()}
        filename = f"{component}.safetensors"
        with atomic_path(dest / filename, suffix=".safetensors") as tmp:
            save_file(state, str(tmp))
        entries[component] = {"file": filename, "config": configs[component]}
    for component, name in (("detector", "demo_detector.onnx"), ("pose", "demo_pose.onnx")):
        source = (onnx_dir / name) if onnx_dir is not None else dest / name
        if source.is_file():
            if source.resolve() != (dest / name).resolve():
                shutil.copyfile(source, dest / name)
            entries[component] = {"file": name}
    atomic_write_text(dest / MODELS_JSON, json.dumps(entries, indent=2) + "\n")
    return dest


# --------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate(vae: Any, unet: nn.Module, clip: Any, cfg: TrainConfig, device: torch.device) -> dict[str, Any]:
    """Held-out motion transfers through the inference code; colour error and silhouette IoU."""
    from unianimate_cli.demo import quality
    from unianimate_cli.demo.synth import make_background, make_transfer_example
    from unianimate_cli.media.layout import to_uint8_frames
    from unianimate_cli.models.clip import ClipImageEncoder
    from unianimate_cli.models.vae import decode_latents, encode_to_latent
    from unianimate_cli.pose.draw import draw_pose
    from unianimate_cli.sampling.conditions import Variant, build_conditions
    from unianimate_cli.sampling.render import RenderParams, make_initial_latent, render_latents
    from unianimate_cli.sampling.schedule import NoisePrior

    h, w = cfg.height_px, cfg.width_px
    encoder = ClipImageEncoder(clip)
    size = encoder.image_size
    unet.eval()
    rows = []
    for pair in range(cfg.eval_pairs):
        photo_seed, dance_seed = pair, 5000 + pair
        ex = make_transfer_example(photo_seed, dance_seed, cfg.eval_frames, h, w, fps=8.0)
        target = ex.target
        poses = [draw_pose(kp, h, w) for kp in target.keypoints_frames.frames]
        generator = torch.Generator().manual_seed(11)

        def encode_image(pixels: torch.Tensor) -> torch.Tensor:
            pixels = F.interpolate(pixels, size=size, mode="bilinear", align_corners=False)
            return encoder.encode_image(pixels.to(device)).float().cpu()

        def encode_latent(pixels: torch.Tensor) -> torch.Tensor:
            shape = (1, vae.config.embed_dim, h // 8, w // 8)
            noise = torch.randn(shape, generator=generator)
            return encode_to_latent(vae, pixels.to(device), noise=noise).float().cpu()

        conditions = build_conditions(
            target.photo, draw_pose(target.keypoints_photo, h, w), poses, w, h, encode_image, encode_latent
        )
        assert conditions.randomref is not None
        x_T = make_initial_latent(conditions.randomref, generator, NoisePrior.for_entrance("short"))
        params = RenderParams(num_steps=cfg.eval_steps, guide_scale=cfg.eval_guide_scale, variant=Variant.B, context_size=32)
        latents = render_latents(unet, conditions.to(device), x_T.to(device), params)
        out = to_uint8_frames(decode_latents(vae, latents, chunk_frames=16, out_device="cpu")[0])
        background = make_background(photo_seed, h, w)
        static = np.repeat(target.photo[None], len(out), axis=0)
        shuffled = out[np.random.default_rng(pair).permutation(len(out))]
        row: dict[str, Any] = {"photo_seed": photo_seed, "dance_seed": dance_seed}
        skip = min(cfg.eval_skip, len(out) - 1)
        masks = quality.inner(quality.figure_masks(target.frames[skip:], background))
        for name, frames in (("model", out), ("photo_repeated", static), ("shuffled", shuffled)):
            score = quality.compare_to_truth(frames[skip:], target.frames[skip:], background)
            row[name] = {
                **dataclasses.asdict(score),
                "luminance_correlation": quality.luminance_correlation(frames[skip:], target.frames[skip:], masks),
            }
        rows.append(row)
        logger.info("eval pair %d: %s", pair, {k: v for k, v in row.items() if isinstance(v, dict)})
    summary: dict[str, Any] = {"pairs": rows}
    for name in ("model", "photo_repeated", "shuffled"):
        summary[name] = {
            key: float(np.mean([r[name][key] for r in rows])) for key in rows[0][name]
        }
    return summary


# --------------------------------------------------------------------------- main


class _Clock:
    def __init__(self, budget_s: float) -> None:
        self.start = time.monotonic()
        self.budget_s = budget_s

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def exceeded(self, fraction: float = 1.0) -> bool:
        return self.budget_s > 0 and self.elapsed() > fraction * self.budget_s


def train(
    out_dir: Path, cfg: TrainConfig, onnx_dir: Path | None = None, device_name: str = "auto", init_from: Path | None = None
) -> dict[str, Any]:
    """The whole run (module docstring); returns the metrics also written to metrics.json.

    ``init_from``: a family folder to start from (its VAE is kept as is when ``vae_steps`` is 0,
    so a second run can continue the UNet training of a first).
    """
    from unianimate_cli.models.vae import SCALE_FACTOR
    from unianimate_cli.project import atomic_write_text

    clock = _Clock(cfg.time_budget_s)
    stream = _loader(cfg)  # workers fork before CUDA is touched
    device = torch.device("cuda" if device_name == "auto" and torch.cuda.is_available() else "cpu" if device_name == "auto" else device_name)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True  # two input shapes only (8- and 16-frame steps)
    generator = torch.Generator().manual_seed(cfg.seed)
    buffer = RingBuffer(cfg.buffer_samples, device, generator)
    vae, unet_module, clip = build_models(cfg, device)
    unet: Any = unet_module
    logger.info("filling the sample buffer (%d workers)", cfg.workers)
    while buffer.size < min(cfg.buffer_samples // 2, 64 * cfg.fresh_per_step) and not clock.exceeded():
        buffer.add(next(stream))
    logger.info("buffer holds %d samples after %.0f s", buffer.size, clock.elapsed())

    if init_from is not None:
        _load_family(init_from, vae, unet, clip)
        logger.info("weights initialised from %s", init_from)
    vae_losses: dict[str, float] = {}
    scale = 1.0
    if cfg.vae_steps > 0:
        vae_losses = train_vae(vae, cfg, stream, buffer, clock)
        if not cfg.vae_decoder_only:  # a decoder-only run keeps the latent space as it was
            scale = rescale_latent(vae, buffer, 1.0 / SCALE_FACTOR)
        logger.info("VAE done after %.0f s; latent rescaled by %.3f", clock.elapsed(), scale)
    vae.requires_grad_(False)
    vae.eval()
    buffer.set_encoder(moments_encoder(vae))
    logger.info("buffer encoded after %.0f s", clock.elapsed())
    unet.set_zero_y(empty_text_features(clip).to(device))
    family_dir = out_dir / "family"

    def checkpoint(ema_unet: nn.Module, ema_visual: nn.Module, steps: int) -> None:
        snapshot = copy.deepcopy(clip)
        snapshot.visual = ema_visual
        save_family(family_dir, vae, ema_unet, snapshot, cfg, f"checkpoint after {steps} UNet steps", onnx_dir)
        logger.info("checkpoint written after %d UNet steps (%.0f s)", steps, clock.elapsed())

    ema_unet, ema_visual, steps_run, unet_losses = train_unet(unet, clip, vae, cfg, stream, buffer, clock, checkpoint)
    train_s = clock.elapsed()
    final_clip = copy.deepcopy(clip)
    final_clip.visual = ema_visual.shadow
    description = (
        f"Demo family trained on synthetic figures by `python -m unianimate_cli.demo.train` "
        f"(seed {cfg.seed}, {int(vae_losses.get('steps', 0))} VAE and {steps_run} UNet steps at {cfg.width_px}x{cfg.height_px})"
    )
    save_family(family_dir, vae, ema_unet.shadow, final_clip, cfg, description, onnx_dir)
    logger.info("training done in %.0f s; evaluating", train_s)
    metrics: dict[str, Any] = {
        "config": dataclasses.asdict(cfg),
        "init_from": str(init_from) if init_from is not None else None,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "vae_steps_run": int(vae_losses.get("steps", 0)),
        "unet_steps_run": steps_run,
        "latent_rescale": scale,
        "vae_losses": vae_losses,
        "unet_losses": unet_losses,
        "train_seconds": round(train_s, 1),
    }
    if cfg.eval_pairs > 0:
        metrics["eval"] = evaluate(vae, ema_unet.shadow, final_clip, cfg, device)
        metrics["eval_seconds"] = round(clock.elapsed() - train_s, 1)
    atomic_write_text(out_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return metrics


def _load_family(folder: Path, vae: nn.Module, unet: nn.Module, clip: nn.Module) -> None:
    """Copy the weights of a family folder written by :func:`save_family` into the fresh models."""
    from unianimate_cli.weights import load_into, load_state_dict

    for name, module in (("vae", vae), ("unet", unet), ("clip", clip)):
        state = load_state_dict(Path(folder) / f"{name}.safetensors", dtype="fp32", what=name)
        expected = module.state_dict()
        # non-float buffers (none today) and the CLIP's attn_mask are not in the files
        state.update({k: v for k, v in expected.items() if k not in state and not v.is_floating_point() or k == "attn_mask"})
        load_into(module, {k: v.to(expected[k].device) for k, v in state.items()}, f"{name} ({folder})")


def _parse(argv: list[str] | None) -> tuple[Path, TrainConfig, Path | None, str, Path | None]:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(prog="python -m unianimate_cli.demo.train", description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--onnx-dir", type=Path, default=None, help="folder with demo_detector.onnx and demo_pose.onnx to copy in")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--init-from", type=Path, default=None, help="family folder to continue from (use with --vae-steps 0)")
    for f in dataclasses.fields(TrainConfig):
        default = getattr(defaults, f.name)
        flag = f"--{f.name.replace('_', '-')}"
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        else:
            parser.add_argument(flag, type=type(default), default=default)
    args = parser.parse_args(argv)
    cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})
    return args.out_dir, cfg, args.onnx_dir, args.device, args.init_from


def main(argv: list[str] | None = None) -> int:
    out_dir, cfg, onnx_dir, device, init_from = _parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    metrics = train(out_dir, cfg, onnx_dir, device, init_from)
    summary = {k: metrics["eval"][k] for k in ("model", "photo_repeated", "shuffled")} if "eval" in metrics else {}
    sys.stdout.write(json.dumps({"family": str(out_dir / "family"), "unet_steps_run": metrics["unet_steps_run"], **summary}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
