"""The shipped demo family (unianimate_cli/demo/family), ``--model`` and ``unianimate demo``: fast checks.

The semantic end-to-end test (does the demo render follow the poses?) is test_demo_semantic.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from unianimate_cli import weights
from unianimate_cli.config import load_settings
from unianimate_cli.demo.train import family_configs
from unianimate_cli.errors import WeightsError
from unianimate_cli.stages.align import AlignSettings
from unianimate_cli.stages.animate import AnimateSettings

FAMILY = weights.demo_family_dir()
SECTIONS = {"align": AlignSettings, "animate": AnimateSettings}


def test_family_is_complete_and_small() -> None:
    """Every component loads into its network (meta build, keys and shapes); ~20 MB in all."""
    model_set = weights.read_models_json(FAMILY / weights.MODELS_JSON)
    assert model_set.name == "demo"
    for component in weights.COMPONENTS:
        path = weights.check_component(model_set, component)
        assert path.parent == FAMILY
    total = sum(p.stat().st_size for p in FAMILY.iterdir() if p.is_file())
    assert total <= 21 * 2**20, f"demo family is {total / 2**20:.1f} MiB"


def test_family_configs_are_the_training_scripts() -> None:
    """models.json holds the configs train.py builds, so the script reproduces this family."""
    data = json.loads((FAMILY / weights.MODELS_JSON).read_text())
    for component, config in family_configs().items():
        assert data[component]["config"] == config, component


def test_model_names_a_family() -> None:
    assert weights.model_family_dir("") is None
    assert weights.model_family_dir("official") is None
    assert weights.model_family_dir("demo") == FAMILY
    assert weights.model_family_dir(str(FAMILY)) == FAMILY
    with pytest.raises(WeightsError, match="neither 'demo' nor a folder"):
        weights.model_family_dir("/no/such/family")


def test_family_defaults_layer(tmp_path: Path) -> None:
    """The demo family's defaults.toml: above the manifest, below config files and flags."""
    plain = load_settings(SECTIONS, user_config=tmp_path / "none.toml", env={})
    assert (plain.params("align").width, plain.params("animate").steps) == (512, 30)
    recorded = {"align": {"width": 512, "height": 768}}
    demo = load_settings(SECTIONS, cli={"general": {"model": "demo"}}, recorded=recorded, user_config=tmp_path / "none.toml", env={})
    assert (demo.params("align").width, demo.params("align").height, demo.params("animate").steps) == (128, 192, 20)
    assert "defaults.toml" in demo.source("align.width")
    flag = load_settings(
        SECTIONS, cli={"general": {"model": "demo"}, "animate": {"steps": 7}}, user_config=tmp_path / "none.toml", env={}
    )
    assert flag.params("animate").steps == 7
    by_env = load_settings({"align": AlignSettings}, env={"UNIANIMATE_GENERAL_MODEL": "demo"}, user_config=tmp_path / "none.toml")
    assert by_env.params("align").width == 128  # [animate] of the file is skipped: not loaded here


def test_demo_inputs_are_held_out_figures(tmp_path: Path) -> None:
    from unianimate_cli.demo.preset import DEMO_FRAMES, transfer_seeds, write_demo_inputs
    from unianimate_cli.demo.train import HELD_OUT_SEEDS
    from unianimate_cli.media.image import load_image
    from unianimate_cli.media.video import probe_video

    assert all(seed < HELD_OUT_SEEDS for seed in transfer_seeds(4999))
    inputs = write_demo_inputs(tmp_path / "d", example=2)
    assert load_image(inputs.photo).shape == (192, 128, 3)
    info = probe_video(inputs.video)
    assert (info.width_px, info.height_px, info.num_frames) == (128, 192, DEMO_FRAMES)
    again = write_demo_inputs(tmp_path / "e", example=2)
    assert np.array_equal(load_image(again.photo), load_image(inputs.photo))


def test_weights_command_lists_the_demo_family() -> None:
    from unianimate_cli.cli import build_app

    result = CliRunner().invoke(build_app(), ["weights", "--model", "demo", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["family"] == "demo"
    assert [row["state"] for row in payload["files"]] == ["loads"] * 5


def test_demo_command_rejects_a_bad_example(tmp_path: Path) -> None:
    from unianimate_cli.cli import build_app

    result = CliRunner().invoke(build_app(), ["demo", str(tmp_path / "d"), "--example", "-1"])
    assert result.exit_code == 1
    assert "--example -1 is outside" in result.stderr
    assert not (tmp_path / "d").exists()
