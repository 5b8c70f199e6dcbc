"""runtime: device/dtype choice, TF32 policy, memory helpers, regional compile set-up (CPU only)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from unianimate_cli.errors import InputError
from unianimate_cli.runtime import (
    choose_device,
    choose_dtype,
    compile_blocks,
    conv2d_channels_last_,
    memory_info,
    offload,
    out_of_memory_error,
    peak_memory,
    tf32,
)


def test_device_and_dtype_defaults_and_refusals() -> None:
    assert choose_device("cpu").type == "cpu"
    assert choose_dtype(torch.device("cpu")) == torch.float32
    assert choose_dtype(torch.device("cuda")) == torch.float16
    assert choose_dtype(torch.device("cuda"), "bf16") == torch.bfloat16
    with pytest.raises(InputError, match="very slow"):
        choose_dtype(torch.device("cpu"), "float16")
    with pytest.raises(InputError, match="unknown dtype"):
        choose_dtype(torch.device("cuda"), "float8")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="CUDA is not available"):
            choose_device("cuda")


def test_tf32_context_restores_the_previous_setting() -> None:
    saved = torch.backends.cudnn.allow_tf32
    with tf32(not saved):
        assert torch.backends.cudnn.allow_tf32 is (not saved)
        assert torch.backends.cuda.matmul.allow_tf32 is (not saved)
    assert torch.backends.cudnn.allow_tf32 is saved


def test_memory_helpers_are_inert_on_the_cpu() -> None:
    cpu = torch.device("cpu")
    assert memory_info(cpu) is None
    assert peak_memory(cpu).allocated_bytes == 0
    layer = offload(nn.Linear(2, 2), "cpu")
    assert next(layer.parameters()).device.type == "cpu"
    error = out_of_memory_error("sampling", RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert "sampling" in str(error) and error.hint is not None and "--low-memory" in error.hint


def test_compile_blocks_marks_each_unet_block_and_channels_last_only_touches_conv2d() -> None:
    from unianimate_cli.models.layers import ResBlock, SpatialTransformer, TemporalTransformer
    from unianimate_cli.models.unet import UNetConfig, UniAnimateUNet

    config = UNetConfig(dim=32, dim_mult=(1, 2), num_heads=2, head_dim=16, num_res_blocks=1, attn_scales=(1.0,),
                        resolution=(32, 48))
    with torch.device("meta"):
        unet = UniAnimateUNet(config)
    expected = sum(isinstance(m, (ResBlock, SpatialTransformer, TemporalTransformer)) for m in unet.modules())
    assert compile_blocks(unet) == expected > 0

    model = nn.Sequential(nn.Conv2d(4, 8, 3), nn.Conv3d(8, 8, (3, 1, 1)))
    conv2d_channels_last_(model)
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert model[0].weight.stride() != torch.empty(8, 4, 3, 3).stride()
    assert model[1].weight.is_contiguous()


def test_sampling_memory_estimate_matches_the_measured_peaks_and_picks_batching() -> None:
    from unianimate_cli.runtime import GIB, choose_guidance_batching, estimate_sampling_peak_bytes

    latent_hw = (96, 64)  # 768 x 512 pixels
    single = estimate_sampling_peak_bytes(32, latent_hw, batched_guidance=False) / GIB
    batched = estimate_sampling_peak_bytes(32, latent_hw, batched_guidance=True) / GIB
    assert 4.7 < single < 5.3  # measured 4.96 GiB (H100, 2026-11-24)
    assert 6.9 < batched < 7.5  # measured 7.17 GiB
    cuda = torch.device("cuda")
    assert choose_guidance_batching(cuda, 32, latent_hw, budget_bytes=int(12 * GIB))
    assert not choose_guidance_batching(cuda, 32, latent_hw, budget_bytes=int(8 * GIB))
    assert not choose_guidance_batching(torch.device("cpu"), 32, latent_hw, budget_bytes=int(99 * GIB))


def test_streamed_unet_weights_give_the_same_output_and_load_each_block_once_per_call() -> None:
    from test_models_unet import _random_twin, _twin_inputs
    from unianimate_cli.runtime import stream_unet_weights

    model = _random_twin()
    inputs = _twin_inputs(batch=1, frames=2)
    with torch.no_grad():
        resident = model(**inputs)
        streamer = stream_unet_weights(model, torch.device("cpu"))
        first = model(**inputs)
        loads_first = streamer.loads
        second = model(**inputs)
        loads_second = streamer.loads
        third = model(**inputs)
    units = len(streamer.units)
    assert units > 10
    assert loads_first == units  # the first call learns the order, loading each block as it comes
    # later calls prefetch the next block (after the last: the first one of the next call),
    # still one load per block and call
    assert (loads_second, streamer.loads) == (2 * units + 1, 3 * units + 1)
    assert torch.equal(first, resident) and torch.equal(second, resident) and torch.equal(third, resident)
    assert len(streamer._ready) == 1  # between calls only the prefetched first block has a device copy
    streamer.remove()
    with torch.no_grad():
        assert torch.equal(model(**inputs), resident)


def test_decode_chunk_follows_the_measured_decode_peaks() -> None:
    from unianimate_cli.runtime import GIB, choose_decode_chunk, sampling_memory_budget

    cuda, hw = torch.device("cuda"), (768, 512)
    # measured: 1.9 / 3.5 / 6.7 GiB for chunks of 2 / 4 / 8 frames (float16, H100)
    assert choose_decode_chunk(cuda, hw, torch.float16, budget_bytes=int(2.4 * GIB)) == 2
    assert choose_decode_chunk(cuda, hw, torch.float16, budget_bytes=int(4.4 * GIB)) == 4
    assert choose_decode_chunk(cuda, hw, torch.float16, budget_bytes=int(70 * GIB)) == 8
    assert choose_decode_chunk(cuda, hw, torch.float32, budget_bytes=int(4.4 * GIB)) == 2
    assert choose_decode_chunk(cuda, hw, torch.float16, budget_bytes=int(0.5 * GIB)) == 1
    assert choose_decode_chunk(torch.device("cpu"), hw, torch.float32) == 2
    assert sampling_memory_budget(torch.device("cpu")) is None
