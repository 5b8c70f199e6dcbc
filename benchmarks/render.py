"""Render benchmark: full-size UNet + VAE with random weights, our real DDIM loop and denoiser.

Official setting (``issues show 8``): 32 frames at 768x512 (H x W; latents [1,4,32,96,64]),
31 DDIM steps (``ddim_timesteps`` 30), guidance 2.5, then VAE decode. Weights are random
(speed and memory do not depend on them): the models are built on the meta device,
materialised with ``to_empty`` and filled in place, so 1.4 B parameters cost no slow init.

Usage, from the repository root on a CUDA machine:

    PYTHONPATH=. python3 benchmarks/render.py --out OUTDIR \
        [--modes eager-separate,eager-batched,compiled-batched] \
        [--ref-bench .device/bench_ref/ref_bench.py --ref .ref/UniAnimate]

Modes (each a full render with per-step times):

* ``eager-separate``: fp16 weights, guidance as two UNet calls per step.
* ``eager-batched``: fp16, conditional + unconditional in one batch-2 call (the library's
  ``GuidedDenoiser(batch_guidance=True)``).
* ``compiled-batched``: the same under ``torch.compile`` (compile time reported apart).
* ``regional-batched``: each UNet block compiled on its own (``runtime.compile_blocks``).
* flags appended with ``+``: ``+bf16`` bfloat16 weights instead of float16, ``+cl``
  channels-last conv weights, ``+cudnn`` ``cudnn.benchmark`` on (e.g. ``compiled-batched+cl``),
  ``+cpucond`` conditions kept on the CPU, ``+ffsmall`` feed-forward chunks of 32 M values
  instead of 128 M, ``+notgemm`` temporal 3x1x1 convs through cuDNN's Conv3d instead of the
  library's default GEMMs (``layers.temporal_conv_gemm``; ``+tgemm`` forces them on),
  ``+nocache`` condition features recomputed at every step (the old path), ``+stream`` UNet
  blocks streamed from host memory (``runtime.stream_unet_weights``, the low-memory mode),
  ``+dpmN`` / ``+ddimN`` the DPM-Solver++(2M) / DDIM sampler with ``N`` steps as the
  reference counts them (N=15 runs 16 UNet evaluations); their latents are compared with
  the first default-sampler mode's (relative L2, same seed and inputs).

The sampler is the library's: ``sampling.denoiser.GuidedDenoiser`` + ``sampling.ddim.ddim_sample``
(or ``sampling.dpm.dpm_solver_2m_sample``) + ``sampling.render.make_initial_latent``. The
conditional pass gets all four conditions, like the reference benchmark's main render.
``--micro`` also times the temporal convs alone (cuDNN Conv3d against the GEMMs) at the
UNet's four level shapes.

Writes ``OUTDIR/render.json`` (copy it to ``benchmarks/results/<device>-<date>.json``) and
prints a table. With ``--ref-bench`` the reference benchmark runs first, in a subprocess of the
same job, and the ratio reference / ours is printed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch._dynamo
from torch import nn

from unianimate_cli.models.layers import FeedForward, TemporalConvBlock, temporal_conv_gemm
from unianimate_cli.models.unet import UNetConfig, UniAnimateUNet, guided_pair, guided_pair_features
from unianimate_cli.models.vae import AutoencoderKL, VAEConfig, decode_latents
from unianimate_cli.runtime import (
    compile_blocks,
    conv2d_channels_last_,
    peak_memory,
    reset_peak,
    set_tf32,
    stream_unet_weights,
)
from unianimate_cli.sampling.conditions import Conditions
from unianimate_cli.sampling.ddim import StepState, ddim_sample
from unianimate_cli.sampling.denoiser import GuidedDenoiser
from unianimate_cli.sampling.dpm import dpm_solver_2m_sample
from unianimate_cli.sampling.render import make_initial_latent
from unianimate_cli.sampling.schedule import NoiseSchedule, sampling_timesteps
from unianimate_cli.sampling.windows import context_windows

GIB = 1024**3
DEFAULT_TEMPORAL_GEMM = TemporalConvBlock.use_gemm


# ----------------------------------------------------------------------------- models


def fill_random_(module: nn.Module, seed: int) -> None:
    """In-place random weights that keep activations O(1): N(0, 1/fan_in) matrices, unit norms."""
    g = torch.Generator(device=next(module.parameters()).device).manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim > 1:
                p.normal_(0.0, (1.0 / p[0].numel()) ** 0.5, generator=g)
            elif name.endswith("weight"):
                p.fill_(1.0)
            else:
                p.zero_()


#: ``--tiny``: a small UNet (and VAE) for a CPU smoke test of this script.
TINY = False


def unet_config(width: int, height: int) -> UNetConfig:
    config = UNetConfig.official(resolution=(width, height))
    if TINY:
        from dataclasses import replace

        config = replace(config, dim=32, context_dim=64, y_dim=64, head_dim=16, dim_mult=(1, 2), attn_scales=(1.0,))
    return config


def build_unet(device: torch.device, dtype: torch.dtype, frames_hw: tuple[int, int]) -> UniAnimateUNet:
    """Official-size UNet (1.4 B parameters) with random weights, built without a CPU init."""
    height, width = frames_hw
    with torch.device("meta"):
        unet = UniAnimateUNet(unet_config(width, height))
    unet = unet.to_empty(device=device).to(dtype).eval()
    fill_random_(unet, 0)
    zero_y = torch.randn(1, 77, unet.config.context_dim, generator=torch.Generator().manual_seed(3))
    unet.set_zero_y(zero_y.to(device))  # seeded: every mode samples the same function
    return unet


def build_vae(device: torch.device, dtype: torch.dtype) -> AutoencoderKL:
    with torch.device("meta"):
        vae = AutoencoderKL(VAEConfig.official())
    vae = vae.to_empty(device=device).to(dtype).eval()
    fill_random_(vae, 1)
    return vae


def make_conditions(frames: int, frames_hw: tuple[int, int], device: torch.device) -> Conditions:
    height, width = frames_hw
    g = torch.Generator(device=device).manual_seed(2)
    return Conditions(
        image=torch.randn(1, 1, unet_config(width, height).context_dim, device=device, generator=g),
        local_image=torch.rand(1, 3, frames, height, width, device=device, generator=g),
        dwpose=torch.rand(1, 3, frames + 1, height, width, device=device, generator=g),
        randomref=torch.randn(1, 4, frames, height // 8, width // 8, device=device, generator=g),
    )


# ----------------------------------------------------------------------------- measuring


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def empty_cache() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def allocated(device: torch.device) -> int:
    return torch.cuda.memory_allocated(device) if device.type == "cuda" else 0


def matmul_peak_tflops(dtype: torch.dtype, n: int = 8192, iters: int = 30) -> float:
    a = torch.randn(n, n, device="cuda", dtype=dtype)
    b = torch.randn(n, n, device="cuda", dtype=dtype)
    for _ in range(3):
        a @ b
    sync()
    start = time.perf_counter()
    for _ in range(iters):
        a @ b
    sync()
    seconds = (time.perf_counter() - start) / iters
    del a, b
    empty_cache()
    return 2 * n**3 / seconds / 1e12


def count_flops(fn: Callable[[], Any]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        fn()
    return int(counter.get_total_flops())


PROFILE_CATEGORIES = (
    ("attention", r"flash|fmha|attention|attn|sdpa"),
    ("convolution", r"conv|implicit|winograd|cudnn|fprop|dgrad|nchw|nhwc"),
    ("matmul", r"gemm|cutlass|xmma|cublas|sm90_|nvjet|matmul"),
    ("norm", r"norm"),
    ("copy/cast/cat", r"copy|cast|cat|convert|contiguous|transpose|permute|elementwise_kernel_with_index"),
    ("elementwise/other", r"."),
)


def profile_call(fn: Callable[[], Any], table_path: Path) -> dict[str, Any]:
    """GPU kernel time of one call by category (torch profiler); the top-40 table goes to ``table_path``."""
    import re

    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad():
        fn()
        sync()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            fn()
            sync()
    averages = prof.key_averages()
    table_path.write_text(averages.table(sort_by="self_cuda_time_total", row_limit=40))
    by_category: dict[str, float] = {}
    total = 0.0
    for event in averages:
        ms = getattr(event, "self_device_time_total", 0.0) / 1e3
        if ms <= 0:
            continue
        name = event.key.lower()
        for category, pattern in PROFILE_CATEGORIES:
            if re.search(pattern, name):
                by_category[category] = by_category.get(category, 0.0) + ms
                break
        total += ms
    print("  profile ms:", {k: round(v, 1) for k, v in sorted(by_category.items(), key=lambda kv: -kv[1])},
          "total", round(total, 1), flush=True)
    return {"gpu_kernel_ms": total, "by_category_ms": by_category}


def time_calls(fn: Callable[[], Any], warmup: int = 1, iters: int = 3) -> float:
    """Median seconds of ``fn`` (synchronised)."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def render_once(
    unet_call: Callable[..., torch.Tensor],
    conditions: Conditions,
    frames: int,
    latent_hw: tuple[int, int],
    steps: int,
    guide_scale: float,
    device: torch.device,
    windows: list[list[int]] | None = None,
    max_steps: int | None = None,
    batch_guidance: bool = False,
    cache_features: bool = True,
    sampler: str = "ddim",
) -> dict[str, Any]:
    """One render through the library's denoiser and sampler loop; per-step wall times."""
    schedule = NoiseSchedule.official()
    plan = sampling_timesteps(steps)
    if max_steps is not None:
        plan = plan[:max_steps]
    generator = torch.Generator().manual_seed(0)
    ref_latent = conditions.randomref
    assert ref_latent is not None
    x_T = make_initial_latent(ref_latent.float().to(device), generator, schedule=schedule)
    denoiser = GuidedDenoiser(
        unet_call, conditions, guide_scale=guide_scale, windows=windows,  # type: ignore[arg-type]
        batch_guidance=batch_guidance, cache_features=cache_features,
    )
    sample = dpm_solver_2m_sample if sampler == "dpm" else ddim_sample
    step_times: list[float] = []
    last = [0.0]

    def on_step(state: StepState) -> None:
        sync()
        now = time.perf_counter()
        step_times.append(now - last[0])
        last[0] = now

    gc.collect()
    empty_cache()
    resident = allocated(device)
    reset_peak(device)
    sync()
    start = last[0] = time.perf_counter()
    latents = sample(denoiser, x_T, plan, schedule, callback=on_step)
    sync()
    wall = time.perf_counter() - start
    peak = peak_memory(device)
    return {
        "wall_s": wall,
        "steps": len(plan),
        "step_s": step_times,
        "median_step_s": sorted(step_times)[len(step_times) // 2],
        "unet_calls": denoiser.unet_calls,
        "peak_allocated_GiB": peak.allocated_gib,
        "peak_reserved_GiB": peak.reserved_gib,
        "resident_before_GiB": resident / GIB,
        "latent_finite": bool(torch.isfinite(latents).all()),
        "latents": latents,
    }


def parse_flags(flags: list[str]) -> dict[str, Any]:
    """Sampler and step count from ``dpmN`` / ``ddimN`` flags (None: the default DDIM, --steps)."""
    for flag in flags:
        for name in ("dpm", "ddim"):
            if flag.startswith(name) and flag[len(name):].isdigit():
                return {"sampler": name, "steps": int(flag[len(name):])}
    return {"sampler": "ddim", "steps": None}


def run_mode(mode: str, args: argparse.Namespace, record: dict[str, Any], device: torch.device) -> torch.Tensor | None:
    base, *flags = mode.split("+")
    dtype = torch.bfloat16 if "bf16" in flags else torch.float16
    if device.type == "cpu":
        dtype = torch.float32
    frames, height, width = args.frames, args.height, args.width
    latent_hw = (height // 8, width // 8)
    sampling = parse_flags(flags)
    steps = sampling["steps"] if sampling["steps"] is not None else args.steps
    batched = base.endswith("batched")
    cache = "nocache" not in flags
    result: dict[str, Any] = {"dtype": str(dtype).removeprefix("torch."), "flags": flags, "sampler": sampling["sampler"], "ddim_timesteps": steps}
    record["modes"][mode] = result  # partial results survive a failure
    torch.backends.cudnn.benchmark = args.cudnn_benchmark or "cudnn" in flags
    TemporalConvBlock.use_gemm = "notgemm" not in flags and ("tgemm" in flags or DEFAULT_TEMPORAL_GEMM)
    if "ffsmall" in flags:
        FeedForward.max_hidden_elements = 1 << 25  # 64 MiB fp16 hidden chunks (default 256 MiB)
    # Modes that differ only in the sampler share one built (and compiled) model.
    model_key = (base, dtype, tuple(sorted(f for f in flags if parse_flags([f])["steps"] is None)))
    cached = args.__dict__.pop("model_cache", None)
    if cached is not None and cached[0] == model_key:
        unet, model, streamer = cached[1:]
        result["reused_model_of_previous_mode"] = True
    else:
        if cached is not None:
            if cached[3] is not None:
                cached[3].remove()
            del cached
            gc.collect()
            empty_cache()
        load_start = time.perf_counter()
        unet = build_unet(device, dtype, (height, width))
        streamer = stream_unet_weights(unet, device) if "stream" in flags else None
        sync()
        gc.collect()
        empty_cache()
        result["build_s"] = time.perf_counter() - load_start
        if "cl" in flags:
            conv2d_channels_last_(unet)
        model = unet
        if base.startswith("compiled"):
            torch._dynamo.config.cache_size_limit = 64
            model = torch.compile(unet)  # type: ignore[assignment]
        elif base.startswith("regional"):
            result["compiled_blocks"] = compile_blocks(unet)
    result["unet_resident_GiB"] = allocated(device) / GIB
    conditions = make_conditions(frames, (height, width), device)

    x = torch.randn(1, 4, frames, *latent_hw, device=device)
    t = torch.tensor([500], device=device)
    kwargs = conditions.unet_kwargs()
    with torch.no_grad():
        # Warm-up (and compilation) outside the timed render, both batch shapes.
        start = time.perf_counter()
        if batched:
            feats = guided_pair_features(unet, x, kwargs)
            guided_pair(model, x, t, kwargs, features=feats if cache else None)  # type: ignore[arg-type]
        else:
            feats_c = unet.condition_features(x, **kwargs)
            feats_u = unet.condition_features(x)
            model(x, t, features=feats_c) if cache else model(x, t, **kwargs)
            model(x, t, features=feats_u)
        sync()
        result["first_call_s"] = time.perf_counter() - start
        if batched:
            result["pair_call_s"] = time_calls(lambda: guided_pair(model, x, t, kwargs, features=feats if cache else None))  # type: ignore[arg-type]
            if cache:
                result["pair_features_s"] = time_calls(lambda: guided_pair_features(unet, x, kwargs))
        else:
            result["cond_call_s"] = time_calls(lambda: model(x, t, features=feats_c) if cache else model(x, t, **kwargs))
            result["uncond_call_s"] = time_calls(lambda: model(x, t, features=feats_u))
        # Counted on an eager model only: FlopCounterMode around compiled blocks makes dynamo
        # recompile them and, past its cache limit, run them eagerly for the rest of the process.
        if args.flops and "flops_cond_forward" not in record and base.startswith("eager"):
            record["flops_cond_forward"] = count_flops(lambda: unet(x, t, **kwargs))
            record["flops_uncond_forward"] = count_flops(lambda: unet(x, t))

        if args.profile and batched:
            result["profile"] = profile_call(
                lambda: guided_pair(model, x, t, kwargs, features=feats if cache else None),  # type: ignore[arg-type]
                Path(args.out) / f"profile-{mode.replace('+', '_')}.txt",
            )
    del x, kwargs
    feats = feats_c = feats_u = None
    if "cpucond" in flags:
        conditions = conditions.to("cpu")  # moved to the GPU once per window (cached features)
    render = render_once(
        model, conditions, frames, latent_hw, steps, args.guide_scale, device,
        batch_guidance=batched, cache_features=cache, sampler=sampling["sampler"],
    )
    latents = render.pop("latents")
    result["render"] = render
    if sampling["sampler"] == "ddim" and sampling["steps"] is None and "reference_latents" not in args.__dict__:
        args.reference_latents = (mode, latents.float().cpu())
    elif "reference_latents" in args.__dict__:
        ref_mode, ref = args.reference_latents
        diff = (latents.float().cpu() - ref).norm() / ref.norm()
        render["latent_rel_l2_vs"] = {"mode": ref_mode, "rel_l2": float(diff)}
        print(f"[{mode}] latent rel L2 vs {ref_mode}: {float(diff):.4f}", flush=True)
    if args.long_frames and base == args.long_mode and sampling["steps"] is None and "long" not in record:
        record["long"] = mode
        long_cond = make_conditions(args.long_frames, (height, width), device)
        windows = context_windows(args.long_frames, 32, 8, 1)
        long = render_once(
            model, long_cond, args.long_frames, latent_hw, args.steps, args.guide_scale, device, windows, args.long_steps,
            batch_guidance=batched, cache_features=cache,
        )
        long.pop("latents")
        long["windows"] = len(windows)
        long["per_frame_step_s"] = long["median_step_s"] / args.long_frames
        long["short_per_frame_step_s"] = render["median_step_s"] / frames
        result["long"] = long
        del long_cond
    FeedForward.max_hidden_elements = 1 << 27
    TemporalConvBlock.use_gemm = DEFAULT_TEMPORAL_GEMM
    print(
        f"[{mode}] render {render['wall_s']:.2f} s ({render['steps']} steps, median {render['median_step_s'] * 1e3:.0f} ms), "
        f"peak {render['peak_allocated_GiB']:.2f} GiB alloc / {render['peak_reserved_GiB']:.2f} reserved, "
        f"first call {result['first_call_s']:.1f} s, finite {render['latent_finite']}",
        flush=True,
    )
    args.model_cache = (model_key, unet, model, streamer)
    del unet, model, conditions
    gc.collect()
    empty_cache()
    return latents


def run_micro(args: argparse.Namespace, record: dict[str, Any], device: torch.device) -> None:
    """Temporal 3x1x1 conv at the UNet's level shapes (batched guidance, 33 frames): cuDNN vs GEMMs."""
    from torch import nn

    frames = args.frames + 1
    lat_h, lat_w = args.height // 8, args.width // 8
    out: dict[str, Any] = {}
    for level, channels in enumerate((320, 640, 1280, 1280)):
        h, w = lat_h >> level, lat_w >> level
        conv = nn.Conv3d(channels, channels, (3, 1, 1), padding=(1, 0, 0)).to(device, torch.float16)
        x = torch.randn(2, channels, frames, h, w, device=device, dtype=torch.float16)
        row: dict[str, float] = {}
        with torch.no_grad():
            for bench in (False, True):
                torch.backends.cudnn.benchmark = bench
                row[f"cudnn{'_benchmark' if bench else ''}_ms"] = time_calls(lambda: conv(x), warmup=3, iters=20) * 1e3
            row["gemm_ms"] = time_calls(lambda: temporal_conv_gemm(x, conv), warmup=3, iters=20) * 1e3
            ref = conv(x).float()
            row["gemm_rel_l2_vs_cudnn"] = float((temporal_conv_gemm(x, conv).float() - ref).norm() / ref.norm())
        torch.backends.cudnn.benchmark = args.cudnn_benchmark
        out[f"level{level}_{channels}x{frames}x{h}x{w}"] = row
        print(f"[micro temporal conv level {level}] " + ", ".join(f"{k} {v:.4g}" for k, v in row.items()), flush=True)
    record["micro_temporal_conv"] = out


def run_decode(latents: torch.Tensor, args: argparse.Namespace, record: dict[str, Any], device: torch.device) -> None:
    vae = build_vae(device, torch.float16)
    results = {}
    for chunk in args.decode_chunks:
        gc.collect()
        empty_cache()
        resident = allocated(device)
        decode_latents(vae, latents[:, :, :chunk], chunk_frames=chunk)  # warm-up of this shape
        reset_peak(device)
        start = time.perf_counter()
        pixels = decode_latents(vae, latents, chunk_frames=chunk)
        sync()
        seconds = time.perf_counter() - start
        peak = peak_memory(device)
        results[str(chunk)] = {
            "wall_s": seconds,
            "peak_allocated_GiB": peak.allocated_gib,
            "peak_over_resident_GiB": (peak.allocated_bytes - resident) / GIB,
            "finite": bool(torch.isfinite(pixels).all()),
        }
        del pixels
        print(f"[decode chunk {chunk}] {seconds:.2f} s, peak {peak.allocated_gib:.2f} GiB", flush=True)
    if args.flops:
        z = latents[:, :, :2]
        record["flops_decode_2_frames"] = count_flops(lambda: decode_latents(vae, z, chunk_frames=2))
    record["decode"] = results
    del vae
    gc.collect()
    empty_cache()


def run_reference(args: argparse.Namespace, record: dict[str, Any]) -> None:
    out = Path(args.out) / "ref"
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1"}
    command = [sys.executable, args.ref_bench, "--ref", args.ref, "--out", str(out), "--extra-renders", ""]
    start = time.perf_counter()
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    record["reference_job_s"] = time.perf_counter() - start
    (out / "ref_bench.log").write_text(proc.stdout + proc.stderr)
    path = out / "reference_gpu.json"
    if path.is_file():
        record["reference"] = json.loads(path.read_text())
    print(f"[reference] exit {proc.returncode} in {record['reference_job_s']:.0f} s", flush=True)


# ----------------------------------------------------------------------------- main


def summary_table(record: dict[str, Any]) -> str:
    peak = record.get("matmul_peak_tflops", {}).get("float16")
    flops_render = None
    if "flops_cond_forward" in record:
        per_step = record["flops_cond_forward"] + record["flops_uncond_forward"]
        flops_render = per_step
    decode_s = None
    if record.get("decode"):
        decode_s = min(d["wall_s"] for d in record["decode"].values())
    ref = record.get("reference", {})
    ref_total = ref.get("derived", {}).get("render_plus_decode_s")
    lines = [
        "| mode | render s | median step ms | + decode s | peak alloc GiB | peak reserved GiB | MFU | vs reference |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for mode, r in record["modes"].items():
        wall = r["render"]["wall_s"]
        total = wall + (decode_s or 0.0)
        mfu = ""
        if flops_render and peak:
            flops_total = flops_render * r["render"]["steps"] + record.get("flops_decode_2_frames", 0) * record["settings"]["frames"] / 2
            mfu = f"{flops_total / total / (peak * 1e12):.0%}"
        ratio = f"{ref_total / total:.2f}x" if ref_total else ""
        lines.append(
            f"| {mode} | {wall:.2f} | {r['render']['median_step_s'] * 1e3:.0f} | {total:.2f} | "
            f"{r['render']['peak_allocated_GiB']:.2f} | {r['render']['peak_reserved_GiB']:.2f} | {mfu} | {ratio} |"
        )
    if ref_total:
        lines.append(f"| reference (same job) | {ref.get('render', {}).get('all4', {}).get('wall_s', float('nan')):.2f} "
                     f"| | {ref_total:.2f} | {ref.get('render', {}).get('all4', {}).get('peak_allocated_GiB', float('nan')):.2f} | | | 1.00x |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", default=os.environ.get("OUT", "bench_out"))
    parser.add_argument("--modes", default="eager-separate,eager-batched,compiled-batched")
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--height", type=int, default=768)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--steps", type=int, default=30, help="the reference's ddim_timesteps (30 runs 31 steps)")
    parser.add_argument("--guide-scale", type=float, default=2.5)
    parser.add_argument("--decode-chunks", type=lambda s: [int(v) for v in s.split(",") if v], default=[2, 4])
    parser.add_argument("--long-frames", type=int, default=0, help="also time a windowed clip of this length")
    parser.add_argument("--long-steps", type=int, default=2, help="DDIM steps timed for the long clip")
    parser.add_argument("--long-mode", default="eager-batched")
    parser.add_argument("--no-flops", dest="flops", action="store_false")
    parser.add_argument("--cudnn-benchmark", action="store_true")
    parser.add_argument("--profile", action="store_true", help="kernel-time profile of one batched call per mode")
    parser.add_argument("--micro", action="store_true", help="also time the temporal convs alone (cuDNN vs GEMMs)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="small models and sizes: a CPU smoke test of the script")
    parser.add_argument("--ref-bench", default="", help="path of the reference's ref_bench.py (runs first)")
    parser.add_argument("--ref", default=".ref/UniAnimate")
    args = parser.parse_args(argv)

    global TINY
    TINY = args.tiny
    device = torch.device(args.device)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    set_tf32(False)
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    record: dict[str, Any] = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
        "settings": {
            "frames": args.frames,
            "height_px": args.height,
            "width_px": args.width,
            "ddim_timesteps": args.steps,
            "steps_run": len(sampling_timesteps(args.steps)),
            "guide_scale": args.guide_scale,
            "cudnn_benchmark": args.cudnn_benchmark,
            "conditional_keys": ["image", "local_image", "dwpose", "randomref"],
        },
        "modes": {},
    }
    out_json = Path(args.out) / "render.json"

    def save() -> None:
        out_json.write_text(json.dumps(record, indent=1))

    if args.ref_bench and Path(args.ref_bench).is_file() and Path(args.ref).is_dir():
        run_reference(args, record)
        save()
    if device.type == "cuda":
        record["matmul_peak_tflops"] = {
            "float16": matmul_peak_tflops(torch.float16),
            "bfloat16": matmul_peak_tflops(torch.bfloat16),
        }
    if args.micro:
        run_micro(args, record, device)
        save()
    latents = None
    for mode in [m for m in args.modes.split(",") if m]:
        try:
            latents = run_mode(mode, args, record, device)
        except Exception as exc:  # noqa: BLE001 -- a failed mode is recorded, the others still run
            record["modes"].setdefault(mode, {})["error"] = f"{type(exc).__name__}: {exc}"[:2000]
            print(f"[{mode}] FAILED: {type(exc).__name__}: {str(exc)[:500]}", flush=True)
            gc.collect()
            empty_cache()
        save()
    cached = args.__dict__.pop("model_cache", None)
    if cached is not None and cached[3] is not None:
        cached[3].remove()
    del cached
    gc.collect()
    empty_cache()
    if latents is not None and args.decode_chunks:
        run_decode(latents.half(), args, record, device)
    record["modes"] = {k: v for k, v in record["modes"].items() if "render" in v} | {
        k: v for k, v in record["modes"].items() if "render" not in v
    }
    save()
    ok_modes = {k: v for k, v in record["modes"].items() if "render" in v}
    print(json.dumps({k: v for k, v in record.items() if k not in ("modes", "reference")}, indent=1, default=str))
    print(summary_table({**record, "modes": ok_modes}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
