"""`python -m unianimate_cli.parity FIXTURE_DIR [...]`: print errors, exit 1 on any failure."""

from __future__ import annotations

import sys
from pathlib import Path

from unianimate_cli.errors import UnianimateError
from unianimate_cli.parity import failures, run_parity


def main(argv: list[str] | None = None) -> int:
    """Run every folder given; print one line per compared output on stdout."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in {"-h", "--help"}:
        print("usage: python -m unianimate_cli.parity FIXTURE_DIR [FIXTURE_DIR ...]", file=sys.stderr)
        return 2 if not args else 0
    failed = 0
    for arg in args:
        folder = Path(arg)
        try:
            kind, comparisons = run_parity(folder)
        except UnianimateError as exc:
            print(f"error: {exc.message}", file=sys.stderr)
            if exc.hint:
                print(f"hint: {exc.hint}", file=sys.stderr)
            failed += 1
            continue
        print(f"{folder} ({kind})")
        for c in comparisons:
            status = "info" if c.informational else ("ok  " if c.ok else "FAIL")
            extra = f"  {c.detail}" if c.detail else ""
            print(f"  {status} {c.name:<40} max_abs={c.max_abs:.3e} rel_l2={c.rel_l2:.3e}{extra}")
        gating = [c for c in comparisons if not c.informational]
        bad = failures(comparisons)
        if not gating or bad:
            failed += 1
        print(f"  {len(gating) - len(bad)} passed, {len(bad)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
