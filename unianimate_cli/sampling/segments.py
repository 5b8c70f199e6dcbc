"""Last-frame continuation: split a long pose sequence into segments rendered one after another.

The reference README suggests it, but its code has none (spec section 14); this is our
design, built from the short sampler:

* Segment 0 is a normal clip: reference = the photo, frames ``[0, stop_0)``.
* Segment i > 0 uses the previous segment's **last generated frame** (frame ``start_i - 1``)
  as its reference image and that frame's pose as its reference pose. With ``handover``
  (default) the clip also re-generates frame ``start_i - 1`` as its first frame, driven by
  the same pose as its reference, which anchors the segment to the hand-over frame; that
  first generated frame is dropped. The output therefore holds every frame exactly once:
  no repeated and no dropped frame at a boundary. Without ``handover`` the clip starts
  at ``start_i`` directly.
* Each segment draws its noise from a fresh generator seeded from ``(seed, i)``
  (:func:`segment_generator`), never from one earlier segments advanced, so a resumed
  render equals an uninterrupted one and any segment can be re-rendered alone.
* The CLIP image embedding: the photo's is kept by default (``embedding_mix = 0``), which
  fights identity drift; :func:`mix_image_embedding` can blend in the hand-over frame's.

Recipe for the stage, per ``segment`` of ``plan_segments(...)``:

1. reference image = the photo if ``segment.reference_frame is None``, else decoded output
   frame ``reference_frame`` (optionally ``conditions.match_color_statistics`` to the photo);
   reference pose = the photo's pose, else the pose of frame ``reference_frame``.
2. ``gen = segment_generator(seed, segment.index)``; ``conditions.build_conditions`` with
   poses ``[poses[i] for i in segment.clip_frames]`` and a VAE encoder drawing from ``gen``;
   for i > 0 replace ``image`` by ``mix_image_embedding(photo_embedding, ...)``.
3. ``x_T = render.make_initial_latent(conditions.randomref, gen, prior)`` (same ``gen``, after
   the VAE sample: the reference's draw order), ``render.render_latents(...)``.
4. Decode, drop the first ``segment.drop_first`` frames, append; checkpoint the segment.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from unianimate_cli.errors import InputError


@dataclass(frozen=True)
class Segment:
    """One clip of the continuation plan; frame indices are positions in the output video.

    The clip samples frames ``[clip_start, stop)``; the output keeps ``[start, stop)``
    (``clip_start`` is ``start - 1`` when the hand-over frame is re-generated).
    ``reference_frame`` is the output frame used as reference image (None: the photo).
    """

    index: int
    start: int
    stop: int
    clip_start: int
    reference_frame: int | None

    @property
    def num_clip_frames(self) -> int:
        return self.stop - self.clip_start

    @property
    def num_output_frames(self) -> int:
        return self.stop - self.start

    @property
    def drop_first(self) -> int:
        """How many leading clip frames are not part of the output (0 or 1)."""
        return self.start - self.clip_start

    @property
    def clip_frames(self) -> list[int]:
        """Output-frame (= pose-frame) index of every clip frame."""
        return list(range(self.clip_start, self.stop))


def plan_segments(
    num_frames: int,
    clip_frames: int = 32,
    handover: bool = True,
    first_start: int = 0,
) -> list[Segment]:
    """Cover output frames ``[first_start, num_frames)`` with segments of ``clip_frames`` sampled frames.

    ``first_start > 0`` continues an existing render of ``first_start`` frames (``extend``):
    then even the first segment hands over from frame ``first_start - 1``. Every output frame
    belongs to exactly one segment, in order.
    """
    for name, value, low in (("frame count", num_frames, 1), ("clip frames", clip_frames, 1), ("first frame", first_start, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InputError(f"{name} = {value!r} is not an integer >= {low}")
    if first_start >= num_frames:
        raise InputError(
            f"nothing to render: the video already has {first_start} of {num_frames} frames",
            "give more driving frames to extend it",
        )
    if handover and clip_frames < 2:
        raise InputError(
            "clip frames = 1 leaves no new frame after the hand-over frame",
            "use at least 2 frames per clip",
        )
    segments: list[Segment] = []
    start = first_start
    while start < num_frames:
        index = len(segments)
        has_previous = start > 0
        reference = start - 1 if has_previous else None
        clip_start = start - 1 if (has_previous and handover) else start
        stop = min(clip_start + clip_frames, num_frames)
        segments.append(Segment(index, start, stop, clip_start, reference))
        start = stop
    return segments


def segment_seed(seed: int, index: int) -> int:
    """A 63-bit seed for segment ``index`` of a render seeded with ``seed`` (sha256 of both)."""
    digest = hashlib.sha256(f"unianimate-segment:{int(seed)}:{int(index)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def segment_generator(seed: int, index: int) -> torch.Generator:
    """A fresh CPU generator for segment ``index``: draw the VAE sample, then eps, then offset noise."""
    return torch.Generator(device="cpu").manual_seed(segment_seed(seed, index))


def mix_image_embedding(photo: torch.Tensor, handover: torch.Tensor, mix: float = 0.0) -> torch.Tensor:
    """CLIP embedding [b,1,1024] for a later segment: (1 - mix)·photo + mix·hand-over frame.

    mix = 0 (default) keeps the photo's embedding, so identity does not drift over segments.
    """
    if not 0.0 <= mix <= 1.0:
        raise InputError(f"image embedding mix = {mix} is outside 0..1")
    if mix == 0.0:
        return photo
    return (1.0 - mix) * photo + mix * handover
