"""OpenCLIP ViT-H-14 as UniAnimate uses it: an image embedding and the empty-prompt text features.

A thin wrapper on ``open_clip_torch`` (its model code is used, never copied). Facts from
``spec/SAMPLING_AND_CONDITIONING.md`` section 5 and the reference
``tools/modules/clip_embedder.py`` (``FrozenOpenCLIPTextVisualEmbedder``):

* image embedding = ``model.visual(x)``: ln_post(CLS) @ proj, **not** L2-normalised, [b, 1024];
  the input is the 224x224 stretch normalised with the CLIP mean/std (built by the caller).
* ``zero_y`` = the empty prompt's tokens through the first 23 of 24 text blocks ("penultimate"),
  then ``ln_final``, all 77 tokens: [1, 77, 1024], not pooled, projected or normalised.

The reference runs the text blocks sequence-first, which open_clip >= 2.26 (batch-first)
rejects with an attn_mask shape error; here the blocks run in whatever layout the installed
open_clip's transformer declares.

Loading is a meta build, ``load_state_dict(assign=True)``, and a rebuild of the one
non-persistent buffer, the causal ``attn_mask``: no random init of 986 M parameters.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from unianimate_cli.errors import WeightsError
from unianimate_cli.project import atomic_path

if TYPE_CHECKING:
    from open_clip.model import CLIP

log = logging.getLogger(__name__)

OFFICIAL_ARCH = "ViT-H-14"
# ``tools/modules/config.py`` vit_mean / vit_std (OpenAI CLIP statistics) and vit_resolution.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_IMAGE_SIZE = 224

ZERO_Y_FORMAT = "unianimate.zero_y"
ZERO_Y_VERSION = "1"


def official_clip_config() -> dict[str, Any]:
    """open_clip's ``ViT-H-14`` model config (embed 1024, vision 1280x32, text 1024x24)."""
    import open_clip

    config = open_clip.get_model_config(OFFICIAL_ARCH)
    if config is None:  # pragma: no cover - every open_clip release ships ViT-H-14
        raise WeightsError(f"open_clip has no {OFFICIAL_ARCH} config", "reinstall open_clip_torch")
    return dict(config)


def tiny_clip_config() -> dict[str, Any]:
    """A 1.8 M-parameter CLIP for tests: 32x32 images, 3 text blocks, the real 77-token vocabulary."""
    return {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 3},
    }


def build_clip(config: Mapping[str, Any] | None = None, device: torch.device | str = "cpu") -> CLIP:
    """``open_clip.model.CLIP(**config)`` built directly on ``device`` (``"meta"``: no memory, no init)."""
    from open_clip.model import CLIP

    cfg = dict(official_clip_config() if config is None else config)
    with torch.device(device):
        return CLIP(**cfg)


def build_vit_h14(device: torch.device | str = "meta") -> CLIP:
    """The official ViT-H-14 (986,109,441 parameters, 686 state-dict tensors), on meta by default."""
    return build_clip(None, device)


def causal_mask(context_length: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Additive mask [n, n]: 0 on and below the diagonal, -inf above (what open_clip registers)."""
    mask = torch.full((context_length, context_length), float("-inf"), device=device)
    return mask.triu_(1)


def rebuild_buffers(model: nn.Module) -> None:
    """Recreate the non-persistent buffers an assign-load leaves on meta (the causal attn_mask)."""
    mask = getattr(model, "attn_mask", None)
    if isinstance(mask, torch.Tensor) and mask.is_meta:
        model.attn_mask = causal_mask(int(getattr(model, "context_length", mask.shape[0])))
    leftover = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if leftover:
        raise WeightsError(
            f"CLIP weights left {len(leftover)} tensors unset ({', '.join(leftover[:3])})",
            "the open_clip version builds buffers this loader does not know; report it",
        )


class ClipImageEncoder:
    """An open_clip ``CLIP`` in eval mode, with the two calls UniAnimate needs."""

    def __init__(self, model: nn.Module) -> None:
        self.model: Any = model.eval()
        for param in self.model.parameters():
            param.requires_grad_(False)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of the pixels ``encode_image`` expects: 224x224 for ViT-H-14."""
        size = self.model.visual.image_size
        return (int(size[0]), int(size[1])) if isinstance(size, (tuple, list)) else (int(size), int(size))

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> ClipImageEncoder:
        """Move/cast the model (the mask stays float32 and is cast per call by open_clip)."""
        self.model.to(device=device, dtype=dtype)
        return self

    @torch.no_grad()
    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """CLIP-normalised pixels [b, 3, 224, 224] -> unnormalised embedding [b, 1024], float32."""
        visual: Any = self.model.visual
        out = visual(pixels.to(device=self.device, dtype=self.dtype))
        return out.float()

    def empty_tokens(self) -> torch.Tensor:
        """``open_clip.tokenize("")``: [1, n] = start, end, zeros (n = the model's context length)."""
        import open_clip

        context_length = int(getattr(self.model, "context_length", 77))
        return open_clip.tokenize([""], context_length=context_length)

    @torch.no_grad()
    def empty_text_features(self) -> torch.Tensor:
        """zero_y [1, 77, 1024], float32: the empty prompt through all text blocks but the last, then ln_final."""
        model: Any = self.model
        tokens = self.empty_tokens().to(self.device)
        x = model.token_embedding(tokens).to(self.dtype)  # [1, n, width]
        x = x + model.positional_embedding.to(self.dtype)
        transformer = model.transformer
        batch_first = bool(getattr(transformer, "batch_first", True))
        if not batch_first:
            x = x.transpose(0, 1)  # [n, 1, width] for a sequence-first open_clip
        for block in list(transformer.resblocks)[:-1]:  # "penultimate": stop before the last block
            x = block(x, attn_mask=model.attn_mask)
        if not batch_first:
            x = x.transpose(0, 1)
        return model.ln_final(x).float()


def load_clip_encoder(
    path: Path | str,
    config: Mapping[str, Any] | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | str | None = None,
) -> ClipImageEncoder:
    """Load ``open_clip_pytorch_model.bin`` (or a models.json CLIP file) without random init.

    ``config`` is the ``CLIP(**config)`` dict; None means the official ViT-H-14.
    """
    from unianimate_cli.weights import load_into, load_state_dict

    path = Path(path)
    state = load_state_dict(path, dtype=dtype, what="CLIP")
    state.pop("attn_mask", None)  # older open_clip files may carry the mask; it is rebuilt below
    model = build_clip(config, "meta")
    load_into(model, state, f"CLIP ({path.name})", assign=True)
    rebuild_buffers(model)
    return ClipImageEncoder(model.to(device))


# --------------------------------------------------------------------------- zero_y cache


def save_zero_y(path: Path, zero_y: torch.Tensor, weights_sha256: str) -> None:
    """Write zero_y to a safetensors file (atomically), tagged with the CLIP weights' hash."""
    from safetensors.torch import save_file

    metadata = {"format": ZERO_Y_FORMAT, "version": ZERO_Y_VERSION, "clip_sha256": weights_sha256}
    with atomic_path(Path(path)) as tmp:
        save_file({"zero_y": zero_y.detach().to("cpu", torch.float32).contiguous()}, str(tmp), metadata=metadata)


def load_zero_y(path: Path, weights_sha256: str) -> torch.Tensor | None:
    """zero_y from ``path`` if it exists, is readable and was made from these CLIP weights; else None."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), "pt") as f:
            metadata = f.metadata() or {}
            if metadata.get("format") != ZERO_Y_FORMAT or metadata.get("version") != ZERO_Y_VERSION:
                log.warning("ignoring %s: not a zero_y cache of this version", path)
                return None
            if metadata.get("clip_sha256") != weights_sha256:
                log.info("zero_y cache %s belongs to other CLIP weights; recomputing", path)
                return None
            return f.get_tensor("zero_y")
    except Exception as exc:  # a corrupt cache is a miss, never an error
        log.warning("ignoring unreadable zero_y cache %s (%s)", path, exc)
        return None


def cached_empty_text_features(encoder: ClipImageEncoder, cache_path: Path, weights_sha256: str) -> torch.Tensor:
    """zero_y from ``cache_path`` when it matches ``weights_sha256``, else computed and cached there.

    Returns float32 [1, n, width] on the encoder's device.
    """
    cached = load_zero_y(cache_path, weights_sha256)
    if cached is not None:
        return cached.to(encoder.device)
    zero_y = encoder.empty_text_features()
    try:
        save_zero_y(cache_path, zero_y, weights_sha256)
    except OSError as exc:  # a read-only weights dir only costs the recomputation next time
        log.warning("could not write zero_y cache %s (%s)", cache_path, exc)
    return zero_y
