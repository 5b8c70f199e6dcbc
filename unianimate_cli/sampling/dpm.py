"""DPM-Solver++(2M) for the v-prediction denoiser: an opt-in faster sampler (fewer steps).

Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic
Models", algorithm 2 (multistep, second order, data prediction). With α_t = √ᾱ_t,
σ_t = √(1 − ᾱ_t) and λ_t = log(α_t / σ_t), each step from t to t_prev with h = λ_prev − λ_t:

    x̂_0 = α_t·x_t − σ_t·v                                (v-prediction, as in ``ddim``)
    D   = x̂_0                                            (first step, or after λ = −∞)
    D   = (1 + 1/(2r))·x̂_0 − 1/(2r)·x̂_0(previous step)   r = h_previous / h
    x_prev = (σ_prev/σ_t)·x_t − α_prev·(e^(−h) − 1)·D

It visits the same timesteps as DDIM for the same step count (``sampling_timesteps``), so
``num_steps`` 15 runs 16 UNet evaluations instead of 31, and starts from the same x_T. Its
first step equals a DDIM step exactly; later ones extrapolate x̂_0 linearly in λ. This is
not the reference's sampler: results differ from the 31-step DDIM by a measured latent
error (docs/PERFORMANCE.md). Its state after ``k`` steps is (x_t, the step's x̂_0): a
checkpoint that holds both (``ResumeState.x0_prev``) resumes it bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from unianimate_cli.sampling.ddim import Denoiser, StepCallback, StepState
from unianimate_cli.sampling.schedule import DDIMStep, NoiseSchedule


def _alpha_sigma(schedule: NoiseSchedule, t: int) -> tuple[float, float]:
    alpha_bar = float(schedule.alphas_cumprod[t])
    return math.sqrt(alpha_bar), math.sqrt(1.0 - alpha_bar)


def _log_snr(alpha: float, sigma: float) -> float:
    return math.log(alpha / sigma) if alpha > 0 else -math.inf


def _step_h(schedule: NoiseSchedule, step: DDIMStep) -> float:
    """h = λ(t_prev) − λ(t) of one step (infinite from alpha_bar = 0)."""
    alpha, sigma = _alpha_sigma(schedule, step.t)
    alpha_next, sigma_next = _alpha_sigma(schedule, step.t_prev)
    return _log_snr(alpha_next, sigma_next) - _log_snr(alpha, sigma)


def dpm_solver_2m_sample(
    denoiser: Denoiser,
    x_t: torch.Tensor,
    steps: Sequence[DDIMStep],
    schedule: NoiseSchedule,
    callback: StepCallback | None = None,
    start_step: int = 0,
    x0_prev: torch.Tensor | None = None,
) -> torch.Tensor:
    """Run DPM-Solver++(2M) over ``steps`` from x_T and return the final latent (like ``ddim_sample``).

    ``callback`` receives a :class:`StepState` after every step, as with DDIM (its ``x0_pred``
    is this step's x̂_0). Coefficients are computed in float64 and cast once per step. To
    resume after ``start_step`` steps, pass the ``x`` and ``x0_pred`` reported for step
    ``start_step - 1`` as ``x_t`` and ``x0_prev``.
    """
    if not 0 <= start_step <= len(steps):
        raise ValueError(f"start_step {start_step} is outside 0..{len(steps)}")
    if start_step and x0_prev is None:
        raise ValueError("resuming DPM-Solver++(2M) needs the previous step's x0 prediction")
    x = x_t
    h_prev = _step_h(schedule, steps[start_step - 1]) if start_step else math.nan
    with torch.no_grad():
        for index in range(start_step, len(steps)):
            step = steps[index]
            v = denoiser(x, step.t)
            alpha, sigma = _alpha_sigma(schedule, step.t)
            alpha_next, sigma_next = _alpha_sigma(schedule, step.t_prev)
            x0 = alpha * x - sigma * v
            h = _log_snr(alpha_next, sigma_next) - _log_snr(alpha, sigma)
            if x0_prev is None or not math.isfinite(h_prev) or not math.isfinite(h):
                d = x0
            else:
                r = h_prev / h
                d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_prev
            if math.isfinite(h):
                x = (sigma_next / sigma) * x - alpha_next * math.expm1(-h) * d
            else:  # from alpha_bar = 0: the limit of the update is alpha_next * x0 + sigma_next * x
                x = sigma_next * x + alpha_next * d
            x0_prev, h_prev = x0, h
            if callback is not None:
                callback(StepState(index, len(steps), step.t, step.t_prev, x, x0, v))
    return x
