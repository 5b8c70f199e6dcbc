"""GPU parity of the UNet and VAE fixtures: float32 (TF32 off) must pass; fp16/bf16 errors measured.

Usage (on a CUDA machine, from the repository root):

    PYTHONPATH=. python3 benchmarks/gpu_parity.py FIXTURE_DIR [FIXTURE_DIR ...] --out OUTDIR

Each folder is a UNet fixture (``config.json`` with constructor_kwargs, like
``fixtures/unet_tiny``) or a VAE fixture (like ``fixtures/vae_tiny``). For float32 the
fixture README's tolerance is the verdict (exit 1 when any output fails); for float16 and
bfloat16 the errors against the float32 reference outputs are recorded, not judged.
Writes ``OUTDIR/gpu_parity.json`` and prints a Markdown table for ``docs/PARITY.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

import torch

from unianimate_cli.parity import Comparison
from unianimate_cli.parity import unet as unet_parity
from unianimate_cli.parity import vae as vae_parity
from unianimate_cli.runtime import tf32

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def run_folder(folder: Path, device: str, dtype_name: str, compiled: bool = False) -> list[Comparison]:
    """All comparisons of one fixture folder in one dtype, TF32 off.

    ``compiled``: the UNet's blocks run under ``runtime.compile_blocks`` (the fast path), to
    show that compilation stays within the dtype's error.
    """
    with tf32(False):
        if unet_parity.detect(folder):
            if not compiled:
                return unet_parity.run_unet_fixture(folder, device=device, dtype=DTYPES[dtype_name])
            from unianimate_cli.models.unet import UniAnimateUNet
            from unianimate_cli.runtime import compile_blocks

            plain_eval = UniAnimateUNet.eval

            def eval_and_compile(self: UniAnimateUNet, mode: bool = False) -> UniAnimateUNet:
                model = plain_eval(self)
                compile_blocks(model)
                return model

            UniAnimateUNet.eval = eval_and_compile  # type: ignore[method-assign,assignment]
            try:
                return unet_parity.run_unet_fixture(folder, device=device, dtype=DTYPES[dtype_name])
            finally:
                UniAnimateUNet.eval = plain_eval  # type: ignore[method-assign]
        if vae_parity.detect(folder):
            return vae_parity.run_on(folder, device=device, dtype=dtype_name)
    raise SystemExit(f"{folder}: neither a UNet nor a VAE fixture")


def summarise(comparisons: list[Comparison]) -> dict[str, Any]:
    """Worst errors over the gated outputs (debug traces and informational rows excluded)."""
    gated = [c for c in comparisons if not c.informational and not c.name.startswith("debug") and c.name != "key order"]
    return {
        "outputs": len(gated),
        "failed": [c.name for c in gated if not c.ok],
        "max_abs": max((c.max_abs for c in gated), default=0.0),
        "max_rel_l2": max((c.rel_l2 for c in gated), default=0.0),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", type=Path, default=Path("."))
    parser.add_argument("--compiled", action="store_true", help="also run UNet fixtures with compile_blocks")
    args = parser.parse_args(argv)

    record: dict[str, Any] = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "tf32": False,
        "results": {},
    }
    if torch.cuda.is_available():
        record["cudnn"] = torch.backends.cudnn.version()
    ok = True
    rows = []
    plan = [(folder, dtype_name, False) for folder in args.folders for dtype_name in DTYPES]
    if args.compiled:
        plan += [(f, d, True) for f in args.folders if unet_parity.detect(f) for d in DTYPES]
    for folder, dtype_name, compiled in plan:
        comparisons = run_folder(folder, args.device, dtype_name, compiled)
        label = dtype_name + ("+compile_blocks" if compiled else "")
        summary = summarise(comparisons)
        summary["rows"] = [
            {"name": c.name, "max_abs": c.max_abs, "rel_l2": c.rel_l2, "ok": c.ok} for c in comparisons
        ]
        record["results"][f"{folder.name}/{label}"] = summary
        verdict = "-"
        if dtype_name == "float32":
            verdict = "pass" if not summary["failed"] else f"FAIL {len(summary['failed'])} outputs"
            ok = ok and (compiled or not summary["failed"])  # the verdict is the plain float32 run
        rows.append(
            f"| {folder.name} | {label} | {summary['outputs']} | {summary['max_abs']:.3e} "
            f"| {summary['max_rel_l2']:.3e} | {verdict} |"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_parity.json").write_text(json.dumps(record, indent=1))
    print(f"device {record['device']}, torch {record['torch']}, {record['date']}, TF32 off")
    print("| fixture | dtype | outputs | max abs err | max rel L2 | float32 verdict |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
