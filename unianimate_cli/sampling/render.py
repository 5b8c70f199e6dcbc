"""High-level sampling for the animate/extend stages: one clip's latents, resumable.

No file I/O here: the stage persists :class:`ResumeState` through the ``on_step`` callback
and hands it back through ``resume``.

Resume contract
---------------
The sampler state after ``k`` finished DDIM steps is exactly ``(k, x_t)``: steps draw no
random numbers (spec 16.7) and the frame windows are the same at every step (the opt-in
DPM-Solver++(2M) also needs the last step's x̂_0: ``ResumeState.x0_prev``). So:

1. In ``on_step(state)``, persist ``ResumeState.from_step(state, plan, keeps_x0(params))`` (e.g. via
   ``to_tensors()`` into a safetensors file written atomically) every N steps and after the
   last one. ``state.x`` is the latent *after* step ``state.index``.
2. To resume, load it (``ResumeState.from_tensors``) and call ``render_latents`` with the
   same unet, conditions, x_T and params and ``resume=state``. Steps ``0..k-1`` are not
   recomputed; the result is bit-identical to an uninterrupted run on the same device,
   thread count and ``window_batch_size`` (batching changes float rounding).
3. ``ResumeState`` records the visited timesteps; a state from another plan (other step
   count) or another latent shape is refused with ValueError. Tying it to the render's
   inputs (weights, conditions, seed) is the stage key's job.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

from unianimate_cli.distributed import DistContext
from unianimate_cli.errors import InputError
from unianimate_cli.sampling.conditions import Conditions, Variant
from unianimate_cli.sampling.ddim import StepState, ddim_sample
from unianimate_cli.sampling.denoiser import DEFAULT_GUIDE_SCALE, GuidedDenoiser, VideoUNet
from unianimate_cli.sampling.schedule import (
    DDIMStep,
    NoisePrior,
    NoiseSchedule,
    TerminalStep,
    apply_noise_prior,
    draw_prior_noise,
    sampling_timesteps,
)
from unianimate_cli.sampling.windows import Window, context_windows

logger = logging.getLogger(__name__)


#: Samplers of :class:`RenderParams`: the reference's DDIM, and DPM-Solver++(2M) (``sampling.dpm``).
SAMPLERS = ("ddim", "dpm++2m")


@dataclass(frozen=True)
class RenderParams:
    """Sampling settings of one clip; defaults are the reference's.

    ``num_steps`` is the reference's ``ddim_timesteps`` (30 runs 31 model steps).
    Clips of at most ``context_size`` frames are sampled in one window (the short sampler);
    longer ones in overlapping windows. ``window_batch_size`` only trades memory for speed.
    """

    num_steps: int = 30
    guide_scale: float = DEFAULT_GUIDE_SCALE
    variant: Variant = Variant.B
    context_size: int = 32
    context_overlap: int = 8
    context_stride: int = 1
    window_batch_size: int = 1
    terminal_step: TerminalStep = TerminalStep.ERROR
    #: Conditional + unconditional pass in one UNet call: True, False, or None = when the
    #: device's free memory allows it (``runtime.choose_guidance_batching``; never on the CPU).
    batch_guidance: bool | None = None
    #: "ddim" (the reference's) or "dpm++2m" (opt-in: DPM-Solver++(2M), for fewer steps).
    sampler: str = "ddim"


@dataclass(frozen=True)
class ResumeState:
    """The sampler state to checkpoint: the latent after ``completed_steps`` steps.

    ``x0_prev`` (the last step's x̂_0) is kept for samplers whose next step needs it
    (DPM-Solver++(2M)); DDIM's state is ``x_t`` alone.
    """

    completed_steps: int
    x_t: torch.Tensor
    timesteps: tuple[int, ...]
    x0_prev: torch.Tensor | None = None

    @classmethod
    def from_step(cls, state: StepState, plan: list[DDIMStep], keep_x0: bool = False) -> ResumeState:
        return cls(state.completed_steps, state.x, tuple(s.t for s in plan), state.x0_pred if keep_x0 else None)

    @property
    def is_finished(self) -> bool:
        return self.completed_steps == len(self.timesteps)

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """Flat tensors for a safetensors checkpoint."""
        out = {
            "x_t": self.x_t.detach().cpu().contiguous(),
            "completed_steps": torch.tensor(self.completed_steps, dtype=torch.int64),
            "timesteps": torch.tensor(self.timesteps, dtype=torch.int64),
        }
        if self.x0_prev is not None:
            out["x0_prev"] = self.x0_prev.detach().cpu().contiguous()
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> ResumeState:
        return cls(
            int(tensors["completed_steps"]),
            tensors["x_t"],
            tuple(int(t) for t in tensors["timesteps"].tolist()),
            tensors.get("x0_prev"),
        )


def keeps_x0(params: RenderParams) -> bool:
    """Whether ``params``'s sampler needs ``ResumeState.x0_prev`` to resume."""
    return params.sampler == "dpm++2m"


def plan_steps(params: RenderParams) -> list[DDIMStep]:
    """The DDIM steps ``params`` run (InputError for a step count that would give NaN)."""
    return sampling_timesteps(params.num_steps, params.terminal_step)


def plan_windows(num_frames: int, params: RenderParams) -> list[Window]:
    """The frame windows evaluated at every step for a clip of ``num_frames``."""
    return context_windows(num_frames, params.context_size, params.context_overlap, params.context_stride)


def make_initial_latent(
    ref_latent: torch.Tensor,
    generator: torch.Generator,
    prior: NoisePrior = NoisePrior(),
    schedule: NoiseSchedule | None = None,
) -> torch.Tensor:
    """x_T for a clip: draw eps then the offset noise on ``generator`` (CPU), apply the prior.

    ``ref_latent`` is randomref [b,4,f,h,w] (float32, CPU or the sampling device); x_T is on
    its device. The full-length noise is drawn once; a checkpointed x_t carries it onward.
    """
    schedule = schedule or NoiseSchedule.official()
    b, c, f, h, w = ref_latent.shape
    eps, offset = draw_prior_noise((b, c, f, h, w), generator)
    eps = eps.to(device=ref_latent.device, dtype=ref_latent.dtype)
    offset = offset.to(device=ref_latent.device, dtype=ref_latent.dtype)
    return apply_noise_prior(schedule, ref_latent, eps, offset, prior)


def render_latents(
    unet: VideoUNet,
    conditions: Conditions,
    x_T: torch.Tensor,
    params: RenderParams = RenderParams(),
    on_step: Callable[[StepState], None] | None = None,
    resume: ResumeState | None = None,
    schedule: NoiseSchedule | None = None,
    on_window: Callable[[int, int], None] | None = None,
    dist: DistContext | None = None,
) -> torch.Tensor:
    """Sample one clip (any length: one window or overlapping windows) and return its latents.

    ``conditions`` hold every available condition for the whole clip; ``params.variant``
    picks the ones the conditional pass gets. ``x_T`` [b,4,f,h,w] is the initial latent
    (:func:`make_initial_latent`). ``on_step`` runs after each DDIM step; ``resume``
    continues from a saved state (see the module docstring); ``on_window(done, total)``
    reports windows finished within the current step (this rank's, with ``dist``). Returns
    [b,4,f,h,w], to be decoded after ×1/0.18215.

    ``dist`` (world size > 1) splits the windows of every step across the ranks
    (:class:`GuidedDenoiser`); every rank must call with the same arguments (x_T broadcast
    from rank 0, the same ``resume``) and gets the same latents, equal to a single-process
    render bit for bit where the per-window UNet outputs are. ``on_step`` still runs on every
    rank: pass it on rank 0 alone where it writes files.
    """
    schedule = schedule or NoiseSchedule.official()
    variant = Variant(params.variant)
    missing = conditions.missing(variant)
    if missing:
        raise InputError(
            f"variant {variant.value} needs the conditions {missing}, which were not built",
            "build every condition of the variant before sampling",
        )
    plan = plan_steps(params)
    windows = plan_windows(int(x_T.shape[2]), params)
    denoiser = GuidedDenoiser(
        unet,
        conditions.select(variant),
        guide_scale=params.guide_scale,
        windows=windows,
        window_batch_size=params.window_batch_size,
        on_batch=on_window,
        dist=dist,
        batch_guidance=_batch_guidance(params, windows, x_T, unet),
    )
    if params.sampler not in SAMPLERS:
        raise InputError(f"unknown sampler {params.sampler!r}", f"use one of {', '.join(SAMPLERS)}")
    x, start, x0_prev = x_T, 0, None
    if resume is not None:
        _check_resume(resume, plan, x_T)
        if keeps_x0(params) and resume.completed_steps and resume.x0_prev is None:
            logger.warning("the saved state lacks the %s sampler's x0 prediction; sampling again from step 1", params.sampler)
        else:
            x, start = resume.x_t.to(device=x_T.device, dtype=x_T.dtype), resume.completed_steps
            if resume.x0_prev is not None and keeps_x0(params):
                x0_prev = resume.x0_prev.to(device=x_T.device, dtype=x_T.dtype)
            logger.info("resuming sampling after step %d of %d", start, len(plan))
    if params.sampler == "dpm++2m":
        from unianimate_cli.sampling.dpm import dpm_solver_2m_sample

        return dpm_solver_2m_sample(denoiser, x, plan, schedule, callback=on_step, start_step=start, x0_prev=x0_prev)
    logger.debug("sampling %d frames in %d window(s), %d steps", x_T.shape[2], len(windows), len(plan))
    return ddim_sample(denoiser, x, plan, schedule, callback=on_step, start_step=start)


def resolve_batch_guidance(params: RenderParams, x_T: torch.Tensor, unet: object) -> RenderParams:
    """``params`` with ``batch_guidance`` decided (None = by this device's free memory).

    Under torchrun rank 0 decides once and sends the result, so that every rank batches the
    same way and rounds the same way.
    """
    if params.batch_guidance is not None:
        return params
    windows = plan_windows(int(x_T.shape[2]), params)
    return dataclasses.replace(params, batch_guidance=_batch_guidance(params, windows, x_T, unet))


def _batch_guidance(params: RenderParams, windows: list[Window], x_T: torch.Tensor, unet: object) -> bool:
    """``params.batch_guidance``, or when None whether the device's free memory allows batching."""
    if params.batch_guidance is not None:
        return params.batch_guidance
    from unianimate_cli.runtime import choose_guidance_batching, sampling_memory_budget

    frames_per_call = max(len(w) for w in windows) * params.window_batch_size
    latent_hw = (int(x_T.shape[3]), int(x_T.shape[4]))
    chosen = choose_guidance_batching(x_T.device, frames_per_call, latent_hw, sampling_memory_budget(x_T.device, unet))
    logger.debug("guidance batched into one UNet call: %s", chosen)
    return chosen


def _check_resume(resume: ResumeState, plan: list[DDIMStep], x_T: torch.Tensor) -> None:
    timesteps = tuple(s.t for s in plan)
    if resume.timesteps != timesteps:
        raise ValueError(f"resume state is for timesteps {resume.timesteps[:3]}..., not {timesteps[:3]}...")
    if tuple(resume.x_t.shape) != tuple(x_T.shape):
        raise ValueError(f"resume latent has shape {list(resume.x_t.shape)}, expected {list(x_T.shape)}")
    if not 0 <= resume.completed_steps <= len(plan):
        raise ValueError(f"resume state claims {resume.completed_steps} of {len(plan)} steps")
