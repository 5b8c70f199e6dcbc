"""A tiny random model family written by ``write_tiny_family``: its parts load and fit together."""

from __future__ import annotations

from pathlib import Path

import torch

from unianimate_cli import weights as W
from unianimate_cli.models.vae import decode_latents, encode_to_latent


def test_tiny_family_loads_and_runs_end_to_end(tmp_path: Path, fixtures_dir: Path) -> None:
    detector = fixtures_dir / "pose" / "onnx" / "tiny_yolox.onnx"
    pose = fixtures_dir / "pose" / "onnx" / "tiny_dwpose.onnx"
    written = W.write_tiny_family(tmp_path / "family", seed=3, detector_onnx=detector, pose_onnx=pose)
    again = W.write_tiny_family(tmp_path / "again", seed=3)
    for name in ("unet.safetensors", "vae.safetensors", "clip.safetensors"):
        assert (tmp_path / "family" / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name
    assert written.name == again.name == "tiny-random"
    assert written.path("detector").read_bytes() == detector.read_bytes()
    assert written.path("pose").name == "pose.onnx"
    assert again.filename("pose") == W.POSE_FILE  # no ONNX given: the official DWPose files

    model_set = W.resolve_model_set([tmp_path / "family"])
    assert not model_set.is_official
    unet = model_set.load_unet()
    vae = model_set.load_vae()
    clip = model_set.load_clip()
    width, height = unet.config.resolution
    frames = 2

    zero_y = clip.empty_text_features()
    unet.set_zero_y(zero_y)
    gen = torch.Generator().manual_seed(0)
    image = clip.encode_image(torch.randn(1, 3, *clip.image_size, generator=gen))[:, None]
    photo = torch.rand(1, 3, height, width, generator=gen) * 2 - 1
    ref_latent = encode_to_latent(vae, photo, torch.Generator().manual_seed(1))
    h, w = ref_latent.shape[-2:]
    assert (h, w) == (height // 8, width // 8)
    x = torch.randn(1, 4, frames, h, w, generator=gen)
    t = torch.tensor([500])
    with torch.no_grad():
        v_c = unet(
            x,
            t,
            image=image,
            local_image=(photo[:, :, None] * 0.5 + 0.5).expand(-1, -1, frames, -1, -1),
            dwpose=torch.rand(1, 3, frames + 1, height, width, generator=gen),
            randomref=ref_latent[:, :, None].expand(-1, -1, frames, -1, -1),
        )
    assert v_c.shape == x.shape and torch.isfinite(v_c).all() and v_c.abs().max() > 0
    pixels = decode_latents(vae, v_c, chunk_frames=frames)
    assert pixels.shape == (1, 3, frames, height, width)



def test_check_component_matches_keys_without_loading_and_names_bad_files(tmp_path: Path) -> None:
    import pytest

    from unianimate_cli.errors import WeightsError

    W.write_tiny_family(tmp_path)
    model_set = W.resolve_model_set([tmp_path])
    for component in ("unet", "vae", "clip"):
        assert W.check_component(model_set, component) == tmp_path / f"{component}.safetensors"
    with pytest.raises(WeightsError, match="yolox_l.onnx not found"):
        W.check_component(model_set, "detector")
    # the CLIP file where the VAE should be: nothing fits, and the message says which file
    (tmp_path / "vae.safetensors").replace(tmp_path / "good_vae.safetensors")
    (tmp_path / "clip.safetensors").rename(tmp_path / "vae.safetensors")
    with pytest.raises(WeightsError, match=r"vae \(vae.safetensors\) weights do not fit the model: missing"):
        W.check_component(model_set, "vae")
