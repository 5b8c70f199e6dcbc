"""The UNet's conditions, and how the reference builds them from a photo and pose images.

Facts from the reference (ali-vilab/UniAnimate 643c963): the two inference entrances'
``load_video_frames`` and ``worker``, ``utils/transforms.py``; spec sections 2-4 and 6,
checked by ``fixtures/conditioning``.

* Every resize is a Pillow bilinear **stretch** of the 8-bit image to the exact size (no
  aspect preservation, no crop), then ``/255`` in float32: values are multiples of 1/255.
* CLIP input: the original photo squashed to 224x224, ``/255``, then ``(x - mean) / std``
  with the CLIP mean/std (not open_clip's own bicubic resize + centre crop).
* ``local_image``: the photo at the model resolution in [0, 1], repeated over all frames.
* VAE input for ``randomref``: the same image mapped to [-1, 1] as (x - 0.5) / 0.5.
* ``dwpose``: frame 0 the reference pose, frames 1..F the selected driving poses, in [0, 1]
  (all-zero where the short entrance pads).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields, replace
from enum import Enum

import numpy as np
import torch

from unianimate_cli.errors import InputError
from unianimate_cli.media.video import SamplingRule, select_frame_indices

CLIP_INPUT_SIZE = 224
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CONDITION_KEYS = ("image", "local_image", "dwpose", "randomref")


class Variant(str, Enum):
    """The reference's two ``partial_keys`` entries: which conditions the conditional pass gets.

    ``A`` (image, local_image, dwpose): "reference image as the first frame of the video".
    ``B`` (image, randomref, dwpose): the only one of the long entrance.
    """

    A = "A"
    B = "B"

    @property
    def partial_keys(self) -> tuple[str, ...]:
        return ("image", "local_image", "dwpose") if self is Variant.A else ("image", "randomref", "dwpose")


@dataclass(frozen=True)
class Conditions:
    """Condition tensors of one clip, named like the UNet's keyword arguments.

    image [b,1,1024] CLIP image embedding (unnormalised); local_image [b,3,f,H,W] reference
    image pixels in [0,1]; dwpose [b,3,f+1,H,W] poses in [0,1], frame 0 the reference pose;
    randomref [b,4,f,h,w] scaled VAE latent of the reference image (the UNet reads frame 0).
    None means absent; all None is the unconditional guidance branch (zero_y stays in both).
    """

    image: torch.Tensor | None = None
    local_image: torch.Tensor | None = None
    dwpose: torch.Tensor | None = None
    randomref: torch.Tensor | None = None

    @property
    def is_unconditional(self) -> bool:
        return all(getattr(self, k) is None for k in CONDITION_KEYS)

    def select(self, keys: Iterable[str] | Variant) -> Conditions:
        """Keep only ``keys`` (the reference's ``prepare_model_kwargs``); the rest become None."""
        wanted = set(keys.partial_keys if isinstance(keys, Variant) else keys)
        unknown = sorted(wanted - set(CONDITION_KEYS))
        if unknown:
            raise InputError(f"unknown condition keys {unknown}", f"use some of {list(CONDITION_KEYS)}")
        return Conditions(**{k: getattr(self, k) if k in wanted else None for k in CONDITION_KEYS})

    def missing(self, keys: Iterable[str] | Variant) -> list[str]:
        """Keys of ``keys`` whose tensor is None."""
        names = keys.partial_keys if isinstance(keys, Variant) else tuple(keys)
        return [k for k in names if getattr(self, k) is None]

    def for_window(self, frames: Sequence[int]) -> Conditions:
        """The conditions of one frame window (spec section 10, item 4).

        dwpose keeps the reference pose: frames ``[0] + [i + 1 for i in frames]``.
        """
        index = list(frames)
        return Conditions(
            image=self.image,
            local_image=None if self.local_image is None else self.local_image[:, :, index],
            dwpose=None if self.dwpose is None else self.dwpose[:, :, [0] + [i + 1 for i in index]],
            randomref=None if self.randomref is None else self.randomref[:, :, index],
        )

    @staticmethod
    def concat(parts: Sequence[Conditions]) -> Conditions:
        """Stack clips along the batch axis, as the reference batches windows.

        ``image`` is repeated per part, like the reference's ``image.repeat(n, 1, 1)``.
        """
        out: dict[str, torch.Tensor | None] = {}
        for key in CONDITION_KEYS:
            values = [getattr(p, key) for p in parts]
            present = [v is not None for v in values]
            if any(present) and not all(present):
                raise ValueError(f"cannot batch clips where only some have '{key}'")
            out[key] = torch.cat([v for v in values if v is not None]) if all(present) else None
        return Conditions(**out)

    def unet_kwargs(self) -> dict[str, torch.Tensor | None]:
        """Keyword arguments for ``UniAnimateUNet.forward``."""
        return {k: getattr(self, k) for k in CONDITION_KEYS}

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Conditions:
        """Move every tensor (float dtype changes only floating tensors)."""
        changes = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                changes[f.name] = value.to(device=device, dtype=dtype if value.is_floating_point() else None)
        return replace(self, **changes)

    def check(self, x_shape: Sequence[int]) -> None:
        """Raise ValueError when a condition does not fit a latent of shape [b,4,f,h,w]."""
        b, _, f = x_shape[0], x_shape[1], x_shape[2]
        expect = {"local_image": f, "dwpose": f + 1, "randomref": f}
        for key, frames in expect.items():
            value = getattr(self, key)
            if value is not None and (value.shape[0] != b or value.shape[2] != frames):
                raise ValueError(f"{key} has shape {list(value.shape)}; expected batch {b} and {frames} frames")
        if self.image is not None and self.image.shape[0] != b:
            raise ValueError(f"image has shape {list(self.image.shape)}; expected batch {b}")


# --- Frame selection ---------------------------------------------------------------


def select_pose_frames(
    num_pose_files: int,
    frame_interval: int = 2,
    max_frames: int | None = 32,
    pad: bool = True,
) -> list[int | None]:
    """Which pose file (index in sorted order) drives each generated frame; None = zero pose.

    ``max_frames=None`` is the long entrance (``max_frames: "None"``): every
    ``frame_interval``-th file to the end, (n - 1) // s + 1 frames, no padding.

    An integer ``max_frames`` is the short entrance: files 0, s, ..., s*(max_frames - 1) if
    that many exist; otherwise the interval shrinks to s' = max((n - 1) // (max_frames - 1), 1)
    over the files that exist, and with ``pad`` (the reference, spec quirk 17) the missing
    frames are zero poses up to max_frames. ``pad=False`` truncates instead (fix of spec
    section 16.6). The long entrance's integer-max_frames path is buggy in the reference
    (section 16.4); this rule replaces it. The selection itself is
    :func:`unianimate_cli.media.video.select_frame_indices`.
    """
    rule = SamplingRule.LONG if max_frames is None else SamplingRule.STANDARD
    chosen = select_frame_indices(num_pose_files, frame_interval, max_frames, rule)
    return chosen if pad else [i for i in chosen if i is not None]


# --- Pixel transforms -------------------------------------------------------------------


def resize_bilinear(rgb: np.ndarray, width_px: int, height_px: int) -> np.ndarray:
    """Stretch an 8-bit RGB image (H x W x 3) to exactly ``width_px`` x ``height_px``, Pillow bilinear.

    Pillow's resampler (``media.image.resize_exact``), not torch ``interpolate``: that differs
    by up to 0.0034 on [0, 1].
    """
    from unianimate_cli.media.image import resize_exact

    return resize_exact(np.ascontiguousarray(rgb, dtype=np.uint8), width_px, height_px)


def to_unit_tensor(rgb: np.ndarray) -> torch.Tensor:
    """uint8 H x W x 3 -> float32 [3, H, W] in [0, 1] (torchvision ``ToTensor``)."""
    return torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1).contiguous().to(torch.float32).div(255)


def clip_input(photo_rgb: np.ndarray) -> torch.Tensor:
    """The CLIP image encoder input [1, 3, 224, 224]: squashed to 224x224, CLIP mean/std."""
    x = to_unit_tensor(resize_bilinear(photo_rgb, CLIP_INPUT_SIZE, CLIP_INPUT_SIZE))
    mean = torch.tensor(CLIP_MEAN, dtype=x.dtype)[:, None, None]
    std = torch.tensor(CLIP_STD, dtype=x.dtype)[:, None, None]
    return x.sub(mean).div(std).unsqueeze(0)


def reference_pixels(photo_rgb: np.ndarray, width_px: int, height_px: int) -> torch.Tensor:
    """The reference image at the model resolution: [1, 3, H, W] in [0, 1]."""
    return to_unit_tensor(resize_bilinear(photo_rgb, width_px, height_px)).unsqueeze(0)


def local_image_tensor(ref_pixels: torch.Tensor, num_frames: int) -> torch.Tensor:
    """``local_image``: the reference pixels [b,3,H,W] in [0,1] repeated to [b,3,f,H,W]."""
    return ref_pixels.unsqueeze(2).repeat(1, 1, num_frames, 1, 1)


def vae_input(ref_pixels: torch.Tensor) -> torch.Tensor:
    """What the VAE encodes for ``randomref``: [b,3,H,W] from [0,1] to [-1,1] as (x - 0.5) / 0.5."""
    return ref_pixels.sub(0.5).div(0.5)


def randomref_tensor(ref_latent: torch.Tensor, num_frames: int) -> torch.Tensor:
    """``randomref``: the scaled reference latent [b,4,h,w] repeated to [b,4,f,h,w]."""
    return ref_latent.unsqueeze(2).repeat(1, 1, num_frames, 1, 1)


def pose_tensor(
    ref_pose_rgb: np.ndarray,
    pose_frames_rgb: Sequence[np.ndarray | None],
    width_px: int,
    height_px: int,
) -> torch.Tensor:
    """``dwpose`` [1, 3, f+1, H, W] in [0, 1]: the reference pose, then one frame per entry.

    A None entry is an all-zero (black) pose, as the short entrance pads.
    """
    frames = [to_unit_tensor(resize_bilinear(ref_pose_rgb, width_px, height_px))]
    for rgb in pose_frames_rgb:
        if rgb is None:
            frames.append(torch.zeros(3, height_px, width_px, dtype=torch.float32))
        else:
            frames.append(to_unit_tensor(resize_bilinear(rgb, width_px, height_px)))
    return torch.stack(frames, dim=1).unsqueeze(0)


def selected_pose_frames(
    poses_rgb: Sequence[np.ndarray], selection: Sequence[int | None]
) -> list[np.ndarray | None]:
    """Pick the pose images named by :func:`select_pose_frames` (None stays None)."""
    return [None if i is None else poses_rgb[i] for i in selection]


# --- Whole clip ------------------------------------------------------------------------


def build_conditions(
    photo_rgb: np.ndarray,
    ref_pose_rgb: np.ndarray,
    pose_frames_rgb: Sequence[np.ndarray | None],
    width_px: int,
    height_px: int,
    encode_image: Callable[[torch.Tensor], torch.Tensor],
    encode_latent: Callable[[torch.Tensor], torch.Tensor],
) -> Conditions:
    """Every condition of one clip, as the reference's ``worker`` builds them.

    ``pose_frames_rgb`` has one entry per generated frame (None = zero pose), e.g.
    ``selected_pose_frames(poses, select_pose_frames(...))``. ``encode_image`` maps the CLIP
    input [1,3,224,224] to an embedding [1,1024] (``ClipImageEncoder.encode_image``);
    ``encode_latent`` maps the VAE input [1,3,H,W] in [-1,1] to the scaled latent [1,4,h,w]
    (``encode_to_latent(vae, x, generator)``: the reference uses a posterior sample, drawn
    before the prior noise). Tensors are float32 on the CPU except what the encoders return.
    """
    num_frames = len(pose_frames_rgb)
    if num_frames < 1:
        raise InputError("no pose frames to animate", "give at least one driving frame")
    pixels = reference_pixels(photo_rgb, width_px, height_px)
    with torch.no_grad():
        embedding = encode_image(clip_input(photo_rgb))
        latent = encode_latent(vae_input(pixels))
    return Conditions(
        image=embedding.reshape(embedding.shape[0], 1, -1),
        local_image=local_image_tensor(pixels, num_frames),
        dwpose=pose_tensor(ref_pose_rgb, pose_frames_rgb, width_px, height_px),
        randomref=randomref_tensor(latent, num_frames),
    )


def match_color_statistics(pixels: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Give ``pixels`` [..., 3, H, W] the per-channel mean and std of ``reference`` [..., 3, H', W'].

    For continuation (``extend``): applied to a hand-over frame before it becomes the next
    segment's reference, it counters the slow colour drift of many chained segments. Not a
    reference behaviour; off unless the caller asks for it. Any value range; no clamping.
    """
    dims = (-2, -1)
    mean, std = pixels.mean(dim=dims, keepdim=True), pixels.std(dim=dims, keepdim=True)
    ref_mean, ref_std = reference.mean(dim=dims, keepdim=True), reference.std(dim=dims, keepdim=True)
    return (pixels - mean) / std.clamp_min(1e-6) * ref_std + ref_mean
