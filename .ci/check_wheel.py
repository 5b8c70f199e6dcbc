"""Build the wheel and check it carries every package file of the checkout, and nothing else.

A flat layout can work from the checkout yet ship a wheel without some files; this catches
that, and that neither ``tests`` nor the top-level ``stages`` folder leaks into the wheel.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", tmp, str(ROOT)],
            check=True,
        )
        wheel = next(Path(tmp).glob("unianimate-*.whl"))
        names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "unianimate_cli").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    missing = sorted(expected - names)
    leaked = sorted(n for n in names if n.split("/")[0] in {"tests", "stages"})
    if missing or leaked:
        print(f"wheel check failed: missing {missing}, leaked {leaked}", file=sys.stderr)
        return 1
    print(f"wheel check: {len(expected)} package files present", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
