"""Pieces of the demo family's training script and quality measures (fast; no training run)."""

from __future__ import annotations

import numpy as np
import torch

from unianimate_cli.demo import quality
from unianimate_cli.demo.synth import make_background, make_example
from unianimate_cli.demo.train import RingBuffer, TrainConfig, family_configs, make_sample, rescale_latent


def test_sample_is_what_inference_builds() -> None:
    cfg = TrainConfig(sample_frames=4)
    s = make_sample(12345, cfg, np.random.default_rng(0))
    assert s["photo"].shape == (192, 128, 3) and s["photo"].dtype == np.uint8
    assert s["frames"].shape == (4, 192, 128, 3)
    assert s["poses"].shape == (5, 192, 128, 3)  # the photo's pose, then one per frame
    size = family_configs()["clip"]["vision_cfg"]["image_size"]
    assert s["clip"].shape == (3, size, size)
    assert s["poses"][0].any() and not np.array_equal(s["poses"][0], s["photo"])


def test_latent_rescale_is_exact() -> None:
    """z is scaled to the target std and decode(mean) does not change."""
    from unianimate_cli.models.vae import AutoencoderKL, VAEConfig

    torch.manual_seed(0)
    vae = AutoencoderKL(VAEConfig(ch=32, ch_mult=(1, 1, 1, 1), num_res_blocks=1)).eval()
    buffer = RingBuffer(4, torch.device("cpu"), torch.Generator().manual_seed(0))
    frames = torch.from_numpy(make_example(3, 2, 64, 64).frames)
    buffer.add({"photo": frames[:1].repeat(2, 1, 1, 1), "frames": frames[None].repeat(2, 1, 1, 1, 1)})
    x = frames.permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        before = vae.decode(vae.encode(x).mean)
        a = rescale_latent(vae, buffer, 5.0)
        after = vae.decode(vae.encode(x).mean)
        std = float(vae.encode(x).mean.std())
    assert a != 1.0
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)
    assert abs(std - 5.0) < 0.5


def test_quality_of_the_truth_and_of_a_wrong_render() -> None:
    ex = make_example(7, 12, 192, 128)
    background = make_background(7, 192, 128)
    perfect = quality.compare_to_truth(ex.frames, ex.frames, background)
    assert perfect.colour_error == 0.0 and perfect.silhouette_iou == 1.0
    empty = quality.compare_to_truth(np.repeat(background[None], 12, axis=0), ex.frames, background)
    assert empty.silhouette_iou == 0.0 and empty.colour_error > 20
    masks = quality.inner(quality.figure_masks(ex.frames, background))
    assert masks.sum() < quality.figure_masks(ex.frames, background).sum()
    assert quality.luminance_correlation(ex.frames, ex.frames, masks) > 0.999
    other = make_example(8, 12, 192, 128).frames
    assert quality.luminance_correlation(other, ex.frames, masks) < 0.5
    want = ex.keypoints_frames.frames
    assert quality.keypoint_error(list(want), want) == (0.0, 1.0)
    assert quality.keypoint_error([None] * len(want), want) == (1.0, 0.0)


def test_decoder_only_vae_training_keeps_the_latent_space() -> None:
    """--vae-decoder-only changes the decoder and nothing that maps images to latents."""
    from itertools import repeat

    from unianimate_cli.demo.train import _Clock, train_vae
    from unianimate_cli.models.vae import AutoencoderKL, VAEConfig

    torch.manual_seed(0)
    vae = AutoencoderKL(VAEConfig(ch=32, ch_mult=(1, 1, 1, 1), num_res_blocks=1))
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    buffer = RingBuffer(4, torch.device("cpu"), torch.Generator().manual_seed(0))
    frames = torch.from_numpy(make_example(3, 2, 64, 64).frames)
    batch = {"photo": frames[:1].repeat(2, 1, 1, 1), "frames": frames[None].repeat(2, 1, 1, 1, 1)}
    buffer.add(batch)
    cfg = TrainConfig(vae_decoder_only=True, vae_steps=2, vae_batch=2, unet_steps=0, time_budget_s=0)
    losses = train_vae(vae, cfg, repeat(batch), buffer, _Clock(0))
    assert losses["steps"] == 2
    changed = {k.split(".")[0] for k, v in vae.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and changed <= {"decoder", "post_quant_conv"}
