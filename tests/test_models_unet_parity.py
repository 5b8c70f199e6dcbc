"""UNet parity through the runner: the shared fixture, a perturbed copy, and a twin of our own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from unianimate_cli import parity
from unianimate_cli.models.unet import UNetConfig, UniAnimateUNet
from unianimate_cli.parity.__main__ import main as parity_main
from unianimate_cli.parity.unet import detect

UNET_CHECKER_MODULE = "unianimate_cli.parity.unet"


@pytest.fixture(autouse=True)
def _runner_knows_unet(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make sure the runner offers the UNet checker (a no-op once the runner lists it)."""
    if UNET_CHECKER_MODULE not in parity.CHECKER_MODULES:
        monkeypatch.setattr(parity, "CHECKER_MODULES", (*parity.CHECKER_MODULES, UNET_CHECKER_MODULE))


pytestmark = pytest.mark.usefixtures("torch_threads")


def test_runner_passes_the_shared_unet_fixture(fixtures_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = fixtures_dir / "unet_tiny"
    assert detect(folder)
    code = parity_main([str(folder)])
    out = capsys.readouterr().out
    config = json.loads((folder / "config.json").read_text())
    assert code == 0, out
    for name in config["outputs"]:
        assert f"ok   {name} " in out
    assert "debug dbg_i_ta.block.output_blocks" in out  # intermediates were compared too
    assert "FAIL" not in out


def test_runner_fails_when_one_weight_is_perturbed(
    fixtures_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = fixtures_dir / "unet_tiny"
    for name in ("config.json", "inputs.safetensors", "outputs.safetensors"):
        (tmp_path / name).symlink_to(source / name)
    state = load_file(str(source / "state_dict.safetensors"))
    # One conv weight in the middle of the network, scaled by 2%: a small real change.
    # (A timestep-embedding weight of a 32-channel block would not do: with GroupNorm(32, 32)
    # every channel is its own group, so the added per-channel embedding cancels exactly.)
    key = "middle_block.0.in_layers.2.weight"
    state[key] = state[key] * 1.02
    save_file(state, str(tmp_path / "state_dict.safetensors"))
    code = parity_main([str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 1
    assert "FAIL out_i_ta" in out


def test_detect_ignores_other_folders(fixtures_dir: Path, tmp_path: Path) -> None:
    assert not detect(fixtures_dir / "vae_tiny")
    assert not detect(tmp_path)


def _write_twin_fixture(folder: Path, seed: int = 7) -> None:
    """A fixture folder in the unet_tiny format for another configuration, made by our model.

    Other dim, depth, attention scales, resolution, frame count and batch size: the checker
    must derive all of these from the folder.
    """
    kwargs = {
        "in_dim": 4,
        "dim": 32,
        "y_dim": 1024,
        "context_dim": 1024,
        "out_dim": 4,
        "dim_mult": [1, 2],
        "num_heads": 1,
        "head_dim": 32,
        "num_res_blocks": 1,
        "attn_scales": [0.5],
        "dropout": 0.1,
        "temporal_attention": True,
        "num_tokens": 4,
        "use_checkpoint": False,
    }
    config_object = {
        "video_compositions": ["image", "local_image", "dwpose", "randomref", "randomref_pose"],
        "resolution": [48, 32],
    }
    config = UNetConfig.from_reference_kwargs(kwargs, config_object["resolution"], config_object["video_compositions"])
    g = torch.Generator().manual_seed(seed)
    model = UniAnimateUNet(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) / (p[0].numel() ** 0.5 if p.ndim > 1 else 10.0))
    batch, frames, (width, height) = 2, 3, config_object["resolution"]
    inputs = {
        "zero_y": torch.randn(1, 77, 1024, generator=g),
        "x": torch.randn(batch, 4, frames, height // 8, width // 8, generator=g),
        "t_early": torch.tensor([900, 3]),
        "image": torch.randn(batch, 1, 1024, generator=g),
        "ref_frames": torch.rand(batch, 3, frames, height, width, generator=g),
        "poses": torch.rand(batch, 3, frames + 1, height, width, generator=g),
        "ref_latent": torch.randn(batch, 4, frames, height // 8, width // 8, generator=g),
    }
    patterns = {
        "a": "model(x, t, image=image, local_image=ref_frames, dwpose=poses)",
        "b": "model(x, t, randomref=ref_latent, dwpose=poses)  # no image",
        "c": "model(x, t)",
    }
    model.set_zero_y(inputs["zero_y"])
    outputs = {}
    with torch.no_grad():
        t = inputs["t_early"]
        outputs["out_a"] = model(inputs["x"], t, image=inputs["image"], local_image=inputs["ref_frames"], dwpose=inputs["poses"])
        outputs["out_b"] = model(inputs["x"], t, randomref=inputs["ref_latent"], dwpose=inputs["poses"])
        outputs["out_c"] = model(inputs["x"], t)
    save_file(model.state_dict(), str(folder / "state_dict.safetensors"))
    save_file(inputs, str(folder / "inputs.safetensors"))
    save_file({k: v.contiguous() for k, v in outputs.items()}, str(folder / "outputs.safetensors"))
    meta = {
        "fixture": "unet_twin",
        "reference": "UNetSD_UniAnimate (written by our own model for the checker test)",
        "constructor_kwargs": kwargs,
        "config_object": config_object,
        "call_patterns": patterns,
        "outputs": {name: {"pattern": name[-1], "t": "t_early"} for name in outputs},
        "state_dict_keys": [{"key": k, "shape": list(v.shape)} for k, v in model.state_dict().items()],
    }
    (folder / "config.json").write_text(json.dumps(meta))


def test_checker_derives_everything_from_a_differently_configured_folder(tmp_path: Path) -> None:
    _write_twin_fixture(tmp_path)
    kind, comparisons = parity.run_parity(tmp_path)
    assert kind == "unet"
    names = {c.name for c in comparisons}
    assert {"out_a", "out_b", "out_c"} <= names
    assert all(c.ok for c in comparisons), [c for c in comparisons if not c.ok]
