"""Fast sampling paths on the tiny fixture UNet: batched guidance and per-clip condition features."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from test_distributed_worker import clip_sizes, make_clip
from unianimate_cli.parity.diffusion import load_fixture_unet
from unianimate_cli.sampling.conditions import Variant
from unianimate_cli.sampling.denoiser import GuidedDenoiser
from unianimate_cli.sampling.render import RenderParams, plan_steps, plan_windows, render_latents

WINDOWED = RenderParams(num_steps=4, context_size=5, context_overlap=2, batch_guidance=False)
NUM_FRAMES = 9


pytestmark = pytest.mark.usefixtures("torch_threads")
TORCH_THREADS = 1


@pytest.fixture(scope="module")
def tiny(fixtures_dir: Path) -> tuple[object, object, torch.Tensor]:
    unet = load_fixture_unet(fixtures_dir / "unet_tiny")
    conditions, x_T = make_clip(NUM_FRAMES, clip_sizes(fixtures_dir / "unet_tiny"), seed=5)
    return unet, conditions, x_T


def test_batched_guidance_equals_two_calls_within_float_tolerance(tiny: tuple) -> None:
    unet, conditions, x_T = tiny
    two_calls = render_latents(unet, conditions, x_T, WINDOWED)
    batched = render_latents(unet, conditions, x_T, dataclasses.replace(WINDOWED, batch_guidance=True))
    assert torch.isfinite(batched).all()
    assert not torch.equal(two_calls, x_T)
    torch.testing.assert_close(batched, two_calls, rtol=1e-5, atol=1e-5)


def test_batched_guidance_makes_one_unet_call_per_window(tiny: tuple) -> None:
    unet, conditions, x_T = tiny
    windows = plan_windows(NUM_FRAMES, WINDOWED)
    assert len(windows) > 1
    selected = conditions.select(Variant.B)
    batched = GuidedDenoiser(unet, selected, windows=windows, batch_guidance=True)
    separate = GuidedDenoiser(unet, selected, windows=windows, batch_guidance=False)
    out_b = batched.evaluate(x_T, 500)
    out_s = separate.evaluate(x_T, 500)
    assert (batched.unet_calls, separate.unet_calls) == (len(windows), 2 * len(windows))
    torch.testing.assert_close(out_b.v_cond, out_s.v_cond, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out_b.v_uncond, out_s.v_uncond, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out_s.v_cond, out_s.v_uncond, atol=1e-3)


@pytest.mark.parametrize("batch_guidance", [False, True])
def test_condition_features_computed_once_give_the_same_latents_bit_for_bit(tiny: tuple, batch_guidance: bool) -> None:
    unet, conditions, x_T = tiny
    plan = plan_steps(WINDOWED)
    windows = plan_windows(NUM_FRAMES, WINDOWED)
    selected = conditions.select(Variant.B)
    encoder_calls = {"n": 0}

    def count(*_: object) -> None:
        encoder_calls["n"] += 1

    handle = unet.dwpose_embedding.register_forward_hook(count)
    try:
        latents = {}
        for cache in (False, True):
            encoder_calls["n"] = 0
            denoiser = GuidedDenoiser(unet, selected, windows=windows, batch_guidance=batch_guidance, cache_features=cache)
            x = x_T
            for step in plan:
                x = x + 0.01 * denoiser(x, step.t)  # any x_t-dependent chain will do
            latents[cache] = (x, encoder_calls["n"])
    finally:
        handle.remove()
    assert torch.equal(latents[True][0], latents[False][0])
    # the pose encoder runs once per window with the cache, at every step without it
    assert latents[True][1] == len(windows)
    assert latents[False][1] == len(windows) * len(plan)


def test_features_for_another_shape_are_refused(tiny: tuple) -> None:
    unet, conditions, x_T = tiny
    window = conditions.for_window(range(4)).select(Variant.B)
    features = unet.condition_features(x_T[:, :, :4], **window.unet_kwargs())
    with pytest.raises(ValueError, match="condition features are for"):
        unet(x_T[:, :, :3], torch.tensor([10]), features=features)


def test_batch_guidance_is_decided_once_for_every_rank() -> None:
    """Rank 0 resolves "auto" to a bool before sending the settings; an explicit choice stays."""
    from unianimate_cli.sampling.render import resolve_batch_guidance

    x_T = torch.zeros(1, 4, NUM_FRAMES, 4, 4)
    auto = dataclasses.replace(WINDOWED, batch_guidance=None)
    resolved = resolve_batch_guidance(auto, x_T, torch.nn.Linear(2, 2))
    assert isinstance(resolved.batch_guidance, bool)
    assert dataclasses.replace(resolved, batch_guidance=None) == auto  # nothing else changed
    for explicit in (True, False):
        fixed = dataclasses.replace(WINDOWED, batch_guidance=explicit)
        assert resolve_batch_guidance(fixed, x_T, torch.nn.Linear(2, 2)) is fixed
