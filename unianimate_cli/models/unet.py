"""The UniAnimate video UNet, weight-compatible with ``unianimate_16f_32f_non_ema_223000.pth``.

Our own implementation of the reference's ``UNetSD_UniAnimate``
(ali-vilab/UniAnimate ``tools/modules/unet/unet_unianimate.py``), inference only. The
state-dict keys, their order and their shapes equal the reference's, so the official
checkpoint loads with strict matching; ``UNetConfig.official()`` is the configuration
the official inference actually builds.

What one call computes (``UniAnimateUNet.forward``):

1. Condition features at latent size: pose frames and the reference image in pixel space
   go through small conv encoders and an attention over frames; their sum is the
   ``concat`` tensor [b, concat_dim, f, h, w].
2. A reference frame [b, concat_dim + 4, 1, h, w] is prepended along time: the embedded
   reference latent (``randomref``) plus the embedded reference pose (``dwpose`` frame 0),
   or zeros when ``randomref`` is not given. The UNet input is therefore
   ``[x ‖ concat]`` with one extra frame in front: [b, 12, f + 1, h, w].
3. Context for cross-attention: the empty-prompt text features ``zero_y`` (77 tokens)
   followed by ``num_tokens`` image tokens from the CLIP image embedding (zeros without it).
4. A 2-D UNet over ``(b f)`` whose every ResBlock carries a temporal conv and whose
   attention levels carry a temporal transformer. The prepended frame is dropped from
   the output.

Precision: everything runs in the parameters' dtype; inputs are cast to it once on entry
and the output is returned in ``x``'s dtype. The reference runs the UNet in float16 under
autocast with a float32 ``zero_y``; parity is claimed for float32 with TF32 off. Block
activations reach magnitudes of tens (RMS 2-5 in the tiny fixture), far from the float16
limit. Measured on CPU against the float32 reference outputs of ``fixtures/unet_tiny``:
float16 weights give rel L2 4.5e-3 (max abs 1.1e-2), bfloat16 3.7e-2 (max abs 9e-2), so
prefer float16 where the GPU supports it. ``unianimate_cli.parity.unet.run_unet_fixture``
measures this on any device.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable, Iterable, Mapping, Sequence, cast

import torch
from einops import rearrange
from torch import nn

from unianimate_cli.models.layers import (
    Downsample,
    FrameMixer,
    ResBlock,
    SpatialTransformer,
    TemporalTransformer,
    Upsample,
    latent_condition_encoder,
    pixel_condition_encoder,
    sinusoidal_embedding,
)

#: The conditions the official model is trained with, in the reference's spelling.
OFFICIAL_VIDEO_COMPOSITIONS = ("image", "local_image", "dwpose", "randomref", "randomref_pose")

#: Channels of the reference latent (``randomref``); the reference hard-codes 4.
REFERENCE_LATENT_CHANNELS = 4

#: Called with (name, tensor) at named points of the forward pass; see ``UniAnimateUNet.forward``.
TraceFn = Callable[[str, torch.Tensor], None]

# Reference constructor arguments that do not change the inference network we build.
_INERT_REFERENCE_KWARGS = frozenset(
    {
        "use_checkpoint",  # activation checkpointing: memory only
        "use_sim_mask",  # only for the unused TemporalAttentionMultiBlock path
        "temporal_attn_times",  # same
        "use_scale_shift_norm",  # every ResBlock is built with False regardless
        "use_image_dataset",  # checked separately: only False is supported
        "misc_dropout",  # condition dropout: training only
        "p_all_zero",
        "p_all_keep",
        "training",
        "inpainting",
        "y_dim",  # never used by the forward pass
        "hist_dim",
        "type",  # registry name in the reference's config dicts
        "config",
        "zero_y",  # set through UniAnimateUNet.set_zero_y
        "black_image_feature",
    }
)


@dataclass(frozen=True)
class UNetConfig:
    """Constructor arguments of the UniAnimate UNet; field names follow the reference.

    ``resolution`` is (W, H) in pixels of the pose and reference frames; it sets only the
    parameter-free AdaptiveAvgPool2d size of the pixel-space condition encoders, so one
    checkpoint serves every resolution (``UniAnimateUNet.set_resolution``). Defaults are the
    official model at 512x768 (``UNetConfig.official()``).
    """

    in_dim: int = 4
    dim: int = 320
    y_dim: int = 1024
    context_dim: int = 1024
    out_dim: int = 4
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_heads: int | None = 8
    head_dim: int = 64
    num_res_blocks: int = 2
    # The official yaml does not set attn_scales; the inference entrance merges it into
    # tools/modules/config.py's cfg.UNet, which carries [1, 1/2, 1/4], and the checkpoint
    # is loaded strictly, so that (not the class default [1/2, 1/4, 1/8]) is the model.
    attn_scales: tuple[float, ...] = (1.0, 0.5, 0.25)
    dropout: float = 0.1
    temporal_attention: bool = True
    temporal_attn_times: int = 1
    num_tokens: int = 4
    concat_dim: int = 8
    use_fps_condition: bool = False
    adapter_transformer_layers: int = 1
    resolution: tuple[int, int] = (512, 768)
    video_compositions: tuple[str, ...] = field(default=OFFICIAL_VIDEO_COMPOSITIONS)

    @classmethod
    def official(cls, resolution: tuple[int, int] = (512, 768)) -> UNetConfig:
        """The network ``unianimate_16f_32f_non_ema_223000.pth`` fits: dim 320, [1,2,4,4], ... .

        ``resolution`` (W, H): 512x768 or 768x1216 in the reference's configs.
        """
        return cls(resolution=(int(resolution[0]), int(resolution[1])))

    @classmethod
    def from_reference_kwargs(
        cls,
        constructor_kwargs: Mapping[str, Any],
        resolution: Sequence[int],
        video_compositions: Iterable[str],
    ) -> UNetConfig:
        """Build from the reference's ``UNetSD_UniAnimate(**kwargs)`` and its ``config`` object.

        Arguments that do not change the inference network (checkpointing, training-time
        dropout probabilities, ...) are accepted and ignored; unknown ones raise ValueError.
        Omitted ones take the reference's *class* defaults, as the reference would.
        """
        known = {f.name for f in fields(cls)} - {"resolution", "video_compositions"}
        unknown = sorted(set(constructor_kwargs) - known - _INERT_REFERENCE_KWARGS)
        if unknown:
            raise ValueError(f"unknown UNetSD_UniAnimate arguments: {', '.join(unknown)}")
        if constructor_kwargs.get("use_image_dataset"):
            # Image-only training mode: temporal layers multiplied by zero. Not an inference model.
            raise ValueError("use_image_dataset=True (image-only training mode) is not supported")
        values: dict[str, Any] = dict(_REFERENCE_CLASS_DEFAULTS)
        values.update({k: v for k, v in constructor_kwargs.items() if k in known})
        for name in ("dim_mult", "attn_scales"):
            values[name] = tuple(values[name])
        values["attn_scales"] = tuple(float(s) for s in values["attn_scales"])
        width, height = (int(v) for v in resolution)
        return cls(**values, resolution=(width, height), video_compositions=tuple(video_compositions))

    @property
    def embed_dim(self) -> int:
        """Width of the timestep embedding: ``4 * dim``."""
        return self.dim * 4

    @property
    def effective_num_heads(self) -> int:
        """Heads of the first temporal transformer; the reference defaults None to ``dim // 32``."""
        return self.num_heads if self.num_heads else self.dim // 32

    def with_resolution(self, resolution: tuple[int, int]) -> UNetConfig:
        """The same network for pose/reference frames of ``resolution`` (W, H) pixels."""
        return replace(self, resolution=(int(resolution[0]), int(resolution[1])))


# The reference class's own defaults, used for arguments a reference kwargs dict omits.
_REFERENCE_CLASS_DEFAULTS: dict[str, Any] = {
    "in_dim": 4,
    "dim": 512,
    "y_dim": 512,
    "context_dim": 1024,
    "concat_dim": 8,
    "out_dim": 6,
    "dim_mult": (1, 2, 3, 4),
    "num_heads": None,
    "head_dim": 64,
    "num_res_blocks": 3,
    "attn_scales": (1 / 2, 1 / 4, 1 / 8),
    "dropout": 0.1,
    "temporal_attn_times": 1,
    "temporal_attention": True,
    "use_fps_condition": False,
    "adapter_transformer_layers": 1,
    "num_tokens": 4,
}


class UniAnimateUNet(nn.Module):
    """Video UNet predicting ``v`` from a noisy latent video and the UniAnimate conditions.

    Build on the ``meta`` device and load with ``load_state_dict(sd, strict=True,
    assign=True)`` to avoid initialising 1.4 B parameters; then call ``set_zero_y``.
    Parameters are not initialised to anything meaningful: weights must be loaded.
    """

    zero_y: torch.Tensor | None

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        cfg = config
        dim, embed_dim, concat_dim = cfg.dim, cfg.embed_dim, cfg.concat_dim
        compositions = set(cfg.video_compositions)
        # Empty-prompt text features [1, n, context_dim]; not in the checkpoint (set_zero_y).
        self.register_buffer("zero_y", None, persistent=False)

        # Attribute registration order below is the checkpoint's key order.
        self.time_embed = nn.Sequential(nn.Linear(dim, embed_dim), nn.SiLU(), nn.Linear(embed_dim, embed_dim))
        if "image" in compositions:
            self.pre_image_condition = nn.Sequential(
                nn.Linear(cfg.context_dim, cfg.context_dim),
                nn.SiLU(),
                nn.Linear(cfg.context_dim, cfg.context_dim * cfg.num_tokens),
            )
        pool_hw = _pool_size(cfg.resolution)
        hidden = concat_dim * 4
        ref_dim = concat_dim + REFERENCE_LATENT_CHANNELS
        depth = cfg.adapter_transformer_layers
        if "local_image" in compositions:
            self.local_image_embedding = pixel_condition_encoder(3, concat_dim, hidden, pool_hw)
            self.local_image_embedding_after = FrameMixer(concat_dim, depth)
        if "dwpose" in compositions:
            self.dwpose_embedding = pixel_condition_encoder(3, concat_dim, hidden, pool_hw)
            self.dwpose_embedding_after = FrameMixer(concat_dim, depth)
        if "randomref_pose" in compositions:
            self.randomref_pose2_embedding = pixel_condition_encoder(3, ref_dim, hidden, pool_hw)
            self.randomref_pose2_embedding_after = FrameMixer(ref_dim, depth)
        if "randomref" in compositions:
            self.randomref_embedding2 = latent_condition_encoder(REFERENCE_LATENT_CHANNELS, ref_dim, hidden)
            self.randomref_embedding_after2 = FrameMixer(ref_dim, depth)
        if cfg.use_fps_condition:
            self.fps_embedding = nn.Sequential(nn.Linear(dim, embed_dim), nn.SiLU(), nn.Linear(embed_dim, embed_dim))

        def transformers(channels: int) -> list[nn.Module]:
            heads = channels // cfg.head_dim
            layers: list[nn.Module] = [SpatialTransformer(channels, heads, cfg.head_dim, cfg.context_dim)]
            if cfg.temporal_attention:
                layers.append(TemporalTransformer(channels, heads, cfg.head_dim))
            return layers

        # Encoder. Scales are exact powers of two, so `in attn_scales` compares exactly.
        enc_dims = [dim * m for m in (1, *cfg.dim_mult)]
        self.input_blocks = nn.ModuleList()
        init_block: list[nn.Module] = [nn.Conv2d(cfg.in_dim + concat_dim, dim, 3, padding=1)]
        if cfg.temporal_attention:
            init_block.append(TemporalTransformer(dim, cfg.effective_num_heads, cfg.head_dim))
        self.input_blocks.append(nn.ModuleList(init_block))
        skip_dims = [dim]
        scale = 1.0
        num_levels = len(cfg.dim_mult)
        for level, (in_ch, out_ch) in enumerate(zip(enc_dims[:-1], enc_dims[1:])):
            for _ in range(cfg.num_res_blocks):
                block: list[nn.Module] = [ResBlock(in_ch, embed_dim, out_ch)]
                if scale in cfg.attn_scales:
                    block.extend(transformers(out_ch))
                self.input_blocks.append(nn.ModuleList(block))
                skip_dims.append(out_ch)
                in_ch = out_ch
            if level != num_levels - 1:
                self.input_blocks.append(Downsample(out_ch))
                skip_dims.append(out_ch)
                scale /= 2.0

        # Middle: attention at every scale, whatever attn_scales says.
        mid_ch = enc_dims[-1]
        self.middle_block = nn.ModuleList(
            [ResBlock(mid_ch, embed_dim), *transformers(mid_ch), ResBlock(mid_ch, embed_dim)]
        )

        # Decoder: each block takes [x ‖ skip]; the last block of a level upsamples.
        # The reference hard-codes context_dim=1024 here; it equals context_dim in every
        # configuration the reference can run.
        dec_dims = [dim * m for m in (cfg.dim_mult[-1], *cfg.dim_mult[::-1])]
        self.output_blocks = nn.ModuleList()
        for level, (in_ch, out_ch) in enumerate(zip(dec_dims[:-1], dec_dims[1:])):
            for j in range(cfg.num_res_blocks + 1):
                block = [ResBlock(in_ch + skip_dims.pop(), embed_dim, out_ch)]
                if scale in cfg.attn_scales:
                    block.extend(transformers(out_ch))
                in_ch = out_ch
                if level != num_levels - 1 and j == cfg.num_res_blocks:
                    block.append(Upsample(out_ch))
                    scale *= 2.0
                self.output_blocks.append(nn.ModuleList(block))

        head_ch = dec_dims[-1]
        self.out = nn.Sequential(nn.GroupNorm(32, head_ch), nn.SiLU(), nn.Conv2d(head_ch, cfg.out_dim, 3, padding=1))

    # -- set-up ---------------------------------------------------------------------------

    @property
    def dtype(self) -> torch.dtype:
        """The parameters' dtype, in which every call computes."""
        return cast(nn.Linear, self.time_embed[0]).weight.dtype

    def set_zero_y(self, zero_y: torch.Tensor) -> None:
        """Set the empty-prompt text features [1, n, context_dim] (n = 77 for OpenCLIP).

        Stored as a non-persistent buffer: it follows ``.to(device)``, stays out of the
        state dict, and is cast to the parameters' dtype at each call.
        """
        if zero_y.ndim != 3 or zero_y.shape[0] != 1 or zero_y.shape[2] != self.config.context_dim:
            raise ValueError(
                f"zero_y must have shape [1, n, {self.config.context_dim}], got {list(zero_y.shape)}"
            )
        if zero_y.shape[1] < self.config.num_tokens:
            raise ValueError(f"zero_y needs at least {self.config.num_tokens} tokens, got {zero_y.shape[1]}")
        param = next(self.parameters())
        device = zero_y.device if param.is_meta else param.device
        self.zero_y = zero_y.detach().to(device=device)

    def set_resolution(self, resolution: tuple[int, int]) -> None:
        """Re-target the pixel-space condition encoders to frames of ``resolution`` (W, H).

        Only the parameter-free AdaptiveAvgPool2d sizes change; weights are untouched.
        """
        pool_hw = _pool_size(resolution)
        for name in ("local_image_embedding", "dwpose_embedding", "randomref_pose2_embedding"):
            encoder = getattr(self, name, None)
            if encoder is not None:
                pool = encoder[2]
                assert isinstance(pool, nn.AdaptiveAvgPool2d)
                pool.output_size = pool_hw
        self.config = self.config.with_resolution(resolution)

    # -- forward --------------------------------------------------------------------------

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        image: torch.Tensor | None = None,
        local_image: torch.Tensor | None = None,
        dwpose: torch.Tensor | None = None,
        randomref: torch.Tensor | None = None,
        fps: torch.Tensor | None = None,
        trace: TraceFn | None = None,
        has_condition: torch.Tensor | None = None,
        features: ConditionFeatures | None = None,
    ) -> torch.Tensor:
        """Predict ``v`` for the noisy latent video ``x`` at integer timesteps ``t``.

        Shapes (H, W pixels = ``config.resolution`` reversed; h, w = latent size):
        x [b, 4, f, h, w]; t int64 [b] (or one value for all); image [b, 1, context_dim] CLIP image embedding;
        local_image [b, 3, f, H, W] reference image in [0, 1] (not normalised);
        dwpose [b, 3, f + 1, H, W] pose images in [0, 1], frame 0 the reference pose;
        randomref [b, 4, f, h, w] reference latent (only frame 0 is read).
        Any condition may be None (all None: the unconditional guidance branch).
        ``fps`` [b] only with ``use_fps_condition``.

        ``has_condition`` bool [b] lets one batch mix conditional and unconditional items
        (classifier-free guidance in one call, see :func:`guided_pair`): items marked False
        are computed exactly as if every condition were None (zero concat, zero reference
        frame, zero image tokens), whatever their condition tensors hold. Those tensors
        must still be given for the whole batch.

        ``features`` (from :meth:`condition_features` for the same conditions, mask, batch,
        frame count and latent size) replaces the condition arguments: the condition encoders,
        which do not depend on ``x`` or ``t``, then run once per clip instead of at every
        step, with the same result bit for bit.

        ``trace``, when given, receives intermediate tensors by the names the fixtures use
        (``sinusoidal``, ``time_embedding``, ``image_context``, ``unet_input``,
        ``block.input_blocks.N``, ..., ``head_out``); it is for parity debugging.

        Returns v [b, out_dim, f, h, w] in ``x``'s dtype.
        """
        if self.zero_y is None:
            raise RuntimeError("UniAnimateUNet.zero_y is not set; call set_zero_y(text features) first")
        out_dtype = x.dtype
        dtype = self.dtype
        batch, _, num_frames, _, _ = x.shape
        x = x.to(dtype)

        if features is None:
            features = self.condition_features(
                x, image=image, local_image=local_image, dwpose=dwpose, randomref=randomref,
                has_condition=has_condition, trace=trace,
            )
        else:
            features.check(x)
        unet_in = torch.cat([features.ref_frame, torch.cat([x, features.concat], dim=1)], dim=2)  # b c (1 + f) h w
        _emit(trace, "unet_input", unet_in)

        t = torch.as_tensor(t, device=x.device).reshape(-1)
        if t.numel() == 1:
            t = t.expand(batch)  # one timestep for the whole batch
        sinusoid = sinusoidal_embedding(t, self.config.dim).to(dtype)
        _emit(trace, "sinusoidal", sinusoid)
        emb = self.time_embed(sinusoid)
        if self.config.use_fps_condition and fps is not None:
            emb = emb + self.fps_embedding(sinusoidal_embedding(fps, self.config.dim).to(dtype))
        _emit(trace, "time_embedding", emb)
        context = features.context

        # Every frame of a video shares its timestep embedding and context [b, m, c]; the
        # spatial transformers project the context once per video (see CrossAttention).
        video_frames = num_frames + 1
        h = rearrange(unet_in, "b c f h w -> (b f) c h w")
        skips: list[torch.Tensor] = []
        for i, block in enumerate(self.input_blocks):
            h = self._run_block(block, h, emb, context, video_frames)
            skips.append(h)
            _emit(trace, f"block.input_blocks.{i}", h)
        for i, layer in enumerate(self.middle_block):
            h = self._run_layer(layer, h, emb, context, video_frames)
            _emit(trace, f"block.middle_block.{i}", h)
        for i, block in enumerate(self.output_blocks):
            h = torch.cat([h, skips.pop()], dim=1)
            h = self._run_block(block, h, emb, context, video_frames)
            _emit(trace, f"block.output_blocks.{i}", h)
        h = self.out(h)
        out = rearrange(h, "(b f) c h w -> b c f h w", b=batch)
        _emit(trace, "head_out", out)
        return out[:, :, 1:].to(out_dtype)

    def condition_features(
        self,
        like: torch.Tensor,
        image: torch.Tensor | None = None,
        local_image: torch.Tensor | None = None,
        dwpose: torch.Tensor | None = None,
        randomref: torch.Tensor | None = None,
        has_condition: torch.Tensor | None = None,
        trace: TraceFn | None = None,
    ) -> ConditionFeatures:
        """What the conditions contribute to a call on latents shaped like ``like`` [b, 4, f, h, w].

        Pass the result as ``features=`` to calls with the same conditions and batch: the
        pose/reference encoders and the image tokens depend on neither x_t nor t, so a
        sampler computes them once per clip (or window) instead of at every step. Arguments
        as in :meth:`forward`; ``like`` only gives the shape and device.
        """
        batch = like.shape[0]
        x = like if like.dtype == self.dtype else like.to(self.dtype)
        concat = self._condition_features(x, local_image, dwpose)
        ref_frame = self._reference_frame(x, randomref, dwpose)
        keep = _condition_mask(has_condition, batch, x.device)
        if keep is not None:
            # where(), not a product: absent items get exact zeros, as the None path does.
            concat = torch.where(keep[:, None, None, None, None], concat, 0.0)
            ref_frame = torch.where(keep[:, None, None, None, None], ref_frame, 0.0)
        context = self._context(batch, image, self.dtype, trace, keep)
        return ConditionFeatures(concat=concat, ref_frame=ref_frame, context=context)

    def _condition_features(
        self, x: torch.Tensor, local_image: torch.Tensor | None, dwpose: torch.Tensor | None
    ) -> torch.Tensor:
        """Sum of the reference-image and pose features for x [b, c, f, h, w]: [b, concat_dim, f, h, w].

        Zeros where a condition is absent.
        """
        batch, _, num_frames, height, width = x.shape
        latent_hw, dtype = (height, width), x.dtype
        concat = x.new_zeros(batch, self.config.concat_dim, num_frames, height, width)
        if local_image is not None:
            self._require("local_image")
            concat = concat + self._embed_frames(
                self.local_image_embedding, self.local_image_embedding_after, local_image.to(dtype), latent_hw, "local_image"
            )
        if dwpose is not None:
            self._require("dwpose")
            if "randomref_pose" in self.config.video_compositions:
                dwpose = dwpose[:, :, 1:]  # frame 0 is the reference pose, used with randomref
            concat = concat + self._embed_frames(
                self.dwpose_embedding, self.dwpose_embedding_after, dwpose.to(dtype), latent_hw, "dwpose"
            )
        return concat

    def _reference_frame(
        self, x: torch.Tensor, randomref: torch.Tensor | None, dwpose: torch.Tensor | None
    ) -> torch.Tensor:
        """The frame prepended to x [b, c, f, h, w]: [b, concat_dim + 4, 1, h, w], zeros without ``randomref``."""
        batch, _, _, height, width = x.shape
        latent_hw, dtype = (height, width), x.dtype
        channels = self.config.concat_dim + REFERENCE_LATENT_CHANNELS
        if randomref is None:
            return x.new_zeros(batch, channels, 1, height, width)
        self._require("randomref")
        ref = self._embed_frames(
            self.randomref_embedding2, self.randomref_embedding_after2, randomref[:, :, :1].to(dtype), latent_hw, "randomref"
        )
        if "randomref_pose" in self.config.video_compositions:
            if dwpose is None:
                raise ValueError("randomref needs dwpose too: its frame 0 is the reference pose")
            ref = ref + self._embed_frames(
                self.randomref_pose2_embedding,
                self.randomref_pose2_embedding_after,
                dwpose[:, :, :1].to(dtype),
                latent_hw,
                "dwpose frame 0",
            )
        return ref

    def _context(
        self,
        batch: int,
        image: torch.Tensor | None,
        dtype: torch.dtype,
        trace: TraceFn | None,
        keep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Cross-attention tokens [b, n + num_tokens, context_dim]: zero_y, then image tokens (zeros without image)."""
        assert self.zero_y is not None
        cfg = self.config
        text = self.zero_y.to(dtype).expand(batch, -1, -1)
        if image is not None:
            self._require("image")
            image_tokens = self.pre_image_condition(image.to(dtype)).reshape(batch, cfg.num_tokens, cfg.context_dim)
            if keep is not None:
                image_tokens = torch.where(keep[:, None, None], image_tokens, 0.0)
            _emit(trace, "image_context", image_tokens)
        else:
            image_tokens = text.new_zeros(batch, cfg.num_tokens, cfg.context_dim)
        return torch.cat([text, image_tokens], dim=1)

    def _embed_frames(
        self,
        encoder: nn.Module,
        mixer: nn.Module,
        frames: torch.Tensor,
        latent_hw: tuple[int, int],
        what: str,
    ) -> torch.Tensor:
        """Encode each frame, then attend over frames per pixel: [b, c, f, H, W] -> [b, c', f, h, w]."""
        batch = frames.shape[0]
        feats = encoder(rearrange(frames, "b c f h w -> (b f) c h w"))
        feat_hw = tuple(feats.shape[-2:])
        if feat_hw != latent_hw:
            raise ValueError(
                f"{what} of size {list(frames.shape[-2:])} gives {list(feat_hw)} features but the latent is "
                f"{list(latent_hw)}; the UNet resolution (W, H) is {self.config.resolution}"
            )
        feats = mixer(rearrange(feats, "(b f) c h w -> (b h w) f c", b=batch))
        return rearrange(feats, "(b h w) f c -> b c f h w", b=batch, h=feat_hw[0])

    def _require(self, composition: str) -> None:
        if composition not in self.config.video_compositions:
            raise ValueError(f"this UNet was built without the '{composition}' condition")

    def _run_block(
        self, block: nn.Module, h: torch.Tensor, emb: torch.Tensor, context: torch.Tensor, num_frames: int
    ) -> torch.Tensor:
        layers = block if isinstance(block, nn.ModuleList) else [block]
        for layer in layers:
            h = self._run_layer(layer, h, emb, context, num_frames)
        return h

    @staticmethod
    def _run_layer(
        layer: nn.Module, h: torch.Tensor, emb: torch.Tensor, context: torch.Tensor, num_frames: int
    ) -> torch.Tensor:
        """Apply one layer to h [(b f), c, h, w] with the inputs its kind needs."""
        if isinstance(layer, ResBlock):
            return layer(h, emb, num_frames)
        if isinstance(layer, SpatialTransformer):
            return layer(h, context, num_frames)
        if isinstance(layer, TemporalTransformer):
            return layer(h, num_frames)
        return layer(h)


def guided_pair(
    unet: UniAnimateUNet,
    x: torch.Tensor,
    t: torch.Tensor,
    conditions: Mapping[str, torch.Tensor | None],
    features: ConditionFeatures | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Conditional and unconditional v in one UNet call of batch 2b (classifier-free guidance).

    x [b, 4, f, h, w]; t [b] or one value; ``conditions`` the keyword conditions of the
    conditional branch (image, local_image, dwpose, randomref; None = absent). The
    unconditional branch is "every condition None". Returns (v_cond, v_uncond), each like
    x. Equal to two separate calls up to float rounding of the batched kernels (tested);
    costs the activations of batch 2b but ~1.1-1.3x less time than two calls.
    ``features`` (:func:`guided_pair_features` of the same conditions) skips the condition
    encoders; ``conditions`` are then not read.
    """
    batch = x.shape[0]
    t = torch.as_tensor(t, device=x.device).reshape(-1)
    t = t.expand(batch) if t.numel() == 1 else t
    if features is None:
        features = guided_pair_features(unet, x, conditions)
    out = unet(torch.cat([x, x]), torch.cat([t, t]), features=features)
    return out[:batch], out[batch:]


def guided_pair_features(
    unet: UniAnimateUNet, x: torch.Tensor, conditions: Mapping[str, torch.Tensor | None]
) -> ConditionFeatures:
    """The condition features of :func:`guided_pair`'s batch 2b: b conditional items, then b unconditional."""
    batch = x.shape[0]
    doubled = {k: None if v is None else torch.cat([v, v]) for k, v in conditions.items()}
    has_condition = torch.arange(2 * batch, device=x.device) < batch
    return unet.condition_features(torch.cat([x, x]), has_condition=has_condition, **doubled)  # type: ignore[arg-type]


@dataclass(frozen=True)
class ConditionFeatures:
    """What the conditions give one UNet call, computed once (``UniAnimateUNet.condition_features``).

    concat [b, concat_dim, f, h, w] (pose + reference-image features, concatenated to x);
    ref_frame [b, concat_dim + 4, 1, h, w] (the frame prepended along time); context
    [b, n + num_tokens, context_dim] (text then image tokens for cross-attention). All in
    the UNet's dtype. Small: 3 MB at 32 frames 768x512 in float16.
    """

    concat: torch.Tensor
    ref_frame: torch.Tensor
    context: torch.Tensor

    def check(self, x: torch.Tensor) -> None:
        """ValueError when these features were made for another batch, frame count or latent size."""
        b, _, f, h, w = x.shape
        got = (self.concat.shape[0], self.concat.shape[2], *self.concat.shape[-2:])
        if got != (b, f, h, w) or self.context.shape[0] != b:
            raise ValueError(
                f"condition features are for batch {got[0]}, {got[1]} frames of {got[2]}x{got[3]}; "
                f"x has batch {b}, {f} frames of {h}x{w}"
            )


def _condition_mask(has_condition: torch.Tensor | None, batch: int, device: torch.device) -> torch.Tensor | None:
    """has_condition as bool [b] on ``device``, or None when every item is conditional anyway."""
    if has_condition is None:
        return None
    keep = torch.as_tensor(has_condition, device=device).reshape(-1).bool()
    if keep.numel() != batch:
        raise ValueError(f"has_condition has {keep.numel()} items for a batch of {batch}")
    return keep


def _pool_size(resolution: Sequence[int]) -> tuple[int, int]:
    """(H/2, W/2) pooling size of the pixel-space condition encoders for ``resolution`` (W, H)."""
    width, height = resolution
    return (int(height) // 2, int(width) // 2)


def _emit(trace: TraceFn | None, name: str, value: torch.Tensor) -> None:
    if trace is not None:
        trace(name, value)


def count_parameters(module: nn.Module) -> int:
    """Number of parameter values (works on the meta device)."""
    return sum(p.numel() for p in module.parameters())
