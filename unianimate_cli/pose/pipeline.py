"""The work of the ``extract-pose`` and ``align`` stages as library calls.

``extract_driving_poses`` (stage ``extract-pose``)
    driving video -> ``pose/driving.jsonl`` (one pose per *sampled* video frame, the same person
    tracked) and an optional skeleton preview mp4. The frame interval is applied here, once: the
    driving sequence plays at ``source fps / frame_interval`` (its ``fps`` field) and every later
    stage takes its frames in order. A still image is a driving sequence of one frame, played
    at ``ExtractPoseParams.image_fps`` (default ``DEFAULT_IMAGE_FPS`` = 1). Resumable: see
    ``extract_driving_poses``.

``extract_reference_pose`` + ``align_and_draw`` (stage ``align``)
    photo -> ``pose/reference.jsonl`` (one frame: the photo's person). Kept out of
    ``extract-pose`` so that another photo never re-extracts the driving video.

``align_and_draw``
    reference + driving poses -> ``align/poses.jsonl`` (the driving poses moved onto the photo's
    body) and the condition frames folder::

        align/frames/
            ref_pose.png   the photo's own pose, *unaligned*, face-less: condition frame 0
            0000.png       aligned driving pose 0, face-less
            0001.png       ... one file per frame of align/poses.jsonl, in order

    Every file is RGB uint8 ``height_px x width_px`` (default 768 x 512, the reference's canvas)
    exactly as the model sees it: the reference's BGR canvas saved by ``cv2.imwrite`` is kept
    (``draw.draw_pose``), so limb 0 is blue. Names are zero-padded to
    ``max(4, len(str(num_frames - 1)))`` digits, so all frame names have one width and a plain
    ``sorted()`` is frame order, also beyond 9999 frames (spec/POSE.md section 11 #24). The frame
    rate of the sequence is the ``fps`` of ``align/poses.jsonl``; no further frame interval is
    meant to be applied. The sampling side loads them as the reference does: read RGB, Pillow
    bilinear stretch to the model size (``media.image.resize_exact``), scale to [0, 1], and
    prepend ``ref_pose`` (pose condition = [ref_pose, 0000, 0001, ...]). The reference saves
    JPEGs (OpenCV quality 95, 4:2:0); we write lossless PNG by default, and
    ``AlignParams.jpeg_quality=95`` writes ``.jpg`` files byte-compatible with the reference's.

Library code: no printing; progress goes through ``progress(done, total)`` callbacks and every
warning returned in a result has already been logged (``logging``), so a caller need not show it
again.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import deque
from dataclasses import dataclass, field
from fractions import Fraction
from itertools import chain, islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Literal

import numpy as np

from unianimate_cli.errors import InputError
from unianimate_cli.pose.keypoints import PoseFrame, PoseSequence, load_poses, save_poses
from unianimate_cli.project import atomic_write_bytes, atomic_write_text

if TYPE_CHECKING:
    from unianimate_cli.media.video import DecodedFrame
    from unianimate_cli.pose.align import AlignInfo
    from unianimate_cli.pose.dwpose import DWPose

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
"""``progress(done, total)``: units finished so far (resumed ones included) and the expected total."""

DEFAULT_CHUNK_FRAMES = 64
PREVIEW_MAX_SIDE_PX = 1280  # the skeleton preview is for eyes only; 4K drawing buys nothing
_PARTIAL_VERSION = 2  # 2: the photo is no longer part of extract-pose
_STATE_FILE = "extract_state.json"
_CHUNK_RE = re.compile(r"^chunk_(\d{5,})\.jsonl$")


def _non_key(default: Any) -> Any:
    """A params field that changes how, not what, is computed (not part of the stage key)."""
    return field(default=default, metadata={"key": False})


# ===================================================================================== extract

DEFAULT_IMAGE_FPS = 1.0
"""Frame rate of the one-frame driving sequence made from a still image (``extract-pose IMAGE``)."""


@dataclass(frozen=True)
class ExtractPoseParams:
    """What ``extract_driving_poses`` samples and whom it follows.

    ``frame_interval`` s, ``start_frame`` a and ``max_frames`` m take source frames a, a + s,
    a + 2s, ... (at most m; frame numbers on the nominal-rate grid, see ``media.video``).
    ``person`` picks, in the first driving frame with anybody, the person to track: ``"auto"`` =
    the largest, most central one, or an index in detector order. A still image as the driving
    input is one frame played at ``image_fps`` (the frame interval does not apply to it).
    ``batch_size`` (pose-model crops per run), ``device`` and ``chunk_frames`` (sampled frames
    per resume checkpoint) do not change the result's meaning and are marked ``key=False``.
    """

    frame_interval: int = 1
    max_frames: int | None = None
    start_frame: int = 0
    person: Literal["auto"] | int = "auto"
    image_fps: float = DEFAULT_IMAGE_FPS
    batch_size: int = _non_key(16)
    device: Literal["auto", "cuda", "cpu"] = _non_key("auto")
    chunk_frames: int = _non_key(DEFAULT_CHUNK_FRAMES)


@dataclass(frozen=True)
class DrivingInfo:
    """The driving input as extraction sees it: a video, or a still image posed as one frame."""

    path: Path
    is_image: bool
    source_fps: Fraction  # the video's nominal rate, or ``image_fps`` for a still image
    num_frames: int
    is_num_frames_estimated: bool
    width_px: int
    height_px: int


@dataclass(frozen=True)
class ExtractPoseResult:
    """What ``extract_driving_poses`` wrote and learned."""

    num_frames: int  # poses in the driving file
    fps: Fraction  # of the driving sequence: source fps / frame_interval (image_fps for an image)
    source_fps: Fraction
    source_frames: tuple[int, ...]  # source frame number of each driving pose
    provider_message: str | None  # which onnxruntime provider ran; None if everything was resumed
    warnings: tuple[str, ...]  # already logged
    resumed_frames: int  # driving poses taken from partial_dir instead of computed
    is_image: bool  # the driving input was a still image


def check_driving_input(video: Path, params: ExtractPoseParams) -> DrivingInfo:
    """Cheap checks before any model loads: params, a decodable video or a readable image.

    Raises InputError naming the bad value or file.
    """
    from unianimate_cli.media.image import load_image, media_kind
    from unianimate_cli.media.video import probe_video

    _check_params(params)
    video = Path(video)
    if media_kind(video) == "image":
        h, w = load_image(video).shape[:2]
        if params.start_frame > 0:
            raise InputError(
                f"start frame {params.start_frame} is past the end of {video}: a still image is one frame",
                "use start frame 0, or pass a video",
            )
        fps = Fraction(params.image_fps).limit_denominator(1001)
        return DrivingInfo(video, True, fps, 1, False, w, h)
    info = probe_video(video)
    if not info.is_num_frames_estimated and params.start_frame >= info.num_frames:
        raise InputError(
            f"start frame {params.start_frame} is past the end of {video} ({info.num_frames} frames)",
            f"use a start frame from 0 to {info.num_frames - 1}",
        )
    return DrivingInfo(
        video, False, info.fps, info.num_frames, info.is_num_frames_estimated, info.width_px, info.height_px
    )


def _positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{name} {value!r} is not a positive integer", "use 1 or more")


def check_person(person: object) -> None:
    """``"auto"`` or a person index >= 0; raises InputError otherwise."""
    if person != "auto" and (isinstance(person, bool) or not isinstance(person, int) or person < 0):
        raise InputError(f"person {person!r} is not 'auto' or an index >= 0", "use 'auto', 0, 1, ...")


def _check_device(device: str) -> None:
    if device not in ("auto", "cuda", "cpu"):
        raise InputError(f"device {device!r} is not one of auto, cuda, cpu")


def _check_params(params: ExtractPoseParams) -> None:
    _positive_int("frame interval", params.frame_interval)
    _positive_int("batch size", params.batch_size)
    _positive_int("chunk size", params.chunk_frames)
    if params.max_frames is not None:
        _positive_int("max frames", params.max_frames)
    if isinstance(params.start_frame, bool) or not isinstance(params.start_frame, int) or params.start_frame < 0:
        raise InputError(f"start frame {params.start_frame!r} is not a whole number >= 0", "use 0 or more")
    fps = params.image_fps
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not math.isfinite(fps) or fps <= 0:
        raise InputError(f"image fps {fps!r} is not a positive number", f"use e.g. {DEFAULT_IMAGE_FPS:g}")
    check_person(params.person)
    _check_device(params.device)


def _expected_total(driving: DrivingInfo, params: ExtractPoseParams) -> int:
    left = max(0, driving.num_frames - params.start_frame)
    total = -(-left // params.frame_interval)
    return total if params.max_frames is None else min(total, params.max_frames)


def _decode_driving(
    driving: DrivingInfo, params: ExtractPoseParams, skip: int, remaining: int | None
) -> Iterator[DecodedFrame]:
    """Sampled frames after the first ``skip`` ones; a still image is frame 0 and nothing more."""
    if not driving.is_image:
        from unianimate_cli.media.video import iter_frames

        yield from iter_frames(
            driving.path,
            frame_interval=params.frame_interval,
            max_frames=remaining,
            start_frame=params.start_frame + skip * params.frame_interval,
        )
        return
    if skip == 0 and remaining != 0:
        from unianimate_cli.media.image import load_image
        from unianimate_cli.media.video import DecodedFrame

        yield DecodedFrame(0, 0.0, 0.0, load_image(driving.path))


def extract_driving_poses(
    video: Path,
    detector_onnx: Path,
    pose_onnx: Path,
    out_driving: Path,
    out_preview: Path | None,
    params: ExtractPoseParams,
    partial_dir: Path,
    progress: Progress | None = None,
) -> ExtractPoseResult:
    """Pose every sampled frame of the driving video (or a still image); write the poses and a preview.

    Files: ``out_driving`` (one PoseFrame per sampled frame, ``fps`` = source fps / interval,
    ``source_frames`` = source frame numbers, ``meta`` = sampling facts) as ``unianimate.poses``
    JSONL, atomically; ``out_preview`` (if given) an H.264 mp4 of the skeletons with face, at
    the source's aspect ratio. A still image gives one frame at ``params.image_fps``; nobody in
    it is an InputError naming the file (a video frame with nobody gets an empty pose and a
    warning instead).

    Order: params and the input are checked first (InputError before any model loads), then
    frames are decoded as a stream and posed, the chosen person tracked from frame to frame.

    Resume: sampled frames are processed in chunks of ``params.chunk_frames``; each finished
    chunk is saved atomically as ``partial_dir/chunk_00000.jsonl``, ... Called again with the
    same ``partial_dir`` and arguments, finished chunks are loaded, decoding starts at the first
    unfinished chunk, the tracker is replayed over the loaded poses, and the outputs equal those
    of an uninterrupted run (pose model batches never straddle chunks, so they are the same
    batches). Partial files written for other sampling params or another input are discarded
    with a warning. On success the partial files are removed. ``progress(done, total)`` runs
    after each frame; when ``done`` is a multiple of ``chunk_frames`` that chunk is already
    saved, so a callback that raises keeps it (a short last chunk is saved when the video ends,
    after its last call). ``total`` is estimated from the container's frame count.
    """
    from unianimate_cli.media.video import output_fps

    video, partial_dir = Path(video), Path(partial_dir)
    driving = check_driving_input(video, params)
    fps = driving.source_fps if driving.is_image else output_fps(driving.source_fps, params.frame_interval)
    chunk = params.chunk_frames
    warnings: list[str] = []

    _prepare_partial(partial_dir, _partial_state(video, params), warnings)
    done_chunks = _load_chunks(partial_dir, params)
    done_frames = [f for c in done_chunks for f in c.frames]
    done_sources = [i for c in done_chunks for i in (c.source_frames or ())]
    is_complete = bool(done_chunks) and (
        len(done_chunks[-1]) < chunk
        or (params.max_frames is not None and len(done_frames) >= params.max_frames)
        or (driving.is_image and len(done_frames) >= 1)
    )

    model: DWPose | None = None

    def get_model() -> DWPose:
        nonlocal model
        if model is None:
            from unianimate_cli.pose.dwpose import DWPose

            model = DWPose(detector_onnx, pose_onnx, device=params.device, batch_size=params.batch_size)
        return model

    total = max(_expected_total(driving, params), len(done_frames))
    frames = list(done_frames)
    sources = list(done_sources)
    if done_frames:
        log.info("resuming %s: %d frames from %d finished chunks", video.name, len(done_frames), len(done_chunks))
        if progress is not None:
            progress(len(done_frames), total)
    counts = _PeopleCounts(frames_without_person=sum(f.box_xyxy is None for f in done_frames))
    if done_chunks:
        first = done_chunks[-1].meta.get("first_crowded_frame")
        counts.first_crowded_frame = first if isinstance(first, int) else None
    if not is_complete:
        remaining = None if params.max_frames is None else params.max_frames - len(done_frames)
        decoded = _decode_driving(driving, params, len(done_frames), remaining)
        pending_sources: deque[int] = deque()
        stream = _people_stream(decoded, chunk, get_model, pending_sources, counts)
        # Replaying the finished poses as one-person frames puts the tracker in the state an
        # uninterrupted run had at this point: it depends only on the poses it chose.
        has_box = any(_has_person_box(f) for f in done_frames)
        choice = "auto" if has_box else params.person
        from unianimate_cli.pose.dwpose import track_person

        tracked = track_person(chain(([f] for f in done_frames), stream), choice, video.name)
        for _ in range(len(done_frames)):
            next(tracked)
        buffer: list[PoseFrame] = []
        buffer_sources: list[int] = []
        chunk_index = len(done_chunks)
        for pose in tracked:
            buffer.append(pose)
            buffer_sources.append(pending_sources.popleft())
            frames.append(pose)
            sources.append(buffer_sources[-1])
            total = max(total, len(frames))
            if len(buffer) == chunk:
                _save_chunk(partial_dir, chunk_index, buffer, buffer_sources, counts)
                chunk_index, buffer, buffer_sources = chunk_index + 1, [], []
            if progress is not None:
                progress(len(frames), total)
        if buffer:
            _save_chunk(partial_dir, chunk_index, buffer, buffer_sources, counts)

    if not frames:
        raise InputError(
            f"no frames taken from {video}: start frame {params.start_frame} is at or past its end",
            "use a smaller start frame",
        )
    if driving.is_image and frames[0].box_xyxy is None:
        raise InputError(f"no person found in {video}", "use an image where one whole body is visible")
    warnings.extend(counts.warnings(video.name, len(frames)))

    meta = {
        "video": video.name,
        "is_image": driving.is_image,
        "source_fps": str(driving.source_fps),
        "fps": str(fps),
        "frame_interval": params.frame_interval,
        "start_frame": params.start_frame,
        "max_frames": params.max_frames,
        "source_width_px": driving.width_px,
        "source_height_px": driving.height_px,
    }
    poses = PoseSequence(tuple(frames), fps=float(fps), source=video.name, source_frames=tuple(sources), meta=meta)
    save_poses(out_driving, poses)
    if out_preview is not None:
        write_pose_preview(out_preview, poses.frames, fps)
    _clear_partial(partial_dir)
    return ExtractPoseResult(
        num_frames=len(frames),
        fps=fps,
        source_fps=driving.source_fps,
        source_frames=tuple(sources),
        provider_message=None if model is None else model.provider_message,
        warnings=tuple(warnings),
        resumed_frames=len(done_frames),
        is_image=driving.is_image,
    )


@dataclass(frozen=True)
class ReferencePoseResult:
    """What ``extract_reference_pose`` found in the photo."""

    people_found: int
    provider_message: str
    warnings: tuple[str, ...]  # already logged


def extract_reference_pose(
    photo: Path,
    detector_onnx: Path,
    pose_onnx: Path,
    out_reference: Path,
    person: Literal["auto"] | int = "auto",
    device: Literal["auto", "cuda", "cpu"] = "auto",
) -> ReferencePoseResult:
    """Pose the person in the photo: the body the driving poses are fitted to (stage ``align``).

    Writes ``out_reference``: a ``unianimate.poses`` file of one frame (``meta.people_found``).
    ``person`` picks among several people (``"auto"``: the largest, most central one; a warning
    says so). Nobody in the photo, or an index past the people found, is an InputError naming
    the file; so is a file that is no readable image (checked before the models load).
    """
    from unianimate_cli.media.image import load_image
    from unianimate_cli.pose.dwpose import DWPose, select_person

    check_person(person)
    _check_device(device)
    photo = Path(photo)
    photo_rgb = load_image(photo)
    model = DWPose(detector_onnx, pose_onnx, device=device, batch_size=1)
    people = model.people(np.ascontiguousarray(photo_rgb[..., ::-1]), whole_image_fallback=False)
    chosen = select_person(people, person, str(photo))  # logs its own line for several
    warnings: list[str] = []
    if len(people) > 1:
        how = "the largest, most central one" if person == "auto" else f"person {person}"
        warnings.append(f"{len(people)} people found in {photo}; using {how}")
        if person != "auto":  # select_person logs the "auto" choice itself
            log.warning(warnings[-1])
    save_poses(out_reference, PoseSequence((chosen,), source=photo.name, meta={"people_found": len(people)}))
    return ReferencePoseResult(len(people), model.provider_message, tuple(warnings))


def write_pose_preview(path: Path, frames: tuple[PoseFrame, ...] | list[PoseFrame], fps: Fraction | float) -> None:
    """Encode the skeletons (with face) as an mp4 at the source aspect, long side <= 1280 px."""
    from unianimate_cli.media.video import write_video
    from unianimate_cli.pose.draw import draw_pose

    if not frames:
        return
    h, w = frames[0].height_px, frames[0].width_px
    scale = min(1.0, PREVIEW_MAX_SIDE_PX / max(h, w))
    height_px, width_px = max(2, round(h * scale)), max(2, round(w * scale))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_video(path, (draw_pose(f, height_px, width_px, include_face=True) for f in frames), fps)


def _has_person_box(frame: PoseFrame) -> bool:
    from unianimate_cli.pose.dwpose import person_box

    return person_box(frame) is not None


@dataclass
class _PeopleCounts:
    """Frames with nobody / several people (for the result's warnings; chunks carry them over)."""

    frames_without_person: int = 0
    first_crowded_frame: int | None = None
    is_crowded_now: bool = False  # a frame posed in this call had several people

    def add(self, people: list[PoseFrame], source_index: int) -> None:
        if len(people) == 1 and people[0].box_xyxy is None:
            self.frames_without_person += 1
        if len(people) > 1:
            self.is_crowded_now = True
            if self.first_crowded_frame is None:
                self.first_crowded_frame = source_index

    def warnings(self, name: str, num_frames: int) -> list[str]:
        out = []
        if self.first_crowded_frame is not None:
            first = self.first_crowded_frame
            message = f"several people in {name} (first at source frame {first}); one person was followed"
            if not self.is_crowded_now:  # else dwpose.track_person has logged it in this call
                log.warning(message)
            out.append(message)
        if self.frames_without_person:
            message = f"{self.frames_without_person} of {num_frames} frames of {name} had no detected person (empty poses)"
            log.warning(message)
            out.append(message)
        return out


def _people_stream(
    decoded: Iterator[DecodedFrame],
    chunk_frames: int,
    get_model: Callable[[], DWPose],
    pending_sources: deque[int],
    counts: _PeopleCounts,
) -> Iterator[list[PoseFrame]]:
    """People per frame, one pose-model stream per chunk (so batches are the same on resume)."""

    def bgr(frames: Iterator[DecodedFrame]) -> Iterator[np.ndarray]:
        for f in frames:
            pending_sources.append(f.index)
            yield np.ascontiguousarray(f.image[..., ::-1])

    while True:
        head = next(decoded, None)  # peek, so an exhausted video never loads the model
        if head is None:
            return
        got = 0
        for people in get_model().people_batched(bgr(chain([head], islice(decoded, chunk_frames - 1)))):
            # the consumer pops each frame's index once it has tracked it: ours is first in line
            counts.add(people, pending_sources[0])
            got += 1
            yield people
        if got < chunk_frames:
            return


# ----- partial files -----------------------------------------------------------------------------


def _partial_state(video: Path, params: ExtractPoseParams) -> dict[str, Any]:
    """What partial chunks depend on; a mismatch discards them (the runner's key covers content)."""
    return {
        "version": _PARTIAL_VERSION,
        "video": {"name": video.name, "size": video.stat().st_size},
        "frame_interval": params.frame_interval,
        "start_frame": params.start_frame,
        "max_frames": params.max_frames,
        "person": params.person,
        "image_fps": params.image_fps,
        "chunk_frames": params.chunk_frames,
    }


def _partial_files(partial_dir: Path) -> list[Path]:
    if not partial_dir.is_dir():
        return []
    return sorted(p for p in partial_dir.iterdir() if p.name == _STATE_FILE or _CHUNK_RE.match(p.name))


def _prepare_partial(partial_dir: Path, state: dict[str, Any], warnings: list[str]) -> None:
    state_path = partial_dir / _STATE_FILE
    try:
        old = json.loads(state_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        old = None
    if old != state:
        stale = [p for p in _partial_files(partial_dir) if p.name != _STATE_FILE]
        if stale:
            message = f"discarding {len(stale)} partial pose files in {partial_dir}: made for other inputs or settings"
            log.warning(message)
            warnings.append(message)
            for p in stale:
                p.unlink(missing_ok=True)
        partial_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(state_path, json.dumps(state, sort_keys=True))


def _chunk_path(partial_dir: Path, index: int) -> Path:
    return partial_dir / f"chunk_{index:05d}.jsonl"


def _load_chunks(partial_dir: Path, params: ExtractPoseParams) -> list[PoseSequence]:
    """Finished chunks 0, 1, ... in order, up to the first missing or bad one (later ones deleted)."""
    chunks: list[PoseSequence] = []
    start = 0
    while True:
        path = _chunk_path(partial_dir, len(chunks))
        if not path.is_file():
            break
        try:
            seq = load_poses(path)
        except InputError:
            log.warning("discarding unreadable partial file %s", path)
            break
        expected = tuple(params.start_frame + (start + i) * params.frame_interval for i in range(len(seq)))
        if not 0 < len(seq) <= params.chunk_frames or seq.source_frames != expected:
            log.warning("discarding partial file %s: it does not continue the chunks before it", path)
            break
        chunks.append(seq)
        start += len(seq)
        if len(seq) < params.chunk_frames:
            break
    for p in _partial_files(partial_dir):
        m = _CHUNK_RE.match(p.name)
        if m and int(m.group(1)) >= len(chunks):
            p.unlink(missing_ok=True)
    return chunks


def _save_chunk(
    partial_dir: Path, index: int, frames: list[PoseFrame], sources: list[int], counts: _PeopleCounts
) -> None:
    meta = {"chunk": index, "first_crowded_frame": counts.first_crowded_frame}
    seq = PoseSequence(tuple(frames), source_frames=tuple(sources), meta=meta)
    save_poses(_chunk_path(partial_dir, index), seq)


def _clear_partial(partial_dir: Path) -> None:
    for p in _partial_files(partial_dir):
        p.unlink(missing_ok=True)


# ======================================================================================= align


@dataclass(frozen=True)
class AlignParams:
    """How ``align_and_draw`` aligns and draws.

    ``mode``: ``"robust"`` (default, never NaN) or ``"reference"`` (``run_align_pose.py``
    exactly, for parity). ``calibration``: the frame measurements start from, ``"first"`` (the
    reference), ``"auto"`` (most complete frame) or an index. ``height_px`` x ``width_px``: the
    drawing canvas (the reference's 768 x 512). ``jpeg_quality``: None writes lossless PNG;
    an int writes ``.jpg`` at that quality (95 = the reference's ``cv2.imwrite`` default).
    """

    mode: Literal["robust", "reference"] = "robust"
    calibration: Literal["first", "auto"] | int = "first"
    height_px: int = 768
    width_px: int = 512
    jpeg_quality: int | None = None


@dataclass(frozen=True)
class AlignResultInfo:
    """What ``align_and_draw`` wrote and measured."""

    num_frames: int  # aligned poses = driving frame files (ref_pose not counted)
    fps: float | None  # of the sequence, copied from the driving poses
    frame_names: tuple[str, ...]  # driving frame files in order, e.g. ("0000.png", ...)
    reference_name: str  # "ref_pose.png" (or .jpg)
    align: AlignInfo  # scales, ratios, translation, calibration frame
    warnings: tuple[str, ...]  # already logged


def check_align_params(params: AlignParams) -> None:
    """Cheap checks of the params; raises InputError naming the bad value."""
    if params.mode not in ("robust", "reference"):
        raise InputError(f"align mode {params.mode!r} is not 'robust' or 'reference'")
    cal = params.calibration
    if cal not in ("first", "auto") and (isinstance(cal, bool) or not isinstance(cal, int) or cal < 0):
        raise InputError(f"calibration {cal!r} is not 'first', 'auto' or a frame index >= 0")
    for name, v in (("height", params.height_px), ("width", params.width_px)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise InputError(f"pose canvas {name} {v!r} is not a positive integer")
    q = params.jpeg_quality
    if q is not None and (isinstance(q, bool) or not isinstance(q, int) or not 1 <= q <= 100):
        raise InputError(f"JPEG quality {q!r} is not 1..100", "use 95 (the reference) or leave it unset for PNG")


def align_and_draw(
    reference_poses: Path,
    driving_poses: Path,
    out_aligned: Path,
    out_frames_dir: Path,
    params: AlignParams,
    progress: Progress | None = None,
) -> AlignResultInfo:
    """Align the driving poses to the photo's body, save them, draw the condition frames.

    Reads two ``unianimate.poses`` files (the reference's first frame is the photo pose).
    Writes ``out_aligned`` atomically (fps, source frames and meta kept; ``meta["align"]`` holds
    what was measured) and the folder layout of the module docstring into ``out_frames_dir``,
    each image atomically; older frame files there that this run did not write are removed.
    ``progress(done, total)`` counts drawn images, ``total`` = frames + 1 (ref_pose).
    Raises InputError for an empty or unreadable pose file, or a non-finite alignment (only the
    ``reference`` mode can make one).
    """
    from unianimate_cli.pose.align import align_poses
    from unianimate_cli.pose.draw import draw_pose

    check_align_params(params)
    reference_poses, driving_poses = Path(reference_poses), Path(driving_poses)
    driving = load_poses(driving_poses)
    if len(driving) == 0:
        raise InputError(
            f"pose file {driving_poses} holds no driving frames",
            "run `unianimate extract-pose` on a video with frames (check --start-frame and --max-frames)",
        )
    ref_seq = load_poses(reference_poses)
    if len(ref_seq) == 0:
        raise InputError(f"pose file {reference_poses} holds no photo pose", "run `unianimate align --force` again")
    reference = ref_seq[0]
    result = align_poses(reference, driving.frames, mode=params.mode, calibration=params.calibration)
    bad = next((i for i, f in enumerate(result.frames) if not f.is_finite()), None)
    if bad is not None:
        raise InputError(
            f"aligning {driving_poses} in {params.mode} mode gave NaN or infinity (frame {bad}: a degenerate pose)",
            "use the robust mode, which never does",
        )
    info = result.info
    meta = dict(driving.meta)
    meta["align"] = _finite_json(
        {
            "mode": info.mode,
            "calibration_frame": info.calibration_frame,
            "x_ratio": info.x_ratio,
            "y_ratio": info.y_ratio,
            "ratios": info.ratios,
            "translation": list(info.translation),
        }
    )
    aligned = PoseSequence(
        result.frames, fps=driving.fps, source=driving.source, source_frames=driving.source_frames, meta=meta
    )
    save_poses(out_aligned, aligned)

    out_frames_dir = Path(out_frames_dir)
    out_frames_dir.mkdir(parents=True, exist_ok=True)
    suffix = ".png" if params.jpeg_quality is None else ".jpg"
    digits = max(4, len(str(len(result.frames) - 1)))
    names = [f"{i:0{digits}d}{suffix}" for i in range(len(result.frames))]
    ref_name = f"ref_pose{suffix}"
    total = len(names) + 1
    for i, (name, frame) in enumerate(zip(names, result.frames)):
        _write_rgb(out_frames_dir / name, draw_pose(frame, params.height_px, params.width_px), params.jpeg_quality)
        if progress is not None:
            progress(i + 1, total)
    # the photo pose is drawn unaligned, as the reference's ref_pose.jpg
    _write_rgb(out_frames_dir / ref_name, draw_pose(reference, params.height_px, params.width_px), params.jpeg_quality)
    if progress is not None:
        progress(total, total)
    _remove_stale_frames(out_frames_dir, set(names) | {ref_name})
    return AlignResultInfo(
        num_frames=len(names),
        fps=driving.fps,
        frame_names=tuple(names),
        reference_name=ref_name,
        align=info,
        warnings=info.warnings,
    )


def _finite_json(value: Any) -> Any:
    """JSON-safe copy: non-finite floats become None (the reference mode can measure them)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_json(v) for v in value]
    return value


def _write_rgb(path: Path, rgb: np.ndarray, jpeg_quality: int | None) -> None:
    """RGB uint8 h w 3 -> PNG, or JPEG 4:2:0 at ``jpeg_quality``, through OpenCV as the reference."""
    import cv2

    bgr = np.ascontiguousarray(rgb[..., ::-1])
    if jpeg_quality is None:
        ok, data = cv2.imencode(".png", bgr)
    else:
        ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
    if not ok:
        raise OSError(f"OpenCV could not encode {path.name}")
    atomic_write_bytes(path, data.tobytes())


_FRAME_FILE_RE = re.compile(r"^(\d{4,}|ref_pose)\.(png|jpg)$")


def _remove_stale_frames(folder: Path, keep: set[str]) -> None:
    for p in folder.iterdir():
        if p.is_file() and _FRAME_FILE_RE.match(p.name) and p.name not in keep:
            p.unlink()
