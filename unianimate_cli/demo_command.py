"""``unianimate demo [DIR]``: the whole pipeline on a synthetic example, with the shipped demo models.

Nothing to download: it writes a held-out figure's photo and another figure's dance video into
DIR (``demo.preset``), then runs ``animate`` on them with ``--model demo`` (pose extraction,
alignment, rendering and encoding at 128x192 on the CPU, about a minute), the project in
``DIR/photo-dance.unianimate``. Output as ``animate``'s: the result paths, or ``--json``.

Outside the ``demo`` package so that building the CLI (``--help``) imports no numpy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

DEFAULT_DIR = Path("unianimate-demo")


def make_demo_command(registry: Any) -> Callable[..., None]:
    """The Typer command ``demo`` for ``registry`` (which must hold ``animate`` and its upstream)."""
    from unianimate_cli.cli import _add_globals, _options, run_stage_command, session

    def demo(
        ctx: typer.Context,
        folder: Annotated[
            Optional[Path],
            typer.Argument(help=f"Folder for the example inputs and the project (default: ./{DEFAULT_DIR}).", show_default=False, metavar="[DIR]"),
        ] = None,
        example: Annotated[int, typer.Option("--example", help="Which held-out example (figure and dance) to write, 0-4999.")] = 0,
        **kwargs: Any,
    ) -> None:
        """Try unianimate with no downloads: animate a synthetic figure with the small demo models.

        Writes DIR/photo.png (one figure standing) and DIR/dance.mp4 (another figure dancing), then runs `unianimate animate --model demo` on them; the video is DIR/photo-dance.unianimate/render/out.mp4.

        [bold]Examples[/bold]

          unianimate demo

          unianimate demo my-demo --example 3 --json
        """
        from unianimate_cli.demo.preset import DANCE_SEED_OFFSET, write_demo_inputs
        from unianimate_cli.errors import InputError

        opts = _options(ctx, kwargs)
        with session(opts) as sess:
            if not 0 <= example < DANCE_SEED_OFFSET:
                raise InputError(f"--example {example} is outside 0..{DANCE_SEED_OFFSET - 1}", "use e.g. 0, 1, 2")
            target = folder if folder is not None else DEFAULT_DIR
            if target.exists() and not target.is_dir():
                raise InputError(f"{target} is a file", "pass a folder for the demo")
            if opts.model is None:
                opts.model = "demo"
            if opts.project is None:
                opts.project = target / "photo-dance.unianimate"
            inputs = write_demo_inputs(target, example)
            if not opts.quiet:
                sess.console.print(f"demo inputs: {inputs.photo} and {inputs.video}", markup=False, highlight=False)
            run_stage_command(sess, registry, "animate", [inputs.photo, inputs.video], {})

    _add_globals(demo)
    return demo
