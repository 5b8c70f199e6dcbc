"""render_latents resume contract, initial latent, and the continuation plan."""

from __future__ import annotations

import pytest
import torch

from unianimate_cli.errors import InputError
from unianimate_cli.sampling.conditions import Conditions, Variant
from unianimate_cli.sampling.ddim import StepState
from unianimate_cli.sampling.render import (
    RenderParams,
    ResumeState,
    make_initial_latent,
    plan_steps,
    plan_windows,
    render_latents,
)
from unianimate_cli.sampling.schedule import NoisePrior
from unianimate_cli.sampling.segments import mix_image_embedding, plan_segments, segment_generator, segment_seed


class ToyUNet:
    """Deterministic stand-in that mixes frames and reads every condition; counts calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, x: torch.Tensor, t: torch.Tensor, **kw: torch.Tensor | None) -> torch.Tensor:
        self.calls += 1
        b, _, f, h, w = x.shape
        out = 0.4 * x + 0.2 * torch.roll(x, 1, dims=2) + (t.float() / 1000).view(-1, 1, 1, 1, 1)
        if kw.get("image") is not None:
            out = out + 0.1 * kw["image"].mean(dim=(1, 2)).view(b, 1, 1, 1, 1)
        if kw.get("dwpose") is not None:
            pooled = torch.nn.functional.adaptive_avg_pool3d(kw["dwpose"].mean(1, keepdim=True), (f + 1, h, w))
            out = out + pooled[:, :, 1:] - pooled[:, :, :1]
        if kw.get("randomref") is not None:
            out = out + 0.05 * kw["randomref"][:, :, :1]
        return out


def _clip(num_frames: int = 13) -> tuple[Conditions, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    ref = torch.randn(1, 4, 1, 3, 2, generator=gen).repeat(1, 1, num_frames, 1, 1)
    conditions = Conditions(
        image=torch.randn(1, 1, 16, generator=gen),
        local_image=torch.rand(1, 3, num_frames, 24, 16, generator=gen),
        dwpose=torch.rand(1, 3, num_frames + 1, 24, 16, generator=gen),
        randomref=ref,
    )
    x_T = make_initial_latent(ref, torch.Generator().manual_seed(7), NoisePrior.for_entrance("long"))
    return conditions, x_T


PARAMS = RenderParams(num_steps=5, context_size=5, context_overlap=2)


def test_resume_after_each_step_is_bit_identical_and_skips_work() -> None:
    conditions, x_T = _clip()
    unet = ToyUNet()
    saved: list[ResumeState] = []
    plan = plan_steps(PARAMS)

    def save(state: StepState) -> None:
        saved.append(ResumeState.from_tensors(ResumeState.from_step(state, plan).to_tensors()))

    full = render_latents(unet, conditions, x_T, PARAMS, on_step=save)
    calls_per_step = 2 * len(plan_windows(13, PARAMS))
    assert unet.calls == len(plan) * calls_per_step
    assert saved[-1].is_finished
    for k in (1, 3):

        def stop_after_k(state: StepState, k: int = k) -> None:
            if state.completed_steps == k:
                raise KeyboardInterrupt

        checkpoints: list[ResumeState] = []
        with pytest.raises(KeyboardInterrupt):
            render_latents(
                ToyUNet(),
                conditions,
                x_T,
                PARAMS,
                on_step=lambda s: (checkpoints.append(ResumeState.from_step(s, plan)), stop_after_k(s)),
            )
        assert checkpoints[-1].completed_steps == k
        resumed_unet = ToyUNet()
        resumed = render_latents(resumed_unet, conditions, x_T, PARAMS, resume=checkpoints[-1])
        assert torch.equal(resumed, full)
        assert resumed_unet.calls == (len(plan) - k) * calls_per_step


def test_resume_state_from_another_plan_is_refused() -> None:
    conditions, x_T = _clip()
    state = ResumeState(2, x_T, (801, 601, 401, 201, 1))
    with pytest.raises(ValueError):
        render_latents(ToyUNet(), conditions, x_T, RenderParams(num_steps=20, context_size=5, context_overlap=2), resume=state)
    with pytest.raises(ValueError):
        render_latents(ToyUNet(), conditions, x_T[:, :, :5], RenderParams(num_steps=5), resume=state)


def test_variant_needs_its_conditions() -> None:
    conditions, x_T = _clip()
    with pytest.raises(InputError, match="local_image"):
        render_latents(ToyUNet(), Conditions(image=conditions.image, dwpose=conditions.dwpose), x_T, RenderParams(variant=Variant.A))
    with pytest.raises(InputError, match="t = 999"):
        render_latents(ToyUNet(), conditions, x_T, RenderParams(num_steps=27))


def test_short_clip_uses_one_window_and_variants_differ() -> None:
    conditions, x_T = _clip(5)
    assert plan_windows(5, RenderParams()) == [[0, 1, 2, 3, 4]]
    a = render_latents(ToyUNet(), conditions, x_T, RenderParams(num_steps=5, variant=Variant.A))
    b = render_latents(ToyUNet(), conditions, x_T, RenderParams(num_steps=5, variant=Variant.B))
    assert a.shape == x_T.shape and not torch.equal(a, b)


def test_initial_latent_is_seeded() -> None:
    ref = torch.randn(1, 4, 3, 2, 2)
    one = make_initial_latent(ref, torch.Generator().manual_seed(11))
    two = make_initial_latent(ref, torch.Generator().manual_seed(11))
    other = make_initial_latent(ref, torch.Generator().manual_seed(12))
    assert torch.equal(one, two) and not torch.equal(one, other)


@pytest.mark.parametrize("num_frames,clip,handover,first", [(100, 32, True, 0), (64, 32, False, 0), (33, 32, True, 0), (70, 16, True, 40), (2, 2, True, 0)])
def test_segments_cover_every_frame_once(num_frames: int, clip: int, handover: bool, first: int) -> None:
    segments = plan_segments(num_frames, clip, handover=handover, first_start=first)
    output = [f for s in segments for f in range(s.start, s.stop)]
    assert output == list(range(first, num_frames))
    for s in segments:
        assert 1 <= s.num_clip_frames <= clip
        assert s.clip_frames[s.drop_first :] == list(range(s.start, s.stop))
        if s.start > 0:
            assert s.reference_frame == s.start - 1
            assert s.drop_first == (1 if handover else 0)
        else:
            assert s.reference_frame is None and s.drop_first == 0


def test_segment_plan_errors_and_seeds() -> None:
    with pytest.raises(InputError):
        plan_segments(10, 32, first_start=10)
    with pytest.raises(InputError):
        plan_segments(10, 1, handover=True)
    assert segment_seed(7, 0) != segment_seed(7, 1) != segment_seed(8, 1)
    a = torch.randn(3, generator=segment_generator(7, 2))
    b = torch.randn(3, generator=segment_generator(7, 2))
    assert torch.equal(a, b)
    photo, last = torch.zeros(1, 1, 4), torch.ones(1, 1, 4)
    assert mix_image_embedding(photo, last) is photo
    assert torch.equal(mix_image_embedding(photo, last, 0.25), torch.full((1, 1, 4), 0.25))
    with pytest.raises(InputError):
        mix_image_embedding(photo, last, 1.5)


def test_window_progress_is_reported_per_batch() -> None:
    conditions, x_T = _clip()
    progress: list[tuple[int, int]] = []
    params = RenderParams(num_steps=5, context_size=5, context_overlap=2, window_batch_size=3)
    render_latents(ToyUNet(), conditions, x_T, params, on_window=lambda d, n: progress.append((d, n)))
    assert progress == [(3, 4), (4, 4)] * len(plan_steps(params))
