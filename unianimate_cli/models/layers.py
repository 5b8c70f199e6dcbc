"""Building blocks of the UniAnimate video UNet, named after the official checkpoint's keys.

Each class mirrors one module of the reference (ali-vilab/UniAnimate
``tools/modules/unet/util.py`` and ``unet_unianimate.py``) closely enough that the
state-dict keys and shapes are identical, but the code is ours: attention goes through
``torch.nn.functional.scaled_dot_product_attention``, layouts through einops, and the
model is inference-only.

Inference-only means that every ``nn.Dropout`` of the reference is an ``nn.Identity``
here (see ``_unused_slot``): the slot keeps the ``nn.Sequential`` indices, so the keys
match, and the output never depends on ``train()``/``eval()``.

Layout: inside the UNet a video lives as ``(b f) c h w`` (frames folded into the batch)
so 2-D layers run per frame; temporal layers take ``num_frames`` to unfold it.

Precision: every layer computes in the dtype of its input and weights, with no casts of
its own. Under float16 the softmax of ``scaled_dot_product_attention`` is done by the
kernel in a safe way; GroupNorm/LayerNorm statistics are computed by PyTorch in float32
internally on CUDA for half inputs. The reference runs this network in float16 under
autocast, so float16 and bfloat16 are expected to work, but parity is only claimed in
float32 (TF32 off).
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

# The reference's GroupNorm eps: 1e-6 in the transformers, the PyTorch default elsewhere.
TRANSFORMER_NORM_EPS = 1e-6
NORM_GROUPS = 32


def _unused_slot() -> nn.Module:
    """Stand-in for a reference ``nn.Dropout``: keeps module indices, does nothing at inference."""
    return nn.Identity()


def group_norm(x: torch.Tensor, norm: nn.GroupNorm) -> torch.Tensor:
    """GroupNorm with the module's parameters on a tensor of any rank ``n c ...``.

    Statistics span every axis after ``c`` (for a 5-D ``b c f h w`` tensor: all frames).
    """
    return F.group_norm(x, norm.num_groups, norm.weight, norm.bias, norm.eps)


def silu_group_norm(x: torch.Tensor, norm: nn.GroupNorm) -> torch.Tensor:
    """``SiLU(GroupNorm(x))``, the pre-activation every conv of the UNet uses."""
    return F.silu(group_norm(x, norm))


def sinusoidal_embedding(timesteps: torch.Tensor, dim: int) -> torch.Tensor:
    """Timestep features ``[cos(t w_i), sin(t w_i)]`` with ``w_i = 10000^(-i/half)``, float32.

    Same formula as the reference's ``sinusoidal_embedding`` (util.py): ``torch.pow`` rather
    than ``exp(-ln(1e4) i / half)``, which moves values by up to 5e-5 at t=999 with dim 320.
    ``timesteps`` [b] (any numeric dtype) -> [b, dim].
    """
    half = dim // 2
    t = timesteps.float()
    freqs = torch.pow(10000, -torch.arange(half, device=t.device, dtype=t.dtype).div(half))
    angles = torch.outer(t, freqs)
    emb = torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=1)
    return emb


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """softmax(q kᵀ / sqrt(d)) v over heads; q [b, n, (h d)], k and v [b, m, (h d)] -> [b, n, (h d)]."""
    q, k, v = (rearrange(t, "b n (h d) -> b h n d", h=heads) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v)
    return rearrange(out, "b h n d -> b n (h d)")


class CrossAttention(nn.Module):
    """Multi-head attention of x to a context (itself when ``context`` is None); no q/k/v bias.

    Keys: ``to_q``, ``to_k``, ``to_v``, ``to_out.0`` (the reference's xformers attention).
    """

    def __init__(self, query_dim: int, context_dim: int | None, heads: int, dim_head: int) -> None:
        super().__init__()
        inner_dim = heads * dim_head
        context_dim = query_dim if context_dim is None else context_dim
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner_dim, bias=False)
        self.to_k = nn.Linear(context_dim, inner_dim, bias=False)
        self.to_v = nn.Linear(context_dim, inner_dim, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner_dim, query_dim), _unused_slot())

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, frames_per_context: int = 1) -> torch.Tensor:
        """x [(b f), n, c], context [b, m, c_ctx] or None -> [(b f), n, c].

        With a context, ``frames_per_context`` (f) consecutive items of x share one context
        row. Their queries are folded into one sequence ``b (f n) c`` against that row's keys:
        attention is independent per query, so this is the per-frame math, with K/V
        projected once per video instead of once per frame (33x fewer context projections
        at 32 frames).
        """
        if context is None:
            return self.to_out[0](attention(self.to_q(x), self.to_k(x), self.to_v(x), self.heads))
        tokens = x.shape[1]
        q = rearrange(self.to_q(x), "(b f) n c -> b (f n) c", f=frames_per_context)
        out = attention(q, self.to_k(context), self.to_v(context), self.heads)
        return self.to_out[0](rearrange(out, "b (f n) c -> (b f) n c", n=tokens))


class GEGLU(nn.Module):
    """``a * gelu(gate)`` where ``[a, gate]`` is one projection split in two (key ``proj``)."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, gate = self.proj(x).chunk(2, dim=-1)
        return a * F.gelu(gate)


class FeedForward(nn.Module):
    """Two-layer MLP, ``net.0`` (GEGLU, or Linear+GELU when ``gated`` is False) then ``net.2``.

    Hidden width ``4 * dim``; output width ``dim_out`` (default ``dim``). GELU is the erf form.
    """

    #: Largest hidden activation (elements) made at once; larger inputs run in row chunks.
    #: At 32 frames 768x512 a level-0 GEGLU hidden is 1.0 G values per video (2 GiB in fp16);
    #: chunks of 128 M values bound that at 256 MiB with the same per-row math.
    max_hidden_elements: int = 1 << 27

    def __init__(self, dim: int, dim_out: int | None = None, gated: bool = True, mult: int = 4) -> None:
        super().__init__()
        inner_dim = dim * mult
        project_in: nn.Module = (
            GEGLU(dim, inner_dim) if gated else nn.Sequential(nn.Linear(dim, inner_dim), nn.GELU())
        )
        self.net = nn.Sequential(project_in, _unused_slot(), nn.Linear(inner_dim, dim_out or dim))
        self._hidden_width = inner_dim * (2 if gated else 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [n, ..., c] -> [n, ..., c_out]; rows (axis 0) are independent, so chunking them is exact."""
        per_row = (x[0].numel() // x.shape[-1]) * self._hidden_width if x.shape[0] else 0
        rows = max(1, self.max_hidden_elements // max(per_row, 1))
        if rows >= x.shape[0]:
            return self.net(x)
        return torch.cat([self.net(part) for part in x.split(rows)], dim=0)


class BasicTransformerBlock(nn.Module):
    """Pre-LayerNorm block: self-attention, attention to ``context``, GEGLU feed-forward.

    With ``context=None`` the second attention is self-attention too (the temporal case).
    Registration order (attn1, ff, attn2, norm1..3) follows the reference's key order.
    """

    def __init__(self, dim: int, heads: int, dim_head: int, context_dim: int | None) -> None:
        super().__init__()
        self.attn1 = CrossAttention(dim, None, heads, dim_head)
        self.ff = FeedForward(dim, gated=True)
        self.attn2 = CrossAttention(dim, context_dim, heads, dim_head)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, frames_per_context: int = 1) -> torch.Tensor:
        """x [(b f), n, c], context [b, m, c_ctx] or None -> [(b f), n, c] (see ``CrossAttention``)."""
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context, frames_per_context)
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nn.Module):
    """Per-frame attention over the h*w pixels and cross-attention to the text+image context.

    Linear ``proj_in``/``proj_out`` (the reference's ``use_linear=True``). The reference
    builds ``proj_out`` as ``Linear(in_channels, inner_dim)``, transposed from what it
    means; the UNet always has ``inner_dim == in_channels`` there, so we keep that shape.
    """

    def __init__(self, channels: int, heads: int, dim_head: int, context_dim: int) -> None:
        super().__init__()
        inner_dim = heads * dim_head
        self.norm = nn.GroupNorm(NORM_GROUPS, channels, eps=TRANSFORMER_NORM_EPS)
        self.proj_in = nn.Linear(channels, inner_dim)
        self.transformer_blocks = nn.ModuleList([BasicTransformerBlock(inner_dim, heads, dim_head, context_dim)])
        self.proj_out = nn.Linear(channels, inner_dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor, num_frames: int = 1) -> torch.Tensor:
        """x [(b f), c, h, w] with f = ``num_frames``, context [b, m, c_ctx] (one per video) -> like x."""
        height = x.shape[2]
        h = rearrange(group_norm(x, self.norm), "n c h w -> n (h w) c")
        h = self.proj_in(h)
        for block in self.transformer_blocks:
            h = block(h, context, num_frames)
        h = self.proj_out(h)
        return x + rearrange(h, "n (h w) c -> n c h w", h=height)


class TemporalTransformer(nn.Module):
    """Self-attention over the frames at each latent pixel (no positional encoding).

    GroupNorm statistics span all frames of a video. ``proj_in``/``proj_out`` are 1x1
    ``Conv1d`` in the checkpoint; they are applied as the equivalent linear maps on a
    ``(b h w) f c`` layout, which saves two transposes. Both attentions of the inner
    block are self-attention (the reference's ``only_self_att=True`` drops the context).
    """

    def __init__(self, channels: int, heads: int, dim_head: int) -> None:
        super().__init__()
        inner_dim = heads * dim_head
        self.norm = nn.GroupNorm(NORM_GROUPS, channels, eps=TRANSFORMER_NORM_EPS)
        self.proj_in = nn.Conv1d(channels, inner_dim, kernel_size=1)
        self.transformer_blocks = nn.ModuleList([BasicTransformerBlock(inner_dim, heads, dim_head, None)])
        self.proj_out = nn.Conv1d(inner_dim, channels, kernel_size=1)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        """x [(b f), c, h, w] with f = ``num_frames`` -> same shape."""
        _, _, height, width = x.shape
        video = rearrange(x, "(b f) c h w -> b c f h w", f=num_frames)
        h = rearrange(group_norm(video, self.norm), "b c f h w -> (b h w) f c")
        h = F.linear(h, self.proj_in.weight.squeeze(-1), self.proj_in.bias)
        for block in self.transformer_blocks:
            h = block(h)
        h = F.linear(h, self.proj_out.weight.squeeze(-1), self.proj_out.bias)
        return x + rearrange(h, "(b h w) f c -> (b f) c h w", h=height, w=width)


def temporal_conv_gemm(x: torch.Tensor, conv: nn.Conv3d, functional: bool = False) -> torch.Tensor:
    """``conv`` (a (3, 1, 1) kernel, one frame of zero padding) on x [b, c, f, h, w] as three GEMMs.

    On the ``[c, (f h w)]`` view of each video, tap k is ``W_k @ x`` shifted by one frame,
    i.e. by h*w columns: the previous/next-frame taps accumulate into column ranges of the
    output (``addmm_`` on a strided view, no copy). cuDNN instead transforms NCDHW to NDHWC
    and back around every such conv (29 ms of a 428 ms guided step on an H100,
    docs/PERFORMANCE.md). Same math as ``conv(x)``; the taps are summed in fp32 inside each
    GEMM but rounded to x's dtype between taps. ``functional`` (automatic under
    ``torch.compile``) computes the taps as one GEMM and sums them in one pass instead.
    """
    b, c, f, height, width = x.shape
    pixels = height * width
    weight = conv.weight[:, :, :, 0, 0]  # [out, in, 3]
    out_channels = weight.shape[0]
    frames = x.reshape(b, c, f * pixels)
    if functional or torch.compiler.is_compiling():
        # Under torch.compile: one GEMM for the three taps (M = 3 * out), then one fused
        # pointwise kernel shifts and sums them; in-place adds into slices would be copies.
        taps = torch.matmul(weight.permute(2, 0, 1).reshape(3 * out_channels, c), frames)
        prev, mid, nxt = taps.view(b, 3, out_channels, f * pixels).unbind(1)
        out = mid + F.pad(prev[..., : (f - 1) * pixels], (pixels, 0)) + F.pad(nxt[..., pixels:], (0, pixels))
        if conv.bias is not None:
            out = out + conv.bias[:, None]
        return out.view(b, out_channels, f, height, width)
    out = x.new_empty(b, out_channels, f * pixels)
    w_prev, w_mid, w_next = weight[:, :, 0], weight[:, :, 1], weight[:, :, 2]
    bias = conv.bias
    for i in range(b):
        xi, oi = frames[i], out[i]
        if bias is not None:
            torch.addmm(bias[:, None], w_mid, xi, out=oi)
        else:
            torch.mm(w_mid, xi, out=oi)
        if f > 1:
            oi[:, pixels:].addmm_(w_prev, xi[:, :-pixels])  # frame t sees frame t - 1 through tap 0
            oi[:, :-pixels].addmm_(w_next, xi[:, pixels:])  # and frame t + 1 through tap 2
    return out.view(b, out_channels, f, height, width)


class TemporalConvBlock(nn.Module):
    """Four GroupNorm -> SiLU -> Conv3d(3x1x1) stages along time, added to the input.

    The reference's ``TemporalConvBlock_v2``. GroupNorm statistics span all frames; the
    convs zero-pad one frame at each end. Keys ``conv1.{0,2}``, ``conv{2,3,4}.{0,3}``.
    ``use_gemm`` (class-wide, default on) runs the convs as GEMMs (:func:`temporal_conv_gemm`)
    on CUDA: 7-20 % faster than cuDNN's Conv3d at the three larger levels of a 32-frame
    768x512 render (H100, docs/PERFORMANCE.md), float16 error unchanged. On the CPU the
    Conv3d stays, so the fixtures' float32 path is untouched.
    """

    use_gemm: bool = True

    def __init__(self, channels: int) -> None:
        super().__init__()

        def stage(with_slot: bool) -> nn.Sequential:
            layers: list[nn.Module] = [nn.GroupNorm(NORM_GROUPS, channels), nn.SiLU()]
            if with_slot:
                layers.append(_unused_slot())
            layers.append(nn.Conv3d(channels, channels, (3, 1, 1), padding=(1, 0, 0)))
            return nn.Sequential(*layers)

        self.conv1 = stage(with_slot=False)
        self.conv2 = stage(with_slot=True)
        self.conv3 = stage(with_slot=True)
        self.conv4 = stage(with_slot=True)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        """x [(b f), c, h, w] with f = ``num_frames`` -> same shape."""
        video = rearrange(x, "(b f) c h w -> b c f h w", f=num_frames)
        h = video
        # The GEMM form writes into preallocated output (addmm out=): inference only.
        gemm = self.use_gemm and x.is_cuda and not torch.is_grad_enabled()
        for stage in (self.conv1, self.conv2, self.conv3, self.conv4):
            conv = cast(nn.Conv3d, stage[-1])
            h = silu_group_norm(h, cast(nn.GroupNorm, stage[0]))
            h = temporal_conv_gemm(h.contiguous(), conv) if gemm else conv(h)
        return rearrange(video + h, "b c f h w -> (b f) c h w")


class ResBlock(nn.Module):
    """Conv residual block with timestep conditioning, followed by a temporal conv block.

    ``h = in_layers(x) + emb_layers(e)``; ``h = skip(x) + out_layers(h)``; then
    ``h + temporal(h)``. The temporal block's attribute keeps the checkpoint's
    misspelling ``temopral_conv``. No scale-shift norm (the reference builds every
    ResBlock with ``use_scale_shift_norm=False``).
    """

    def __init__(self, channels: int, emb_channels: int, out_channels: int | None = None) -> None:
        super().__init__()
        out_channels = out_channels or channels
        self.in_layers = nn.Sequential(
            nn.GroupNorm(NORM_GROUPS, channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        self.out_layers = nn.Sequential(
            nn.GroupNorm(NORM_GROUPS, out_channels),
            nn.SiLU(),
            _unused_slot(),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        self.skip_connection: nn.Module = (
            nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)
        )
        self.temopral_conv = TemporalConvBlock(out_channels)

    def forward(self, x: torch.Tensor, emb: torch.Tensor, num_frames: int) -> torch.Tensor:
        """x [(b f), c, h, w], emb [b, c_emb] (one per video, shared by its frames) -> [(b f), c_out, h, w]."""
        h = self.in_layers[2](silu_group_norm(x, cast(nn.GroupNorm, self.in_layers[0])))
        emb_out = self.emb_layers(emb).repeat_interleave(num_frames, dim=0)
        h = h + emb_out[:, :, None, None]
        h = self.out_layers[3](silu_group_norm(h, cast(nn.GroupNorm, self.out_layers[0])))
        h = self.skip_connection(x) + h
        return self.temopral_conv(h, num_frames)


class Downsample(nn.Module):
    """3x3 conv with stride 2 and padding 1 (key ``op``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Nearest-neighbour x2, then a 3x3 conv (key ``conv``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class PreNormAttention(nn.Module):
    """``x + fn(LayerNorm(x))`` (keys ``norm``, ``fn``)."""

    def __init__(self, dim: int, fn: nn.Module) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fn(self.norm(x))


class FusedQKVAttention(nn.Module):
    """Multi-head self-attention with one bias-free ``to_qkv`` projection and ``to_out.0``."""

    def __init__(self, dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        inner_dim = heads * dim_head
        self.heads = heads
        self.to_qkv = nn.Linear(dim, inner_dim * 3, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner_dim, dim), _unused_slot())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [b, n, c] -> [b, n, c]."""
        q, k, v = self.to_qkv(x).chunk(3, dim=-1)
        return self.to_out[0](attention(q, k, v, self.heads))


class FrameMixer(nn.Module):
    """Attention over frames for the condition embeddings (the reference's ``Transformer_v2``).

    Each layer: ``x = x + Attn(LayerNorm(x))`` then ``x = x + FF(x)``, with no norm before
    the feed-forward. Two heads, each as wide as ``dim``; FF is Linear(dim, 4 dim), GELU,
    Linear(4 dim, dim). Keys ``layers.N.0.*`` (attention) and ``layers.N.1.*`` (FF).
    """

    def __init__(self, dim: int, depth: int = 1, heads: int = 2) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList(
                [PreNormAttention(dim, FusedQKVAttention(dim, heads, dim)), FeedForward(dim, dim, gated=False)]
            )
            for _ in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [n, f, c] (one sequence of frames per latent pixel) -> same shape."""
        for layer in self.layers:
            attn, ff = layer[0], layer[1]  # type: ignore[index]
            x = attn(x)
            x = x + ff(x)
        return x


def pixel_condition_encoder(in_channels: int, out_channels: int, hidden: int, pool_hw: tuple[int, int]) -> nn.Sequential:
    """Pixel-space condition image -> latent-size features (pose and reference image embedders).

    Conv3x3, SiLU, AdaptiveAvgPool2d to ``pool_hw`` (half the configured pixel resolution,
    not the input's), stride-2 conv, SiLU, stride-2 conv. ``[n, in, H, W] -> [n, out, H/8, W/8]``
    for inputs at the configured resolution.
    """
    return nn.Sequential(
        nn.Conv2d(in_channels, hidden, 3, padding=1),
        nn.SiLU(),
        nn.AdaptiveAvgPool2d(pool_hw),
        nn.Conv2d(hidden, hidden, 3, stride=2, padding=1),
        nn.SiLU(),
        nn.Conv2d(hidden, out_channels, 3, stride=2, padding=1),
    )


def latent_condition_encoder(in_channels: int, out_channels: int, hidden: int) -> nn.Sequential:
    """Latent-space condition -> features at the same size: conv, SiLU, conv, SiLU, conv (all 3x3)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, hidden, 3, padding=1),
        nn.SiLU(),
        nn.Conv2d(hidden, hidden, 3, padding=1),
        nn.SiLU(),
        nn.Conv2d(hidden, out_channels, 3, padding=1),
    )
