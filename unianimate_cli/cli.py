"""Typer app: placeholder until the CLI foundation lands (issue 3)."""

from __future__ import annotations

import typer

app = typer.Typer(name="unianimate", no_args_is_help=True)


@app.callback()
def _root() -> None:
    """Animate the person in a photo with the moves of a driving video."""


def main() -> None:
    """Console-script entry point."""
    app()
