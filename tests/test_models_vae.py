"""SD-2.1 VAE: official key layout, fixture parity (shared folder and unseen twins), chunked decoding."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from unianimate_cli.models.vae import (
    SCALE_FACTOR,
    AutoencoderKL,
    DiagonalGaussian,
    VAEConfig,
    decode_latents,
    encode_to_latent,
)
from unianimate_cli.parity import run_parity
from unianimate_cli.parity.vae import CHECKERS

CHECKER = CHECKERS[0]


def test_official_vae_has_the_official_keys_shapes_and_parameter_count(fixtures_dir: Path) -> None:
    listing = json.loads((fixtures_dir / "vae_keys_full.json").read_text())
    with torch.device("meta"):
        vae = AutoencoderKL(VAEConfig.official())
    ours = [(k, list(v.shape)) for k, v in vae.state_dict().items()]
    ref = [(entry["key"], entry["shape"]) for entry in listing["keys"]]
    assert ours == ref
    assert len(ours) == listing["num_state_dict_tensors"]
    assert sum(p.numel() for p in vae.parameters()) == listing["num_parameters"]


def test_official_config_round_trips_through_reference_kwargs(fixtures_dir: Path) -> None:
    listing = json.loads((fixtures_dir / "vae_keys_full.json").read_text())
    # video_kernel_size and pretrained are swallowed by the reference; they must not break us.
    assert VAEConfig.from_reference_kwargs(listing["constructor"]) == VAEConfig.official()
    assert VAEConfig.from_dict(VAEConfig.official().to_dict()) == VAEConfig.official()
    with pytest.raises(ValueError, match="chmult"):
        VAEConfig.from_dict({"chmult": [1, 2]})


def test_shared_vae_fixture_passes_parity(fixtures_dir: Path) -> None:
    folder = fixtures_dir / "vae_tiny"
    assert CHECKER.detect(folder)
    comparisons = CHECKER.run(folder)
    from safetensors import safe_open

    with safe_open(str(folder / "outputs.safetensors"), "pt") as f:
        names = set(f.keys())
    assert {c.name for c in comparisons} == names
    bad = [c for c in comparisons if not c.ok]
    assert not bad, bad


def test_parity_command_exits_zero_on_the_shared_fixture(
    fixtures_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import unianimate_cli.parity as parity
    from unianimate_cli.parity.__main__ import main

    if not _vae_registered():  # until parity/__init__.py lists parity.vae
        monkeypatch.setattr(parity, "CHECKER_MODULES", (*parity.CHECKER_MODULES, "unianimate_cli.parity.vae"))
    assert main([str(fixtures_dir / "vae_tiny")]) == 0
    out = capsys.readouterr().out
    from safetensors import safe_open

    with safe_open(str(fixtures_dir / "vae_tiny" / "outputs.safetensors"), "pt") as f:
        count = len(list(f.keys()))
    assert "(vae)" in out and f"{count} passed, 0 failed" in out


def test_reduced_precision_is_measured_not_hidden(fixtures_dir: Path) -> None:
    from unianimate_cli.parity.vae import run_on

    comparisons = {c.name: c for c in run_on(fixtures_dir / "vae_tiny", dtype="bf16")}
    # bf16 keeps 8 mantissa bits: clearly outside the float32 tolerance, but still the same images.
    assert not comparisons["decoded_from_mean"].ok
    assert 1e-4 < comparisons["decoded_from_mean"].rel_l2 < 0.1


@pytest.mark.gpu
def test_vae_fixture_parity_on_cuda_in_float32(fixtures_dir: Path) -> None:
    from unianimate_cli.parity.vae import run_on

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    comparisons = run_on(fixtures_dir / "vae_tiny", device="cuda", dtype="fp32")
    assert comparisons and all(c.ok for c in comparisons), comparisons


def test_detect_rejects_other_fixture_kinds(fixtures_dir: Path, tmp_path: Path) -> None:
    assert not CHECKER.detect(fixtures_dir / "unet_tiny")
    assert not CHECKER.detect(tmp_path)


# ---------------------------------------------------------------- an independent reference for twins


def _gn(x: torch.Tensor, sd: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    return F.group_norm(x, 32, sd[key + ".weight"], sd[key + ".bias"], eps=1e-6)


def _conv(x: torch.Tensor, sd: dict[str, torch.Tensor], key: str, **kw: int) -> torch.Tensor:
    return F.conv2d(x, sd[key + ".weight"], sd[key + ".bias"], **kw)


def _swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


def _res(x: torch.Tensor, sd: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    h = _conv(_swish(_gn(x, sd, key + ".norm1")), sd, key + ".conv1", padding=1)
    h = _conv(_swish(_gn(h, sd, key + ".norm2")), sd, key + ".conv2", padding=1)
    if key + ".nin_shortcut.weight" in sd:
        x = _conv(x, sd, key + ".nin_shortcut")
    return x + h


def _attn(x: torch.Tensor, sd: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    # Written the long way (bmm + softmax), unlike the model's SDPA.
    b, c, h, w = x.shape
    y = _gn(x, sd, key + ".norm")
    q = _conv(y, sd, key + ".q").reshape(b, c, h * w).permute(0, 2, 1)
    k = _conv(y, sd, key + ".k").reshape(b, c, h * w)
    v = _conv(y, sd, key + ".v").reshape(b, c, h * w)
    weights = torch.softmax(torch.bmm(q, k) / math.sqrt(c), dim=2)
    out = torch.bmm(v, weights.permute(0, 2, 1)).reshape(b, c, h, w)
    return x + _conv(out, sd, key + ".proj_out")


def _mid(h: torch.Tensor, sd: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    return _res(_attn(_res(h, sd, key + ".block_1"), sd, key + ".attn_1"), sd, key + ".block_2")


def _count(sd: dict[str, torch.Tensor], prefix: str) -> int:
    return len({k[len(prefix) :].split(".")[0] for k in sd if k.startswith(prefix)})


def _level_blocks(h: torch.Tensor, sd: dict[str, torch.Tensor], p: str) -> torch.Tensor:
    """A level's ResnetBlocks, each followed by its attention block where the keys have one."""
    for i in range(_count(sd, p + "block.")):
        h = _res(h, sd, p + f"block.{i}")
        if f"{p}attn.{i}.q.weight" in sd:
            h = _attn(h, sd, p + f"attn.{i}")
    return h


def _reference_forward(sd: dict[str, torch.Tensor], image: torch.Tensor, eps: torch.Tensor) -> dict[str, torch.Tensor]:
    """Functional float64 forward that reads the structure from the state-dict keys alone."""
    n_levels = _count(sd, "encoder.down.")
    h = _conv(image, sd, "encoder.conv_in", padding=1)
    for level in range(n_levels):
        p = f"encoder.down.{level}."
        h = _level_blocks(h, sd, p)
        if p + "downsample.conv.weight" in sd:
            h = _conv(F.pad(h, (0, 1, 0, 1)), sd, p + "downsample.conv", stride=2)
    h = _mid(h, sd, "encoder.mid")
    encoder_out = _conv(_swish(_gn(h, sd, "encoder.norm_out")), sd, "encoder.conv_out", padding=1)
    moments = _conv(encoder_out, sd, "quant_conv")
    mean, logvar = moments.chunk(2, dim=1)
    logvar = logvar.clamp(-30.0, 20.0)
    std = torch.exp(0.5 * logvar)

    def decode(z: torch.Tensor) -> torch.Tensor:
        h = _conv(_conv(z, sd, "post_quant_conv"), sd, "decoder.conv_in", padding=1)
        h = _mid(h, sd, "decoder.mid")
        for level in reversed(range(_count(sd, "decoder.up."))):
            p = f"decoder.up.{level}."
            h = _level_blocks(h, sd, p)
            if p + "upsample.conv.weight" in sd:
                h = _conv(F.interpolate(h, scale_factor=2.0, mode="nearest"), sd, p + "upsample.conv", padding=1)
        return _conv(_swish(_gn(h, sd, "decoder.norm_out")), sd, "decoder.conv_out", padding=1)

    first_stage = SCALE_FACTOR * (mean + std * eps)
    return {
        "encoder_out": encoder_out,
        "moments": moments,
        "posterior_mean": mean,
        "posterior_logvar": logvar,
        "posterior_std": std,
        "decoded_from_mean": decode(mean),
        "first_stage_encoding": first_stage,
        "decoded_from_first_stage": decode((1 / SCALE_FACTOR) * first_stage),
    }


def _randomise(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in model.state_dict().items():
        noise = torch.randn(value.shape, generator=gen)
        if key.endswith(".bias"):
            out[key] = 0.02 * noise
        elif value.ndim == 1:
            out[key] = 1 + 0.1 * noise
        else:
            out[key] = noise / math.sqrt(value[0].numel())
    return out


def _write_twin(folder: Path, ddconfig: dict, image_shape: tuple[int, int, int, int], seed: int) -> None:
    folder.mkdir()
    constructor = {"ddconfig": ddconfig, "embed_dim": 4, "pretrained": None}
    model = AutoencoderKL(VAEConfig.from_reference_kwargs(constructor))
    sd = _randomise(model, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    n, _, height, width = image_shape
    factor = 2 ** (len(ddconfig["ch_mult"]) - 1)
    image = torch.rand(image_shape, generator=gen) * 2 - 1
    eps = torch.randn((n, 4, height // factor, width // factor), generator=gen)
    with torch.no_grad():
        outputs = _reference_forward({k: v.double() for k, v in sd.items()}, image.double(), eps.double())
    (folder / "config.json").write_text(json.dumps({"constructor": constructor, "scale_factor": SCALE_FACTOR}))
    save_file(sd, str(folder / "state_dict.safetensors"))
    save_file({"image": image, "eps": eps}, str(folder / "inputs.safetensors"))
    save_file({k: v.float().contiguous() for k, v in outputs.items()}, str(folder / "outputs.safetensors"))


TWINS = [
    # other width, depth, res blocks, image size; attention inside levels, as attn_resolutions asks
    (dict(ch=32, ch_mult=[1, 2, 2], num_res_blocks=2, attn_resolutions=[32]), (3, 3, 24, 40)),
    (dict(ch=64, ch_mult=[1, 1], num_res_blocks=1, attn_resolutions=[]), (1, 3, 16, 8)),
]


@pytest.mark.parametrize("overrides,image_shape", TWINS)
def test_unseen_twin_folders_pass_and_a_wrong_output_fails(
    tmp_path: Path, overrides: dict, image_shape: tuple[int, int, int, int]
) -> None:
    ddconfig = dict(double_z=True, z_channels=4, resolution=64, in_channels=3, out_ch=3, dropout=0.0, **overrides)
    folder = tmp_path / "twin"
    _write_twin(folder, ddconfig, image_shape, seed=7)
    assert CHECKER.detect(folder)
    kind, comparisons = run_parity(folder) if _vae_registered() else ("vae", CHECKER.run(folder))
    assert kind == "vae"
    assert len(comparisons) == 8 and all(c.ok for c in comparisons), comparisons

    from safetensors.torch import load_file

    outputs = load_file(str(folder / "outputs.safetensors"))
    outputs["decoded_from_mean"] = outputs["decoded_from_mean"] * 1.001
    outputs["mystery"] = torch.zeros(1)
    save_file(outputs, str(folder / "outputs.safetensors"))
    by_name = {c.name: c for c in CHECKER.run(folder)}
    assert not by_name["decoded_from_mean"].ok
    assert not by_name["mystery"].ok
    assert by_name["posterior_mean"].ok


def _vae_registered() -> bool:
    from unianimate_cli.parity import available_checkers

    return any(c.kind == "vae" for c in available_checkers())


# ---------------------------------------------------------------- encode / decode helpers


def _tiny_vae(seed: int = 3) -> AutoencoderKL:
    vae = AutoencoderKL(VAEConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1))
    vae.load_state_dict(_randomise(vae, seed))
    return vae.eval()


def test_decode_latents_matches_per_frame_decoding_for_any_chunk_size() -> None:
    vae = _tiny_vae()
    latents = torch.randn(2, 4, 5, 6, 4, generator=torch.Generator().manual_seed(0))
    reports: list[tuple[int, int]] = []
    whole = decode_latents(vae, latents, chunk_frames=10)
    chunked = decode_latents(vae, latents, chunk_frames=3, progress=lambda done, total: reports.append((done, total)))
    assert whole.shape == (2, 3, 5, 12, 8)
    # Equal up to float32 rounding: the CPU conv kernels block differently per batch size
    # (measured max 2e-6 on values of about 2), far inside the fixture tolerance.
    assert torch.allclose(chunked, whole, rtol=0, atol=1e-5)
    assert reports == [(3, 10), (6, 10), (9, 10), (10, 10)]
    with torch.no_grad():
        frame = vae.decode(latents[1, :, 3][None] * (1 / SCALE_FACTOR))[0]
    assert torch.allclose(chunked[1, :, 3], frame, rtol=0, atol=1e-5)
    assert not torch.allclose(chunked[1, :, 3], chunked[1, :, 2], rtol=0, atol=1e-2)


def test_decode_latents_rejects_bad_shapes() -> None:
    vae = _tiny_vae()
    with pytest.raises(ValueError, match="b, c, f, h, w"):
        decode_latents(vae, torch.zeros(4, 6, 4))
    with pytest.raises(ValueError, match="chunk_frames"):
        decode_latents(vae, torch.zeros(1, 4, 1, 6, 4), chunk_frames=0)


def test_encode_to_latent_samples_from_the_given_generator() -> None:
    vae = _tiny_vae()
    pixels = torch.rand(2, 3, 8, 12, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        posterior = vae.encode(pixels)
        a = encode_to_latent(vae, pixels, torch.Generator().manual_seed(5))
        b = encode_to_latent(vae, pixels, torch.Generator().manual_seed(5))
        c = encode_to_latent(vae, pixels, torch.Generator().manual_seed(6))
        mean = encode_to_latent(vae, pixels, sample=False)
    eps = torch.randn(posterior.mean.shape, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.allclose(a, SCALE_FACTOR * (posterior.mean + posterior.std * eps), rtol=0, atol=1e-7)
    assert torch.allclose(mean, SCALE_FACTOR * posterior.mean, rtol=0, atol=0)
    assert a.shape == (2, 4, 4, 6)


def test_posterior_clamps_logvar() -> None:
    moments = torch.tensor([0.5, 1.0, -100.0, 100.0]).reshape(1, 4, 1, 1)
    post = DiagonalGaussian(moments)
    assert post.logvar.flatten().tolist() == [-30.0, 20.0]
    assert torch.allclose(post.std, torch.exp(0.5 * torch.tensor([-30.0, 20.0])).reshape(1, 2, 1, 1))
    assert torch.equal(post.mode(), moments[:, :2])
