"""``torchrun`` entry for tests/test_launch.py: the ``unianimate`` command, optionally stopped.

With ``UNIANIMATE_TEST_STOP_AFTER_STEP=k``, rank 0 raises KeyboardInterrupt right after it
wrote the sampler checkpoint of DDIM step k (as Ctrl-C would then), so a rerun must resume
from that checkpoint. The hook lives here, not in the package.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from unianimate_cli import animation
from unianimate_cli.cli import main


def _stop_after_step(k: int) -> None:
    real_save = animation._save_tensors

    def save_then_stop(path: Path, tensors: dict[str, Any]) -> None:
        real_save(path, tensors)
        if path.name == animation.STATE_FILE and int(tensors["completed_steps"]) == k:
            raise KeyboardInterrupt

    animation._save_tensors = save_then_stop  # type: ignore[assignment]


if __name__ == "__main__":
    stop = os.environ.get("UNIANIMATE_TEST_STOP_AFTER_STEP")
    if stop:
        _stop_after_step(int(stop))
    sys.argv[0] = "unianimate"
    main()
