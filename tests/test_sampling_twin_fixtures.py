"""The diffusion checkers read every setting from the folder: synthetic twins with other sizes.

The twins are written by our own code with a toy model, so they test the checkers'
generality (frame counts, windows, batch sizes, guide scales, prior steps, step counts),
not numerical parity; that is what the shared fixtures are for.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from unianimate_cli.parity import failures
from unianimate_cli.parity.diffusion import detect_long, detect_sampler, run_long, run_sampler
from unianimate_cli.sampling.conditions import Conditions
from unianimate_cli.sampling.ddim import StepState, ddim_sample
from unianimate_cli.sampling.denoiser import GuidedDenoiser, WindowOutput
from unianimate_cli.sampling.schedule import NoisePrior, NoiseSchedule, OffsetPlacement, apply_noise_prior, sampling_timesteps
from unianimate_cli.sampling.windows import context_windows, coverage_counts


def _toy_unet(x: torch.Tensor, t: torch.Tensor, **kw: torch.Tensor | None) -> torch.Tensor:
    out = 0.3 * x + 0.2 * torch.roll(x, 1, dims=2) + (t.float() / 1000).view(-1, 1, 1, 1, 1)
    if (image := kw.get("image")) is not None:
        out = out + 0.1 * image.mean(dim=(1, 2)).view(-1, 1, 1, 1, 1)
    if (pose := kw.get("dwpose")) is not None:
        out = out + pose[:, :, 1:].mean(dim=(1, 3, 4)).view(x.shape[0], 1, x.shape[2], 1, 1)
    if (ref := kw.get("randomref")) is not None:
        out = out + 0.05 * ref[:, :, :1]
    return out


def _write_twin(folder: Path, long: bool) -> None:
    gen = torch.Generator().manual_seed(5)
    f, h, w, H, W = (9, 2, 3, 16, 24) if long else (3, 3, 2, 24, 16)
    inputs = {
        "image": torch.randn(1, 1, 16, generator=gen),
        "local_image": torch.rand(1, 3, f, H, W, generator=gen),
        "dwpose": torch.rand(1, 3, f + 1, H, W, generator=gen),
        "randomref": torch.randn(1, 4, 1, h, w, generator=gen).repeat(1, 1, f, 1, 1),
        "noise": torch.randn(1, 4, f, h, w, generator=gen),
        "offset_noise": torch.randn(1, 4, f, 1, 1, generator=gen),
    }
    prior = NoisePrior(900 if long else 920, OffsetPlacement.AFTER if long else OffsetPlacement.INSIDE)
    schedule = NoiseSchedule.official()
    inputs["x_T"] = apply_noise_prior(schedule, inputs["randomref"], inputs["noise"], inputs["offset_noise"], prior)
    guide_scale = 3.0 if long else 1.5
    context = {"context_size": 4, "context_stride": 1, "context_overlap": 1}
    windows = context_windows(f, 4, 1, 1) if long else None
    runs_meta: dict[str, dict[str, Any]]
    if long:
        runs_meta = {"cbs1_ddim4": {"ddim_timesteps": 4, "context_batch_size": 1}, "cbs2_ddim4": {"ddim_timesteps": 4, "context_batch_size": 2}}
    else:
        runs_meta = {
            "A_ddim4": {"ddim_timesteps": 4, "partial_keys": ["image", "local_image", "dwpose"]},
            "B_ddim20": {"ddim_timesteps": 20, "partial_keys": ["image", "randomref", "dwpose"]},
        }
    keys = ["image", "randomref", "dwpose"]
    full = Conditions(**{k: inputs[k] for k in ("image", "local_image", "dwpose", "randomref")})
    runs: dict[str, torch.Tensor] = {}
    for run, spec in runs_meta.items():
        steps = sampling_timesteps(int(spec["ddim_timesteps"]))
        xs, x0s, vs = [inputs["x_T"]], [], []
        per_window: list[list[WindowOutput]] = []
        averages: list[tuple[torch.Tensor, torch.Tensor]] = []

        class Recording(GuidedDenoiser):
            def evaluate(self, x_t: torch.Tensor, t: int):  # type: ignore[no-untyped-def]
                out = super().evaluate(x_t, t)
                averages.append((out.v_cond, out.v_uncond))
                return out

        def on_step(state: StepState) -> None:
            xs.append(state.x)
            x0s.append(state.x0_pred)
            vs.append(state.v)

        denoiser = Recording(
            _toy_unet,
            full.select(spec.get("partial_keys", keys)),
            guide_scale=guide_scale,
            windows=windows,
            window_batch_size=int(spec.get("context_batch_size", 1)),
            on_windows=lambda t, outs: per_window.append(outs),
        )
        final = ddim_sample(denoiser, inputs["x_T"], steps, schedule, callback=on_step)
        runs[f"{run}.timesteps"] = torch.tensor([s.t for s in steps])
        runs[f"{run}.x"] = torch.stack(xs)
        runs[f"{run}.final"] = final
        runs[f"{run}.x0_pred"] = torch.stack(x0s)
        runs[f"{run}.v_guided"] = torch.stack(vs)
        if long and run.startswith("cbs1"):
            runs[f"{run}.window_v_cond"] = torch.stack([torch.stack([o.v_cond[0] for o in s]) for s in per_window])
            runs[f"{run}.window_v_uncond"] = torch.stack([torch.stack([o.v_uncond[0] for o in s]) for s in per_window])
            runs[f"{run}.v_cond_avg"] = torch.stack([a for a, _ in averages])
            runs[f"{run}.v_uncond_avg"] = torch.stack([b for _, b in averages])
        if not long:
            runs[f"{run}.v_cond"] = torch.stack([a for a, _ in averages])
            runs[f"{run}.v_uncond"] = torch.stack([b for _, b in averages])
    meta: dict = {"model_dir": "../no_model", "noise_prior_t": prior.t, "guide_scale": guide_scale, "runs": runs_meta}
    if long:
        assert windows is not None
        meta.update(context=context, partial_keys=keys, windows=windows, frame_coverage_count=coverage_counts(windows, f))
        del inputs["local_image"]
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in inputs.items()}, str(folder / "inputs.safetensors"))
    save_file({k: v.contiguous() for k, v in runs.items()}, str(folder / "runs.safetensors"))
    (folder / "meta.json").write_text(json.dumps(meta))


def _failed(results: list) -> list:
    return failures(results)


def test_long_twin_passes_and_settings_are_read(tmp_path: Path) -> None:
    folder = tmp_path / "long_twin"
    _write_twin(folder, long=True)
    assert detect_long(folder) and not detect_sampler(folder)
    results = run_long(folder, free_running=False)
    assert not _failed(results), _failed(results)
    assert any(r.name == "cbs1_ddim4 window inputs" for r in results)
    meta = json.loads((folder / "meta.json").read_text())
    for change in ({"guide_scale": 2.5}, {"noise_prior_t": 939}, {"context": {**meta["context"], "context_overlap": 2}}):
        (folder / "meta.json").write_text(json.dumps({**meta, **change}))
        assert _failed(run_long(folder, free_running=False)), change


def test_sampler_twin_passes_and_settings_are_read(tmp_path: Path) -> None:
    folder = tmp_path / "sampler_twin"
    _write_twin(folder, long=False)
    assert detect_sampler(folder) and not detect_long(folder)
    results = run_sampler(folder, free_running=False)
    assert not _failed(results), _failed(results)
    assert {"A_ddim4.x (teacher-forced)", "B_ddim20.x (teacher-forced)"} <= {r.name for r in results}
    meta = json.loads((folder / "meta.json").read_text())
    for change in ({"guide_scale": 2.5}, {"noise_prior_t": 949}):
        (folder / "meta.json").write_text(json.dumps({**meta, **change}))
        assert _failed(run_sampler(folder, free_running=False)), change
