"""DDIM update, guidance and window averaging, teacher-forced from the fixtures (no UNet)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from unianimate_cli.parity import failures
from unianimate_cli.parity.diffusion import run_long, run_sampler
from unianimate_cli.sampling.conditions import Conditions
from unianimate_cli.sampling.ddim import StepState, ddim_sample, ddim_step
from unianimate_cli.sampling.denoiser import GuidedDenoiser
from unianimate_cli.sampling.schedule import NoiseSchedule, sampling_timesteps


@pytest.mark.parametrize("folder", ["sampler_tiny", "long_tiny"])
def test_teacher_forced_checks_pass(fixtures_dir: Path, folder: str) -> None:
    runner = run_long if folder == "long_tiny" else run_sampler
    results = runner(fixtures_dir / "diffusion" / folder, free_running=False)
    assert any("teacher-forced" in r.name for r in results)
    failed = failures(results)
    assert not failed, failed


def test_last_step_lands_on_alpha_bar_0() -> None:
    """The t=1 step returns sqrt(abar_0)*x0 + sqrt(1-abar_0)*eps, not x0 (reference quirk)."""
    schedule = NoiseSchedule.official()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 2, 3, 3, generator=gen)
    v = torch.randn(1, 4, 2, 3, 3, generator=gen)
    last = sampling_timesteps(30)[-1]
    assert (last.t, last.t_prev) == (1, 0)
    x_prev, x0 = ddim_step(schedule, x, v, last)
    abar = schedule.alphas_cumprod.to(torch.float32)
    eps = (x - abar[1].sqrt() * x0) / (1 - abar[1]).sqrt()
    expected = abar[0].sqrt() * x0 + (1 - abar[0]).sqrt() * eps
    assert not torch.equal(x_prev, x0)
    torch.testing.assert_close(x_prev, expected, rtol=1e-4, atol=1e-4)


class _LinearModel:
    """v = 0.5 * x + frame-mixing term; counts calls; reads the image condition."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, x: torch.Tensor, t: torch.Tensor, **kw: torch.Tensor | None) -> torch.Tensor:
        self.calls += 1
        out = 0.5 * x + 0.1 * x.mean(dim=2, keepdim=True)
        image = kw.get("image")
        if image is not None:
            out = out + image.mean(dim=(1, 2)).view(-1, 1, 1, 1, 1)
        return out


def test_single_window_is_plain_cfg() -> None:
    x = torch.randn(1, 4, 5, 3, 2)
    model = _LinearModel()
    cond = Conditions(image=torch.full((1, 1, 4), 2.0))
    out = GuidedDenoiser(model, cond, guide_scale=3.0).evaluate(x, 500)
    v_c = model(x, torch.tensor([500]), image=cond.image)
    v_u = model(x, torch.tensor([500]))
    assert torch.equal(out.v_cond, v_c) and torch.equal(out.v_uncond, v_u)
    assert torch.equal(out.v, v_u + 3.0 * (v_c - v_u))


def test_windows_are_averaged_per_frame_before_guidance() -> None:
    x = torch.randn(1, 4, 6, 2, 2)
    model = _LinearModel()
    windows = [[0, 1, 2, 3], [2, 3, 4, 5]]
    out = GuidedDenoiser(model, Conditions(image=torch.ones(1, 1, 4)), windows=windows).evaluate(x, 10)
    assert model.calls == 4
    first = model(x[:, :, 0:4], torch.tensor([10]))
    second = model(x[:, :, 2:6], torch.tensor([10]))
    expected = torch.cat([first[:, :, :2], (first[:, :, 2:] + second[:, :, :2]) / 2, second[:, :, 2:]], dim=2)
    torch.testing.assert_close(out.v_uncond, expected, rtol=0, atol=1e-6)


def test_batched_windows_match_unbatched() -> None:
    x = torch.randn(1, 4, 9, 2, 2)
    windows = [[0, 1, 2, 3, 4], [3, 4, 5, 6, 7], [4, 5, 6, 7, 8]]
    cond = Conditions(image=torch.randn(1, 1, 4), dwpose=torch.rand(1, 3, 10, 8, 8))
    one = GuidedDenoiser(_LinearModel(), cond, windows=windows, window_batch_size=1).evaluate(x, 3)
    model = _LinearModel()
    many = GuidedDenoiser(model, cond, windows=windows, window_batch_size=2).evaluate(x, 3)
    assert model.calls == 4  # 2 batches x (cond, uncond)
    torch.testing.assert_close(many.v, one.v, rtol=0, atol=1e-6)


def test_callback_and_resume_from_any_step() -> None:
    schedule = NoiseSchedule.official()
    steps = sampling_timesteps(5)
    x_T = torch.randn(1, 4, 3, 2, 2)
    model = _LinearModel()
    denoiser = GuidedDenoiser(model, Conditions(image=torch.ones(1, 1, 4)))
    states: list[StepState] = []
    full = ddim_sample(denoiser, x_T, steps, schedule, callback=states.append)
    assert [s.t for s in states] == [s.t for s in steps]
    assert states[-1].is_last and torch.equal(states[-1].x, full)
    for k in range(1, len(steps)):
        resumed = ddim_sample(denoiser, states[k - 1].x, steps, schedule, start_step=k)
        assert torch.equal(resumed, full)
    with pytest.raises(ValueError):
        ddim_sample(denoiser, x_T, steps, schedule, start_step=len(steps) + 1)
