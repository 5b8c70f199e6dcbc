"""DDIM sampling (eta = 0) for a v-prediction denoiser, step for step like the reference.

Song et al. 2021, "Denoising Diffusion Implicit Models", eq. 12 with sigma = 0; the
v-parameterisation of Salimans & Ho 2022, "Progressive Distillation", section 4. Facts from
``tools/modules/diffusions/diffusion_ddim.py`` (``ddim_sample``, ``ddim_sample_loop``,
``p_mean_variance``) of ali-vilab/UniAnimate 643c963; spec section 9.

| symbol     | name here        | meaning                                                        |
| ---------- | ---------------- | -------------------------------------------------------------- |
| t          | ``t``            | integer timestep in 0..999 (what the UNet receives, int64)     |
| x_t        | ``x_t``          | noisy latent at t, [b, 4, f, h, w]                             |
| ᾱ_t        | ``alpha_bar``    | ``alphas_cumprod[t]`` (float64 table, cast per step)           |
| v          | ``v``            | the denoiser's guided output, √ᾱ_t·ε − √(1−ᾱ_t)·x_0            |
| x̂_0        | ``x0_pred``      | √ᾱ_t·x_t − √(1−ᾱ_t)·v                                          |
| ε̂          | ``eps``          | (√(1/ᾱ_t)·x_t − x̂_0) / √(1/ᾱ_t − 1)                            |
| t_prev     | ``t_prev``       | max(t − stride, 0): index of ᾱ_prev                            |
| x_{t_prev} | ``x_prev``       | √ᾱ_prev·x̂_0 + √(1−ᾱ_prev)·ε̂   (σ = 0: eta 0, no noise term)    |

Numerics kept for parity: table values are float64, each cast to the latent's dtype before
it multiplies; all arithmetic on latents is in that dtype; no clamping of x̂_0. The reference
also draws an unused ``randn_like`` per step (multiplied by σ = 0); we draw nothing, so a
step is a pure function of (x_t, t) and a resumed run needs no RNG state (spec 16.7).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from unianimate_cli.sampling.schedule import DDIMStep, NoiseSchedule

logger = logging.getLogger(__name__)

Denoiser = Callable[[torch.Tensor, int], torch.Tensor]
"""(x_t [b,4,f,h,w], t) -> guided v of the same shape."""


@dataclass(frozen=True)
class StepState:
    """What the per-step callback receives after step ``index`` (0-based) has finished.

    ``x`` is the latent after this step (x_{t_prev}): together with ``completed_steps`` it is
    the whole sampler state. Resume with ``ddim_sample(..., x_t=x, start_step=completed_steps)``.
    """

    index: int
    num_steps: int
    t: int
    t_prev: int
    x: torch.Tensor
    x0_pred: torch.Tensor
    v: torch.Tensor

    @property
    def completed_steps(self) -> int:
        return self.index + 1

    @property
    def is_last(self) -> bool:
        return self.index + 1 == self.num_steps


StepCallback = Callable[[StepState], None]


def ddim_step(
    schedule: NoiseSchedule, x_t: torch.Tensor, v: torch.Tensor, step: DDIMStep
) -> tuple[torch.Tensor, torch.Tensor]:
    """One deterministic DDIM step from t to t_prev. Returns (x_prev, x0_pred), like x_t."""
    t, t_prev = step.t, step.t_prev
    # 1. x̂_0 from the v-prediction.
    x0_pred = schedule.coef(schedule.sqrt_alphas_cumprod, t, x_t) * x_t - schedule.coef(
        schedule.sqrt_one_minus_alphas_cumprod, t, x_t
    ) * v
    # 2. ε̂ from x_t and x̂_0 (the reference's form; the algebraically equal √ᾱ·v + √(1−ᾱ)·x_t
    #    differs by <= 2e-6 per step and would break bit-exactness).
    eps = (schedule.coef(schedule.sqrt_recip_alphas_cumprod, t, x_t) * x_t - x0_pred) / schedule.coef(
        schedule.sqrt_recipm1_alphas_cumprod, t, x_t
    )
    # 3. Move to ᾱ_prev; its square roots are taken in the latent dtype, from the cast ᾱ_prev.
    alpha_bar_prev = schedule.coef(schedule.alphas_cumprod, t_prev, x_t)
    x_prev = torch.sqrt(alpha_bar_prev) * x0_pred + torch.sqrt(1 - alpha_bar_prev) * eps
    return x_prev, x0_pred


def ddim_sample(
    denoiser: Denoiser,
    x_t: torch.Tensor,
    steps: Sequence[DDIMStep],
    schedule: NoiseSchedule,
    callback: StepCallback | None = None,
    start_step: int = 0,
) -> torch.Tensor:
    """Run ``steps[start_step:]`` from ``x_t`` and return the final latent.

    ``x_t`` is x_T when ``start_step`` is 0, otherwise the ``x`` a callback reported after
    step ``start_step - 1``. ``steps`` comes from ``schedule.sampling_timesteps``. The
    callback runs after every step (see :class:`StepState`); an exception it raises (e.g.
    KeyboardInterrupt) stops sampling with the last reported state intact.
    """
    if not 0 <= start_step <= len(steps):
        raise ValueError(f"start_step {start_step} is outside 0..{len(steps)}")
    x = x_t
    with torch.no_grad():
        for index in range(start_step, len(steps)):
            step = steps[index]
            v = denoiser(x, step.t)
            x, x0_pred = ddim_step(schedule, x, v, step)
            logger.debug("ddim step %d/%d t=%d -> %d", index + 1, len(steps), step.t, step.t_prev)
            if callback is not None:
                callback(StepState(index, len(steps), step.t, step.t_prev, x, x0_pred, v))
    return x
