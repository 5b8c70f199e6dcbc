"""Schedule tables, DDIM step lists and noise prior against fixtures/diffusion/schedule.*."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from unianimate_cli.errors import InputError
from unianimate_cli.sampling.schedule import (
    NoisePrior,
    NoiseSchedule,
    OffsetPlacement,
    TerminalStep,
    apply_noise_prior,
    ddim_stride,
    ddim_timesteps,
    draw_prior_noise,
    linear_sd_betas,
    prev_timestep,
    sampling_timesteps,
    visits_terminal_timestep,
)

@pytest.fixture(scope="module")
def schedule_fixture(fixtures_dir: Path) -> tuple[dict[str, torch.Tensor], dict]:
    folder = fixtures_dir / "diffusion"
    return load_file(str(folder / "schedule.safetensors")), json.loads((folder / "schedule.json").read_text())


def test_tables_are_exact(schedule_fixture: tuple[dict[str, torch.Tensor], dict]) -> None:
    tensors, meta = schedule_fixture
    config = meta["config"]
    raw = linear_sd_betas(config["num_timesteps"], config["init_beta"], config["last_beta"])
    assert torch.equal(raw, tensors["betas_linear_sd_before_rescale"])
    schedule = NoiseSchedule.official()
    fixture_tables = {
        k for k in tensors if not re.fullmatch(r"ddim\d+_(prev_)?timesteps|betas_linear_sd_before_rescale", k)
    }
    assert set(schedule.tables()) == fixture_tables
    for name, ours in schedule.tables().items():
        assert ours.dtype == torch.float64
        assert torch.equal(ours, tensors[name]), name  # inf entries compare equal too


def test_every_step_list_in_the_fixture(schedule_fixture: tuple[dict[str, torch.Tensor], dict]) -> None:
    tensors, _ = schedule_fixture
    counts = sorted(int(m.group(1)) for k in tensors if (m := re.fullmatch(r"ddim(\d+)_timesteps", k)))
    assert counts, "no ddim{N}_timesteps keys found"
    for n in counts:
        visited = ddim_timesteps(n)
        assert visited == tensors[f"ddim{n}_timesteps"].tolist()
        assert [prev_timestep(t, n) for t in visited] == tensors[f"ddim{n}_prev_timesteps"].tolist()


def test_nan_step_counts_match_the_fixture_list(schedule_fixture: tuple[dict[str, torch.Tensor], dict]) -> None:
    _, meta = schedule_fixture
    listed = meta["ddim_timesteps_in_1_100_that_visit_t999"]
    assert [n for n in range(1, 101) if visits_terminal_timestep(n)] == listed


def test_terminal_step_is_refused_or_clamped() -> None:
    with pytest.raises(InputError, match="t = 999"):
        sampling_timesteps(27)
    clamped = sampling_timesteps(27, TerminalStep.CLAMP)
    assert clamped[0].t == 998 and clamped[0].t_prev == 999 - ddim_stride(27)
    assert [s.t for s in clamped[1:]] == ddim_timesteps(27)[1:]
    # A safe count is unaffected by the option.
    assert sampling_timesteps(30, "clamp") == sampling_timesteps(30)
    assert len(sampling_timesteps(30)) == 31  # the reference's 30 -> 31 quirk


@pytest.mark.parametrize("bad", [0, -3, 1001, 2.5, True])
def test_bad_step_counts(bad: object) -> None:
    with pytest.raises(InputError):
        ddim_timesteps(bad)  # type: ignore[arg-type]


def test_clamped_plan_is_finite() -> None:
    """alpha_bar at the clamped step is > 0, so the eps formula stays finite."""
    schedule = NoiseSchedule.official()
    step = sampling_timesteps(27, "clamp")[0]
    assert torch.isfinite(schedule.sqrt_recip_alphas_cumprod[step.t])


def test_noise_prior_coefficients(schedule_fixture: tuple[dict[str, torch.Tensor], dict]) -> None:
    _, meta = schedule_fixture
    schedule = NoiseSchedule.official()
    for t_str, entry in meta["noise_prior"].items():
        t = int(t_str)
        assert float(schedule.sqrt_alphas_cumprod[t]) == entry["sqrt_alphas_cumprod"]
        assert float(schedule.sqrt_one_minus_alphas_cumprod[t]) == entry["sqrt_one_minus_alphas_cumprod"]
        like = torch.zeros(1)
        assert float(schedule.coef(schedule.sqrt_alphas_cumprod, t, like)) == entry["sqrt_alphas_cumprod_float32"]


def test_offset_placement_differs_and_draw_order() -> None:
    schedule = NoiseSchedule.official()
    gen = torch.Generator().manual_seed(3)
    eps, offset = draw_prior_noise((1, 4, 3, 2, 2), gen)
    again = torch.Generator().manual_seed(3)
    assert torch.equal(torch.randn((1, 4, 3, 2, 2), generator=again), eps)  # eps first
    assert offset.shape == (1, 4, 3, 1, 1)
    z = torch.randn(1, 4, 3, 2, 2)
    inside = apply_noise_prior(schedule, z, eps, offset, NoisePrior(949, OffsetPlacement.INSIDE))
    after = apply_noise_prior(schedule, z, eps, offset, NoisePrior(949, OffsetPlacement.AFTER))
    s = float(schedule.sqrt_one_minus_alphas_cumprod[949])
    torch.testing.assert_close(after - inside, (0.1 * offset * (1 - s)).expand_as(z), rtol=0, atol=1e-6)
    assert NoisePrior.for_entrance("long") == NoisePrior(939, OffsetPlacement.AFTER)
    with pytest.raises(InputError):
        apply_noise_prior(schedule, z, eps, offset, NoisePrior(1000))
