"""benchmarks/traffic.py: the work it attributes to attention and to the rest adds up to the UNet's FLOPs."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import torch
from torch.utils.flop_counter import FlopCounterMode

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "traffic.py"


def _traffic_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("traffic_benchmark", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_counts_split_the_unets_flops_and_restore_sdpa() -> None:
    from unianimate_cli.models import layers
    from unianimate_cli.models.unet import guided_pair, guided_pair_features

    traffic = _traffic_module()
    frames, height, width = 3, 128, 64
    counts = traffic.count(frames, height, width)
    assert layers.F is torch.nn.functional

    # Reference count: the same call with SDPA left alone (FlopCounterMode counts its FLOPs itself).
    unet, latent, conditions = traffic.meta_call(frames, height, width)
    counter = FlopCounterMode(display=False)
    with torch.no_grad():
        features = guided_pair_features(unet, latent, conditions)
        with counter:
            guided_pair(unet, latent, torch.tensor([500], device="meta"), conditions, features=features)
    total = counter.get_total_flops() / 1e12
    assert counts["attention_tflop"] > 0
    assert abs(counts["matrix_tflop"] + counts["attention_tflop"] - total) <= 1e-6 * total
    ops = counts["ops"]
    gn, ln = ops["native_group_norm"], ops["native_layer_norm"]
    expected_floor = 2 * gn["read_gb"] + gn["written_gb"] + ln["read_gb"] + ln["written_gb"]
    assert abs(counts["norm_floor_gb"] - expected_floor) < 1e-9
    floors = traffic.floors_ms(counts, peak_tflops=100.0, bandwidth_tbs=1.0)
    assert floors["norm passes"] == counts["norm_floor_gb"]  # 1 GB at 1 TB/s is 1 ms
