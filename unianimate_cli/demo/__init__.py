"""Synthetic people for the demo model family: seeded looks, dance motion, renderer, examples.

Public API (numpy + OpenCV only, deterministic for a seed):

* ``make_figure_style(seed) -> FigureStyle``: proportions, skin, hair, clothes.
* ``make_motion(seed, num_frames, fps, skeleton=None) -> Motion``: a dance in body units.
* ``render_figure(style, keypoints, height_px, width_px, background) -> uint8 h w 3 RGB``.
* ``render_figure_with_box(...)``: the same and the figure's pixel box (detector ground truth).
* ``make_example(seed, num_frames, height_px, width_px, fps=15.0) -> Example``.
* ``make_example_poses(seed, ...)``: the same example's keypoints only (style, photo, clip).
* ``make_transfer_example(photo_seed, dance_seed, ...)``: A's photo, B's dance, A dancing it.
* ``write_example(folder, example)``: ``photo.png``, ``dance.mp4`` and ground-truth pose files.
"""

from unianimate_cli.demo.motion import Motion, Skeleton, make_motion
from unianimate_cli.demo.synth import (
    Example,
    FigureStyle,
    Material,
    TransferExample,
    make_background,
    make_example,
    make_example_poses,
    make_figure_style,
    make_transfer_example,
    render_figure,
    render_figure_with_box,
    write_example,
)

__all__ = [
    "Example",
    "FigureStyle",
    "Material",
    "Motion",
    "Skeleton",
    "TransferExample",
    "make_background",
    "make_example",
    "make_example_poses",
    "make_figure_style",
    "make_motion",
    "make_transfer_example",
    "render_figure",
    "render_figure_with_box",
    "write_example",
]
