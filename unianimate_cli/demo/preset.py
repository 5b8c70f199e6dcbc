"""Example inputs for the demo family: a held-out figure's photo and another figure's dance.

``unianimate demo [DIR]`` writes them with :func:`write_demo_inputs` and animates the photo with
``--model demo`` (the family in ``unianimate_cli/demo/family``, trained by
``python -m unianimate_cli.demo.train`` on seeds >= 10,000; these use seeds below that).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: The demo family's resolution (W, H): the photo and video are written at it.
DEMO_WIDTH_PX = 128
DEMO_HEIGHT_PX = 192
DEMO_FPS = 8.0
DEMO_FRAMES = 16
#: Example ``n`` is figure ``n``'s photo with figure ``DANCE_SEED_OFFSET + n``'s dance.
DANCE_SEED_OFFSET = 5000


@dataclass(frozen=True)
class DemoInputs:
    """Where :func:`write_demo_inputs` put the photo and the driving video."""

    photo: Path
    video: Path


def transfer_seeds(example: int) -> tuple[int, int]:
    """(photo seed, dance seed) of demo example ``example``; both held out of training."""
    if not 0 <= example < DANCE_SEED_OFFSET:
        raise ValueError(f"example must be in 0..{DANCE_SEED_OFFSET - 1}, got {example}")
    return example, DANCE_SEED_OFFSET + example


def write_demo_inputs(folder: Path, example: int = 0, num_frames: int = DEMO_FRAMES) -> DemoInputs:
    """Write ``photo.png`` (figure A standing) and ``dance.mp4`` (figure B dancing) into ``folder``.

    At the demo family's 128x192 and 8 fps. Deterministic for ``example``.
    """
    from unianimate_cli.demo.synth import make_example, make_example_poses, make_background, render_figure
    from unianimate_cli.media.image import save_image
    from unianimate_cli.media.video import write_video

    photo_seed, dance_seed = transfer_seeds(example)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    h, w = DEMO_HEIGHT_PX, DEMO_WIDTH_PX
    # A's photo framed as for a dance of this length, as make_transfer_example frames it
    style, keypoints_photo, _ = make_example_poses(photo_seed, num_frames, h, w, DEMO_FPS)
    photo = render_figure(style, keypoints_photo, h, w, make_background(photo_seed, h, w))
    dance = make_example(dance_seed, num_frames, h, w, DEMO_FPS)
    out = DemoInputs(photo=folder / "photo.png", video=folder / "dance.mp4")
    save_image(out.photo, photo)
    write_video(out.video, iter(dance.frames), DEMO_FPS)
    return out
