"""Settings from five layers, each value remembering where it came from.

Precedence, highest first: command-line flag > environment ``UNIANIMATE_<SECTION>_<KEY>``
> project ``unianimate.toml`` > user ``config.toml`` (platformdirs config dir, or
``$UNIANIMATE_CONFIG_DIR``) > the settings the model family is made for (``defaults.toml``
beside the ``models.json`` of the family ``general.model`` names, e.g. the demo family's
resolution) > the parameters an upstream stage last ran with (manifest) > dataclass defaults.
The family's layer sits above the manifest so that switching families also switches, say,
the pose drawing resolution an earlier run recorded. A section is ``general`` or a stage's name with ``_`` for ``-``; its
keys are the fields of the stage's params dataclass. Unknown keys are errors with a
"did you mean"; a badly typed value names its source (``animate.steps = "thirty" in
x.unianimate/unianimate.toml: expected an integer``).
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import os
import tomllib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from unianimate_cli.errors import InputError
from unianimate_cli.stage import param

APP_NAME = "unianimate"
ENV_PREFIX = "UNIANIMATE_"
PROJECT_CONFIG_NAME = "unianimate.toml"
USER_CONFIG_NAME = "config.toml"
# Environment variables that are not settings.
RESERVED_ENV = {"CONFIG_DIR", "DATA_DIR", "STAGES", "FIXTURES", "CI_VENV"}


@dataclass(frozen=True)
class GeneralSettings:
    """Settings that belong to no single stage."""

    device: str = param("auto", "auto, cpu, cuda or cuda:N", key=False)
    weights_dir: str = param("", "folder searched for weights before the user data dir", key=False)
    model: str = param(
        "", "model family: empty = what the weights folders hold, demo = the small one shipped for trying out, or a folder with a models.json", key=False
    )


def user_config_dir() -> Path:
    """``$UNIANIMATE_CONFIG_DIR`` or the platformdirs user config dir."""
    override = os.environ.get("UNIANIMATE_CONFIG_DIR")
    if override:
        return Path(override)
    import platformdirs

    return Path(platformdirs.user_config_dir(APP_NAME))


def user_data_dir() -> Path:
    """``$UNIANIMATE_DATA_DIR`` or the platformdirs user data dir (weights, fallback logs)."""
    override = os.environ.get("UNIANIMATE_DATA_DIR")
    if override:
        return Path(override)
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME))


@dataclass(frozen=True)
class Settings:
    """The merged settings of one invocation; ``sections`` maps a section to its dataclass."""

    general: GeneralSettings
    sections: Mapping[str, Any]
    sources: Mapping[str, str]

    def params(self, section: str) -> Any:
        return self.sections[section.replace("-", "_")]

    def source(self, dotted: str) -> str:
        """Where ``section.key`` came from: ``default``, a file path, ``environment (...)``..."""
        return self.sources.get(dotted, "default")


# ---------------------------------------------------------------------------- coercion


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str or tp is Path:
        return "a string"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(repr(m.value) for m in tp)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    return str(tp)


def coerce(value: Any, tp: Any, from_text: bool = False) -> Any:
    """Convert ``value`` to type ``tp``; raise ValueError with what was expected.

    ``from_text``: the value is an environment string, so "3" may become 3 and "yes" True.
    """
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (from_text and value == ""):
            return None
        errors = []
        for a in args:
            try:
                return coerce(value, a, from_text)
            except ValueError as exc:
                errors.append(str(exc))
        raise ValueError(" or ".join(errors))
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        for c in choices:
            if value == c or (from_text and str(c) == value):
                return c
        raise ValueError(f"expected {_describe(tp)}")
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        if isinstance(value, tp):
            return value
        for m in tp:
            if value == m.value or (isinstance(value, str) and value.lower() == str(m.value).lower()):
                return m
        raise ValueError(f"expected {_describe(tp)}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if from_text and isinstance(value, str):
            low = value.strip().lower()
            if low in {"1", "true", "yes", "on"}:
                return True
            if low in {"0", "false", "no", "off"}:
                return False
        raise ValueError(f"expected {_describe(tp)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if from_text and isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise ValueError(f"expected {_describe(tp)}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if from_text and isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                pass
        raise ValueError(f"expected {_describe(tp)}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ValueError(f"expected {_describe(tp)}")
    if tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
        raise ValueError(f"expected {_describe(tp)}")
    return value


def field_types(cls: type) -> dict[str, Any]:
    """Resolved annotations of a params dataclass (``from __future__`` strings included)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def defaults_of(cls: type) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def _show(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


def _suggest(name: str, options: list[str]) -> str | None:
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
    return f"did you mean {close[0]}?" if close else None


# ---------------------------------------------------------------------------- layers


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file; a syntax error is an InputError naming the file and line."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path} is not valid TOML: {exc}", "fix the file or remove it") from None


def _layer_from_toml(
    data: Mapping[str, Any], source: str, section_types: Mapping[str, type]
) -> dict[str, dict[str, Any]]:
    layer: dict[str, dict[str, Any]] = {}
    for section, table in data.items():
        if section not in section_types:
            hint = _suggest(section, list(section_types)) or f"known sections: {', '.join(section_types)}"
            raise InputError(f"unknown section [{section}] in {source}", hint)
        if not isinstance(table, dict):
            raise InputError(f"{section} in {source} must be a table ([{section}])", f"write it as [{section}]")
        known = [f.name for f in dataclasses.fields(section_types[section])]
        for key, value in table.items():
            if key not in known:
                hint = _suggest(key, known) or f"keys of [{section}]: {', '.join(known)}"
                raise InputError(f"unknown key {section}.{key} in {source}", hint)
            layer.setdefault(section, {})[key] = value
    return layer


def _layer_from_env(env: Mapping[str, str], section_types: Mapping[str, type]) -> dict[str, dict[str, Any]]:
    layer: dict[str, dict[str, Any]] = {}
    names = {
        f"{ENV_PREFIX}{section.upper()}_{f.name.upper()}": (section, f.name)
        for section, cls in section_types.items()
        for f in dataclasses.fields(cls)
    }
    for var, value in env.items():
        if not var.startswith(ENV_PREFIX) or var[len(ENV_PREFIX) :] in RESERVED_ENV:
            continue
        if var in names:
            section, key = names[var]
            layer.setdefault(section, {})[key] = value
            continue
        rest = var[len(ENV_PREFIX) :]
        if any(rest.startswith(s.upper() + "_") for s in section_types):
            hint = _suggest(var, list(names)) or "see unianimate.toml.example for the keys"
            raise InputError(f"unknown setting in environment variable {var}", hint)
    return layer


def load_settings(
    section_types: Mapping[str, type],
    *,
    cli: Mapping[str, Mapping[str, Any]] | None = None,
    project_dir: Path | None = None,
    recorded: Mapping[str, Mapping[str, Any]] | None = None,
    env: Mapping[str, str] | None = None,
    user_config: Path | None = None,
) -> Settings:
    """Merge the layers into frozen dataclasses; see the module docstring for the order.

    ``section_types`` maps stage sections to params dataclasses (``general`` is added).
    ``cli`` holds only the flags actually given. ``recorded`` holds the params upstream
    stages last ran with, so running ``animate`` does not undo ``align --person 1``.
    """
    types_all: dict[str, type] = {"general": GeneralSettings, **section_types}
    env = os.environ if env is None else env
    user_config = user_config_dir() / USER_CONFIG_NAME if user_config is None else user_config

    # Lowest first; each entry: (what it is for messages, values, parse env strings?)
    layers: list[tuple[str, dict[str, dict[str, Any]], bool]] = []
    if recorded:
        rec = {s.replace("-", "_"): dict(v) for s, v in recorded.items() if s.replace("-", "_") in types_all}
        # Drop recorded keys a newer stage version no longer has.
        for s, values in rec.items():
            known = {f.name for f in dataclasses.fields(types_all[s])}
            rec[s] = {k: v for k, v in values.items() if k in known}
        layers.append(("the manifest (the stage's last run)", rec, False))
    if user_config.is_file():
        layers.append((str(user_config), _layer_from_toml(read_toml(user_config), str(user_config), types_all), False))
    if project_dir is not None:
        project_toml = project_dir / PROJECT_CONFIG_NAME
        if project_toml.is_file():
            layers.append((str(project_toml), _layer_from_toml(read_toml(project_toml), str(project_toml), types_all), False))
    layers.append(("environment", _layer_from_env(env, types_all), True))
    if cli:
        layers.append(("command line", {s.replace("-", "_"): dict(v) for s, v in cli.items()}, False))

    sections: dict[str, Any] = {}
    sources: dict[str, str] = {}
    general = _merge_section("general", GeneralSettings, layers, sources)
    family = _family_layer(general.model, types_all)
    if family is not None:
        layers.insert(1 if recorded else 0, family)
    for section, cls in types_all.items():
        if section != "general":
            sections[section] = _merge_section(section, cls, layers, sources)
    return Settings(general=general, sections=types.MappingProxyType(sections), sources=types.MappingProxyType(sources))


def _merge_section(
    section: str, cls: type, layers: list[tuple[str, dict[str, dict[str, Any]], bool]], sources: dict[str, str]
) -> Any:
    """One section's dataclass from the layers (lowest first); records each value's source."""
    hints = field_types(cls)
    values = defaults_of(cls)
    for source, layer, from_text in layers:
        for key, raw in layer.get(section, {}).items():
            if raw is None:
                continue
            if source == "environment":
                where = f"environment variable {ENV_PREFIX}{section.upper()}_{key.upper()}"
            elif source == "command line":
                where = f"--{key.replace('_', '-')}"
            else:
                where = source
            try:
                value = coerce(raw, hints[key], from_text=from_text)
            except ValueError as exc:
                raise InputError(
                    f"{section}.{key} = {_show(raw)} in {where}: {exc}",
                    f"see the [{section}] section of unianimate.toml.example",
                ) from None
            values[key] = value
            sources[f"{section}.{key}"] = where
    return cls(**values)


def _family_layer(model: str, section_types: Mapping[str, type]) -> tuple[str, dict[str, dict[str, Any]], bool] | None:
    """The ``defaults.toml`` layer of the family ``model`` names (None without one).

    Only stage sections: a family file cannot choose the device or the family itself. Sections
    of stages this call does not load are skipped (a caller may load only some sections).
    """
    from unianimate_cli.weights import FAMILY_DEFAULTS, model_family_dir

    folder = model_family_dir(model)
    path = folder / FAMILY_DEFAULTS if folder is not None else None
    if path is None or not path.is_file():
        return None
    stage_types = {k: v for k, v in section_types.items() if k != "general"}
    where = f"{path} (the model family's defaults)"
    data = {k: v for k, v in read_toml(path).items() if k in stage_types}
    return (where, _layer_from_toml(data, where, stage_types), False)


# ---------------------------------------------------------------------------- the example file


def _toml_value(value: Any) -> str:
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    raise TypeError(f"cannot write {value!r} as TOML")


def render_example(section_types: Mapping[str, type], docs: Mapping[str, str] | None = None) -> str:
    """The text of ``unianimate.toml.example``: every key with its default and help."""
    lines = [
        "# unianimate settings: every key with its default.",
        "# Copy to <project>/unianimate.toml, or to config.toml in the user config dir",
        "# (`unianimate status --json` prints where). Precedence: command-line flag >",
        "# environment UNIANIMATE_<SECTION>_<KEY> > project unianimate.toml > user config.toml",
        "# > the parameters a stage last ran with > these defaults.",
        "",
    ]
    types_all: dict[str, type] = {"general": GeneralSettings, **section_types}
    for section, cls in types_all.items():
        doc = (docs or {}).get(section)
        if doc:
            lines.append(f"# {doc}")
        lines.append(f"[{section}]")
        defaults = defaults_of(cls)
        for f in dataclasses.fields(cls):
            help_text = f.metadata.get("help", "")
            flag = "" if f.metadata.get("key", True) else " (does not change results)"
            if help_text or flag:
                lines.append(f"# {help_text}{flag}".rstrip())
            lines.append(f"{f.name} = {_toml_value(defaults[f.name])}")
        lines.append("")
    return "\n".join(lines)


def _main() -> None:
    """``python -m unianimate_cli.config``: print the example file for the installed stages."""
    from unianimate_cli.stage import discover_stages, stage_section

    registry = discover_stages(include_third_party=False)
    print(render_example({stage_section(s.name): s.params_type for s in registry}), end="")


if __name__ == "__main__":
    _main()
