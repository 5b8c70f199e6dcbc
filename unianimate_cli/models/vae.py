"""The SD-2.1 first-stage autoencoder (``AutoencoderKL``) that UniAnimate encodes and decodes with.

Attribute names follow the official state dict (``encoder.down.0.block.0.norm1.weight``, ...),
which is the external contract: ``v2-1_512-ema-pruned.ckpt`` loads strictly once its
``first_stage_model.`` prefix is stripped (see ``unianimate_cli.weights``). The layout is the
one of the reference ``tools/modules/autoencoder.py`` (ali-vilab/UniAnimate 643c963) and of
the fixture ``vae_tiny/README.md``:

* GroupNorm(32, c, eps=1e-6), swish ``x * sigmoid(x)``, no timestep embedding.
* ``Downsample`` pads right and bottom by one, then a stride-2 3x3 conv without padding.
* Both mid blocks always hold single-head attention ``attn_1``, here computed with SDPA.
* ``decoder.up.0`` is the full-resolution level and runs last.

Latent convention: ``encode_to_latent`` returns ``SCALE_FACTOR * z`` (what the UNet sees);
``decode_latents`` undoes the factor and decodes frame chunks so that long videos fit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

# ``tools/modules/config.py`` ``cfg.scale_factor``; the yamls leave it alone.
SCALE_FACTOR = 0.18215

# Limits of the reference ``DiagonalGaussianDistribution`` logvar clamp.
LOGVAR_MIN = -30.0
LOGVAR_MAX = 20.0


@dataclass(frozen=True)
class VAEConfig:
    """Constructor arguments of the reference ``AutoencoderKL`` (``ddconfig`` + ``embed_dim``).

    ``resolution`` only decides at which levels ``attn_resolutions`` places attention; it does
    not restrict the input size. ``double_z`` must be true (the reference asserts it).
    """

    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = ()
    resolution: int = 256
    in_channels: int = 3
    out_ch: int = 3
    z_channels: int = 4
    embed_dim: int = 4
    double_z: bool = True
    dropout: float = 0.0
    resamp_with_conv: bool = True

    @classmethod
    def official(cls) -> VAEConfig:
        """The SD-2.1 VAE that ``v2-1_512-ema-pruned.ckpt`` holds (83,653,863 parameters)."""
        return cls()

    @classmethod
    def from_reference_kwargs(cls, constructor: Mapping[str, Any]) -> VAEConfig:
        """Build from the reference constructor arguments ``{"ddconfig": {...}, "embed_dim": 4}``.

        Keys the reference swallows (``video_kernel_size``, ``pretrained``, ...) are ignored.
        """
        dd = dict(constructor.get("ddconfig", constructor))
        embed_dim = int(constructor.get("embed_dim", dd.get("embed_dim", dd.get("z_channels", 4))))
        return cls.from_dict({**dd, "embed_dim": embed_dim}, ignore_unknown=True)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], ignore_unknown: bool = False) -> VAEConfig:
        """Build from a plain dict (``models.json``); unknown keys raise ``ValueError`` unless ignored."""
        names = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - names)
        if unknown and not ignore_unknown:
            raise ValueError(f"unknown VAEConfig fields: {', '.join(unknown)}")
        kwargs: dict[str, Any] = {k: v for k, v in values.items() if k in names}
        for key in ("ch_mult", "attn_resolutions"):
            if key in kwargs:
                kwargs[key] = tuple(int(v) for v in kwargs[key])
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists)."""
        out = asdict(self)
        out["ch_mult"] = list(self.ch_mult)
        out["attn_resolutions"] = list(self.attn_resolutions)
        return out

    @property
    def downsample_factor(self) -> int:
        """Pixels per latent cell along each axis (8 for SD-2.1)."""
        return int(2 ** (len(self.ch_mult) - 1))


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    """norm-swish-conv twice plus a shortcut; 1x1 ``nin_shortcut`` when widths differ."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = _group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _group_norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut: nn.Module | None = (
            nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        if self.nin_shortcut is not None:
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the h*w positions, 1x1 convs for q, k, v and output."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = _group_norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = self.norm(x)
        # b c h w -> b 1 (h w) c: one head of width c; SDPA's default scale is c^-0.5 as in the reference.
        q, k, v = (t.reshape(b, 1, c, h * w).transpose(-1, -2) for t in (self.q(y), self.k(y), self.v(y)))
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(-1, -2).reshape(b, c, h, w)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """Halve h and w: asymmetric zero pad (right, bottom) + stride-2 conv, or 2x2 average pool."""

    def __init__(self, channels: int, with_conv: bool) -> None:
        super().__init__()
        self.conv: nn.Module | None = nn.Conv2d(channels, channels, 3, stride=2) if with_conv else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv is None:
            return F.avg_pool2d(x, kernel_size=2, stride=2)
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Double h and w: nearest neighbour, then an optional 3x3 conv."""

    def __init__(self, channels: int, with_conv: bool) -> None:
        super().__init__()
        self.conv: nn.Module | None = nn.Conv2d(channels, channels, 3, padding=1) if with_conv else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return x if self.conv is None else self.conv(x)


class _Level(nn.Module):
    """One resolution level: ``block`` (ResnetBlocks), ``attn`` (maybe empty), optional resampler."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.ModuleList()
        self.attn = nn.ModuleList()
        self.downsample: nn.Module | None = None
        self.upsample: nn.Module | None = None

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Each ResnetBlock (then its attention block, if the level has them), then the resampler."""
        for i, block in enumerate(self.block):
            h = block(h)
            if len(self.attn) > 0:
                h = self.attn[i](h)
        if self.downsample is not None:
            h = self.downsample(h)
        if self.upsample is not None:
            h = self.upsample(h)
        return h


class _Mid(nn.Module):
    def __init__(self, channels: int, dropout: float) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, dropout)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class Encoder(nn.Module):
    """Pixels [n, in_channels, H, W] -> moments-to-be [n, 2*z_channels, H/s, W/s]."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.ch, 3, padding=1)
        in_mult = (1, *cfg.ch_mult)
        res = cfg.resolution
        self.down = nn.ModuleList()
        block_in = cfg.ch
        for level, mult in enumerate(cfg.ch_mult):
            stage = _Level()
            block_in = cfg.ch * in_mult[level]
            block_out = cfg.ch * mult
            for _ in range(cfg.num_res_blocks):
                stage.block.append(ResnetBlock(block_in, block_out, cfg.dropout))
                block_in = block_out
                if res in cfg.attn_resolutions:
                    stage.attn.append(AttnBlock(block_in))
            if level != len(cfg.ch_mult) - 1:
                stage.downsample = Downsample(block_in, cfg.resamp_with_conv)
                res //= 2
            self.down.append(stage)
        self.mid = _Mid(block_in, cfg.dropout)
        self.norm_out = _group_norm(block_in)
        z_out = 2 * cfg.z_channels if cfg.double_z else cfg.z_channels
        self.conv_out = nn.Conv2d(block_in, z_out, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for stage in self.down:
            h = stage(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """Latent [n, z_channels, h, w] -> pixels [n, out_ch, h*s, w*s]."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        num_levels = len(cfg.ch_mult)
        block_in = cfg.ch * cfg.ch_mult[-1]
        res = cfg.resolution // 2 ** (num_levels - 1)
        self.conv_in = nn.Conv2d(cfg.z_channels, block_in, 3, padding=1)
        self.mid = _Mid(block_in, cfg.dropout)
        levels: list[_Level] = []
        for level in reversed(range(num_levels)):
            stage = _Level()
            block_out = cfg.ch * cfg.ch_mult[level]
            for _ in range(cfg.num_res_blocks + 1):
                stage.block.append(ResnetBlock(block_in, block_out, cfg.dropout))
                block_in = block_out
                if res in cfg.attn_resolutions:
                    stage.attn.append(AttnBlock(block_in))
            if level != 0:
                stage.upsample = Upsample(block_in, cfg.resamp_with_conv)
                res *= 2
            levels.insert(0, stage)
        # Stored lowest level last: ``up.0`` is full resolution, as in the official keys.
        self.up = nn.ModuleList(levels)
        self.norm_out = _group_norm(block_in)
        self.conv_out = nn.Conv2d(block_in, cfg.out_ch, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for stage in reversed(self.up):
            h = stage(h)
        return self.conv_out(F.silu(self.norm_out(h)))


@dataclass
class DiagonalGaussian:
    """The encoder's posterior N(mean, exp(logvar)); logvar is clamped to [-30, 20].

    Shapes [n, embed_dim, h, w]. ``sample`` draws its noise from an explicit generator so
    that renders are reproducible and never touch the global RNG.
    """

    moments: torch.Tensor
    mean: torch.Tensor = field(init=False)
    logvar: torch.Tensor = field(init=False)
    std: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        mean, logvar = torch.chunk(self.moments, 2, dim=1)
        self.mean = mean
        self.logvar = torch.clamp(logvar, LOGVAR_MIN, LOGVAR_MAX)
        self.std = torch.exp(0.5 * self.logvar)

    def mode(self) -> torch.Tensor:
        """The posterior mean."""
        return self.mean

    def sample(self, generator: torch.Generator | None = None, noise: torch.Tensor | None = None) -> torch.Tensor:
        """``mean + std * eps``; eps is ``noise`` if given, else float32 N(0,1) from ``generator``.

        The draw happens in float32 on the generator's device (CPU, like the reference's
        ``torch.randn``) and is then moved, so the same seed gives the same latent on any device
        and in any model dtype.
        """
        if noise is None:
            gen_device = generator.device if generator is not None else torch.device("cpu")
            noise = torch.randn(tuple(self.mean.shape), generator=generator, device=gen_device, dtype=torch.float32)
        noise = noise.to(device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + self.std * noise


class AutoencoderKL(nn.Module):
    """SD-2.1 KL autoencoder with the reference's module names (keys match the official ckpt)."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        if not config.double_z:
            raise ValueError("AutoencoderKL needs double_z=True (mean and logvar channels)")
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.quant_conv = nn.Conv2d(2 * config.z_channels, 2 * config.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(config.embed_dim, config.z_channels, 1)

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        """Pixels [n, 3, H, W] in [-1, 1] -> posterior over latents [n, embed_dim, H/8, W/8]."""
        return DiagonalGaussian(self.quant_conv(self.encoder(x)))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Unscaled latent [n, embed_dim, h, w] -> pixels [n, 3, 8h, 8w], about [-1, 1]."""
        return self.decoder(self.post_quant_conv(z))


@torch.no_grad()
def encode_to_latent(
    vae: AutoencoderKL,
    pixels: torch.Tensor,
    generator: torch.Generator | None = None,
    sample: bool = True,
    noise: torch.Tensor | None = None,
    scale_factor: float = SCALE_FACTOR,
) -> torch.Tensor:
    """Pixels [n, 3, H, W] in [-1, 1] -> scaled latent ``SCALE_FACTOR * z`` [n, 4, H/8, W/8].

    ``sample=True`` is the reference's ``get_first_stage_encoding``: a posterior sample with
    noise from ``generator`` (or the given ``noise``); ``sample=False`` uses the mean.
    """
    posterior = vae.encode(pixels)
    z = posterior.sample(generator, noise) if sample else posterior.mode()
    return scale_factor * z


def decode_latents(
    vae: AutoencoderKL,
    latents: torch.Tensor,
    chunk_frames: int = 2,
    out_device: torch.device | str | None = None,
    progress: Callable[[int, int], None] | None = None,
    scale_factor: float = SCALE_FACTOR,
) -> torch.Tensor:
    """Scaled latents [b, 4, f, h, w] -> pixels [b, 3, f, 8h, 8w], about [-1, 1], float32.

    Frames (flattened as ``(b f)``) are decoded ``chunk_frames`` at a time, so the peak memory
    is that of one chunk; each frame is decoded independently, so the result does not depend
    on the chunk size (up to float32 rounding: conv kernels may block differently per batch). Latents are moved to the VAE's device and dtype; the output is stored
    on ``out_device`` (default: the latents' device). ``progress(done_frames, total_frames)``
    is called after each chunk.
    """
    if latents.ndim != 5:
        raise ValueError(f"latents must be [b, c, f, h, w], got shape {tuple(latents.shape)}")
    if chunk_frames < 1:
        raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
    param = next(vae.parameters())
    b, c, f, h, w = latents.shape
    frames = latents.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)  # b c f h w -> (b f) c h w
    target = torch.device(out_device) if out_device is not None else latents.device
    chunks: list[torch.Tensor] = []
    total = b * f
    done = 0
    with torch.no_grad():
        for start in range(0, total, chunk_frames):
            z = frames[start : start + chunk_frames].to(device=param.device, dtype=param.dtype)
            pixels = vae.decode(z * (1.0 / scale_factor))  # the reference multiplies by 1/scale
            chunks.append(pixels.to(device=target, dtype=torch.float32))
            done += z.shape[0]
            if progress is not None:
                progress(done, total)
    out = torch.cat(chunks, dim=0)
    _, c_out, h_out, w_out = out.shape
    return out.reshape(b, f, c_out, h_out, w_out).permute(0, 2, 1, 3, 4).contiguous()


def count_parameters(module: nn.Module) -> int:
    """Number of parameter elements (works on the meta device)."""
    return sum(p.numel() for p in module.parameters())

