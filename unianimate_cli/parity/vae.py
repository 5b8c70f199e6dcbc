"""Parity of our ``AutoencoderKL`` with fixture folders in the ``vae_tiny`` format.

A folder holds ``config.json`` (``constructor`` = the reference ``AutoencoderKL`` arguments,
``scale_factor``), ``state_dict.safetensors``, ``inputs.safetensors`` (``image`` [n,3,H,W] in
[-1,1], ``eps`` [n,4,h,w]) and ``outputs.safetensors``. Every output named in the folder is
recomputed; a name this checker does not know is reported as a failure, never skipped. Sizes,
widths and depths all come from the folder.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from unianimate_cli.errors import ParityError
from unianimate_cli.parity import Checker, Comparison, compare_tensors

CONFIG = "config.json"
STATE_DICT = "state_dict.safetensors"
INPUTS = "inputs.safetensors"
OUTPUTS = "outputs.safetensors"


def detect(folder: Path) -> bool:
    """A vae fixture has a ``config.json`` whose constructor carries a ``ddconfig``."""
    config_path = folder / CONFIG
    if not (config_path.is_file() and (folder / STATE_DICT).is_file()):
        return False
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError):
        return False
    constructor = config.get("constructor") if isinstance(config, dict) else None
    return isinstance(constructor, dict) and isinstance(constructor.get("ddconfig"), dict)


def run(folder: Path) -> list[Comparison]:
    """Build the model from the folder, load its weights strictly, recompute and compare every output."""
    return run_on(folder)


def run_on(folder: Path, device: str = "cpu", dtype: str = "fp32") -> list[Comparison]:
    """``run`` on another device or dtype (GPU parity; fp16/bf16 error against the float32 fixture).

    Weights and inputs are cast to ``dtype``; the comparison itself is always in float64 with
    the fixture tolerance, so for fp16/bf16 read ``max_abs``/``rel_l2`` rather than ``ok``.
    """
    import torch
    from safetensors.torch import load_file

    from unianimate_cli.models.vae import (
        SCALE_FACTOR,
        AutoencoderKL,
        VAEConfig,
        decode_latents,
        encode_to_latent,
    )
    from unianimate_cli.weights import load_into, load_state_dict, parse_dtype

    config: dict[str, Any] = json.loads((folder / CONFIG).read_text())
    vae_config = VAEConfig.from_reference_kwargs(config["constructor"])
    scale_factor = float(config.get("scale_factor", SCALE_FACTOR))
    for name in (INPUTS, OUTPUTS):
        if not (folder / name).is_file():
            raise ParityError(f"{folder / name} is missing", "a vae fixture needs inputs and outputs")
    inputs = load_file(str(folder / INPUTS))
    outputs = load_file(str(folder / OUTPUTS))
    if "image" not in inputs:
        raise ParityError(f"{folder / INPUTS} has no 'image' tensor", "expected image [n,3,H,W] in [-1,1]")

    model = AutoencoderKL(vae_config).eval()
    load_into(model, load_state_dict(folder / STATE_DICT), f"vae fixture {folder.name}")
    torch_dtype = parse_dtype(dtype)
    model = model.to(device=device, dtype=torch_dtype)
    image = inputs["image"].to(device=device, dtype=torch_dtype)
    eps = inputs.get("eps")
    eps = None if eps is None else eps.to(device=device, dtype=torch_dtype)

    cache: dict[str, Any] = {}

    def posterior() -> Any:
        if "posterior" not in cache:
            cache["posterior"] = model.encode(image)
        return cache["posterior"]

    def first_stage() -> torch.Tensor:
        if eps is None:
            raise ParityError(f"{folder / INPUTS} has no 'eps'", "first_stage_encoding needs the posterior noise")
        if "fse" not in cache:
            cache["fse"] = encode_to_latent(model, image, noise=eps, scale_factor=scale_factor)
        return cache["fse"]

    def decoded_from_first_stage() -> torch.Tensor:
        # The inference path: our own sampled latent, laid out as frames [1, c, n, h, w] and
        # decoded one frame per chunk by ``decode_latents``.
        latents = first_stage().transpose(0, 1).unsqueeze(0)
        pixels = decode_latents(model, latents, chunk_frames=1, scale_factor=scale_factor)
        return pixels[0].transpose(0, 1)

    recipes: dict[str, Callable[[], torch.Tensor]] = {
        "encoder_out": lambda: model.encoder(image),
        "moments": lambda: posterior().moments,
        "posterior_mean": lambda: posterior().mean,
        "posterior_logvar": lambda: posterior().logvar,
        "posterior_std": lambda: posterior().std,
        "decoded_from_mean": lambda: model.decode(posterior().mode()),
        "first_stage_encoding": first_stage,
        "decoded_from_first_stage": decoded_from_first_stage,
    }
    comparisons: list[Comparison] = []
    with torch.no_grad():
        for name in sorted(outputs):
            recipe = recipes.get(name)
            if recipe is None:
                comparisons.append(
                    Comparison(name, float("inf"), float("inf"), False, "unknown output: no recipe for it")
                )
                continue
            comparisons.append(compare_tensors(name, recipe(), outputs[name]))
    return comparisons


CHECKERS: tuple[Checker, ...] = (Checker(kind="vae", detect=detect, run=run),)
