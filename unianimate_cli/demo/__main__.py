"""Write synthetic examples to look at: ``python -m unianimate_cli.demo OUT_DIR [--seeds 0-3]``.

Each seed gets ``OUT_DIR/seed_<n>/`` with ``photo.png``, ``dance.mp4`` and the ground-truth pose
files (see ``write_example``). Prints the folders written, one a line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from unianimate_cli.demo.synth import make_example, write_example


def _seeds(text: str) -> list[int]:
    """``"3"`` -> [3]; ``"0-3"`` -> [0, 1, 2, 3]; ``"1,5"`` -> [1, 5]."""
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m unianimate_cli.demo", description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seeds", type=_seeds, default=[0], help="e.g. 0-3 or 1,5 (default 0)")
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--height", type=int, default=384)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--fps", type=float, default=15.0)
    args = parser.parse_args(argv)
    for seed in args.seeds:
        folder = args.out_dir / f"seed_{seed}"
        write_example(folder, make_example(seed, args.frames, args.height, args.width, args.fps))
        sys.stdout.write(f"{folder}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
