"""DPM-Solver++(2M): exact where the denoiser is exact, and equal to DDIM on its first step."""

from __future__ import annotations

import math

import torch

from unianimate_cli.sampling.ddim import ddim_sample, ddim_step
from unianimate_cli.sampling.dpm import dpm_solver_2m_sample
from unianimate_cli.sampling.schedule import NoiseSchedule, sampling_timesteps


def _point_mass_denoiser(schedule: NoiseSchedule, x0: torch.Tensor):  # type: ignore[no-untyped-def]
    """The exact v of data that is always ``x0``: v = (α_t·x_t − x0) / σ_t."""

    def denoise(x: torch.Tensor, t: int) -> torch.Tensor:
        alpha_bar = float(schedule.alphas_cumprod[t])
        return (math.sqrt(alpha_bar) * x - x0) / math.sqrt(1 - alpha_bar)

    return denoise


def test_exact_denoiser_lands_on_the_ode_solution_with_few_steps() -> None:
    schedule = NoiseSchedule.official()
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(1, 4, 3, 4, 4, generator=g, dtype=torch.float64)
    x_T = torch.randn(1, 4, 3, 4, 4, generator=g, dtype=torch.float64)
    steps = sampling_timesteps(6)
    # the probability-flow ODE keeps eps = (x_t − α x0)/σ constant: x(t=0) = α_0 x0 + σ_0 eps
    a, s = (math.sqrt(float(schedule.alphas_cumprod[steps[0].t])), math.sqrt(1 - float(schedule.alphas_cumprod[steps[0].t])))
    eps = (x_T - a * x0) / s
    a0, s0 = math.sqrt(float(schedule.alphas_cumprod[0])), math.sqrt(1 - float(schedule.alphas_cumprod[0]))
    expected = a0 * x0 + s0 * eps
    out = dpm_solver_2m_sample(_point_mass_denoiser(schedule, x0), x_T, steps, schedule)
    torch.testing.assert_close(out, expected, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(ddim_sample(_point_mass_denoiser(schedule, x0), x_T, steps, schedule), expected, rtol=1e-9, atol=1e-9)


def test_first_step_is_a_ddim_step_and_later_ones_are_second_order() -> None:
    schedule = NoiseSchedule.official()
    g = torch.Generator().manual_seed(1)
    x_T = torch.randn(1, 4, 2, 3, 3, generator=g, dtype=torch.float64)

    def denoise(x: torch.Tensor, t: int) -> torch.Tensor:  # smooth in t, not a point mass
        return torch.tanh(x) * (1 + t / 1000)

    steps = sampling_timesteps(10)
    one = dpm_solver_2m_sample(denoise, x_T, steps[:1], schedule)
    ddim_one, _ = ddim_step(schedule, x_T, denoise(x_T, steps[0].t), steps[0])
    torch.testing.assert_close(one, ddim_one, rtol=1e-10, atol=1e-10)
    two = dpm_solver_2m_sample(denoise, x_T, steps[:2], schedule)
    ddim_two = ddim_sample(denoise, x_T, steps[:2], schedule)
    assert not torch.allclose(two, ddim_two, atol=1e-6)  # the second step uses the previous x̂_0


def _toy_clip(seed: int) -> tuple[object, torch.Tensor]:
    """(Conditions, x_T) of a 2-frame 1x1-latent clip for samplers run with a toy UNet."""
    from unianimate_cli.sampling.conditions import Conditions

    g = torch.Generator().manual_seed(seed)
    conditions = Conditions(
        image=torch.randn(1, 1, 4, generator=g),
        dwpose=torch.rand(1, 3, 3, 8, 8, generator=g),
        randomref=torch.randn(1, 4, 2, 1, 1, generator=g),
    )
    return conditions, torch.randn(1, 4, 2, 1, 1, generator=g)


def test_render_latents_runs_the_opt_in_sampler_and_refuses_unknown_ones() -> None:
    import dataclasses

    import pytest

    from unianimate_cli.errors import InputError
    from unianimate_cli.sampling.render import RenderParams, plan_steps, render_latents

    calls: list[int] = []

    def unet(x: torch.Tensor, t: torch.Tensor, **conditions: object) -> torch.Tensor:
        calls.append(int(t[0]))
        return torch.tanh(x) * (2.0 if conditions.get("dwpose") is not None else 1.0)

    conditions, x_T = _toy_clip(seed=2)
    params = RenderParams(num_steps=10, sampler="dpm++2m")
    out = render_latents(unet, conditions, x_T, params)  # type: ignore[arg-type]
    assert len(calls) == 2 * len(plan_steps(params)) and torch.isfinite(out).all()
    ddim = render_latents(unet, conditions, x_T, dataclasses.replace(params, sampler="ddim"))  # type: ignore[arg-type]
    assert not torch.allclose(out, ddim, atol=1e-6)
    with pytest.raises(InputError, match="unknown sampler"):
        render_latents(unet, conditions, x_T, dataclasses.replace(params, sampler="euler"))  # type: ignore[arg-type]


def test_interrupted_dpm_render_resumes_bit_identical_from_its_checkpoint() -> None:
    import dataclasses

    import pytest

    from unianimate_cli.sampling.ddim import StepState
    from unianimate_cli.sampling.render import RenderParams, ResumeState, keeps_x0, plan_steps, render_latents

    calls: list[int] = []

    def unet(x: torch.Tensor, t: torch.Tensor, **conditions: object) -> torch.Tensor:
        calls.append(int(t[0]))
        return torch.tanh(x) * (1.5 if conditions.get("dwpose") is not None else 1.0) + 0.01 * float(t[0]) / 1000

    conditions, x_T = _toy_clip(seed=5)
    params = RenderParams(num_steps=10, sampler="dpm++2m", batch_guidance=False)
    plan = plan_steps(params)
    assert keeps_x0(params) and not keeps_x0(dataclasses.replace(params, sampler="ddim"))
    full = render_latents(unet, conditions, x_T, params)  # type: ignore[arg-type]

    saved: list[dict[str, torch.Tensor]] = []

    def stop_after_four(state: StepState) -> None:
        saved.append(ResumeState.from_step(state, plan, keeps_x0(params)).to_tensors())
        if state.completed_steps == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        render_latents(unet, conditions, x_T, params, on_step=stop_after_four)  # type: ignore[arg-type]
    state = ResumeState.from_tensors(saved[-1])
    assert state.x0_prev is not None
    calls.clear()
    resumed = render_latents(unet, conditions, x_T, params, resume=state)  # type: ignore[arg-type]
    assert torch.equal(resumed, full)
    assert len(calls) == 2 * (len(plan) - 4)  # the first four steps were not run again

    # A state without the x0 prediction (e.g. saved by DDIM) cannot continue DPM: it starts over.
    calls.clear()
    old = dataclasses.replace(state, x0_prev=None)
    again = render_latents(unet, conditions, x_T, params, resume=old)  # type: ignore[arg-type]
    assert torch.equal(again, full) and len(calls) == 2 * len(plan)
