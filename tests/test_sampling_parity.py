"""The diffusion parity checkers: dispatch, and free-running runs on the fixture's tiny UNet."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from unianimate_cli.parity import failures, run_parity
from unianimate_cli.parity.diffusion import (
    CHECKERS,
    load_fixture_unet,
    run_long,
    run_sampler,
)
from unianimate_cli.sampling.conditions import Conditions
from unianimate_cli.sampling.ddim import StepState
from unianimate_cli.sampling.render import RenderParams, ResumeState, plan_steps, render_latents
from unianimate_cli.sampling.schedule import ddim_timesteps


def _unet_available() -> bool:
    try:
        import unianimate_cli.models.unet  # noqa: F401
    except ImportError:
        return False
    return True


needs_unet = pytest.mark.skipif(not _unet_available(), reason="unianimate_cli.models.unet is not there yet")


def _fewest_step_runs(folder: Path) -> list[str]:
    runs = json.loads((folder / "meta.json").read_text())["runs"]
    fewest = min(len(ddim_timesteps(int(r["ddim_timesteps"]))) for r in runs.values())
    return [name for name, r in runs.items() if len(ddim_timesteps(int(r["ddim_timesteps"]))) == fewest]


def test_detection(fixtures_dir: Path) -> None:
    kinds = {c.kind: c for c in CHECKERS}
    assert kinds["schedule"].detect(fixtures_dir / "diffusion")
    assert kinds["sampler"].detect(fixtures_dir / "diffusion" / "sampler_tiny")
    assert not kinds["sampler"].detect(fixtures_dir / "diffusion" / "long_tiny")
    assert kinds["long"].detect(fixtures_dir / "diffusion" / "long_tiny")
    assert kinds["conditioning"].detect(fixtures_dir / "conditioning")
    assert not any(c.detect(fixtures_dir / "unet_tiny") for c in CHECKERS)


@pytest.mark.parametrize("name,kind", [("diffusion", "schedule"), ("conditioning", "conditioning")])
def test_runner_passes_without_a_model(fixtures_dir: Path, name: str, kind: str) -> None:
    found, results = run_parity(fixtures_dir / name)
    assert found == kind and results
    assert not failures(results), failures(results)


@needs_unet
def test_sampler_free_running(fixtures_dir: Path) -> None:
    folder = fixtures_dir / "diffusion" / "sampler_tiny"
    runs = _fewest_step_runs(folder)
    results = run_sampler(folder, only_runs=runs)
    assert {f"{r}.final" for r in runs} <= {c.name for c in results}
    assert not failures(results), failures(results)


@needs_unet
def test_sampler_most_steps_free_running(fixtures_dir: Path) -> None:
    """One run with the most model steps (31 for the official 30) drifts within tolerance too."""
    folder = fixtures_dir / "diffusion" / "sampler_tiny"
    runs = json.loads((folder / "meta.json").read_text())["runs"]
    longest = max(runs, key=lambda name: len(ddim_timesteps(int(runs[name]["ddim_timesteps"]))))
    results = run_sampler(folder, only_runs=[longest])
    assert f"{longest}.final" in {c.name for c in results}
    assert not failures(results), failures(results)


@needs_unet
def test_long_free_running(fixtures_dir: Path) -> None:
    folder = fixtures_dir / "diffusion" / "long_tiny"
    runs = _fewest_step_runs(folder)
    results = run_long(folder, only_runs=runs)
    assert {f"{r}.final" for r in runs} <= {c.name for c in results}
    assert not failures(results), failures(results)


@needs_unet
def test_resume_with_the_tiny_unet_is_bit_identical(fixtures_dir: Path) -> None:
    folder = fixtures_dir / "diffusion" / "long_tiny"
    meta = json.loads((folder / "meta.json").read_text())
    inputs = load_file(str(folder / "inputs.safetensors"))
    unet = load_fixture_unet((folder / meta["model_dir"]).resolve())
    conditions = Conditions(image=inputs["image"], dwpose=inputs["dwpose"], randomref=inputs["randomref"])
    ctx = meta["context"]
    params = RenderParams(
        num_steps=min(int(r["ddim_timesteps"]) for r in meta["runs"].values()),
        guide_scale=float(meta["guide_scale"]),
        context_size=int(ctx["context_size"]),
        context_overlap=int(ctx["context_overlap"]),
        context_stride=int(ctx["context_stride"]),
    )
    plan = plan_steps(params)
    stop_at = len(plan) // 2
    saved: list[ResumeState] = []

    def interrupt(state: StepState) -> None:
        saved.append(ResumeState.from_step(state, plan))
        if state.completed_steps == stop_at:
            raise KeyboardInterrupt

    full = render_latents(unet, conditions, inputs["x_T"], params)
    with pytest.raises(KeyboardInterrupt):
        render_latents(unet, conditions, inputs["x_T"], params, on_step=interrupt)
    resumed = render_latents(unet, conditions, inputs["x_T"], params, resume=saved[-1])
    assert torch.equal(resumed, full)
