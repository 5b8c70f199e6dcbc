"""Worker that ``torchrun --nproc_per_node N`` runs for ``test_distributed.py`` (holds no tests).

Every rank renders the same windowed clip with the tiny fixture UNet, once sharded across the
ranks and once alone (same process, so same thread count: the two must agree bit for bit),
then stops a sharded render after step k and resumes it from rank 0's checkpoint, then runs
a batch of toy jobs. Rank 0 writes what it saw to OUT_DIR for the test to check.

Usage: ``torchrun --nproc_per_node 2 tests/test_distributed_worker.py OUT_DIR FIXTURE_DIR [DEVICE]``
(DEVICE ``cpu``, the default, uses gloo; ``cuda`` runs the same checks on NCCL, one GPU per
rank; ``OUT_DIR/report.json`` then says per rank whether sharded and resumed equal alone).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from unianimate_cli import distributed
from unianimate_cli.distributed import DistContext, plan_batch_jobs, run_batch_jobs
from unianimate_cli.errors import InputError
from unianimate_cli.parity.diffusion import load_fixture_unet
from unianimate_cli.sampling.conditions import Conditions
from unianimate_cli.sampling.ddim import StepState
from unianimate_cli.sampling.denoiser import VideoUNet
from unianimate_cli.sampling.render import RenderParams, ResumeState, make_initial_latent, plan_steps, render_latents
from unianimate_cli.sampling.schedule import NoisePrior

# 13 frames in windows of 5 overlapping by 2: 4 windows, the last one by the last-window rule.
WINDOWED = RenderParams(num_steps=4, context_size=5, context_overlap=2)
STOP_AFTER = 2
# 16 frames: 5 windows, so 2 ranks get unequal shares.
TOY = RenderParams(num_steps=4, context_size=5, context_overlap=2)
NUM_JOBS = 7
FAILING_JOB = 4


class CountingUNet:
    """Wraps a UNet and counts its forward calls."""

    def __init__(self, unet: VideoUNet) -> None:
        self.unet = unet
        self.calls = 0

    def __call__(self, x: torch.Tensor, t: torch.Tensor, **kw: torch.Tensor | None) -> torch.Tensor:
        self.calls += 1
        return self.unet(x, t, **kw)


class ToyUNet:
    """Deterministic, cheap stand-in that mixes frames and reads every condition."""

    def __call__(self, x: torch.Tensor, t: torch.Tensor, **kw: torch.Tensor | None) -> torch.Tensor:
        b = x.shape[0]
        out = 0.4 * x + 0.2 * torch.roll(x, 1, dims=2) + (t.float() / 1000).view(-1, 1, 1, 1, 1)
        image, randomref, dwpose = kw.get("image"), kw.get("randomref"), kw.get("dwpose")
        if image is not None:
            out = out + 0.1 * image.mean(dim=(1, 2)).view(b, 1, 1, 1, 1)
        if randomref is not None:
            out = out + 0.05 * randomref[:, :, :1]
        if dwpose is not None:
            out = out + 0.01 * dwpose[:, :, 1:].mean(dim=(1, 3, 4)).view(b, 1, -1, 1, 1)
        return out


def clip_sizes(fixture_unet: Path) -> dict[str, int]:
    """Latent and pixel sizes and the embedding width, read from the fixture's inputs."""
    inputs = load_file(str(fixture_unet / "inputs.safetensors"))
    _, _, _, h, w = inputs["x"].shape
    _, _, _, height_px, width_px = inputs["local_image"].shape
    return {"h": h, "w": w, "height_px": height_px, "width_px": width_px, "dim": inputs["image"].shape[-1]}


def make_clip(num_frames: int, sizes: dict[str, int], seed: int) -> tuple[Conditions, torch.Tensor]:
    """Seeded conditions of every kind and x_T for a clip of ``num_frames``."""
    gen = torch.Generator().manual_seed(seed)
    h, w, hp, wp = sizes["h"], sizes["w"], sizes["height_px"], sizes["width_px"]
    ref = torch.randn(1, 4, 1, h, w, generator=gen).repeat(1, 1, num_frames, 1, 1)
    conditions = Conditions(
        image=torch.randn(1, 1, sizes["dim"], generator=gen),
        local_image=torch.rand(1, 3, num_frames, hp, wp, generator=gen),
        dwpose=torch.rand(1, 3, num_frames + 1, hp, wp, generator=gen),
        randomref=ref,
    )
    x_T = make_initial_latent(ref, torch.Generator().manual_seed(seed + 1), NoisePrior.for_entrance("long"))
    return conditions, x_T


TOY_SIZES = {"h": 3, "w": 2, "height_px": 24, "width_px": 16, "dim": 8}


def main(out_dir: Path, fixture_unet: Path, device: str = "cpu") -> None:
    ctx = distributed.init_from_env(device)
    report: dict[str, Any] = {"rank": ctx.rank, "world_size": ctx.world_size, "backend": ctx.backend}
    tensors: dict[str, torch.Tensor] = {}

    # Collectives.
    report["all_reduce_sum"] = ctx.all_reduce_sum(torch.tensor([float(ctx.rank + 1)])).item()
    report["broadcast"] = ctx.broadcast_object({"from": ctx.rank})
    report["broadcast_tensor"] = ctx.broadcast(torch.full((2,), float(ctx.rank + 5))).tolist()
    report["all_gather"] = [int(p.item()) for p in ctx.all_gather(torch.tensor([ctx.rank * 10]))]
    sent = {"a": torch.arange(6.0).view(2, 3), "b": torch.tensor([7], dtype=torch.int64)} if ctx.is_main_process else None
    got = ctx.broadcast_tensors(sent)
    report["broadcast_tensors"] = {k: [str(v.dtype), v.tolist()] for k, v in got.items()}
    ctx.barrier()

    # One windowed render, sharded and alone.
    unet = CountingUNet(load_fixture_unet(fixture_unet).to(ctx.device))
    conditions, x_T = make_clip(13, clip_sizes(fixture_unet), seed=3)
    conditions, x_T = conditions.to(ctx.device), x_T.to(ctx.device)
    x_T = ctx.broadcast(x_T)  # the stage's rule: every rank samples from rank 0's x_T
    plan = plan_steps(WINDOWED)
    checkpoints: list[dict[str, torch.Tensor]] = []

    def save(state: StepState) -> None:
        if ctx.is_main_process:  # the CLI's rule: only rank 0 writes the checkpoint
            checkpoints.append(ResumeState.from_step(state, plan).to_tensors())

    tensors["sharded"] = render_latents(unet, conditions, x_T, WINDOWED, on_step=save, dist=ctx)
    report["sharded_calls"] = unet.calls
    unet.calls = 0
    tensors["alone"] = render_latents(unet, conditions, x_T, WINDOWED)
    report["alone_calls"] = unet.calls
    report["checkpoints_full"] = len(checkpoints)

    # Stopped after step k on every rank (as Ctrl-C under torchrun), resumed from rank 0's file.
    def stop(state: StepState) -> None:
        save(state)
        if state.completed_steps == STOP_AFTER:
            raise KeyboardInterrupt

    checkpoints.clear()
    try:
        render_latents(unet, conditions, x_T, WINDOWED, on_step=stop, dist=ctx)
        report["stopped"] = False
    except KeyboardInterrupt:
        report["stopped"] = True
    report["checkpoints_stopped"] = len(checkpoints)
    saved: dict[str, torch.Tensor] = ctx.broadcast_object(checkpoints[-1] if ctx.is_main_process else {})
    resume = ResumeState.from_tensors(saved)
    unet.calls = 0
    tensors["resumed"] = render_latents(unet, conditions, x_T, WINDOWED, resume=resume, dist=ctx)
    report["resumed_calls"] = unet.calls
    report["resumed_from"] = resume.completed_steps

    # Ranks that disagree on x_T are refused, on every rank, before any UNet call.
    try:
        render_latents(ToyUNet(), conditions, x_T + ctx.rank, WINDOWED, dist=ctx)
        report["mismatch_refused"] = False
    except RuntimeError as exc:
        report["mismatch_refused"] = "different x_t" in str(exc)

    # Batch mode: whole jobs per rank, each rendered single-process; one job fails.
    jobs = [f"job-{i}" for i in range(NUM_JOBS)]

    def run_job(job: str) -> torch.Tensor:
        seed = int(job.split("-")[1])
        if seed == FAILING_JOB:
            raise InputError(f"{job}: no person found in the photo", "use another photo")
        job_conditions, job_x_T = make_clip(16, TOY_SIZES, seed=seed)
        return render_latents(ToyUNet(), job_conditions, job_x_T, TOY)

    results = run_batch_jobs(jobs, ctx, run_job)
    report["batch_seen"] = [[r.index, r.job, r.rank, r.error] for r in results]
    try:
        plan_batch_jobs(jobs[::-1] if ctx.rank else jobs, ctx)
        report["batch_mismatch_refused"] = False
    except RuntimeError:
        report["batch_mismatch_refused"] = True

    report["sharded_equals_alone"] = torch.equal(tensors["sharded"], tensors["alone"])
    report["resumed_equals_alone"] = torch.equal(tensors["resumed"], tensors["alone"])
    reports = ctx.all_gather_object(report)
    same_everywhere = ctx.all_gather_object({k: v.cpu() for k, v in tensors.items()})
    if ctx.is_main_process:
        out: dict[str, torch.Tensor] = {}
        for rank, theirs in enumerate(same_everywhere):
            for key, value in theirs.items():
                out[f"{key}_rank{rank}"] = value
        for result in results:
            if result.value is not None:
                out[f"batch_{result.job}"] = result.value
        save_file({k: v.contiguous() for k, v in out.items()}, str(out_dir / "results.safetensors"))
        (out_dir / "report.json").write_text(json.dumps({"ranks": reports}, indent=1))
    distributed.cleanup(ctx)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), *sys.argv[3:4])
