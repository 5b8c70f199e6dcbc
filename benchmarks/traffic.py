"""Work and memory-traffic floor of one batched guided UNet call, counted on the meta device.

Why: ``docs/PERFORMANCE.md`` has to say what bounds the 31-step render. The GPU profile gives
the time each kind of kernel takes; this script gives what each kind of work *must* cost, so
that the two can be compared: the matrix FLOPs (GEMMs and convolutions apart from attention,
whose kernels reach a lower share of peak) and the bytes the normalisations must move even
when every elementwise op (SiLU, GELU, residual adds, scaling) is fused into a norm pass or a
matrix epilogue. No GPU and no weights are needed: the full-size UNet is built on the meta
device and one ``guided_pair`` call (conditional + unconditional, batch 2) is traced through a
``TorchDispatchMode`` that records every aten op's inputs and outputs.

Usage, from the repository root (CPU, a few seconds):

    PYTHONPATH=. python3 benchmarks/traffic.py [--frames 32 --height 768 --width 512] \
        [--peak-tflops 735 --bandwidth-tbs 3.35 --step-budget-ms 240]

Floors per batched call: matrix work at the given peak; attention at the given peak; the norm
passes at the given bandwidth, where a GroupNorm reads its input twice (statistics, then the
normalisation; a group of a 768x512 clip does not fit in on-chip memory) and writes once, and
a LayerNorm reads once and writes once. Everything else (elementwise ops, layout copies) is
counted but taken as fusable, so the floor is optimistic.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

from unianimate_cli.models import layers
from unianimate_cli.models.unet import UNetConfig, UniAnimateUNet, guided_pair, guided_pair_features

MATRIX_OPS = {"mm", "addmm", "bmm", "baddbmm", "convolution"}
NORM_OPS = {"native_group_norm", "native_layer_norm"}
COPY_OPS = {"clone", "copy_", "_to_copy", "cat", "stack"}
VIEW_OPS = {"view", "_unsafe_view", "expand", "t", "transpose", "permute", "unsqueeze", "squeeze", "slice", "select",
            "alias", "split", "split_with_sizes", "unbind", "detach", "as_strided", "empty", "empty_like", "zeros"}


def _bytes(value: Any) -> int:
    return value.numel() * value.element_size() if isinstance(value, torch.Tensor) else 0


class _Traffic(TorchDispatchMode):
    """Bytes read and written per aten op (views and allocations excluded)."""

    def __init__(self) -> None:
        super().__init__()
        self.read: Counter[str] = Counter()
        self.written: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        if name not in VIEW_OPS:
            self.calls[name] += 1
            self.read[name] += sum(_bytes(a) for a in tree_leaves((args, kwargs)))
            self.written[name] += sum(_bytes(o) for o in tree_leaves(out))
        return out


class _CountingAttention:
    """Stands in for ``torch.nn.functional`` inside ``models.layers``: counts SDPA as a fused kernel.

    On the meta device SDPA would decompose into its math path (score matrices, softmax), whose
    traffic a flash kernel never has; this records the flash kernel's inputs, output and FLOPs.
    """

    def __init__(self) -> None:
        self.bytes = 0
        self.flops = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(F, name)

    def scaled_dot_product_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        out = torch.empty(q.shape[:-1] + v.shape[-1:], dtype=q.dtype, device=q.device)
        self.bytes += _bytes(q) + _bytes(k) + _bytes(v) + _bytes(out)
        self.flops += 4 * q.shape[:-1].numel() * k.shape[-2] * q.shape[-1]  # QK^T and PV, 2 FLOPs a MAC
        return out


def meta_call(frames: int, height: int, width: int) -> tuple[UniAnimateUNet, torch.Tensor, dict[str, torch.Tensor]]:
    """The official UNet, a latent and all four conditions of a ``frames``-frame clip, on the meta device."""
    with torch.device("meta"):
        unet = UniAnimateUNet(UNetConfig.official(resolution=(width, height))).to(torch.float16).eval()
        unet.set_zero_y(torch.zeros(1, 77, unet.config.context_dim, dtype=torch.float16))
        latent = torch.zeros(1, 4, frames, height // 8, width // 8, dtype=torch.float16)
        conditions = {
            "image": torch.zeros(1, 1, unet.config.context_dim, dtype=torch.float16),
            "local_image": torch.zeros(1, 3, frames, height, width, dtype=torch.float16),
            "dwpose": torch.zeros(1, 3, frames + 1, height, width, dtype=torch.float16),
            "randomref": torch.zeros(1, 4, frames, height // 8, width // 8, dtype=torch.float16),
        }
    return unet, latent, conditions


def count(frames: int, height: int, width: int) -> dict[str, Any]:
    """Counts for one ``guided_pair`` call of the official UNet on a ``frames``-frame clip."""
    unet, latent, conditions = meta_call(frames, height, width)
    t = torch.tensor([500], device="meta")
    attention = _CountingAttention()
    real_functional = layers.F
    layers.F = attention  # type: ignore[assignment]
    try:
        with torch.no_grad():
            features = guided_pair_features(unet, latent, conditions)  # once per window, not per step
            attention.bytes = attention.flops = 0
            traffic, flops = _Traffic(), FlopCounterMode(display=False)
            with flops, traffic:
                guided_pair(unet, latent, t, conditions, features=features)
    finally:
        layers.F = real_functional
    ops = sorted(traffic.calls, key=lambda n: -(traffic.read[n] + traffic.written[n]))
    norm_floor = sum(
        (2 if name == "native_group_norm" else 1) * traffic.read[name] + traffic.written[name] for name in NORM_OPS
    )
    return {
        "frames": frames,
        "height_px": height,
        "width_px": width,
        "matrix_tflop": flops.get_total_flops() / 1e12,
        "attention_tflop": attention.flops / 1e12,
        "attention_io_gb": attention.bytes / 1e9,
        "norm_floor_gb": norm_floor / 1e9,
        "ops": {
            name: {
                "kind": _kind(name),
                "calls": traffic.calls[name],
                "read_gb": traffic.read[name] / 1e9,
                "written_gb": traffic.written[name] / 1e9,
            }
            for name in ops
        },
    }


def _kind(name: str) -> str:
    if name in MATRIX_OPS:
        return "matrix"
    if name in NORM_OPS:
        return "norm"
    return "copy" if name in COPY_OPS else "elementwise"


def floors_ms(counts: dict[str, Any], peak_tflops: float, bandwidth_tbs: float) -> dict[str, float]:
    """Lower bounds of one batched call's time, per kind of work, in milliseconds."""
    return {  # TFLOP / (TFLOP/s) is seconds; GB / (TB/s) is milliseconds
        "matrix": counts["matrix_tflop"] / peak_tflops * 1e3,
        "attention": counts["attention_tflop"] / peak_tflops * 1e3,
        "norm passes": counts["norm_floor_gb"] / bandwidth_tbs,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--height", type=int, default=768)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--peak-tflops", type=float, default=735.0, help="measured dense fp16 matmul peak")
    parser.add_argument("--bandwidth-tbs", type=float, default=3.35, help="memory bandwidth (H100 SXM: 3.35)")
    parser.add_argument("--step-budget-ms", type=float, default=240.0, help="time a step may take to meet the target")
    parser.add_argument("--json", action="store_true", help="print the counts as JSON instead of a table")
    args = parser.parse_args(argv)
    counts = count(args.frames, args.height, args.width)
    floors = floors_ms(counts, args.peak_tflops, args.bandwidth_tbs)
    counts["floors_ms"] = floors
    if args.json:
        print(json.dumps(counts, indent=1))
        return 0
    print(f"one batched guided call, {args.frames} frames at {args.height}x{args.width}")
    print(f"{'op':24s} {'kind':12s} {'calls':>6s} {'read GB':>9s} {'written GB':>11s}")
    for name, op in counts["ops"].items():
        if op["read_gb"] + op["written_gb"] >= 0.05:
            print(f"{name:24s} {op['kind']:12s} {op['calls']:6d} {op['read_gb']:9.1f} {op['written_gb']:11.1f}")
    print(f"attention (flash kernel I/O) {counts['attention_io_gb']:.1f} GB, {counts['attention_tflop']:.2f} TFLOP")
    print(f"matrix work apart from attention: {counts['matrix_tflop']:.2f} TFLOP")
    print(f"norm passes at their floor: {counts['norm_floor_gb']:.1f} GB")
    total = sum(floors.values())
    print("floors (ms): " + ", ".join(f"{k} {v:.1f}" for k, v in floors.items()) + f"; sum {total:.1f}")
    needed = (counts["matrix_tflop"] + counts["attention_tflop"]) / (args.step_budget_ms - floors["norm passes"]) * 1e3
    print(f"to fit {args.step_budget_ms:.0f} ms a call, all matrix work must run at {needed:.0f} TFLOP/s "
          f"({needed / args.peak_tflops:.0%} of the peak) with the norm passes at their floor")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
