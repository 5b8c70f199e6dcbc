"""Overlapping frame windows for the long-video sampler: pure index math, no torch.

Facts from the reference (ali-vilab/UniAnimate 643c963, ``tools/modules/diffusions/
diffusion_ddim.py``: ``context_scheduler`` and ``DiffusionDDIMLong.p_mean_variance``), spec
section 10 and ``fixtures/diffusion/long_tiny/windows.json``:

* The scheduler is always called with step 0, so its "ordered halving" shift is 0 and the
  windows are the same at every denoising step.
* Window starts are 0, s, 2s, ... with s = context_size - overlap, for every start below
  num_frames - overlap; a window holds context_size consecutive frames, taken modulo
  num_frames (so the scheduler's last window usually wraps around to frame 0).
* With stride > 1, dilated windows follow (frame step 2, 4, ...), built the same way with
  s = context_size * step - overlap, for d = min(stride, ceil(log2(F / context_size)) + 1)
  dilation levels.
* **Last-window rule**: the last window is replaced by
  ``[(F - context_size*d + k*d) mod F for k in range(context_size)]``, i.e. for d = 1 the last
  context_size frames.

:func:`reference_context_windows` reproduces all of that, including the reference's failures
for short clips. :func:`context_windows` is what the sampler uses: identical whenever
num_frames > context_size, and one window of all F frames otherwise (spec section 16.2-3:
the reference raises for F <= context_size/2 and builds a 32-entry window with repeated
frames for context_size/2 < F < context_size).
"""

from __future__ import annotations

from unianimate_cli.errors import InputError

Window = list[int]


def _ceil_log2_ratio(num_frames: int, context_size: int) -> int:
    """ceil(log2(num_frames / context_size)) in exact integer arithmetic."""
    if num_frames > context_size:
        k = 1
        while context_size << k < num_frames:
            k += 1
        return k
    m = 0
    while num_frames << (m + 1) <= context_size:
        m += 1
    return -m


def _check(num_frames: int, context_size: int, overlap: int, stride: int) -> None:
    for name, value, low in (
        ("num_frames", num_frames, 1),
        ("context_size", context_size, 1),
        ("context_overlap", overlap, 0),
        ("context_stride", stride, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InputError(f"{name} = {value!r} is not an integer >= {low}")
    if overlap >= context_size:
        raise InputError(
            f"context_overlap = {overlap} is not smaller than context_size = {context_size}",
            "use an overlap below the window size, e.g. 8 for windows of 32 frames",
        )


def last_window_dilation(num_frames: int, context_size: int, stride: int) -> int:
    """d = min(stride, ceil(log2(F / context_size)) + 1); 0 or less for F <= context_size/2."""
    return min(stride, _ceil_log2_ratio(num_frames, context_size) + 1)


def scheduler_windows(num_frames: int, context_size: int = 32, overlap: int = 8, stride: int = 1) -> list[Window]:
    """What the reference's ``context_scheduler(step=0, ...)`` yields, before the last-window rule."""
    _check(num_frames, context_size, overlap, stride)
    if num_frames <= context_size:
        return [list(range(num_frames))]
    levels = last_window_dilation(num_frames, context_size, stride)
    windows: list[Window] = []
    for level in range(levels):
        step = 1 << level
        span = context_size * step
        for start in range(0, num_frames - overlap, span - overlap):
            windows.append([e % num_frames for e in range(start, start + span, step)])
    return windows


def reference_context_windows(
    num_frames: int, context_size: int = 32, overlap: int = 8, stride: int = 1
) -> list[Window]:
    """The windows the reference's UNet sees, in order, bugs included.

    Raises InputError where the reference raises (dilation d <= 0, i.e. F <= context_size/2).
    For context_size/2 < F < context_size the single window lists frames twice, as in the
    reference; use :func:`context_windows` for sampling.
    """
    windows = scheduler_windows(num_frames, context_size, overlap, stride)
    d = last_window_dilation(num_frames, context_size, stride)
    if d <= 0:
        raise InputError(
            f"{num_frames} frames are too few for windows of {context_size} frames in the reference sampler",
            "sample clips of at most the window size in one window",
        )
    windows[-1] = [e % num_frames for e in range(num_frames - context_size * d, num_frames, d)]
    return windows


def context_windows(num_frames: int, context_size: int = 32, overlap: int = 8, stride: int = 1) -> list[Window]:
    """The frame windows the windowed sampler evaluates at every step, in order.

    Equal to :func:`reference_context_windows` for num_frames > context_size. For
    num_frames <= context_size it is one window of all frames ``[0, ..., F-1]`` (fix of spec
    section 16.2-3), which the reference also gives for F == context_size.
    """
    _check(num_frames, context_size, overlap, stride)
    if num_frames <= context_size:
        return [list(range(num_frames))]
    return reference_context_windows(num_frames, context_size, overlap, stride)


def coverage_counts(windows: list[Window], num_frames: int) -> list[int]:
    """How many windows cover each frame: the averaging divisor (a window counts once per frame)."""
    counts = [0] * num_frames
    for window in windows:
        for frame in set(window):
            counts[frame] += 1
    return counts


def batch_windows(windows: list[Window], batch_size: int) -> list[list[Window]]:
    """Group windows in order into UNet batches of at most ``batch_size`` (context_batch_size)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"window batch size = {batch_size!r} is not an integer >= 1")
    return [windows[i : i + batch_size] for i in range(0, len(windows), batch_size)]
