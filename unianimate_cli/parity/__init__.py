"""Numeric parity against golden fixture folders produced by the reference code.

``python -m unianimate_cli.parity FIXTURE_DIR`` finds which kind of fixture a folder holds,
re-runs it with our code and compares every output. Each kind lives in its own module
(``parity/models.py``, ``parity/diffusion.py``, ``parity/pose.py``) and exposes
``CHECKERS``: a tuple of ``Checker``. A checker derives everything (shapes, sizes, step
counts, seeds) from the folder it is given, never from the shared instances' numbers.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from unianimate_cli.errors import ParityError

# The fixture READMEs' acceptance: allclose(rtol=atol=1e-4) and relative L2 <= 2e-5.
DEFAULT_RTOL = 1e-4
DEFAULT_ATOL = 1e-4
DEFAULT_REL_L2 = 2e-5

CHECKER_MODULES = (
    "unianimate_cli.parity.unet",
    "unianimate_cli.parity.vae",
    "unianimate_cli.parity.diffusion",
    "unianimate_cli.parity.pose",
)


@dataclass(frozen=True)
class Comparison:
    """One compared output: its errors and whether they are within tolerance."""

    name: str
    max_abs: float
    rel_l2: float
    ok: bool
    detail: str = ""
    # Reported but not part of the fixture's acceptance (e.g. model outputs along a
    # free-running trajectory, where the READMEs prescribe teacher-forced comparisons).
    informational: bool = False

    @classmethod
    def failed(cls, name: str, detail: str) -> Comparison:
        """A comparison that could not be made (missing output, shape or count mismatch)."""
        return cls(name, math.inf, math.inf, False, detail)


@dataclass(frozen=True)
class Checker:
    """A fixture kind: ``detect`` says whether a folder is of this kind, ``run`` compares it."""

    kind: str
    detect: Callable[[Path], bool]
    run: Callable[[Path], list[Comparison]]


def compare_tensors(
    name: str,
    ours: Any,
    ref: Any,
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
    rel_l2_max: float | None = DEFAULT_REL_L2,
) -> Comparison:
    """Compare two arrays (torch or numpy) the way the fixture READMEs define acceptance.

    Elementwise ``|ours - ref| <= atol + rtol * |ref|`` on every value, and, when
    ``rel_l2_max`` is given, ``||ours - ref|| / ||ref|| <= rel_l2_max``. Non-finite values
    must sit in the same places with the same value. Shapes must be equal.
    """
    import numpy as np

    a = _as_float64(ours)
    b = _as_float64(ref)
    if a.shape != b.shape:
        return Comparison(name, float("inf"), float("inf"), False, f"shape {a.shape} != {b.shape}")
    finite_a, finite_b = np.isfinite(a), np.isfinite(b)
    same_nonfinite = bool(np.array_equal(finite_a, finite_b)) and bool(
        np.array_equal(a[~finite_b], b[~finite_b], equal_nan=True)
    )
    mask = finite_b & finite_a
    diff = np.abs(a[mask] - b[mask])
    max_abs = float(diff.max()) if diff.size else 0.0
    within = bool(np.all(diff <= atol + rtol * np.abs(b[mask])))
    ref_norm = float(np.linalg.norm(b[mask]))
    rel_l2 = float(np.linalg.norm(a[mask] - b[mask]) / ref_norm) if ref_norm > 0 else max_abs
    ok = within and same_nonfinite and (rel_l2_max is None or rel_l2 <= rel_l2_max)
    detail = "" if same_nonfinite else "non-finite values differ"
    return Comparison(name, max_abs, rel_l2, ok, detail)


def failures(comparisons: list[Comparison]) -> list[Comparison]:
    """The comparisons that break the fixture's acceptance (informational ones never do)."""
    return [c for c in comparisons if not c.ok and not c.informational]


def _as_float64(x: Any) -> Any:
    import numpy as np

    if hasattr(x, "detach"):
        x = x.detach().to("cpu").double().numpy()
    return np.asarray(x, dtype=np.float64)


def available_checkers() -> list[Checker]:
    """Every checker of the modules that exist; a missing module is simply not offered."""
    checkers: list[Checker] = []
    for module_name in CHECKER_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue
            raise
        checkers.extend(module.CHECKERS)
    return checkers


def run_parity(folder: Path) -> tuple[str, list[Comparison]]:
    """Detect the kind of fixture in ``folder`` and compare our outputs with it."""
    if not folder.is_dir():
        raise ParityError(f"{folder} is not a directory", "pass a fixture folder")
    for checker in available_checkers():
        if checker.detect(folder):
            return checker.kind, checker.run(folder)
    kinds = ", ".join(c.kind for c in available_checkers()) or "none"
    raise ParityError(
        f"{folder} is not a fixture folder this runner knows",
        f"known kinds: {kinds}",
    )
