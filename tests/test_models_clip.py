"""OpenCLIP wrapper: image embedding, zero_y (penultimate text block + ln_final), loading, cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import open_clip
import pytest
import torch

from unianimate_cli.errors import WeightsError
from unianimate_cli.models.clip import (
    ClipImageEncoder,
    build_vit_h14,
    cached_empty_text_features,
    causal_mask,
    load_clip_encoder,
    tiny_clip_config,
)


@pytest.fixture(scope="module")
def tiny_model() -> Any:
    torch.manual_seed(0)
    model = open_clip.model.CLIP(**tiny_clip_config())
    # open_clip zero-inits nothing that matters here, but make the text path clearly non-trivial.
    with torch.no_grad():
        for p in model.transformer.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def test_vit_h14_builds_on_meta_with_the_official_layout() -> None:
    # spec/ENVIRONMENT.md: 986.1 M parameters, 686 keys of which 392 under visual.
    model = build_vit_h14()
    keys = list(model.state_dict())
    assert all(p.is_meta for p in model.parameters())
    assert len(keys) == 686 and sum(k.startswith("visual.") for k in keys) == 392
    assert sum(p.numel() for p in model.parameters()) == 986_109_441
    assert model.visual.output_dim == 1024 and model.context_length == 77
    assert model.transformer.width == 1024 and len(model.transformer.resblocks) == 24


def test_encode_image_is_the_unnormalised_visual_output(tiny_model: Any) -> None:
    encoder = ClipImageEncoder(tiny_model)
    size = tiny_clip_config()["vision_cfg"]["image_size"]
    pixels = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    out = encoder.encode_image(pixels)
    with torch.no_grad():
        ref = tiny_model.visual(pixels)
    assert out.shape == (2, tiny_clip_config()["embed_dim"])
    assert torch.equal(out, ref)
    assert not torch.allclose(out.norm(dim=-1), torch.ones(2), atol=1e-3)


def _text_input(model: torch.nn.Module) -> torch.Tensor:
    return open_clip.tokenize([""], context_length=model.context_length)


def test_zero_y_is_the_penultimate_block_through_ln_final(tiny_model: Any) -> None:
    encoder = ClipImageEncoder(tiny_model)
    zero_y = encoder.empty_text_features()
    tokens = _text_input(tiny_model)
    assert tokens[0, :3].tolist() == [49406, 49407, 0]
    n_blocks = len(tiny_model.transformer.resblocks)
    with torch.no_grad():
        inter = tiny_model.forward_intermediates(
            text=tokens, text_indices=[n_blocks - 2], normalize=False, intermediates_only=True
        )["text_intermediates"][0]
        expected = tiny_model.ln_final(inter)
        x = tiny_model.token_embedding(tokens) + tiny_model.positional_embedding
        last = tiny_model.ln_final(tiny_model.transformer(x, attn_mask=tiny_model.attn_mask))
    width = tiny_clip_config()["text_cfg"]["width"]
    assert zero_y.shape == (1, tiny_model.context_length, width)
    assert torch.allclose(zero_y, expected, rtol=0, atol=1e-6)
    assert (zero_y - last).abs().max() > 1e-2


def test_zero_y_is_the_same_with_a_sequence_first_text_transformer(tiny_model: Any) -> None:
    """Older open_clip (the reference's 2.24) ran the text blocks sequence-first."""
    import copy

    from open_clip.transformer import Transformer

    text = tiny_clip_config()["text_cfg"]
    seq_first = copy.deepcopy(tiny_model)
    seq_first.transformer = Transformer(text["width"], text["layers"], text["heads"], batch_first=False)
    seq_first.transformer.load_state_dict(tiny_model.transformer.state_dict())
    expected = ClipImageEncoder(tiny_model).empty_text_features()
    assert torch.allclose(ClipImageEncoder(seq_first).empty_text_features(), expected, rtol=0, atol=1e-6)


def test_load_clip_encoder_assigns_weights_and_rebuilds_the_mask(tmp_path: Path, tiny_model: Any) -> None:
    path = tmp_path / "clip.bin"
    torch.save(tiny_model.state_dict(), path)
    encoder = load_clip_encoder(path, config=tiny_clip_config())
    assert not any(t.is_meta for t in [*encoder.model.parameters(), *encoder.model.buffers()])
    assert torch.equal(encoder.model.attn_mask, tiny_model.attn_mask)
    assert torch.equal(encoder.model.attn_mask, causal_mask(tiny_model.context_length))
    assert torch.equal(encoder.empty_text_features(), ClipImageEncoder(tiny_model).empty_text_features())
    half = load_clip_encoder(path, config=tiny_clip_config(), dtype="bf16")
    assert half.dtype == torch.bfloat16
    assert half.encode_image(torch.zeros(1, 3, 32, 32)).dtype == torch.float32


def test_load_clip_encoder_names_the_file_when_keys_do_not_fit(tmp_path: Path, tiny_model: Any) -> None:
    state = dict(tiny_model.state_dict())
    state.pop("ln_final.weight")
    path = tmp_path / "clip.bin"
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"clip\.bin.*missing 1 \(ln_final\.weight\)"):
        load_clip_encoder(path, config=tiny_clip_config())


def test_zero_y_cache_is_reused_only_for_the_same_weights(tmp_path: Path, tiny_model: Any) -> None:
    encoder = ClipImageEncoder(tiny_model)
    cache = tmp_path / "cache" / "zero_y.safetensors"
    first = cached_empty_text_features(encoder, cache, "aaaa")
    assert cache.is_file()

    calls = []

    def counting() -> torch.Tensor:
        calls.append(1)
        return torch.zeros_like(first)

    encoder.empty_text_features = counting  # type: ignore[method-assign]
    assert torch.equal(cached_empty_text_features(encoder, cache, "aaaa"), first)
    assert calls == []
    # other weights: recomputed and the cache re-tagged
    assert torch.equal(cached_empty_text_features(encoder, cache, "bbbb"), torch.zeros_like(first))
    assert calls == [1]
    # a corrupt cache is a miss, not an error
    cache.write_bytes(b"garbage")
    cached_empty_text_features(encoder, cache, "bbbb")
    assert calls == [1, 1]
