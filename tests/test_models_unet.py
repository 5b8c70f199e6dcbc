"""UniAnimateUNet: official keys on the meta device, config mapping, behaviour of a small twin."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from unianimate_cli.models.unet import UNetConfig, UniAnimateUNet, count_parameters


pytestmark = pytest.mark.usefixtures("torch_threads")


def test_official_config_builds_every_reference_key_on_meta(fixtures_dir: Path) -> None:
    listing = json.loads((fixtures_dir / "unet_keys_full.json").read_text())
    start = time.perf_counter()
    with torch.device("meta"):
        model = UniAnimateUNet(UNetConfig.official())
    elapsed = time.perf_counter() - start
    ours = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    ref = [(e["key"], list(e["shape"])) for e in listing["keys"]]
    assert ours == ref  # keys, order and shapes, including `temopral_conv`
    assert len(ours) == listing["num_state_dict_tensors"]
    assert count_parameters(model) == listing["num_parameters"]
    assert "zero_y" not in model.state_dict()
    assert elapsed < 2.0, f"meta build took {elapsed:.2f} s"


def test_official_equals_the_reference_kwargs_of_the_listing(fixtures_dir: Path) -> None:
    listing = json.loads((fixtures_dir / "unet_keys_full.json").read_text())
    obj = listing["config_object"]
    from_ref = UNetConfig.from_reference_kwargs(listing["constructor_kwargs"], obj["resolution"], obj["video_compositions"])
    assert from_ref == UNetConfig.official(tuple(obj["resolution"]))


def test_from_reference_kwargs_rejects_unknown_and_uses_class_defaults() -> None:
    with pytest.raises(ValueError, match="no_such_option"):
        UNetConfig.from_reference_kwargs({"no_such_option": 1}, (64, 96), ["image"])
    config = UNetConfig.from_reference_kwargs({"use_checkpoint": True}, (64, 96), ["image"])
    # The reference class defaults, not the official model's values.
    assert (config.dim, config.dim_mult, config.num_res_blocks) == (512, (1, 2, 3, 4), 3)
    assert config.attn_scales == (0.5, 0.25, 0.125)


TWIN = UNetConfig(
    dim=32,
    dim_mult=(1, 2),
    num_heads=2,
    head_dim=32,
    num_res_blocks=1,
    attn_scales=(1.0,),
    resolution=(32, 48),  # W, H pixels -> 6 x 4 latents
)


def randomise_(model: torch.nn.Module, seed: int) -> None:
    """Weights that keep activations O(1), like the fixtures' (the reference zero-inits outputs)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if p.ndim > 1:
                p.copy_(noise / p[0].numel() ** 0.5)
            elif name.endswith("weight"):  # GroupNorm / LayerNorm scales
                p.copy_(1 + 0.1 * noise)
            else:
                p.copy_(0.02 * noise)


def _random_twin(seed: int = 0) -> UniAnimateUNet:
    model = UniAnimateUNet(TWIN).eval()
    randomise_(model, seed)
    model.set_zero_y(torch.randn(1, 77, TWIN.context_dim, generator=torch.Generator().manual_seed(seed + 1)))
    return model


def _twin_inputs(batch: int, frames: int, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    width, height = TWIN.resolution
    return {
        "x": torch.randn(batch, 4, frames, height // 8, width // 8, generator=g),
        "t": torch.tensor([500, 20][:batch] + [7] * max(0, batch - 2)),
        "image": torch.randn(batch, 1, TWIN.context_dim, generator=g),
        "local_image": torch.rand(batch, 3, frames, height, width, generator=g),
        "dwpose": torch.rand(batch, 3, frames + 1, height, width, generator=g),
        "randomref": torch.randn(batch, 4, frames, height // 8, width // 8, generator=g),
    }


def test_twin_state_dict_round_trips_strictly(tmp_path: Path) -> None:
    model = _random_twin()
    inputs = _twin_inputs(batch=1, frames=3)
    with torch.no_grad():
        before = model(**inputs)
    path = tmp_path / "twin.safetensors"
    save_file(model.state_dict(), str(path))
    with torch.device("meta"):
        fresh = UniAnimateUNet(TWIN)
    loaded = {k: v.clone() for k, v in load_file(str(path)).items()}  # aligned, like the originals
    fresh.load_state_dict(loaded, strict=True, assign=True)
    assert model.zero_y is not None
    fresh.set_zero_y(model.zero_y)
    with torch.no_grad():
        after = fresh.eval()(**inputs)
    assert before.shape == (1, 4, 3, 6, 4)
    assert torch.equal(before, after)


def test_twin_conditions_act_where_the_reference_says() -> None:
    model = _random_twin()
    inputs = _twin_inputs(batch=1, frames=4)
    pose = inputs["dwpose"]
    other_ref_pose = torch.cat([torch.rand_like(pose[:, :, :1]), pose[:, :, 1:]], dim=2)
    with torch.no_grad():
        call_i = model(inputs["x"], inputs["t"], image=inputs["image"], local_image=inputs["local_image"], dwpose=pose)
        call_i_ref_pose = model(
            inputs["x"], inputs["t"], image=inputs["image"], local_image=inputs["local_image"], dwpose=other_ref_pose
        )
        call_ii = model(inputs["x"], inputs["t"], image=inputs["image"], randomref=inputs["randomref"], dwpose=pose)
        call_ii_ref_pose = model(
            inputs["x"], inputs["t"], image=inputs["image"], randomref=inputs["randomref"], dwpose=other_ref_pose
        )
        uncond = model(inputs["x"], inputs["t"])
    # dwpose frame 0 (the reference pose) is used only together with randomref.
    assert torch.equal(call_i, call_i_ref_pose)
    assert not torch.allclose(call_ii, call_ii_ref_pose, atol=1e-3)
    assert not torch.allclose(call_i, uncond, atol=1e-3)
    assert torch.isfinite(uncond).all()


def test_twin_batch_items_are_independent() -> None:
    model = _random_twin()
    inputs = _twin_inputs(batch=2, frames=3)
    with torch.no_grad():
        both = model(**inputs)
        second = model(**{k: v[1:] for k, v in inputs.items()})
        shared_t = model(**{**inputs, "t": torch.tensor([7])})
        per_item_t = model(**{**inputs, "t": torch.tensor([7, 7])})
    torch.testing.assert_close(both[1:], second, rtol=1e-5, atol=1e-5)
    assert torch.equal(shared_t, per_item_t)


def test_forward_explains_missing_zero_y_and_wrong_resolution() -> None:
    model = _random_twin()
    inputs = _twin_inputs(batch=1, frames=2)
    with pytest.raises(ValueError, match="resolution"):
        with torch.no_grad():
            # Poses are pooled to the configured resolution, so a latent of another size cannot fit.
            model(inputs["x"][..., :-1, :], inputs["t"], dwpose=inputs["dwpose"])
    model.zero_y = None
    with pytest.raises(RuntimeError, match="set_zero_y"):
        model(inputs["x"], inputs["t"])


def test_set_resolution_retargets_the_condition_pools() -> None:
    model = _random_twin()
    model.set_resolution((48, 32))  # landscape frames now: 4 x 6 latents
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        out = model(
            torch.randn(1, 4, 2, 4, 6, generator=g),
            torch.tensor([10]),
            dwpose=torch.rand(1, 3, 3, 32, 48, generator=g),
        )
    assert out.shape == (1, 4, 2, 4, 6)
    assert model.config.resolution == (48, 32)


def test_reduced_precision_weights_take_float32_inputs() -> None:
    """bfloat16 weights: inputs are cast once on entry, v comes back in x's dtype, close to float32."""
    model = _random_twin()
    inputs = _twin_inputs(batch=1, frames=2)
    with torch.no_grad():
        ref = model(**inputs)
        out = copy.deepcopy(model).to(torch.bfloat16)(**inputs)
    assert out.dtype == torch.float32
    rel_l2 = float((out - ref).norm() / ref.norm())
    assert 0 < rel_l2 < 0.1  # bfloat16 keeps 8 mantissa bits: a few percent, not garbage


def test_train_mode_changes_nothing() -> None:
    """Inference-only: no dropout or condition dropout, so train() gives the eval() result."""
    model = _random_twin()
    inputs = _twin_inputs(batch=1, frames=2)
    with torch.no_grad():
        evaluated = model.eval()(**inputs)
        trained = model.train()(**inputs)
    assert torch.equal(evaluated, trained)
