"""Weight files: where they are looked for, safe loading, clear errors, model families."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import sys
import types
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from unianimate_cli import weights as W
from unianimate_cli.errors import WeightsError
from unianimate_cli.models.vae import AutoencoderKL, VAEConfig

TINY_VAE = VAEConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1)


# ---------------------------------------------------------------- where to look


def test_official_names_are_the_reference_release() -> None:
    assert W.OFFICIAL_FILES == (
        "unianimate_16f_32f_non_ema_223000.pth",
        "v2-1_512-ema-pruned.ckpt",
        "open_clip_pytorch_model.bin",
        "yolox_l.onnx",
        "dw-ll_ucoco_384.onnx",
    )


def test_search_order_is_flag_then_config_then_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNIANIMATE_DATA_DIR", str(tmp_path / "data"))
    flag, conf = tmp_path / "flag", tmp_path / "conf"
    assert W.search_dirs(flag, conf) == [flag, conf, tmp_path / "data" / "weights"]
    assert W.search_dirs(None, flag) == [flag, tmp_path / "data" / "weights"]
    assert W.search_dirs(flag, flag) == [flag, tmp_path / "data" / "weights"]
    assert W.default_weights_dir() == tmp_path / "data" / "weights"


def test_find_weight_takes_the_first_folder_that_has_the_file(tmp_path: Path) -> None:
    a, b, c = (tmp_path / n for n in "abc")
    for d in (a, b, c):
        d.mkdir()
    (b / W.CLIP_FILE).write_bytes(b"x")
    (c / W.CLIP_FILE).write_bytes(b"y")
    assert W.find_weight(W.CLIP_FILE, [a, b, c]) == b / W.CLIP_FILE


def test_missing_weight_says_which_file_where_and_how(tmp_path: Path) -> None:
    dirs = [tmp_path / "one", tmp_path / "two"]
    with pytest.raises(WeightsError) as info:
        W.find_weight(W.UNET_FILE, dirs)
    err = info.value
    assert W.UNET_FILE in err.message
    assert str(dirs[0]) in err.message and str(dirs[1]) in err.message
    assert err.hint is not None and "unianimate weights fetch" in err.hint and "iic/unianimate" in err.hint


# ---------------------------------------------------------------- safe loading


def _tensors() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {"a.weight": torch.randn(3, 4, generator=gen), "a.bias": torch.randn(3, generator=gen), "steps": torch.arange(3)}


def _same(x: dict[str, torch.Tensor], y: dict[str, torch.Tensor]) -> bool:
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def test_safetensors_and_plain_pth_load(tmp_path: Path) -> None:
    state = _tensors()
    save_file(state, str(tmp_path / "m.safetensors"))
    torch.save(state, tmp_path / "m.pth")
    assert _same(W.load_state_dict(tmp_path / "m.safetensors"), state)
    assert _same(W.load_state_dict(tmp_path / "m.pth"), state)


def test_prefix_selection_in_safetensors(tmp_path: Path) -> None:
    state = _tensors()
    save_file({**{f"first_stage_model.{k}": v for k, v in state.items()}, "other.w": torch.ones(1)}, str(tmp_path / "sd.safetensors"))
    assert _same(W.load_state_dict(tmp_path / "sd.safetensors", select_prefix=W.SD_VAE_PREFIX), state)
    with pytest.raises(WeightsError, match="no keys with prefix 'cond_stage_model.'"):
        W.load_state_dict(tmp_path / "sd.safetensors", select_prefix="cond_stage_model.")


def test_wrapped_and_data_parallel_checkpoints_are_unwrapped(tmp_path: Path) -> None:
    state = _tensors()
    torch.save({"state_dict": state, "global_step": 223000, "epoch": 3}, tmp_path / "wrapped.pth")
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "dp.pth")
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "both.pth")
    for name in ("wrapped.pth", "dp.pth", "both.pth"):
        assert _same(W.load_state_dict(tmp_path / name), state), name


def test_cast_on_request_keeps_integer_tensors(tmp_path: Path) -> None:
    torch.save(_tensors(), tmp_path / "m.pth")
    half = W.load_state_dict(tmp_path / "m.pth", dtype="fp16")
    bf = W.load_state_dict(tmp_path / "m.pth", dtype=torch.bfloat16)
    assert half["a.weight"].dtype == torch.float16 and bf["a.bias"].dtype == torch.bfloat16
    assert half["steps"].dtype == torch.int64
    with pytest.raises(WeightsError, match="unknown dtype"):
        W.load_state_dict(tmp_path / "m.pth", dtype="fp8")


class _FakeModelCheckpoint:
    """Registered as pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint for pickling."""

    def __init__(self) -> None:
        self.monitor = "val/rec_loss"
        self.best_model_path = "/logs/best.ckpt"
        self.best_model_score = torch.tensor(0.125)


def _write_fake_sd_ckpt(path: Path, monkeypatch: pytest.MonkeyPatch, vae_state: dict[str, torch.Tensor]) -> None:
    """A checkpoint shaped like v2-1_512-ema-pruned.ckpt: Lightning callbacks + prefixed weights."""
    module = types.ModuleType("pytorch_lightning.callbacks.model_checkpoint")
    _FakeModelCheckpoint.__module__ = module.__name__
    _FakeModelCheckpoint.__qualname__ = _FakeModelCheckpoint.__name__ = "ModelCheckpoint"
    module.ModelCheckpoint = _FakeModelCheckpoint  # type: ignore[attr-defined]
    for name in ("pytorch_lightning", "pytorch_lightning.callbacks"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, module.__name__, module)
    state = {f"first_stage_model.{k}": v for k, v in vae_state.items()}
    state["model.diffusion_model.out.0.weight"] = torch.ones(4)
    state["cond_stage_model.model.ln_final.weight"] = torch.ones(4)
    callback = _FakeModelCheckpoint()
    torch.save(
        {
            "state_dict": state,
            "global_step": 110000,
            "callbacks": {_FakeModelCheckpoint: {"best_model_score": torch.tensor(0.5)}, "instance": callback},
        },
        path,
    )
    # Lightning is not installed for real: loading must not need the class any more.
    for name in ("pytorch_lightning", "pytorch_lightning.callbacks", module.__name__):
        monkeypatch.delitem(sys.modules, name)


def test_sd_checkpoint_with_lightning_callbacks_loads_its_vae(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = _tensors()
    path = tmp_path / W.SD_CKPT_FILE
    _write_fake_sd_ckpt(path, monkeypatch, state)
    with pytest.raises(Exception, match="ModelCheckpoint"):  # plain weights_only load refuses it
        torch.load(path, weights_only=True)
    assert _same(W.load_state_dict(path, select_prefix=W.SD_VAE_PREFIX), state)
    assert W.disallowed_globals(path) == []
    everything = W.load_state_dict(path)
    assert "model.diffusion_model.out.0.weight" in everything and "global_step" not in everything
    with pytest.raises(WeightsError, match="no keys with prefix 'first_stage_model.'"):
        W.load_state_dict(_plain(tmp_path), select_prefix=W.SD_VAE_PREFIX)


def _plain(tmp_path: Path) -> Path:
    path = tmp_path / "plain.pth"
    torch.save(_tensors(), path)
    return path


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.makedirs, (str(self.marker),))


@pytest.mark.parametrize("legacy", [False, True])
def test_malicious_pickle_is_refused_without_running_it(tmp_path: Path, legacy: bool) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    if legacy:  # a bare pickle stream, as torch's pre-zip format starts with
        path.write_bytes(pickle.dumps({"x": _Exploit(marker)}, protocol=2))
    else:
        torch.save({"weight": torch.ones(2), "x": _Exploit(marker)}, path)
    with pytest.raises(WeightsError) as info:
        W.load_state_dict(path)
    assert "evil.pth" in info.value.message
    assert not marker.exists()
    assert "makedirs" in info.value.message and "refusing" in info.value.message
    if not legacy:
        assert any("makedirs" in g for g in W.disallowed_globals(path))


def test_truncated_and_empty_files_name_the_file(tmp_path: Path) -> None:
    torch.save(_tensors(), tmp_path / "full.pth")
    data = (tmp_path / "full.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    save_file(_tensors(), str(tmp_path / "full.safetensors"))
    st = (tmp_path / "full.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(st[: len(st) - 10])
    (tmp_path / "empty.ckpt").write_bytes(b"")
    for name, pattern in [("cut.pth", "truncated or corrupt"), ("cut.safetensors", "safetensors"), ("empty.ckpt", "empty")]:
        with pytest.raises(WeightsError, match=pattern) as info:
            W.load_state_dict(tmp_path / name)
        assert name in info.value.message
    with pytest.raises(WeightsError, match="does not exist"):
        W.load_state_dict(tmp_path / "nothing.pth")


def test_load_into_lists_missing_unexpected_and_mismatched_keys() -> None:
    module = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    state = dict(module.state_dict())
    state.pop("1.bias")
    state["0.weight"] = torch.zeros(5, 4)
    state["2.weight"] = torch.zeros(1)
    with pytest.raises(WeightsError) as info:
        W.load_into(module, state, "toy")
    msg = info.value.message
    assert msg.startswith("toy weights do not fit the model")
    assert "missing 1 (1.bias)" in msg
    assert "unexpected 1 (2.weight)" in msg
    assert "shape mismatch 1 (0.weight (5, 4) vs (3, 4))" in msg
    good = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2)).state_dict()
    W.load_into(module, good, "toy")
    assert torch.equal(module[0].weight, good["0.weight"])  # type: ignore[arg-type]


def test_load_into_assigns_onto_a_meta_module() -> None:
    with torch.device("meta"):
        module = torch.nn.Linear(4, 3)
    state = {"weight": torch.randn(3, 4), "bias": torch.randn(3)}
    W.load_into(module, state, "toy", assign=True)
    assert W.meta_tensor_names(module) == []
    assert module.weight.data_ptr() == state["weight"].data_ptr()


# ---------------------------------------------------------------- model families


def _random_vae(config: VAEConfig, seed: int) -> AutoencoderKL:
    torch.manual_seed(seed)
    return AutoencoderKL(config).eval()


def test_without_models_json_the_official_set_is_used(tmp_path: Path) -> None:
    model_set = W.resolve_model_set([tmp_path])
    assert model_set.is_official
    assert [model_set.filename(c) for c in W.COMPONENTS] == list(W.OFFICIAL_FILES)
    assert model_set.vae_config() == VAEConfig.official()
    assert model_set.vae_key_prefix() == W.SD_VAE_PREFIX
    assert model_set.clip_config() is None
    with pytest.raises(WeightsError, match=W.SD_CKPT_FILE):
        model_set.path("vae")


def _write_models_json(folder: Path, payload: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / W.MODELS_JSON).write_text(json.dumps(payload))


def test_models_json_family_loads_tiny_vae_and_clip(tmp_path: Path) -> None:
    from unianimate_cli.models.clip import ClipImageEncoder, build_clip, tiny_clip_config

    family = tmp_path / "family"
    vae = _random_vae(TINY_VAE, 1)
    clip_model = build_clip(tiny_clip_config()).eval()
    _write_models_json(
        family,
        {
            "schema": 1,
            "name": "tiny-random",
            "vae": {"file": "vae.safetensors", "config": TINY_VAE.to_dict()},
            "clip": {"file": "clip.safetensors", "config": tiny_clip_config()},
            "pose": {"file": "pose.onnx"},
        },
    )
    save_file(vae.state_dict(), str(family / "vae.safetensors"))
    save_file(clip_model.state_dict(), str(family / "clip.safetensors"))
    other = tmp_path / "other"
    other.mkdir()
    (other / W.DETECTOR_FILE).write_bytes(b"onnx")

    model_set = W.resolve_model_set([tmp_path / "nothing", family, other])
    assert model_set.name == "tiny-random" and not model_set.is_official
    assert model_set.vae_config() == TINY_VAE
    assert model_set.filename("unet") == W.UNET_FILE  # omitted component: official
    assert model_set.path("detector") == other / W.DETECTOR_FILE  # found beyond the family folder
    with pytest.raises(WeightsError, match="pose.onnx"):
        model_set.path("pose")
    status = {s.component: s for s in W.model_set_status(model_set)}
    assert status["vae"].path == family / "vae.safetensors"
    assert status["pose"].path is None and status["pose"].filename == "pose.onnx"
    assert status["unet"].filename == W.UNET_FILE and status["unet"].path is None

    loaded = model_set.load_vae()
    pixels = torch.rand(1, 3, 8, 8) * 2 - 1
    with torch.no_grad():
        assert torch.equal(loaded.encode(pixels).mean, vae.encode(pixels).mean)
    encoder = model_set.load_clip()
    assert isinstance(encoder, ClipImageEncoder)
    assert torch.equal(encoder.empty_text_features(), ClipImageEncoder(clip_model).empty_text_features())


def test_models_json_vae_from_an_sd_style_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    vae = _random_vae(TINY_VAE, 2)
    _write_models_json(tmp_path, {"vae": {"file": W.SD_CKPT_FILE, "config": TINY_VAE.to_dict()}})
    _write_fake_sd_ckpt(tmp_path / W.SD_CKPT_FILE, monkeypatch, dict(vae.state_dict()))
    model_set = W.resolve_model_set([tmp_path])
    assert model_set.vae_key_prefix() == W.SD_VAE_PREFIX
    loaded = model_set.load_vae(dtype="bf16")
    assert next(loaded.parameters()).dtype == torch.bfloat16
    assert torch.equal(loaded.decoder.conv_out.weight.float(), vae.decoder.conv_out.weight.to(torch.bfloat16).float())


def test_models_json_unet_config_and_weights(tmp_path: Path, fixtures_dir: Path) -> None:
    unet_mod = pytest.importorskip("unianimate_cli.models.unet")
    fixture = json.loads((fixtures_dir / "unet_tiny" / "config.json").read_text())
    config = unet_mod.UNetConfig.from_reference_kwargs(
        fixture["constructor_kwargs"], fixture["config_object"]["resolution"], fixture["config_object"]["video_compositions"]
    )
    _write_models_json(tmp_path, {"unet": {"file": "unet.safetensors", "config": dataclasses.asdict(config)}})
    # Point at the shared fixture's weights instead of copying 40 MB.
    (tmp_path / "unet.safetensors").symlink_to(fixtures_dir / "unet_tiny" / "state_dict.safetensors")
    model_set = W.resolve_model_set([tmp_path])
    assert model_set.unet_config() == config
    unet = model_set.load_unet()
    reference = W.load_state_dict(fixtures_dir / "unet_tiny" / "state_dict.safetensors")
    ours = unet.state_dict()
    assert ours.keys() == reference.keys() and all(torch.equal(ours[k], reference[k]) for k in reference)
    assert not unet.training


@pytest.mark.parametrize(
    "payload,pattern",
    [
        ({"vea": {"file": "x"}}, "unknown key 'vea'.*did you mean 'vae'"),
        ({"vae": {"config": {"chmult": [1, 2]}}}, "models.json: vae.config: unknown VAEConfig field 'chmult'"),
        ({"schema": 2}, "schema 2"),
        ({"vae": {"file": "../escape.safetensors"}}, "plain file name"),
        ({"pose": {"file": "p.onnx", "config": {}}}, "takes no config"),
    ],
)
def test_bad_models_json_is_a_clear_error(tmp_path: Path, payload: dict, pattern: str) -> None:
    _write_models_json(tmp_path, payload)
    with pytest.raises(WeightsError, match=pattern) as info:
        W.resolve_model_set([tmp_path])
    assert str(tmp_path / W.MODELS_JSON) in str(info.value)


def test_unreadable_models_json_names_the_file(tmp_path: Path) -> None:
    (tmp_path / W.MODELS_JSON).write_text("{not json")
    with pytest.raises(WeightsError, match="not valid JSON"):
        W.resolve_model_set([tmp_path])


# ---------------------------------------------------------------- fetching


def _fake_hub(monkeypatch: pytest.MonkeyPatch, fail: bool = False) -> list[tuple[str, str]]:
    calls: list[tuple[str, str]] = []

    def hf_hub_download(repo_id: str, filename: str, local_dir: str) -> str:
        calls.append((repo_id, filename))
        if fail:
            raise OSError("offline mode is enabled")
        target = Path(local_dir) / filename
        target.write_bytes(b"weights")
        return str(target)

    hub = types.ModuleType("huggingface_hub")
    hub.hf_hub_download = hf_hub_download  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "huggingface_hub", hub)
    monkeypatch.setitem(sys.modules, "modelscope", None)  # import modelscope -> ImportError
    return calls


def test_fetch_downloads_into_dest_and_reports_progress(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _fake_hub(monkeypatch)
    progress: list[tuple[str, int, int]] = []
    dest = tmp_path / "w"
    (dest).mkdir()
    (dest / W.POSE_FILE).write_bytes(b"already here")
    got = W.fetch_weights(dest, [W.CLIP_FILE, W.POSE_FILE], lambda *a: progress.append(a))
    assert got == [dest / W.CLIP_FILE, dest / W.POSE_FILE]
    assert (dest / W.CLIP_FILE).read_bytes() == b"weights"
    assert calls == [(W.OFFICIAL_WEIGHTS["clip"].hf_repo, W.CLIP_FILE)]
    assert progress == [(W.CLIP_FILE, 0, 2), (W.POSE_FILE, 1, 2)]


def test_fetch_errors_are_clear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_hub(monkeypatch, fail=True)
    with pytest.raises(WeightsError, match="could not download open_clip_pytorch_model.bin"):
        W.fetch_weights(tmp_path, [W.CLIP_FILE])
    with pytest.raises(WeightsError, match="only on ModelScope"):
        W.fetch_weights(tmp_path, [W.UNET_FILE])
    with pytest.raises(WeightsError, match="not an official weight file"):
        W.fetch_weights(tmp_path, ["other.bin"])
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(WeightsError, match="neither modelscope nor huggingface_hub"):
        W.fetch_weights(tmp_path, [W.CLIP_FILE])


def test_fetch_with_the_real_hub_offline_fails_cleanly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("huggingface_hub")
    monkeypatch.setitem(sys.modules, "modelscope", None)
    with pytest.raises(WeightsError, match="could not download"):
        W.fetch_weights(tmp_path, [W.DETECTOR_FILE])
    assert not (tmp_path / W.DETECTOR_FILE).exists()
