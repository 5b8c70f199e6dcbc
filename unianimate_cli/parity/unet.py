"""Parity of ``UniAnimateUNet`` with fixture folders in the format of ``fixtures/unet_tiny``.

A folder holds ``config.json`` (the reference's constructor arguments, its ``config``
object, the call patterns and the outputs they produced), ``state_dict.safetensors``,
``inputs.safetensors``, ``outputs.safetensors`` and optionally
``debug_intermediates.safetensors``. Everything (sizes, frame count, batch, calls) is
read from the folder; nothing about the shared instance is assumed.

GPU hook for the coordinator: ``run_unet_fixture(folder, device="cuda", dtype=torch.float16)``
returns the same comparisons for another device or dtype (TF32 is turned off while it runs),
and ``python -m unianimate_cli.parity.unet FOLDER --device cuda --dtype float16`` prints them.
Only float32 is expected to pass the tolerance; for float16/bfloat16 the numbers are the
error of reduced precision against the float32 reference.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from unianimate_cli.errors import ParityError
from unianimate_cli.parity import (
    DEFAULT_ATOL,
    DEFAULT_REL_L2,
    DEFAULT_RTOL,
    Checker,
    Comparison,
    compare_tensors,
)

FIXTURE_FILES = ("config.json", "state_dict.safetensors", "inputs.safetensors", "outputs.safetensors")
DEBUG_FILE = "debug_intermediates.safetensors"
# The fixture README: debug intermediates are compared with atol = 1e-4 x RMS(ref).
DEBUG_ATOL_PER_RMS = 1e-4
# Forward arguments a call pattern may name (besides x and t).
_FORWARD_KEYWORDS = frozenset({"image", "local_image", "dwpose", "randomref", "fps"})


def detect(folder: Path) -> bool:
    """A UNet fixture: the four files, and a config.json naming a ``UNetSD_UniAnimate`` reference."""
    if not all((folder / name).is_file() for name in FIXTURE_FILES):
        return False
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(config, dict):
        return False
    names = f"{config.get('fixture', '')} {config.get('reference', '')}"
    return "UNetSD_UniAnimate" in names or str(config.get("fixture", "")).startswith("unet")


def run(folder: Path) -> list[Comparison]:
    """Float32 on CPU: the acceptance run of the parity runner."""
    return run_unet_fixture(folder)


def load_fixture_unet(folder: Path, device: str = "cpu", dtype: Any = None) -> Any:
    """Build the UNet a fixture folder's ``config.json`` describes, load its weights and zero_y.

    Built on ``meta`` then loaded with ``assign=True``; returned in eval mode on ``device`` in
    ``dtype`` (a torch dtype, default float32). Raises ``ParityError`` for an incomplete folder
    or weights that do not fit the configuration.
    """
    import torch
    from safetensors.torch import load_file

    from unianimate_cli.models.unet import UNetConfig, UniAnimateUNet

    dtype = torch.float32 if dtype is None else dtype
    missing = [name for name in FIXTURE_FILES[:3] if not (folder / name).is_file()]
    if missing:
        raise ParityError(f"{folder} lacks {', '.join(missing)}", "the fixture folder is incomplete")
    config = _read_config(folder)
    try:
        unet_config = UNetConfig.from_reference_kwargs(
            config["constructor_kwargs"],
            config["config_object"]["resolution"],
            config["config_object"]["video_compositions"],
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ParityError(f"{folder / 'config.json'}: cannot read the UNet configuration ({exc})") from exc
    with torch.device("meta"):
        model = UniAnimateUNet(unet_config)
    result = model.load_state_dict(load_file(str(folder / "state_dict.safetensors")), strict=False, assign=True)
    if result.missing_keys or result.unexpected_keys:
        raise ParityError(
            f"{folder / 'state_dict.safetensors'} does not fit the configured UNet: "
            f"missing {_few(result.missing_keys)}, unexpected {_few(result.unexpected_keys)}"
        )
    model = model.to(device=device, dtype=dtype).eval()
    inputs = load_file(str(folder / "inputs.safetensors"))
    if "zero_y" not in inputs:
        raise ParityError(f"{folder / 'inputs.safetensors'} has no zero_y")
    model.set_zero_y(inputs["zero_y"].to(device))
    return model


def run_unet_fixture(folder: Path, device: str = "cpu", dtype: Any = None) -> list[Comparison]:
    """Build the fixture's model, make every listed call, compare outputs (and debug tensors).

    ``dtype`` is a torch dtype (default float32) for the weights and the computation; outputs
    are compared in float64 against the float32 reference outputs.
    """
    import torch
    from safetensors.torch import load_file

    config = _read_config(folder)
    model = load_fixture_unet(folder, device, dtype)
    # Keys and shapes are those of the built module: loading with assign=True keeps both.
    comparisons = [_compare_key_order(model, config)]
    inputs = load_file(str(folder / "inputs.safetensors"))
    outputs = load_file(str(folder / "outputs.safetensors"))
    debug = load_file(str(folder / DEBUG_FILE)) if (folder / DEBUG_FILE).is_file() else {}

    patterns = config.get("call_patterns", {})
    for out_name, spec in config.get("outputs", {}).items():
        if out_name not in outputs:
            raise ParityError(f"{folder / 'outputs.safetensors'} lacks {out_name}, which config.json lists")
        args = _call_arguments(patterns, spec, inputs, out_name)
        prefix = "dbg_" + out_name.removeprefix("out_") + "."
        wanted = {k[len(prefix):]: v for k, v in debug.items() if k.startswith(prefix)}
        traced: dict[str, torch.Tensor] = {}

        def trace(name: str, value: torch.Tensor, wanted: dict[str, Any] = wanted) -> None:
            if name in wanted:
                traced[name] = value.detach().float().cpu()

        with _no_tf32(), torch.no_grad():
            tensors = {k: v.to(device) for k, v in args.items()}
            ours = model(**tensors, trace=trace).float().cpu()
        comparisons.append(compare_tensors(out_name, ours, outputs[out_name]))
        traced["final"] = ours
        for name, ref in wanted.items():
            label = f"debug {prefix[:-1]}.{name}"
            if name not in traced:
                comparisons.append(Comparison.failed(label, "not produced by our model"))
                continue
            rms = float(ref.double().pow(2).mean().sqrt())
            comparisons.append(
                compare_tensors(label, traced[name], ref, rtol=DEFAULT_RTOL, atol=DEBUG_ATOL_PER_RMS * rms, rel_l2_max=None)
            )
    if len(comparisons) == 1:
        raise ParityError(f"{folder / 'config.json'} lists no outputs to compare")
    return comparisons


def _read_config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ParityError(f"{path} is not readable JSON ({exc})") from exc
    if not isinstance(config, dict) or "constructor_kwargs" not in config or "config_object" not in config:
        raise ParityError(f"{path} lacks constructor_kwargs/config_object", "is this a UNet fixture folder?")
    return config


def _call_arguments(
    patterns: dict[str, str], spec: dict[str, Any], inputs: dict[str, Any], out_name: str
) -> dict[str, Any]:
    """Forward keyword arguments for one output, from its call pattern string.

    A pattern reads like ``model(x, t, image=image, dwpose=dwpose)  # comment``: x and t
    come first (or as keywords); each argument names an input tensor. ``t`` stands for the input
    named by the output's ``"t"`` entry (e.g. ``t_a``).
    """
    pattern_name = spec.get("pattern")
    source = patterns.get(pattern_name or "")
    if not source:
        raise ParityError(f"config.json: output {out_name} names call pattern {pattern_name!r}, which is not listed")
    try:
        call = ast.parse(source.split("#", 1)[0].strip(), mode="eval").body
    except SyntaxError as exc:
        raise ParityError(f"config.json: call pattern {pattern_name!r} is not a call: {source!r}") from exc
    if not isinstance(call, ast.Call):
        raise ParityError(f"config.json: call pattern {pattern_name!r} is not a call: {source!r}")

    def tensor(node: ast.expr, role: str) -> Any:
        if not isinstance(node, ast.Name):
            raise ParityError(f"config.json: {role} of pattern {pattern_name!r} is not an input name")
        name = node.id
        if name == "t" and "t" not in inputs:
            name = str(spec.get("t", ""))
        if name not in inputs:
            raise ParityError(f"inputs.safetensors lacks {name!r}, needed by pattern {pattern_name!r}")
        return inputs[name]

    if len(call.args) > 2:
        raise ParityError(f"config.json: pattern {pattern_name!r} passes more than x and t positionally")
    args = {role: tensor(node, role) for role, node in zip(("x", "t"), call.args)}
    for kw in call.keywords:
        if kw.arg not in _FORWARD_KEYWORDS | {"x", "t"}:
            raise ParityError(f"config.json: pattern {pattern_name!r} passes unsupported argument {kw.arg!r}")
        if isinstance(kw.value, ast.Constant) and kw.value.value is None:
            continue
        args[kw.arg] = tensor(kw.value, kw.arg)
    if "x" not in args or "t" not in args:
        raise ParityError(f"config.json: pattern {pattern_name!r} does not pass both x and t")
    return args


def _compare_key_order(model: Any, config: dict[str, Any]) -> Comparison:
    """Our state-dict keys and shapes, in order, against config.json's ``state_dict_keys``."""
    listed = config.get("state_dict_keys")
    if not listed:
        return Comparison("state_dict keys (not listed)", 0.0, 0.0, True)
    ours = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    ref = [(e["key"], list(e["shape"])) for e in listed]
    if ours == ref:
        return Comparison(f"state_dict keys ({len(ref)}, in order)", 0.0, 0.0, True)
    first = next((i for i, (a, b) in enumerate(zip(ours, ref)) if a != b), min(len(ours), len(ref)))
    detail = f"first difference at #{first}: ours {ours[first:first + 1]} vs ref {ref[first:first + 1]}"
    return Comparison.failed("state_dict keys", detail)


@contextlib.contextmanager
def _no_tf32() -> Iterator[None]:
    """TF32 off for the duration (parity needs true float32 matmuls and convolutions)."""
    import torch

    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _few(keys: list[str], limit: int = 5) -> str:
    if not keys:
        return "none"
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


CHECKERS: tuple[Checker, ...] = (Checker("unet", detect, run),)


def main(argv: list[str] | None = None) -> int:
    """``python -m unianimate_cli.parity.unet FOLDER [--device cuda] [--dtype float16]``."""
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16", "float64"])
    opts = parser.parse_args(argv)
    comparisons = run_unet_fixture(opts.folder, opts.device, getattr(torch, opts.dtype))
    print(f"{opts.folder} (unet, {opts.device}, {opts.dtype}; tolerance rtol=atol={DEFAULT_ATOL}, rel_l2<={DEFAULT_REL_L2})")
    for c in comparisons:
        print(f"  {'ok  ' if c.ok else 'FAIL'} {c.name:<48} max_abs={c.max_abs:.3e} rel_l2={c.rel_l2:.3e} {c.detail}")
    return 0 if all(c.ok for c in comparisons) else 1


if __name__ == "__main__":
    sys.exit(main())
