"""Noise schedule (float64 tables), the reference's DDIM step list, and the noise prior.

Facts from the UniAnimate reference (ali-vilab/UniAnimate 643c963):
``tools/modules/diffusions/schedules.py`` (``linear_sd_schedule``, ``rescale_zero_terminal_snr``),
``tools/modules/diffusions/diffusion_ddim.py`` (``DiffusionDDIM.__init__``, ``ddim_sample_loop``,
``q_sample``) and the two inference entrances (noise prior). See
``shared/spec/SAMPLING_AND_CONDITIONING.md`` sections 7-9 and 16.1.

Every table is float64, as in the reference; a sampler step indexes a table at an integer
``t`` and casts that single value to the latent's dtype (:meth:`NoiseSchedule.coef`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from enum import Enum
from typing import Literal

import torch

from unianimate_cli.errors import InputError

logger = logging.getLogger(__name__)

NUM_TRAIN_TIMESTEPS = 1000
# The offset-noise weight of the reference's Diffusion block (``noise_strength: 0.1``).
NOISE_STRENGTH = 0.1


@dataclass(frozen=True)
class ScheduleConfig:
    """The reference yaml's ``Diffusion.schedule_param`` (linear_sd, zero terminal SNR)."""

    num_timesteps: int = NUM_TRAIN_TIMESTEPS
    init_beta: float = 0.00085
    last_beta: float = 0.012
    zero_terminal_snr: bool = True


def linear_sd_betas(num_timesteps: int, init_beta: float, last_beta: float) -> torch.Tensor:
    """Stable Diffusion's "scaled linear" betas: linspace of sqrt(beta), squared; float64 [T]."""
    root = torch.linspace(init_beta**0.5, last_beta**0.5, num_timesteps, dtype=torch.float64)
    return root**2


def rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Shift and scale sqrt(alpha_bar) so that alpha_bar_T = 0 and alpha_bar_0 is kept.

    Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed", Algorithm 1;
    the reference applies it in ``schedules.py``. float64 [T] in, float64 [T] out (beta_T = 1).
    """
    sqrt_alpha_bar = torch.cumprod(1 - betas, dim=0).sqrt()
    first = sqrt_alpha_bar[0].clone()
    last = sqrt_alpha_bar[-1].clone()
    sqrt_alpha_bar = sqrt_alpha_bar - last
    sqrt_alpha_bar = sqrt_alpha_bar * (first / (first - last))
    alpha_bar = sqrt_alpha_bar**2
    alphas = torch.cat([alpha_bar[0:1], alpha_bar[1:] / alpha_bar[:-1]])
    return 1 - alphas


def make_betas(config: ScheduleConfig = ScheduleConfig()) -> torch.Tensor:
    """The betas the reference sampler uses: linear_sd, rescaled when max beta is not already 1."""
    betas = linear_sd_betas(config.num_timesteps, config.init_beta, config.last_beta)
    # The reference rescales only if max(beta) differs from 1 by more than 1e-4.
    if config.zero_terminal_snr and abs(float(betas.max()) - 1.0) > 1e-4:
        betas = rescale_zero_terminal_snr(betas)
    return betas


@dataclass(frozen=True)
class NoiseSchedule:
    """Float64 tables indexed by integer t in 0..T-1 (T = 1000).

    ``sqrt_recip_alphas_cumprod`` and ``sqrt_recipm1_alphas_cumprod`` are ``inf`` at t = T-1,
    where alpha_bar = 0 (zero terminal SNR); a step at that t would give NaN.
    """

    betas: torch.Tensor
    alphas_cumprod: torch.Tensor
    sqrt_alphas_cumprod: torch.Tensor
    sqrt_one_minus_alphas_cumprod: torch.Tensor
    sqrt_recip_alphas_cumprod: torch.Tensor
    sqrt_recipm1_alphas_cumprod: torch.Tensor

    @classmethod
    def from_betas(cls, betas: torch.Tensor) -> NoiseSchedule:
        """Derive the tables from betas exactly as ``DiffusionDDIM.__init__`` does (float64)."""
        betas = betas.to(torch.float64)
        alphas_cumprod = torch.cumprod(1 - betas, dim=0)
        return cls(
            betas=betas,
            alphas_cumprod=alphas_cumprod,
            sqrt_alphas_cumprod=torch.sqrt(alphas_cumprod),
            sqrt_one_minus_alphas_cumprod=torch.sqrt(1.0 - alphas_cumprod),
            sqrt_recip_alphas_cumprod=torch.sqrt(1.0 / alphas_cumprod),
            sqrt_recipm1_alphas_cumprod=torch.sqrt(1.0 / alphas_cumprod - 1),
        )

    @classmethod
    def from_config(cls, config: ScheduleConfig = ScheduleConfig()) -> NoiseSchedule:
        return cls.from_betas(make_betas(config))

    @classmethod
    def official(cls) -> NoiseSchedule:
        """The schedule of both reference entrances (linear_sd 0.00085..0.012, zero terminal SNR)."""
        return cls.from_config(ScheduleConfig())

    @property
    def num_timesteps(self) -> int:
        return int(self.betas.shape[0])

    def tables(self) -> dict[str, torch.Tensor]:
        """Every table by its field name (the names the reference's ``DiffusionDDIM`` uses)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def coef(self, table: torch.Tensor, t: int, like: torch.Tensor) -> torch.Tensor:
        """``table[t]`` taken in float64, then cast to ``like``'s dtype and device (0-dim).

        This is the reference's ``_i``: index the float64 table, then cast the single value.
        """
        return table[t].to(device=like.device, dtype=like.dtype)


# --- DDIM step list -------------------------------------------------------------------


def ddim_stride(num_steps: int, num_timesteps: int = NUM_TRAIN_TIMESTEPS) -> int:
    """The spacing between visited timesteps: ``T // num_steps`` (integer division)."""
    _check_num_steps(num_steps, num_timesteps)
    return num_timesteps // num_steps


def ddim_timesteps(num_steps: int, num_timesteps: int = NUM_TRAIN_TIMESTEPS) -> list[int]:
    """The timesteps the reference's ``ddim_sample_loop`` visits, in visiting order.

    Reference quirk kept for parity: the list is ``1 + range(0, T, T // num_steps)``, clamped
    to ``T - 1`` and reversed, so ``num_steps`` is only approximately the number of model
    steps. 30 gives stride 33 and **31** steps (991, 958, ..., 34, 1); 20, 25 and 50 give
    exactly that many. For some ``num_steps`` (3, 9, 27, 36, 37, 101-111, >= 251) the list
    contains t = T-1 = 999, where alpha_bar = 0 and the reference produces NaN; this function
    still returns the reference list (see :func:`sampling_timesteps` for the checked one).
    """
    stride = ddim_stride(num_steps, num_timesteps)
    visited = [min(1 + k, num_timesteps - 1) for k in range(0, num_timesteps, stride)]
    return visited[::-1]


def prev_timestep(t: int, num_steps: int, num_timesteps: int = NUM_TRAIN_TIMESTEPS) -> int:
    """The index of alpha_bar_prev for a step at ``t``: ``max(t - stride, 0)``.

    Reference quirk: the last step (t = 1) moves to alpha_bar_0 = 0.99915, not to alpha_bar = 1,
    so the sampler returns sqrt(0.99915)*x0_pred + sqrt(0.00085)*eps_pred, not x0_pred.
    """
    return max(t - ddim_stride(num_steps, num_timesteps), 0)


def visits_terminal_timestep(num_steps: int, num_timesteps: int = NUM_TRAIN_TIMESTEPS) -> bool:
    """Whether the reference step list for ``num_steps`` reaches t = T-1 (alpha_bar = 0 -> NaN)."""
    return num_timesteps - 1 in ddim_timesteps(num_steps, num_timesteps)


class TerminalStep(str, Enum):
    """What to do when a step count would visit t = 999, where the reference yields NaN.

    ``error`` (default) refuses the step count with an InputError. ``clamp`` evaluates that step
    at t = 998 instead (alpha_bar_998 = 2e-7, finite), keeping its alpha_bar_prev index; a
    documented fix of spec section 16.1 that changes nothing for any step count that works
    in the reference.
    """

    ERROR = "error"
    CLAMP = "clamp"


@dataclass(frozen=True)
class DDIMStep:
    """One DDIM step: evaluate the model at ``t`` and move to alpha_bar[``t_prev``]."""

    t: int
    t_prev: int


def sampling_timesteps(
    num_steps: int,
    terminal: TerminalStep | str = TerminalStep.ERROR,
    num_timesteps: int = NUM_TRAIN_TIMESTEPS,
) -> list[DDIMStep]:
    """The checked step plan for ``num_steps`` requested DDIM steps (see :func:`ddim_timesteps`).

    Raises InputError for a step count outside 1..T, and for one that visits t = T-1 unless
    ``terminal`` is ``clamp``.
    """
    terminal = TerminalStep(terminal)
    steps = [DDIMStep(t, prev_timestep(t, num_steps, num_timesteps)) for t in ddim_timesteps(num_steps, num_timesteps)]
    last = num_timesteps - 1
    if any(s.t == last for s in steps):
        if terminal is TerminalStep.ERROR:
            good = _nearest_safe_step_counts(num_steps, num_timesteps)
            raise InputError(
                f"ddim steps = {num_steps} visits t = {last}, where alpha_bar = 0 and the reference "
                "sampler produces an all-NaN video",
                f"use {' or '.join(str(n) for n in good)} steps instead, or set terminal_step = 'clamp'",
            )
        logger.info("ddim steps = %d visits t = %d; evaluating that step at t = %d", num_steps, last, last - 1)
        steps = [DDIMStep(last - 1, s.t_prev) if s.t == last else s for s in steps]
    return steps


def _check_num_steps(num_steps: int, num_timesteps: int) -> None:
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or not 1 <= num_steps <= num_timesteps:
        raise InputError(
            f"ddim steps = {num_steps!r} is not an integer in 1..{num_timesteps}",
            "use e.g. 30 (the reference default, which runs 31 model steps)",
        )


def _nearest_safe_step_counts(num_steps: int, num_timesteps: int) -> list[int]:
    last = num_timesteps - 1
    safe = []
    for delta in (-1, 1, -2, 2, -3, 3):
        n = num_steps + delta
        if 1 <= n <= num_timesteps and last not in ddim_timesteps(n, num_timesteps):
            safe.append(n)
        if len(safe) == 2:
            break
    return sorted(safe) or [30]


# --- Noise prior ----------------------------------------------------------------------


class OffsetPlacement(str, Enum):
    """Where the 0.1-weighted offset noise enters the initial latent.

    ``inside``: the short entrance adds it to the noise before the prior, so it is scaled by
    sqrt(1 - alpha_bar). ``after``: the long entrance adds it, unscaled, after the prior.
    """

    INSIDE = "inside"
    AFTER = "after"


@dataclass(frozen=True)
class NoisePrior:
    """The reference's initial latent: the reference latent noised to ``t`` (below the first step).

    short entrance: t = 949, offset inside; long entrance: t = 939, offset after.
    """

    t: int = 949
    offset: OffsetPlacement = OffsetPlacement.INSIDE
    noise_strength: float = NOISE_STRENGTH

    @classmethod
    def for_entrance(cls, entrance: Literal["short", "long"]) -> NoisePrior:
        if entrance == "short":
            return cls(949, OffsetPlacement.INSIDE)
        if entrance == "long":
            return cls(939, OffsetPlacement.AFTER)
        raise InputError(f"noise prior entrance {entrance!r} is not 'short' or 'long'")


def draw_prior_noise(
    shape: tuple[int, int, int, int, int], generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw eps [b,c,f,h,w] then the offset noise o [b,c,f,1,1], in that order, on the CPU.

    The reference draws o on the CUDA generator (device-dependent, spec section 16.7); we draw
    both from one CPU generator so a seed gives the same x_T on every machine.
    """
    b, c, f, h, w = shape
    eps = torch.randn((b, c, f, h, w), generator=generator, dtype=torch.float32)
    offset = torch.randn((b, c, f, 1, 1), generator=generator, dtype=torch.float32)
    return eps, offset


def apply_noise_prior(
    schedule: NoiseSchedule,
    ref_latent: torch.Tensor,
    noise: torch.Tensor,
    offset_noise: torch.Tensor,
    prior: NoisePrior = NoisePrior(),
) -> torch.Tensor:
    """The initial latent x_T from the reference latent and the two draws.

    ``ref_latent`` is randomref [b,4,f,h,w] (the reference latent repeated over frames),
    ``noise`` eps [b,4,f,h,w], ``offset_noise`` o [b,4,f,1,1]. With a = sqrt(alpha_bar_t),
    s = sqrt(1 - alpha_bar_t) (float64 table values cast to the latent dtype):
    inside: a*z + s*(eps + 0.1*o); after: a*z + s*eps + 0.1*o. Evaluated in exactly this
    order, it reproduces the reference bit for bit.
    """
    if not 0 <= prior.t < schedule.num_timesteps:
        raise InputError(
            f"noise prior t = {prior.t} is outside 0..{schedule.num_timesteps - 1}",
            "use 949 (short clips) or 939 (long videos), as the reference",
        )
    a = schedule.coef(schedule.sqrt_alphas_cumprod, prior.t, ref_latent)
    s = schedule.coef(schedule.sqrt_one_minus_alphas_cumprod, prior.t, ref_latent)
    if OffsetPlacement(prior.offset) is OffsetPlacement.INSIDE:
        return a * ref_latent + s * (noise + prior.noise_strength * offset_noise)
    return a * ref_latent + s * noise + prior.noise_strength * offset_noise
