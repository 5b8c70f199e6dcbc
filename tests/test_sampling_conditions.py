"""Pixel-side conditions and frame selection against fixtures/conditioning; Conditions helpers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from unianimate_cli.errors import InputError
from unianimate_cli.sampling import conditions as cond
from unianimate_cli.sampling.conditions import Conditions, Variant


@pytest.fixture(scope="module")
def fixture(fixtures_dir: Path) -> tuple[dict[str, torch.Tensor], dict]:
    folder = fixtures_dir / "conditioning"
    return load_file(str(folder / "conditioning.safetensors")), json.loads((folder / "meta.json").read_text())


def test_every_case_matches(fixture: tuple[dict[str, torch.Tensor], dict]) -> None:
    tensors, meta = fixture
    width, height = meta["resolution_WH"]
    photo = tensors["ref_image_rgb_uint8"].numpy()
    poses = list(tensors["poses_rgb_uint8"].numpy())
    ref_pose = tensors["ref_pose_rgb_uint8"].numpy()
    pixels = cond.reference_pixels(photo, width, height)
    checked = 0
    for case, spec in meta["cases"].items():
        n = spec["num_pose_files"]
        max_frames = None if spec["max_frames_arg"] == "None" else spec["max_frames_arg"]
        selection = cond.select_pose_frames(n, spec["frame_interval"], max_frames)
        assert selection == spec["pose_file_index_per_frame"]
        assert len(selection) == spec["max_frames_used"]
        assert [i for i, s in enumerate(selection) if s is None] == spec["zero_padded_frames"]
        built = {
            "clip_input": lambda: cond.clip_input(photo),
            "local_image": lambda: cond.local_image_tensor(pixels, len(selection)),
            "vae_input": lambda: cond.vae_input(pixels),
            "dwpose": lambda: cond.pose_tensor(ref_pose, cond.selected_pose_frames(poses[:n], selection), width, height),
        }
        for what, build in built.items():
            key = f"{case}.{what}"
            if key in tensors:
                torch.testing.assert_close(build(), tensors[key], rtol=0, atol=1e-6)
                checked += 1
    assert checked >= 4


def test_fix_option_truncates_instead_of_padding() -> None:
    assert cond.select_pose_frames(3, 2, 4, pad=True) == [0, 1, 2, None]
    assert cond.select_pose_frames(3, 2, 4, pad=False) == [0, 1, 2]
    assert cond.select_pose_frames(9, 2, None) == [0, 2, 4, 6, 8]
    assert cond.select_pose_frames(1, 2, 1) == [0]
    with pytest.raises(InputError):
        cond.select_pose_frames(0, 2, 4)


def test_clip_input_is_a_squash_not_a_crop() -> None:
    wide = torch.zeros(10, 40, 3, dtype=torch.uint8).numpy()
    wide[:, :5] = 255  # a white strip at the far left survives only without a centre crop
    x = cond.clip_input(wide)
    assert x.shape == (1, 3, 224, 224)
    assert float(x[0, 0, :, 0].mean()) > 1.0


def _toy_conditions(f: int = 6) -> Conditions:
    return Conditions(
        image=torch.randn(1, 1, 8),
        local_image=torch.rand(1, 3, f, 16, 8),
        dwpose=torch.rand(1, 3, f + 1, 16, 8),
        randomref=torch.randn(1, 4, f, 2, 1),
    )


def test_select_window_and_concat() -> None:
    c = _toy_conditions()
    a = c.select(Variant.A)
    assert a.randomref is None and a.local_image is not None
    b = c.select(Variant.B)
    assert b.local_image is None and b.randomref is not None
    assert Conditions().is_unconditional and not b.is_unconditional
    w = c.for_window([2, 3, 5])
    assert c.dwpose is not None and w.dwpose is not None
    assert torch.equal(w.dwpose[:, :, 0], c.dwpose[:, :, 0])
    assert torch.equal(w.dwpose[:, :, 1:], c.dwpose[:, :, [3, 4, 6]])
    both = Conditions.concat([c.for_window([0, 1]), c.for_window([4, 5])])
    assert both.image is not None and both.image.shape[0] == 2
    assert both.dwpose is not None and both.dwpose.shape[:3] == (2, 3, 3)
    with pytest.raises(InputError):
        c.select(["image", "pose"])
    assert Conditions(image=c.image).missing(Variant.B) == ["randomref", "dwpose"]
    with pytest.raises(ValueError):
        c.check((1, 4, 5, 2, 1))


def test_build_conditions_assembles_the_fixture_tensors(fixture: tuple[dict[str, torch.Tensor], dict]) -> None:
    tensors, meta = fixture
    width, height = meta["resolution_WH"]
    case, spec = next((k, v) for k, v in meta["cases"].items() if f"{k}.local_image" in tensors)
    n = spec["num_pose_files"]
    selection = cond.select_pose_frames(n, spec["frame_interval"], spec["max_frames_arg"])
    poses = list(tensors["poses_rgb_uint8"].numpy())
    seen: dict[str, torch.Tensor] = {}

    def encode_image(x: torch.Tensor) -> torch.Tensor:
        seen["clip"] = x
        return torch.arange(8, dtype=torch.float32).view(1, 8)

    def encode_latent(x: torch.Tensor) -> torch.Tensor:
        seen["vae"] = x
        return x[:, :, ::8, ::8].mean(1, keepdim=True).repeat(1, 4, 1, 1)

    built = cond.build_conditions(
        tensors["ref_image_rgb_uint8"].numpy(),
        tensors["ref_pose_rgb_uint8"].numpy(),
        cond.selected_pose_frames(poses[:n], selection),
        width,
        height,
        encode_image,
        encode_latent,
    )
    torch.testing.assert_close(seen["clip"], tensors[f"{case}.clip_input"], rtol=0, atol=1e-6)
    torch.testing.assert_close(seen["vae"], tensors[f"{case}.vae_input"], rtol=0, atol=1e-6)
    torch.testing.assert_close(built.local_image, tensors[f"{case}.local_image"], rtol=0, atol=1e-6)
    torch.testing.assert_close(built.dwpose, tensors[f"{case}.dwpose"], rtol=0, atol=1e-6)
    assert built.image is not None and built.image.shape == (1, 1, 8)
    assert built.randomref is not None and built.randomref.shape == (1, 4, len(selection), height // 8, width // 8)
    assert torch.equal(built.randomref[:, :, 0], built.randomref[:, :, -1])


def test_match_color_statistics() -> None:
    gen = torch.Generator().manual_seed(1)
    frame = torch.rand(3, 8, 6, generator=gen) * 0.2
    reference = torch.rand(3, 10, 4, generator=gen) * 2 - 1
    matched = cond.match_color_statistics(frame, reference)
    torch.testing.assert_close(matched.mean(dim=(-2, -1)), reference.mean(dim=(-2, -1)), rtol=0, atol=1e-5)
    torch.testing.assert_close(matched.std(dim=(-2, -1)), reference.std(dim=(-2, -1)), rtol=1e-4, atol=1e-5)
