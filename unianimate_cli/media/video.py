"""Video reading and writing with PyAV, plus the reference's pose-frame selection rule.

Decoding (``probe_video``, ``iter_frames``)
    Frames come out as RGB ``uint8`` arrays ``h w 3`` in *display* orientation: the display
    matrix (rotation) a phone writes is applied, so a portrait clip comes out portrait. Frames
    are streamed, never loaded whole.

Frame numbers and variable frame rate
    A frame number means a slot on a constant-rate grid at the stream's nominal rate
    ``VideoInfo.fps`` (FFmpeg's ``avg_frame_rate``), counted from the first frame:
    slot ``k`` sits at ``start_time_s + k / fps``. Each decoded frame lands in slot
    ``round((t - start_time_s) * fps)``, and slot ``k`` shows the latest frame that landed
    in a slot ``<= k``. That is what ``ffmpeg -vf fps=<rate>`` does: for a constant-rate file
    slot ``k`` is exactly the ``k``-th decoded frame; for a variable-rate one (phone clips)
    a frame is repeated over a gap and dropped where frames are dense, so the frames stay in
    sync with the audio. ``frame_interval`` ``s`` then takes every ``s``-th slot, and the
    result plays in real time at ``fps / s`` (``output_fps``).

Encoding (``write_video``)
    H.264 ``yuv420p`` MP4 by default, written to a temp file in the target folder and moved
    into place with ``os.replace``; on any error the temp file is removed and an existing
    file at the target is left untouched. Optional audio is cut from a source file and
    re-encoded to AAC (see ``write_video``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from enum import Enum
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from unianimate_cli.errors import InputError
from unianimate_cli.project import atomic_path

if TYPE_CHECKING:
    import av.container

logger = logging.getLogger(__name__)
# libx264 with macroblock-tree rate control sometimes wrote a different bitstream for identical
# 64 px frames (about 1 run in 6 under CPU load; PyAV 18, x264 core 165; with mbtree=0 none in
# 36 runs; 96-512 px always repeated). Below this size it is turned off, so a resumed render
# writes the same file as an uninterrupted one.
_X264_REPEATABLE_MIN_PX = 128

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".heic", ".heif", ".avif", ".jp2", ".ppm", ".pgm"}
)
# FFmpeg opens still images through these demuxers; a "video" from them is an image.
_IMAGE_DEMUXERS = ("image2", "_pipe")
_VIDEO_HINT = "pass a video file (MP4, MOV, MKV, WebM) with a picture track"
# The grid rate keeps a small denominator: the exact broadcast rates (24000/1001, 30000/1001,
# 25, 30, 60) survive, while a variable-rate mean like 7864320/262143 becomes a usable rate.
_MAX_FPS_DENOMINATOR = 1001
# Audio is written as AAC at one of the rates the encoder supports.
_AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)


@dataclass(frozen=True)
class AudioInfo:
    """The first audio track of a file."""

    codec: str
    sample_rate: int
    channels: int
    start_time_s: float
    duration_s: float | None


@dataclass(frozen=True)
class VideoInfo:
    """What ``probe_video`` learned about the first video track of a file.

    ``width_px``/``height_px`` are the displayed size (after rotation); ``coded_*`` are the
    size stored in the stream. ``rotation_deg`` is the counter-clockwise turn (0, 90, 180 or
    270) applied to decoded pictures for display, as FFmpeg reports it: a portrait phone clip
    usually has 270. ``num_frames`` is the container's frame count, or ``duration_s * fps``
    rounded when the container has none (``is_num_frames_estimated``). ``start_time_s`` is
    the first frame's presentation time; frame times from ``iter_frames`` are on that clock.
    """

    path: Path
    width_px: int
    height_px: int
    coded_width_px: int
    coded_height_px: int
    rotation_deg: int
    fps: Fraction
    num_frames: int
    is_num_frames_estimated: bool
    duration_s: float
    start_time_s: float
    codec: str
    container_format: str
    audio: AudioInfo | None

    @property
    def fps_float(self) -> float:
        return float(self.fps)

    @property
    def has_audio(self) -> bool:
        return self.audio is not None


@dataclass(frozen=True)
class DecodedFrame:
    """One frame from ``iter_frames``.

    ``index`` is the grid slot (frame number at the nominal rate, see the module docstring),
    ``time_s`` the slot's time on the source clock, ``source_time_s`` the timestamp of the
    decoded picture shown in it (equal to ``time_s`` up to rounding for constant-rate files).
    ``image`` is RGB uint8 ``h w 3`` in display orientation.
    """

    index: int
    time_s: float
    source_time_s: float
    image: np.ndarray


@dataclass(frozen=True)
class WrittenVideo:
    """What ``write_video`` wrote."""

    path: Path
    num_frames: int
    width_px: int
    height_px: int
    fps: Fraction
    has_audio: bool
    audio_duration_s: float


# --------------------------------------------------------------------------- probing


def _open_input(path: Path) -> av.container.InputContainer:
    """Open ``path`` for reading, turning every way it can fail into an ``InputError``."""
    import av

    if not path.exists():
        raise InputError(f"video not found: {path}", "check the path")
    if path.is_dir():
        raise InputError(f"{path} is a folder, not a video file", _VIDEO_HINT)
    if path.stat().st_size == 0:
        raise InputError(f"{path} is empty (0 bytes)", "the file was not written completely; copy it again")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        raise InputError(f"{path} is an image, not a video", _VIDEO_HINT)
    try:
        container = av.open(str(path), mode="r")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as err:
        raise InputError(f"cannot read {path} as a video ({_short(err)})", _VIDEO_HINT) from err
    fmt = container.format.name
    if any(part == "image2" or part.endswith("_pipe") for part in fmt.split(",")):
        container.close()
        raise InputError(f"{path} is an image ({fmt}), not a video", _VIDEO_HINT)
    if not container.streams.video:
        if container.streams.audio:
            kind = "audio only"
        elif len(container.streams) == 0:
            kind = "no tracks, or only empty ones: zero frames"
        else:
            kind = "no picture track"
        container.close()
        raise InputError(f"{path} has no video track ({kind})", _VIDEO_HINT)
    return container


def _short(err: BaseException) -> str:
    return " ".join(str(err).split())[:160]


def _nominal_fps(stream: Any) -> Fraction | None:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate is not None and rate > 0:
            fps = Fraction(rate)
            if fps.denominator > _MAX_FPS_DENOMINATOR:
                fps = fps.limit_denominator(_MAX_FPS_DENOMINATOR)
            return fps
    return None


def _frame_time(frame: Any, fallback_s: float) -> float:
    return float(frame.time) if frame.time is not None else fallback_s


def _first_frame(container: Any, stream: Any, path: Path) -> Any:
    import av

    try:
        for frame in container.decode(stream):
            return frame
    except av.FFmpegError as err:
        raise InputError(f"cannot decode the video track of {path} ({_short(err)})", _VIDEO_HINT) from err
    raise InputError(f"{path} has a video track but no frames could be decoded", _VIDEO_HINT)


def _rotation_ccw(frame: Any) -> int:
    """The display matrix's turn as a multiple of 90 in 0..270 (counter-clockwise)."""
    try:
        angle = float(frame.rotation)
    except (AttributeError, TypeError, ValueError):
        return 0
    if math.isnan(angle):
        return 0
    quarter = round(angle / 90.0) % 4
    if abs(angle - round(angle / 90.0) * 90.0) > 1.0:
        logger.warning("display rotation of %.1f degrees is not a multiple of 90; using %d", angle, quarter * 90)
    return quarter * 90


def _audio_info(container: Any) -> AudioInfo | None:
    if not container.streams.audio:
        return None
    stream = container.streams.audio[0]
    ctx = stream.codec_context
    tb = stream.time_base
    start = float(stream.start_time * tb) if stream.start_time is not None and tb is not None else 0.0
    if stream.duration is not None and tb is not None:
        duration: float | None = float(stream.duration * tb)
    elif container.duration is not None:
        duration = container.duration / 1_000_000
    else:
        duration = None
    return AudioInfo(
        codec=ctx.name,
        sample_rate=int(ctx.sample_rate or 0),
        channels=int(ctx.channels or 0),
        start_time_s=start,
        duration_s=duration,
    )


def probe_video(path: Path | str) -> VideoInfo:
    """Read the facts about a video's first video track (and first audio track).

    Decodes one frame, to prove the track is readable and to read the rotation.
    Raises ``InputError`` for a missing, empty, unreadable, image, audio-only or zero-frame file.
    """
    path = Path(path)
    container = _open_input(path)
    try:
        stream = container.streams.video[0]
        fps = _nominal_fps(stream)
        if fps is None:
            raise InputError(f"{path} does not state a frame rate", "re-encode it, e.g. ffmpeg -i IN -r 30 OUT.mp4")
        first = _first_frame(container, stream, path)
        rotation = _rotation_ccw(first)
        start_time = _frame_time(first, 0.0)
        tb = stream.time_base
        if stream.duration is not None and tb is not None:
            duration = float(stream.duration * tb)
        elif container.duration is not None:
            duration = container.duration / 1_000_000
        else:
            duration = 0.0
        num_frames = int(stream.frames or 0)
        estimated = num_frames <= 0
        if estimated:
            num_frames = max(1, round(duration * fps))
        if duration <= 0:
            duration = num_frames / float(fps)
        coded_w, coded_h = int(first.width), int(first.height)
        width, height = (coded_h, coded_w) if rotation in (90, 270) else (coded_w, coded_h)
        return VideoInfo(
            path=path,
            width_px=width,
            height_px=height,
            coded_width_px=coded_w,
            coded_height_px=coded_h,
            rotation_deg=rotation,
            fps=fps,
            num_frames=num_frames,
            is_num_frames_estimated=estimated,
            duration_s=duration,
            start_time_s=start_time,
            codec=stream.codec_context.name,
            container_format=container.format.name,
            audio=_audio_info(container),
        )
    finally:
        container.close()


def output_fps(source_fps: Fraction | float, frame_interval: int) -> Fraction:
    """The frame rate at which every ``frame_interval``-th frame plays in real time."""
    if frame_interval < 1:
        raise InputError(f"frame interval {frame_interval} is not a positive integer", "use 1 or more")
    return _as_fraction(source_fps) / frame_interval


def source_span_s(info: VideoInfo, start_frame: int, frame_interval: int, num_frames: int) -> tuple[float, float]:
    """Start time (source clock, seconds) and duration of the source that ``num_frames`` output frames cover.

    Pass these as ``audio_start_s`` / ``audio_duration_s`` to ``write_video`` so the audio
    matches the frames taken with the same ``start_frame`` and ``frame_interval``.
    """
    start = info.start_time_s + start_frame / float(info.fps)
    return start, num_frames * frame_interval / float(info.fps)


# --------------------------------------------------------------------------- decoding


def _to_rgb(frame: Any, rotation: int) -> np.ndarray:
    kwargs: dict[str, Any] = {"format": "rgb24"}
    color_range = getattr(frame, "color_range", 0)
    if color_range:  # honour full-range (pc) tags; unspecified stays limited range
        kwargs["src_color_range"] = color_range
    image = frame.to_ndarray(**kwargs)
    if rotation:
        image = np.ascontiguousarray(np.rot90(image, k=rotation // 90))
    return image


def iter_frames(
    path: Path | str,
    frame_interval: int = 1,
    max_frames: int | None = None,
    start_frame: int = 0,
) -> Iterator[DecodedFrame]:
    """Stream frames ``start_frame, start_frame + frame_interval, ...`` (at most ``max_frames``).

    Frame numbers are slots of the constant-rate grid described in the module docstring, so
    variable-rate files come out evenly timed; play the result at
    ``output_fps(info.fps, frame_interval)``. Frames are RGB uint8 ``h w 3``, rotated for
    display. A ``start_frame`` past the first second seeks to the keyframe before it and
    decodes forward, which is frame-exact. Raises ``InputError`` for unusable files.
    """
    import av

    path = Path(path)
    if frame_interval < 1:
        raise InputError(f"frame interval {frame_interval} is not a positive integer", "use 1 or more")
    if start_frame < 0:
        raise InputError(f"start frame {start_frame} is negative", "use 0 or more")
    if max_frames is not None and max_frames < 1:
        return
    info = probe_video(path)
    fps = float(info.fps)
    t0 = info.start_time_s
    half = 0.5 / fps

    container = _open_input(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if start_frame > 0 and start_frame / fps > 1.0 and stream.time_base is not None:
            target = t0 + start_frame / fps
            container.seek(int(target / stream.time_base), stream=stream, backward=True, any_frame=False)
        frames = _decode(container, stream, path)
        first = next(frames, None)
        if first is not None and start_frame > 0 and _frame_time(first, t0) > t0 + start_frame / fps + half:
            # The seek overshot (a file with a sparse index): decode from the start instead.
            logger.debug("seek in %s overshot; decoding from the start", path)
            container.close()
            container = _open_input(path)
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            frames = _decode(container, stream, path)
            first = next(frames, None)
        if first is None:
            return
        wanted = start_frame
        emitted = 0
        shown: Any = None  # the av frame on screen for the slots before the next arrival
        shown_time = 0.0
        shown_rgb: np.ndarray | None = None
        position = 0
        for frame in _chain_none(_chain(first, frames)):
            if frame is None:  # end of stream: the last frame still fills its own slot
                slot = round((shown_time - t0) * fps) + 1
            else:
                time_s = _frame_time(frame, t0 + position / fps)
                position += 1
                slot = round((time_s - t0) * fps)
            # The frame on screen fills every wanted slot before the new frame's slot.
            while shown is not None and wanted < slot:
                if shown_rgb is None:
                    shown_rgb = _to_rgb(shown, info.rotation_deg)
                yield DecodedFrame(wanted, t0 + wanted / fps, shown_time, shown_rgb)
                emitted += 1
                if max_frames is not None and emitted >= max_frames:
                    return
                wanted += frame_interval
            shown, shown_time, shown_rgb = frame, time_s, None
    except av.FFmpegError as err:
        raise InputError(f"cannot decode {path} ({_short(err)})", _VIDEO_HINT) from err
    finally:
        container.close()


def _decode(container: Any, stream: Any, path: Path) -> Iterator[Any]:
    import av

    try:
        yield from container.decode(stream)
    except av.InvalidDataError as err:
        # A truncated tail: keep what decoded, as players do.
        logger.warning("%s: decoding stopped early (%s)", path, _short(err))


def _chain(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    yield first
    yield from rest


# --------------------------------------------------------------------------- frame selection


class SamplingRule(str, Enum):
    """Which reference entrance's ``load_video_frames`` rule picks the pose frames."""

    STANDARD = "standard"  # tools/inferences/inference_unianimate_entrance.py
    LONG = "long"  # tools/inferences/inference_unianimate_long_entrance.py

    @classmethod
    def _missing_(cls, value: object) -> SamplingRule | None:
        # The fixtures call the standard entrance "short".
        return cls.STANDARD if value == "short" else None


def select_frame_indices(
    num_frames: int,
    frame_interval: int,
    max_frames: int | None,
    rule: SamplingRule | str = SamplingRule.STANDARD,
) -> list[int | None]:
    """The source frame index for each slot of the pose tensor, ``None`` for a zero-filled slot.

    Mirrors the reference's ``load_video_frames`` (facts in fixtures/pose/video/README.md):

    * standard: with cover = interval * (max_frames - 1) + 1 frames available, take every
      ``frame_interval``-th frame; with fewer, the stride silently becomes
      ``max((num_frames - 1) // (max_frames - 1), 1)``, indices past the end are skipped and
      the remaining slots stay zero (``None``). Always ``max_frames`` slots.
    * long: ``max_frames=None`` takes every ``frame_interval``-th frame to the end. With an
      integer ``max_frames`` it behaves as standard when enough frames exist; otherwise the
      reference computes the stride as ``n - 1 // (max_frames - 1)`` (a precedence slip) and
      crashes on the out-of-range index, so we raise ``InputError`` for exactly those inputs.
    """
    rule = SamplingRule(rule)
    if not _is_int(num_frames) or num_frames < 1:
        raise InputError("no pose frames to sample from", "extract poses from a video with at least one frame")
    if not _is_int(frame_interval) or frame_interval < 1:
        raise InputError(f"frame interval {frame_interval!r} is not a positive integer", "use 1 or more")
    if max_frames is None:
        if rule is SamplingRule.STANDARD:
            raise InputError("the standard frame selection needs a frame count", "set max_frames, or use the long rule")
        max_frames = (num_frames - 1) // frame_interval + 1
    if not _is_int(max_frames) or max_frames < 1:
        raise InputError(f"max_frames {max_frames!r} is not a positive integer", "use 1 or more")

    cover = frame_interval * (max_frames - 1) + 1
    if num_frames >= cover:
        return [frame_interval * i for i in range(max_frames)]
    if rule is SamplingRule.LONG:
        # Reference: stride = max((n - 1 // (max_frames - 1)), 1), no bounds check.
        if max_frames == 1:
            picked = None  # 1 // 0 in the reference
        else:
            stride = max(num_frames - 1 // (max_frames - 1), 1)
            picked = list(range(0, stride * max_frames, stride))
        if picked is None or picked[-1] >= num_frames:
            raise InputError(
                f"{num_frames} pose frames are too few for {max_frames} frames at interval {frame_interval}"
                " with the long rule (the reference crashes here)",
                "use max_frames=None (every interval-th frame) or the standard rule",
            )
        return list(picked)
    stride = max((num_frames - 1) // (max_frames - 1), 1)
    logger.info(
        "%d pose frames are fewer than %d needed for %d frames at interval %d; using interval %d",
        num_frames, cover, max_frames, frame_interval, stride,
    )
    chosen: list[int | None] = [i for i in range(0, stride * max_frames, stride) if i < num_frames]
    return chosen + [None] * (max_frames - len(chosen))


def _is_int(value: object) -> bool:
    """True for a real integer (not a bool, not a float): counts come from JSON and TOML."""
    return isinstance(value, int) and not isinstance(value, bool)


# --------------------------------------------------------------------------- encoding


def _as_fraction(fps: Fraction | float | int) -> Fraction:
    value = Fraction(fps) if not isinstance(fps, Fraction) else fps
    if value.denominator > _MAX_FPS_DENOMINATOR:
        value = value.limit_denominator(_MAX_FPS_DENOMINATOR)
    if value <= 0:
        raise InputError(f"frame rate {fps} is not positive", "use a frame rate above 0")
    return value


def _even_alignment(pix_fmt: str) -> tuple[int, int]:
    """How many pixels width and height must be multiples of for ``pix_fmt`` (2 for 4:2:0)."""
    import av

    fmt = av.VideoFormat(pix_fmt, 64, 64)
    return max(1, 64 // max(1, fmt.chroma_width())), max(1, 64 // max(1, fmt.chroma_height()))


def _pad_to(image: np.ndarray, width: int, height: int) -> np.ndarray:
    pad_h, pad_w = height - image.shape[0], width - image.shape[1]
    if pad_h == 0 and pad_w == 0:
        return image
    return np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")


def write_video(
    path: Path | str,
    frames: Iterable[np.ndarray],
    fps: Fraction | float | int,
    *,
    crf: int = 18,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    preset: str | None = None,
    audio_source: Path | str | None = None,
    audio_start_s: float = 0.0,
    audio_duration_s: float | None = None,
    audio_bitrate: int = 192_000,
    on_frame: Callable[[int], None] | None = None,
) -> WrittenVideo:
    """Encode RGB uint8 ``h w 3`` frames to ``path`` atomically; optionally carry audio over.

    * Sizes: H.264 ``yuv420p`` needs even sizes, so an odd width or height is **padded** by
      repeating the last column/row (no picture is lost); ``WrittenVideo`` reports the padded
      size. Every frame must have the first frame's size.
    * Quality: ``crf`` (18 = visually lossless; the reference's imageio writer used 25) and
      ``preset`` go to the encoder as options.
    * Audio: the first audio track of ``audio_source`` is cut to
      ``[audio_start_s, audio_start_s + audio_duration_s)`` on the source clock (default
      duration: the video's own, ``num_frames / fps``) and **re-encoded to AAC**. Stream copy
      can only cut on 1024-sample packet borders and drags encoder priming along, so a copy
      would drift by up to a packet at each end; decoding and re-encoding cuts to the sample.
      Missing audio before the track starts is filled with silence; a source that ends early
      gives shorter audio. A source without audio logs a warning and writes video only.
    * Atomic: written to a hidden temp file next to ``path`` and moved over it with
      ``os.replace`` only when complete; on any error (or Ctrl-C) the temp file is deleted.
    ``on_frame(n)`` is called after each frame with the count written so far.
    """
    import av

    path = Path(path)
    rate = _as_fraction(fps)
    if not path.parent.is_dir():
        raise InputError(f"cannot write {path}: folder {path.parent} does not exist", "create the folder first")
    audio_path = Path(audio_source) if audio_source is not None else None
    audio_track = _audio_info_or_none(audio_path) if audio_path is not None else None

    with atomic_path(path, suffix=path.suffix) as tmp:
        muxer = _muxer_for(path)
        # faststart puts the index first so browsers can play the file while it downloads.
        options = {"movflags": "+faststart"} if muxer in ("mp4", "mov") else {}
        container = av.open(str(tmp), mode="w", format=muxer, options=options)
        try:
            result = _encode_into(
                container,
                frames,
                rate,
                crf=crf,
                codec=codec,
                pix_fmt=pix_fmt,
                preset=preset,
                audio_path=audio_path if audio_track is not None else None,
                audio_track=audio_track,
                audio_start_s=audio_start_s,
                audio_duration_s=audio_duration_s,
                audio_bitrate=audio_bitrate,
                on_frame=on_frame,
            )
        finally:
            container.close()
    return WrittenVideo(path=path, fps=rate, **result)


def _muxer_for(path: Path) -> str | None:
    return {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm"}.get(
        path.suffix.lower()
    )


def _audio_info_or_none(path: Path) -> AudioInfo | None:
    import av

    if not path.exists():
        raise InputError(f"audio source not found: {path}", "check the path or drop the audio")
    try:
        with av.open(str(path), mode="r") as container:
            info = _audio_info(container)
    except av.FFmpegError as err:
        raise InputError(f"cannot read audio from {path} ({_short(err)})", "drop the audio (--no-audio)") from err
    if info is None:
        logger.warning("%s has no audio track; writing video only", path)
    return info


def _encode_into(
    container: Any,
    frames: Iterable[np.ndarray],
    rate: Fraction,
    *,
    crf: int,
    codec: str,
    pix_fmt: str,
    preset: str | None,
    audio_path: Path | None,
    audio_track: AudioInfo | None,
    audio_start_s: float,
    audio_duration_s: float | None,
    audio_bitrate: int,
    on_frame: Callable[[int], None] | None,
) -> dict[str, Any]:
    import av

    align_w, align_h = _even_alignment(pix_fmt)
    stream: Any = None
    width = height = 0
    in_shape: tuple[int, ...] = ()
    audio: _AudioPump | None = None
    count = 0
    for image in frames:
        image = np.asarray(image)
        if stream is None:
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise ValueError(f"frames must be uint8 h w 3 RGB arrays, got {image.dtype} {image.shape}")
            in_shape = image.shape
            height = -(-image.shape[0] // align_h) * align_h
            width = -(-image.shape[1] // align_w) * align_w
            if (width, height) != (image.shape[1], image.shape[0]):
                logger.info("padding %dx%d frames to %dx%d for %s", image.shape[1], image.shape[0], width, height, pix_fmt)
            stream = container.add_stream(codec, rate=rate)
            stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
            options = {"crf": str(crf)}
            if preset is not None:
                options["preset"] = preset
            if codec == "libx264" and min(width, height) < _X264_REPEATABLE_MIN_PX:
                options["x264-params"] = "mbtree=0"
            stream.options = options
            if audio_path is not None and audio_track is not None:
                audio = _AudioPump(container, audio_path, audio_track, audio_start_s, audio_duration_s, audio_bitrate)
        elif image.shape != in_shape:
            raise ValueError(f"frame {count} has shape {image.shape}, the first frame had {in_shape}")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(_pad_to(image, width, height)), format="rgb24")
        frame.pts = count
        for packet in stream.encode(frame):
            container.mux(packet)
        count += 1
        if audio is not None:
            audio.pump_until(count / rate)
        if on_frame is not None:
            on_frame(count)
    if stream is None:
        raise InputError("no frames to write", "the render produced no frames; check the frame selection")
    for packet in stream.encode(None):
        container.mux(packet)
    audio_written = 0.0
    if audio is not None:
        audio.finish(float(count / rate))
        audio_written = audio.written_s
    return {
        "num_frames": count,
        "width_px": width,
        "height_px": height,
        "has_audio": audio is not None and audio_written > 0,
        "audio_duration_s": audio_written,
    }


class _AudioPump:
    """Decodes, cuts and AAC-encodes the source audio in step with the video being written."""

    def __init__(
        self,
        container: Any,
        source: Path,
        track: AudioInfo,
        start_s: float,
        duration_s: float | None,
        bitrate: int,
    ) -> None:
        import av

        self._container = container
        self._rate = track.sample_rate if track.sample_rate in _AAC_RATES else 48000
        self._layout = "mono" if track.channels == 1 else "stereo"
        self._channels = 1 if self._layout == "mono" else 2
        self._stream = container.add_stream("aac", rate=self._rate, layout=self._layout)
        self._stream.bit_rate = bitrate
        self._start_s = start_s
        self._duration_s = duration_s  # None: decided by the video length in finish()
        self._source = source
        self._track = track
        self._buffer: np.ndarray = np.zeros((self._channels, 0), dtype=np.float32)  # float32 [channels, n]
        self._sent = 0  # samples handed to the encoder
        self._av = av
        self._chunks = self._cut_samples()
        self._exhausted = False
        self._frame_size = 1024  # the AAC encoder's frame size; the last frame may be shorter

    @property
    def written_s(self) -> float:
        return self._sent / self._rate

    def _end_sample(self, video_s: float | None) -> int | None:
        duration = self._duration_s if self._duration_s is not None else video_s
        return None if duration is None else round(duration * self._rate)

    def _cut_samples(self) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (output sample offset, float32 [channels, n]) chunks of the source from start_s on."""
        import av

        rate = self._rate
        begin = round(self._start_s * rate)  # absolute sample on the source clock
        # Decoders hand out the encoder's padding of the last AAC packet too; the track's
        # stated duration is where the real audio ends.
        stop: int | None = None
        if self._track.duration_s is not None:
            stop = round((self._track.start_time_s + self._track.duration_s) * rate)
        with av.open(str(self._source), mode="r") as src:
            astream = src.streams.audio[0]
            if self._start_s > 1.0 and astream.time_base is not None:
                src.seek(int((self._start_s - 0.5) / astream.time_base), stream=astream, backward=True)
            resampler = av.AudioResampler(format="fltp", layout=self._layout, rate=rate)
            position: int | None = None
            try:
                for frame in _chain_none(src.decode(astream)):
                    for out in resampler.resample(frame):
                        data: np.ndarray = out.to_ndarray().astype(np.float32, copy=False).reshape(
                            self._channels, -1
                        )
                        if position is None:
                            position = round(float(out.time) * rate) if out.time is not None else 0
                        if stop is not None:
                            data = data[:, : max(0, stop - position)]
                        chunk_start = position - begin
                        position += data.shape[1]
                        if data.shape[1] == 0:
                            continue
                        if chunk_start + data.shape[1] <= 0:
                            continue
                        if chunk_start < 0:
                            data = data[:, -chunk_start:]
                            chunk_start = 0
                        yield chunk_start, data
            except av.FFmpegError as err:
                logger.warning("%s: audio decoding stopped early (%s)", self._source, _short(err))

    def _take(self, until_sample: int) -> None:
        """Fill the buffer with source samples up to output sample ``until_sample``."""
        while not self._exhausted and self._sent + self._buffer.shape[1] < until_sample:
            item = next(self._chunks, None)
            if item is None:
                self._exhausted = True
                break
            offset, data = item
            have = self._sent + self._buffer.shape[1]
            if offset > have:  # a gap (audio starts late): fill with silence to keep sync
                self._buffer = np.concatenate(
                    [self._buffer, np.zeros((self._channels, offset - have), np.float32)], axis=1
                )
            elif offset < have:
                data = data[:, have - offset :]
            self._buffer = np.concatenate([self._buffer, data], axis=1)

    def _encode(self, samples: np.ndarray) -> None:
        frame = self._av.AudioFrame.from_ndarray(np.ascontiguousarray(samples), format="fltp", layout=self._layout)
        frame.sample_rate = self._rate
        frame.pts = self._sent
        frame.time_base = Fraction(1, self._rate)
        self._sent += samples.shape[1]
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def pump_until(self, video_time_s: Fraction | float) -> None:
        """Encode whole AAC frames of audio up to ``video_time_s`` (output clock)."""
        end = self._end_sample(None)
        target = round(float(video_time_s) * self._rate)
        if end is not None:
            target = min(target, end)
        self._take(target + self._frame_size)
        while self._buffer.shape[1] >= self._frame_size and self._sent < target:
            limit = self._frame_size
            if end is not None:
                limit = min(limit, end - self._sent)
            if limit <= 0:
                break
            self._encode(self._buffer[:, :limit])
            self._buffer = self._buffer[:, limit:]

    def finish(self, video_s: float) -> None:
        """Encode the rest up to the span's end, then flush the encoder."""
        end = round((self._duration_s if self._duration_s is not None else video_s) * self._rate)
        self._take(end)
        while self._sent < end and self._buffer.shape[1] > 0:
            n = min(self._frame_size, end - self._sent, self._buffer.shape[1])
            self._encode(self._buffer[:, :n])
            self._buffer = self._buffer[:, n:]
        for packet in self._stream.encode(None):
            self._container.mux(packet)


def _chain_none(frames: Iterator[Any]) -> Iterator[Any]:
    """The decoded frames, then ``None`` as an end marker (it also flushes the audio resampler)."""
    yield from frames
    yield None
