"""Fast-path UNet APIs: batched guidance (has_condition) and per-video context projection."""

from __future__ import annotations


import pytest
import torch

from test_models_unet import _random_twin, _twin_inputs
from unianimate_cli.models.layers import CrossAttention
from unianimate_cli.models.unet import guided_pair


pytestmark = pytest.mark.usefixtures("torch_threads")


def test_guided_pair_equals_two_separate_calls() -> None:
    model = _random_twin()
    inputs = _twin_inputs(batch=1, frames=3)
    conds = {k: inputs[k] for k in ("image", "local_image", "dwpose", "randomref")}
    with torch.no_grad():
        v_cond = model(inputs["x"], inputs["t"], **conds)
        v_uncond = model(inputs["x"], inputs["t"])
        pair_cond, pair_uncond = guided_pair(model, inputs["x"], inputs["t"], conds)
    assert not torch.allclose(v_cond, v_uncond, atol=1e-3)
    torch.testing.assert_close(pair_cond, v_cond, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pair_uncond, v_uncond, rtol=1e-5, atol=1e-5)


def test_has_condition_false_ignores_the_condition_values() -> None:
    model = _random_twin()
    inputs = _twin_inputs(batch=2, frames=2)
    conds = {k: inputs[k] for k in ("image", "local_image", "dwpose", "randomref")}
    scrambled = {k: v.flip(0) * 3.0 for k, v in conds.items()}
    mask = torch.tensor([True, False])
    with torch.no_grad():
        a = model(inputs["x"], inputs["t"], has_condition=mask, **conds)
        b = model(inputs["x"], inputs["t"], has_condition=mask, **{k: torch.cat([conds[k][:1], scrambled[k][1:]]) for k in conds})
        uncond_item = model(inputs["x"][1:], inputs["t"][1:])
    assert torch.equal(a[1:], b[1:])
    torch.testing.assert_close(a[1:], uncond_item, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="has_condition"):
        model(inputs["x"], inputs["t"], has_condition=torch.tensor([True]), **conds)


def test_context_is_projected_once_per_video_with_per_frame_math() -> None:
    torch.manual_seed(0)
    attn = CrossAttention(16, 8, heads=2, dim_head=8).eval()
    frames, tokens = 3, 5
    x = torch.randn(2 * frames, tokens, 16)
    context = torch.randn(2, 4, 8)
    with torch.no_grad():
        folded = attn(x, context, frames_per_context=frames)
        per_frame = attn(x, context.repeat_interleave(frames, dim=0), frames_per_context=1)
    torch.testing.assert_close(folded, per_frame, rtol=1e-5, atol=1e-6)


def test_feed_forward_row_chunks_match_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    from unianimate_cli.models.layers import FeedForward

    torch.manual_seed(0)
    ff = FeedForward(8).eval()
    x = torch.randn(7, 5, 8)
    with torch.no_grad():
        whole = ff(x)
        monkeypatch.setattr(FeedForward, "max_hidden_elements", 2 * 5 * 64)  # two rows per chunk
        chunked = ff(x)
    torch.testing.assert_close(chunked, whole, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("frames", [1, 2, 5])
def test_temporal_conv_as_gemms_equals_conv3d(frames: int) -> None:
    from torch import nn

    from unianimate_cli.models.layers import temporal_conv_gemm

    torch.manual_seed(0)
    conv = nn.Conv3d(6, 6, (3, 1, 1), padding=(1, 0, 0)).double()
    x = torch.randn(2, 6, frames, 3, 4, dtype=torch.float64)
    for functional in (False, True):
        conv.bias = torch.nn.Parameter(torch.randn(6, dtype=torch.float64))
        with torch.no_grad():
            ref = conv(x)
            ours = temporal_conv_gemm(x, conv, functional=functional)
        torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
        conv.bias = None
        with torch.no_grad():
            torch.testing.assert_close(temporal_conv_gemm(x, conv, functional), conv(x), rtol=1e-12, atol=1e-12)


def test_temporal_block_with_gemms_matches_the_fixture_path(monkeypatch: pytest.MonkeyPatch) -> None:
    from unianimate_cli.models.layers import TemporalConvBlock

    torch.manual_seed(1)
    block = TemporalConvBlock(32).eval()
    for p in block.parameters():
        torch.nn.init.normal_(p, std=0.2)
    x = torch.randn(2 * 4, 32, 3, 2)
    with torch.no_grad():
        ref = block(x, num_frames=4)
        monkeypatch.setattr(TemporalConvBlock, "use_gemm", True)
        monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))  # the CUDA-only switch
        ours = block(x, num_frames=4)
    assert not torch.allclose(ref, x)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
