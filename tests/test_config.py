"""Settings: precedence with sources, typed values, unknown keys, the example file."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from unianimate_cli.config import coerce, defaults_of, load_settings, render_example
from unianimate_cli.errors import InputError
from unianimate_cli.stage import discover_stages, stage_section

REPO = Path(__file__).resolve().parent.parent


def _types() -> dict[str, type]:
    return {stage_section(s.name): s.params_type for s in discover_stages(include_third_party=False)}


def test_precedence_cli_env_project_user_recorded_default(tmp_path: Path) -> None:
    user = tmp_path / "user.toml"
    user.write_text("[animate]\nsteps = 10\nseed = 1\nguide_scale = 1.5\ncrf = 20\n")
    project = tmp_path / "proj"
    project.mkdir()
    (project / "unianimate.toml").write_text("[animate]\nsteps = 20\nseed = 2\nguide_scale = 2.0\n")
    env = {"UNIANIMATE_ANIMATE_STEPS": "40", "UNIANIMATE_ANIMATE_SEED": "3"}
    s = load_settings(
        _types(),
        cli={"animate": {"steps": 50}},
        project_dir=project,
        env=env,
        user_config=user,
        recorded={"animate": {"window_size": 16, "crf": 30}},
    )
    p = s.params("animate")
    assert (p.steps, p.seed, p.guide_scale, p.crf, p.window_size) == (50, 3, 2.0, 20, 16)
    assert p.window_overlap == 8
    assert s.source("animate.steps") == "--steps"
    assert s.source("animate.seed") == "environment variable UNIANIMATE_ANIMATE_SEED"
    assert s.source("animate.guide_scale") == str(project / "unianimate.toml")
    assert s.source("animate.crf") == str(user)
    assert s.source("animate.window_overlap") == "default"
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.steps = 3  # type: ignore[misc]


def test_bad_value_names_its_source(tmp_path: Path) -> None:
    (tmp_path / "unianimate.toml").write_text('[animate]\nsteps = "thirty"\n')
    with pytest.raises(InputError) as info:
        load_settings(_types(), project_dir=tmp_path, env={})
    assert info.value.message == f'animate.steps = "thirty" in {tmp_path / "unianimate.toml"}: expected an integer'


def test_unknown_keys_suggest(tmp_path: Path) -> None:
    (tmp_path / "unianimate.toml").write_text("[animate]\nguide_scal = 2.0\n")
    with pytest.raises(InputError, match="unknown key animate.guide_scal") as info:
        load_settings(_types(), project_dir=tmp_path, env={})
    assert info.value.hint == "did you mean guide_scale?"
    (tmp_path / "unianimate.toml").write_text("[animate]\n[anmate]\nsteps = 3\n")
    with pytest.raises(InputError, match=r"unknown section \[anmate\]") as info:
        load_settings(_types(), project_dir=tmp_path, env={})
    assert info.value.hint == "did you mean animate?"
    with pytest.raises(InputError, match="UNIANIMATE_ANIMATE_STEP"):
        load_settings(_types(), env={"UNIANIMATE_ANIMATE_STEP": "3"})


def test_env_strings_are_typed() -> None:
    s = load_settings(_types(), env={"UNIANIMATE_ANIMATE_AUDIO": "no", "UNIANIMATE_ANIMATE_GUIDE_SCALE": "3", "UNIANIMATE_ALIGN_MODE": "reference"})
    assert s.params("animate").audio is False
    assert s.params("animate").guide_scale == 3.0
    assert s.params("align").mode == "reference"
    with pytest.raises(ValueError):
        coerce("maybe", bool, from_text=True)


def test_user_config_dir_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNIANIMATE_CONFIG_DIR", str(tmp_path))
    (tmp_path / "config.toml").write_text("[general]\ndevice = \"cpu\"\n")
    s = load_settings(_types(), env={})
    assert s.general.device == "cpu"
    assert s.source("general.device") == str(tmp_path / "config.toml")


def test_example_file_lists_every_key_with_its_default() -> None:
    types = _types()
    text = (REPO / "unianimate.toml.example").read_text()
    assert text == render_example(types), "regenerate: python -m unianimate_cli.config > unianimate.toml.example"
    data = tomllib.loads(text)
    from unianimate_cli.config import GeneralSettings

    for section, cls in {"general": GeneralSettings, **types}.items():
        assert data[section].keys() == defaults_of(cls).keys()
    s = load_settings(types, env={}, user_config=REPO / "unianimate.toml.example")
    for section, cls in types.items():
        assert s.params(section) == cls()
