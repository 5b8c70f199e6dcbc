"""UNet + Conditions + classifier-free guidance -> one callable (x_t, t) -> v, windows averaged.

Facts from ``tools/modules/diffusions/diffusion_ddim.py`` of ali-vilab/UniAnimate 643c963
(``DiffusionDDIM.p_mean_variance`` and ``DiffusionDDIMLong.p_mean_variance``), spec sections
6 and 10:

* Conditional pass: the selected conditions; unconditional pass: every condition None (the
  UNet then uses a zero concat, a zero reference frame and zero image tokens; zero_y stays).
* Guidance on v over all channels: v = v_u + s·(v_c − v_u), s = 2.5 by default.
* Windowed evaluation: each window sees x[:, :, c] and its own conditions
  (:meth:`Conditions.for_window`); the conditional and unconditional outputs are summed per
  frame in window order and divided by the number of covering windows, separately, and the
  guidance is applied to the two averages. One window covering every frame in order is the
  short sampler, bit for bit.

Batching: ``window_batch_size`` > 1 stacks windows along the batch axis of one UNet call per
branch (the reference's ``context_batch_size``); same math, different float rounding (about
2e-6 relative, fixture ``long_tiny`` ``cbs3``). ``batch_guidance`` stacks the conditional and
unconditional branches into one UNet call of twice the batch, the unconditional half marked
by the UNet's ``has_condition`` mask (the UNet's None, an absent condition, is not a zero
tensor, so the mask, not zeros, makes those items unconditional): same math, batched
rounding, about 1.1x faster per step on an H100 and twice the activations
(``runtime.choose_guidance_batching`` decides from free memory).

Condition features: a UNet with ``condition_features`` (``UniAnimateUNet``) gets the
pose/reference-image features and image tokens of each window computed once, at the first
step, and reused at every later step (``features=``); they depend on neither x_t nor t, so
the result is the same bit for bit, and conditions kept on the CPU move to the device once.

Several ranks (``dist``, a :class:`~unianimate_cli.distributed.DistContext` of world size > 1,
every rank running the same sampling loop on the same ``x_t``): window ``i`` is evaluated by
rank ``i mod W`` (:func:`~unianimate_cli.distributed.shard_indices`), in UNet batches of
that rank's windows. The per-window outputs are then all-gathered, and every rank sums them
per frame in window order, divides and guides exactly as one process does. So every rank ends
each step with the same v, and the result equals the single-process one bit for bit when the
per-window UNet outputs do (same device type, thread count and ``window_batch_size`` 1;
batching other window groups changes rounding as above). The gather moves
2·(number of windows)·b·4·window·h·w values per step, about 6 MB per window at 512x768
float32 (b 1, 32 frames): small next to a window's UNet passes. Summing on each rank and
all-reducing would move about as much and round in the backend's order, so we gather.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from unianimate_cli.distributed import DistContext, shard_indices
from unianimate_cli.models.unet import guided_pair_features
from unianimate_cli.sampling.conditions import Conditions
from unianimate_cli.sampling.windows import Window, batch_windows

logger = logging.getLogger(__name__)

DEFAULT_GUIDE_SCALE = 2.5


class VideoUNet(Protocol):
    """What the denoiser needs of the UNet (``UniAnimateUNet`` meets it)."""

    def __call__(self, x: torch.Tensor, t: torch.Tensor, **conditions: torch.Tensor | None) -> torch.Tensor:
        """x [b,4,f,h,w], t int64 [b], conditions image/local_image/dwpose/randomref -> v."""
        ...


@dataclass(frozen=True)
class GuidedOutput:
    """One evaluation: averaged conditional / unconditional v and the guided v, [b,c,f,h,w]."""

    v_cond: torch.Tensor
    v_uncond: torch.Tensor
    v: torch.Tensor


@dataclass(frozen=True)
class WindowOutput:
    """The raw UNet outputs of one window (for parity checks and debugging)."""

    window: Window
    v_cond: torch.Tensor
    v_uncond: torch.Tensor


def guide(v_cond: torch.Tensor, v_uncond: torch.Tensor, guide_scale: float) -> torch.Tensor:
    """Classifier-free guidance on v: v_u + s·(v_c − v_u) (Ho & Salimans 2022, eq. 6)."""
    return v_uncond + guide_scale * (v_cond - v_uncond)


class GuidedDenoiser:
    """Callable (x_t [b,4,f,h,w], t) -> guided v, evaluating the UNet on frame windows.

    ``conditions`` are the already selected conditional inputs (e.g.
    ``full.select(Variant.B)``) for the whole clip; ``windows`` defaults to one window of
    every frame (the short sampler). ``on_windows``, if given, receives every window's raw
    outputs at each evaluation; ``on_batch(windows_done, num_windows)`` runs after each UNet
    batch (progress within a step). ``unet_calls`` counts UNet forward calls.

    With ``dist`` of world size > 1 this rank evaluates only its share of the windows (see
    the module docstring): ``on_batch`` then counts this rank's windows, ``unet_calls`` this
    rank's calls, and ``on_windows`` still receives every window's outputs, on every rank.
    Every rank must call with the same ``x_t`` and ``t`` (checked on the first call).
    """

    def __init__(
        self,
        unet: VideoUNet,
        conditions: Conditions,
        guide_scale: float = DEFAULT_GUIDE_SCALE,
        windows: Sequence[Window] | None = None,
        window_batch_size: int = 1,
        on_windows: Callable[[int, list[WindowOutput]], None] | None = None,
        on_batch: Callable[[int, int], None] | None = None,
        dist: DistContext | None = None,
        batch_guidance: bool = False,
        cache_features: bool = True,
    ) -> None:
        self.unet = unet
        self.conditions = conditions
        self.guide_scale = float(guide_scale)
        self.windows = None if windows is None else [list(w) for w in windows]
        self.window_batch_size = window_batch_size
        self.on_windows = on_windows
        self.on_batch = on_batch
        self.unet_calls = 0
        self.uncond = Conditions()
        self.dist = dist if dist is not None and dist.is_distributed else None
        self._ranks_checked = False
        # Both fast paths need UniAnimateUNet's condition_features/features= API.
        self._has_features = callable(getattr(unet, "condition_features", None))
        self.batch_guidance = bool(batch_guidance) and self._has_features
        if batch_guidance and not self._has_features:
            logger.debug("this UNet has no condition_features; guidance runs as two calls")
        self.cache_features = bool(cache_features) and self._has_features
        self._features: dict[tuple[tuple[int, ...], ...], tuple[Any, ...]] = {}

    def __call__(self, x_t: torch.Tensor, t: int) -> torch.Tensor:
        return self.evaluate(x_t, t).v

    def evaluate(self, x_t: torch.Tensor, t: int) -> GuidedOutput:
        """Both branches, averaged over windows, and the guided v."""
        num_frames = x_t.shape[2]
        windows = self.windows if self.windows is not None else [list(range(num_frames))]
        _check_windows(windows, num_frames)
        self.conditions.check(x_t.shape)
        if self.conditions.is_unconditional:
            raise ValueError("the conditional pass has no conditions; select a variant's keys first")
        if self.dist is not None:
            return self._evaluate_sharded(x_t, t, windows, self.dist)
        batch = x_t.shape[0]
        sum_cond = torch.zeros_like(x_t)
        sum_uncond = torch.zeros_like(x_t)
        counter = torch.zeros((1, 1, num_frames, 1, 1), dtype=x_t.dtype, device=x_t.device)
        seen: list[WindowOutput] = []
        done = 0
        with torch.no_grad():
            for group in batch_windows(list(windows), self.window_batch_size):
                x_in = torch.cat([x_t[:, :, c] for c in group])
                t_in = torch.full((x_in.shape[0],), t, dtype=torch.long, device=x_t.device)
                out_cond, out_uncond = self._branches(group, x_in, t_in)
                for j, c in enumerate(group):
                    part_c = out_cond[j * batch : (j + 1) * batch]
                    part_u = out_uncond[j * batch : (j + 1) * batch]
                    # Same indexed read-add-write as the reference, so a window listing a
                    # frame twice (dilated wrap-around) behaves as there: one write is kept
                    # and the frame counts once for that window.
                    sum_cond[:, :, c] = sum_cond[:, :, c] + part_c
                    sum_uncond[:, :, c] = sum_uncond[:, :, c] + part_u
                    counter[:, :, c] = counter[:, :, c] + 1
                    if self.on_windows is not None:
                        seen.append(WindowOutput(list(c), part_c, part_u))
                done += len(group)
                if self.on_batch is not None:
                    self.on_batch(done, len(windows))
        if self.on_windows is not None:
            self.on_windows(t, seen)
        v_cond = sum_cond / counter
        v_uncond = sum_uncond / counter
        return GuidedOutput(v_cond, v_uncond, guide(v_cond, v_uncond, self.guide_scale))

    def _branches(self, group: list[Window], x_in: torch.Tensor, t_in: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(conditional, unconditional) UNet outputs for the windows ``group`` stacked in ``x_in``."""
        key = tuple(tuple(c) for c in group)
        cached = self._features.get(key)
        if cached is None:
            # Conditions may live on the CPU (offload): only the window's slice moves.
            cond = Conditions.concat([self.conditions.for_window(c) for c in group]).to(x_in.device)
            if self.batch_guidance:
                cached = (guided_pair_features(self.unet, x_in, cond.unet_kwargs()),)  # type: ignore[arg-type]
            elif self._has_features:
                cached = (
                    self.unet.condition_features(x_in, **cond.unet_kwargs()),  # type: ignore[attr-defined]
                    self.unet.condition_features(x_in, **self.uncond.unet_kwargs()),  # type: ignore[attr-defined]
                )
            else:
                cached = (cond.unet_kwargs(), self.uncond.unet_kwargs())
            if self.cache_features:
                self._features[key] = cached
        if self.batch_guidance:
            self.unet_calls += 1
            batch = x_in.shape[0]
            out = self.unet(torch.cat([x_in, x_in]), torch.cat([t_in, t_in]), features=cached[0])
            return out[:batch], out[batch:]
        self.unet_calls += 2
        if self._has_features:
            return self.unet(x_in, t_in, features=cached[0]), self.unet(x_in, t_in, features=cached[1])
        return self.unet(x_in, t_in, **cached[0]), self.unet(x_in, t_in, **cached[1])

    def _evaluate_sharded(self, x_t: torch.Tensor, t: int, windows: list[Window], ctx: DistContext) -> GuidedOutput:
        """:meth:`evaluate` with this rank's windows only; outputs gathered, summed in window order."""
        if not self._ranks_checked:
            _check_same_input(x_t, t, ctx)
            self._ranks_checked = True
        batch = x_t.shape[0]
        mine = [windows[i] for i in shard_indices(len(windows), ctx.rank, ctx.world_size)]
        local: list[torch.Tensor] = []
        done = 0
        with torch.no_grad():
            for group in batch_windows(mine, self.window_batch_size) if mine else []:
                x_in = torch.cat([x_t[:, :, c] for c in group])
                t_in = torch.full((x_in.shape[0],), t, dtype=torch.long, device=x_t.device)
                out_cond, out_uncond = self._branches(group, x_in, t_in)
                for j in range(len(group)):
                    local.append(out_cond[j * batch : (j + 1) * batch].reshape(-1))
                    local.append(out_uncond[j * batch : (j + 1) * batch].reshape(-1))
                done += len(group)
                if self.on_batch is not None:
                    self.on_batch(done, len(mine))
            outputs = _gather_window_outputs(local, x_t, windows, ctx)
            sum_cond = torch.zeros_like(x_t)
            sum_uncond = torch.zeros_like(x_t)
            counter = torch.zeros((1, 1, x_t.shape[2], 1, 1), dtype=x_t.dtype, device=x_t.device)
            seen: list[WindowOutput] = []
            for c, (part_c, part_u) in zip(windows, outputs):
                # The same ops in the same order as the single-process loop above.
                sum_cond[:, :, c] = sum_cond[:, :, c] + part_c
                sum_uncond[:, :, c] = sum_uncond[:, :, c] + part_u
                counter[:, :, c] = counter[:, :, c] + 1
                if self.on_windows is not None:
                    seen.append(WindowOutput(list(c), part_c, part_u))
        if self.on_windows is not None:
            self.on_windows(t, seen)
        v_cond = sum_cond / counter
        v_uncond = sum_uncond / counter
        return GuidedOutput(v_cond, v_uncond, guide(v_cond, v_uncond, self.guide_scale))


def _window_shape(x_t: torch.Tensor, window: Window) -> tuple[int, ...]:
    b, c, _, h, w = x_t.shape
    return (b, c, len(window), h, w)


def _gather_window_outputs(
    local: list[torch.Tensor], x_t: torch.Tensor, windows: list[Window], ctx: DistContext
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(v_cond, v_uncond) of every window, in window order, from every rank's flat outputs.

    ``local`` holds this rank's windows' outputs flattened, cond then uncond per window. Each
    rank's share and sizes follow from the windows alone, so the packs are padded to the
    largest share without another exchange.
    """
    sizes = [2 * math.prod(_window_shape(x_t, w)) for w in windows]
    shares = [list(shard_indices(len(windows), r, ctx.world_size)) for r in range(ctx.world_size)]
    longest = max(sum(sizes[i] for i in share) for share in shares)
    pack = torch.zeros(longest, dtype=x_t.dtype, device=x_t.device)
    if local:
        flat = torch.cat(local)
        pack[: flat.numel()] = flat
    packs = ctx.all_gather(pack)
    outputs: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(windows)
    for rank, share in enumerate(shares):
        offset = 0
        for i in share:
            shape = _window_shape(x_t, windows[i])
            half = sizes[i] // 2
            part_c = packs[rank][offset : offset + half].view(shape)
            part_u = packs[rank][offset + half : offset + sizes[i]].view(shape)
            outputs[i] = (part_c, part_u)
            offset += sizes[i]
    return [o for o in outputs if o is not None]


def _check_same_input(x_t: torch.Tensor, t: int, ctx: DistContext) -> None:
    """Refuse to start when ranks hold different latents or timesteps (they would never agree).

    Compares a sha256 of x_t's bytes, so it is exact and independent of reduction order.
    """
    raw = x_t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
    digest = (t, tuple(x_t.shape), hashlib.sha256(raw).hexdigest())
    digests = ctx.all_gather_object(digest)
    if len(set(digests)) != 1:
        raise RuntimeError(
            f"rank {ctx.rank}: ranks start sampling from different x_t or t; "
            "draw x_T from the same seed on every rank or broadcast it from rank 0"
        )


def _check_windows(windows: Sequence[Window], num_frames: int) -> None:
    covered = set()
    for window in windows:
        if not window or min(window) < 0 or max(window) >= num_frames:
            raise ValueError(f"window {window} does not fit a clip of {num_frames} frames")
        covered.update(window)
    if len(covered) != num_frames:
        missing = sorted(set(range(num_frames)) - covered)
        raise ValueError(f"frames {missing} are covered by no window")
