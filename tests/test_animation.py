"""animation.animate / extend end to end on a tiny random model family (CPU, float32).

Sizes are tiny (64x64 px, 3-5 frames, 2-4 DDIM steps) so the whole file stays well under
a minute and a half on a busy machine. UNet calls are counted by wrapping
``UniAnimateUNet.forward`` to prove that resumed renders skip finished work.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
from fractions import Fraction
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from unianimate_cli import animation
from unianimate_cli.animation import AnimateParams, AudioSource, animate, extend
from unianimate_cli.errors import InputError, ProjectError
from unianimate_cli.media.video import iter_frames, probe_video
from unianimate_cli.models.unet import UniAnimateUNet

SIZE = 64
WINDOWS = AnimateParams(
    width_px=SIZE, height_px=SIZE, num_steps=4, seed=5, context_size=2, context_overlap=1, crf=10
)
SEGMENTS = AnimateParams(
    width_px=SIZE, height_px=SIZE, num_steps=2, seed=5, long_mode="continuation", segment_length=3, crf=10
)


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


pytestmark = pytest.mark.usefixtures("torch_threads")
TORCH_THREADS = 1  # the subprocess test uses the same count, so renders compare bit for bit


@pytest.fixture(scope="module")
def family(tmp_path_factory: pytest.TempPathFactory, fixtures_dir: Path) -> Any:
    """A tiny random family with the pose fixtures' tiny ONNX detector and pose models."""
    from unianimate_cli import weights

    onnx = fixtures_dir / "pose" / "onnx"
    root = tmp_path_factory.mktemp("tiny-family")
    return weights.write_tiny_family(root, seed=3, detector_onnx=onnx / "tiny_yolox.onnx", pose_onnx=onnx / "tiny_dwpose.onnx")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A photo (not the model size: it gets stretched), 5 condition frames and ref_pose."""
    root = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(7)
    frames = root / "frames"
    frames.mkdir()
    for i in range(5):
        img = np.zeros((SIZE, SIZE, 3), np.uint8)
        img[8 + 4 * i : 40 + 4 * i, 20:44] = rng.integers(0, 255, 3, dtype=np.uint8)  # a moving "limb"
        Image.fromarray(img).save(frames / f"{i:04d}.png")
    Image.fromarray(rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)).save(frames / "ref_pose.png")
    (frames / "notes.txt").write_text("stray files are not frames")
    photo = root / "photo.png"
    Image.fromarray(rng.integers(0, 255, (80, 52, 3), dtype=np.uint8)).save(photo)
    return {"frames": frames, "photo": photo, "root": root}


@pytest.fixture
def unet_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count UNet forward calls (each call's batch size recorded)."""
    calls: list[int] = []
    original = UniAnimateUNet.forward

    def counting(self: UniAnimateUNet, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        calls.append(int(x.shape[0]))
        return original(self, x, *args, **kwargs)

    monkeypatch.setattr(UniAnimateUNet, "forward", counting)
    return calls


class Interrupt:
    """A progress callback raising KeyboardInterrupt once ``label`` reaches ``done``."""

    def __init__(self, label: str, done: int) -> None:
        self.label, self.done = label, done
        self.seen: list[tuple[str, int, int]] = []

    def __call__(self, label: str, done: int, total: int) -> None:
        self.seen.append((label, done, total))
        if label.startswith(self.label) and done == self.done:
            raise KeyboardInterrupt


@pytest.fixture(scope="module")
def reference_run(family: Any, inputs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One uninterrupted windows-mode render of 3 frames (2 windows), shared by the resume tests."""
    out = tmp_path_factory.mktemp("reference")
    result = animate(
        family, inputs["photo"], inputs["frames"], out / "out.mp4", out / "partial",
        dataclass_replace(WINDOWS, max_frames=3), fps=Fraction(8), frames_dir=out / "png",
        latents_out=out / "latents.safetensors",
    )
    return result, out


def dataclass_replace(params: AnimateParams, **changes: Any) -> AnimateParams:
    import dataclasses

    return dataclasses.replace(params, **changes)


# --------------------------------------------------------------------------- fast checks


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"width_px": 100}, "multiple of 64"),
        ({"height_px": 0}, "multiple of 64"),
        ({"context_overlap": 2, "context_size": 2}, "overlap"),
        ({"layout": "grid"}, "layout"),
        ({"segment_length": 1}, "segment length"),
        ({"crf": 60}, "crf"),
    ],
)
def test_params_refuse_bad_values(changes: dict[str, Any], words: str) -> None:
    with pytest.raises(InputError) as info:
        dataclass_replace(AnimateParams(), **changes).validate()
    assert words in info.value.message


def test_size_error_has_a_hint() -> None:
    with pytest.raises(InputError) as info:
        AnimateParams(width_px=500).validate()
    assert info.value.hint and "512x768" in info.value.hint


def test_condition_frames_sorted_by_number_and_strays_ignored(tmp_path: Path) -> None:
    for name in ("10.png", "9.png", "0000.png", "ref_pose.png", "readme.txt", "x.png"):
        (tmp_path / name).write_bytes(b"")
    ref, frames = animation.condition_frame_files(tmp_path)
    assert ref.name == "ref_pose.png"
    assert [f.name for f in frames] == ["0000.png", "9.png", "10.png"]


def test_missing_ref_pose_is_a_project_error(tmp_path: Path) -> None:
    (tmp_path / "0000.png").write_bytes(b"")
    with pytest.raises(ProjectError, match="ref_pose"):
        animation.condition_frame_files(tmp_path)


def test_bad_inputs_fail_before_models_load(family: Any, inputs: dict[str, Path], tmp_path: Path, unet_calls: list[int]) -> None:
    with pytest.raises(InputError, match="does not exist"):
        animate(family, tmp_path / "nope.jpg", inputs["frames"], tmp_path / "o.mp4", tmp_path / "p", WINDOWS)
    # The tiny UNet downsamples once: sizes are multiples of 16 for it (64 for the official one).
    with pytest.raises(InputError, match="multiple of 16"):
        animate(family, inputs["photo"], inputs["frames"], tmp_path / "o.mp4", tmp_path / "p", AnimateParams(width_px=72))
    assert unet_calls == []
    assert not (tmp_path / "p").exists()


def test_size_multiple_follows_the_family(family: Any) -> None:
    from unianimate_cli import weights

    assert animation.size_multiple(weights.official_model_set()) == 64
    assert animation.size_multiple(family) == 8 * 2 ** (len(family.unet_config().dim_mult) - 1)


# --------------------------------------------------------------------------- windows mode


def test_animate_writes_video_of_expected_length(reference_run: Any) -> None:
    result, out = reference_run
    info = probe_video(out / "out.mp4")
    assert info.num_frames == result.num_frames == 3
    assert info.fps == Fraction(8)
    assert (info.width_px, info.height_px) == (SIZE, SIZE)
    assert result.latents.shape == (1, 4, 3, SIZE // 8, SIZE // 8)
    assert torch.isfinite(result.latents).all()
    assert sorted(p.name for p in (out / "png").iterdir()) == ["00000.png", "00001.png", "00002.png"]
    from safetensors.torch import load_file

    assert torch.equal(load_file(str(out / "latents.safetensors"))["latents"], result.latents)
    assert result.steps_run == 4 and not result.resumed
    assert not list((out / "partial").glob("*.safetensors")), "partial files are removed once the video exists"


def test_interrupted_render_resumes_bit_identical(
    family: Any, inputs: dict[str, Path], reference_run: Any, tmp_path: Path, unet_calls: list[int]
) -> None:
    reference, ref_dir = reference_run
    params = dataclass_replace(WINDOWS, max_frames=3)
    stop = Interrupt("steps", 2)
    with pytest.raises(KeyboardInterrupt):
        animate(family, inputs["photo"], inputs["frames"], tmp_path / "out.mp4", tmp_path / "partial", params, progress=stop)
    assert not (tmp_path / "out.mp4").exists()
    assert (tmp_path / "partial" / animation.STATE_FILE).is_file()
    calls_before = len(unet_calls)
    assert calls_before > 0 and calls_before % 2 == 0
    per_step = calls_before // 2
    result = animate(family, inputs["photo"], inputs["frames"], tmp_path / "out.mp4", tmp_path / "partial", params)
    assert result.resumed and result.steps_run == 2
    assert len(unet_calls) - calls_before == 2 * per_step, "finished steps must not be recomputed"
    assert torch.equal(result.latents, reference.latents)
    assert sha256(tmp_path / "out.mp4") == sha256(ref_dir / "out.mp4")


def test_interrupt_while_encoding_does_not_sample_again(
    family: Any, inputs: dict[str, Path], reference_run: Any, tmp_path: Path, unet_calls: list[int]
) -> None:
    reference, ref_dir = reference_run
    params = dataclass_replace(WINDOWS, max_frames=3)
    with pytest.raises(KeyboardInterrupt):
        animate(family, inputs["photo"], inputs["frames"], tmp_path / "out.mp4", tmp_path / "partial", params,
                progress=Interrupt("encoding", 1))
    assert not (tmp_path / "out.mp4").exists() and not list(tmp_path.glob(".out*")), "no half-written video"
    assert (tmp_path / "partial" / animation.LATENTS_FILE).is_file()
    before = len(unet_calls)
    result = animate(family, inputs["photo"], inputs["frames"], tmp_path / "out.mp4", tmp_path / "partial", params)
    assert len(unet_calls) == before and result.steps_run == 0 and result.resumed
    assert sha256(tmp_path / "out.mp4") == sha256(ref_dir / "out.mp4")


def test_partial_state_of_other_params_is_discarded(
    family: Any, inputs: dict[str, Path], reference_run: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reference, ref_dir = reference_run
    partial = tmp_path / "partial"
    with pytest.raises(KeyboardInterrupt):
        animate(family, inputs["photo"], inputs["frames"], tmp_path / "o.mp4", partial,
                dataclass_replace(WINDOWS, max_frames=3, seed=99), progress=Interrupt("steps", 1))
    with caplog.at_level("WARNING", logger="unianimate_cli.animation"):
        result = animate(family, inputs["photo"], inputs["frames"], tmp_path / "o.mp4", partial,
                         dataclass_replace(WINDOWS, max_frames=3))
    assert "seed 99 -> 5" in caplog.text
    assert not result.resumed and result.steps_run == 4
    assert torch.equal(result.latents, reference.latents)


def test_sigkill_mid_render_then_resume_gives_same_file(
    family: Any, inputs: dict[str, Path], reference_run: Any, tmp_path: Path
) -> None:
    reference, ref_dir = reference_run
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        from fractions import Fraction
        import torch
        torch.set_num_threads(1)
        from pathlib import Path
        from unianimate_cli import weights
        from unianimate_cli.animation import AnimateParams, animate

        def progress(label, done, total):
            if label == "steps" and done == 3:
                os.kill(os.getpid(), signal.SIGKILL)
        ms = weights.read_models_json(Path({str(family.root / "models.json")!r}))
        params = AnimateParams(width_px={SIZE}, height_px={SIZE}, num_steps=4, seed=5, context_size=2,
                               context_overlap=1, crf=10, max_frames=3)
        animate(ms, Path({str(inputs["photo"])!r}), Path({str(inputs["frames"])!r}), Path({str(tmp_path / "out.mp4")!r}),
                Path({str(tmp_path / "partial")!r}), params, fps=Fraction(8), progress=progress)
        """
    )
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    killed = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not (tmp_path / "out.mp4").exists()
    from safetensors.torch import load_file

    state = load_file(str(tmp_path / "partial" / animation.STATE_FILE))
    assert int(state["completed_steps"]) == 3
    # Resume in this process (the same thread count): the same file as the uninterrupted run.
    result = animate(family, inputs["photo"], inputs["frames"], tmp_path / "out.mp4", tmp_path / "partial",
                     dataclass_replace(WINDOWS, max_frames=3), fps=Fraction(8))
    assert result.resumed and result.steps_run == 1
    assert sha256(tmp_path / "out.mp4") == sha256(ref_dir / "out.mp4")


# --------------------------------------------------------------------------- continuation and extend


def test_continuation_segments_resume_and_cover_every_frame(
    family: Any, inputs: dict[str, Path], tmp_path: Path, unet_calls: list[int]
) -> None:
    full_dir, run_dir = tmp_path / "full", tmp_path / "run"
    full = animate(family, inputs["photo"], inputs["frames"], full_dir / "out.mp4", full_dir / "partial", SEGMENTS,
                   frames_dir=full_dir / "png")
    assert full.num_segments == 2 and full.num_frames == 5
    assert probe_video(full_dir / "out.mp4").num_frames == 5
    assert full.latents.shape[2] == 5
    full_calls = len(unet_calls)
    per_segment = full_calls // 2
    # No duplicated hand-over frame: consecutive frames differ, and the PNGs are the video's frames.
    pngs = [np.asarray(Image.open(p)) for p in sorted((full_dir / "png").iterdir())]
    assert len(pngs) == 5
    assert all(not np.array_equal(a, b) for a, b in zip(pngs, pngs[1:]))

    stop = Interrupt("segment 2/2 steps", 1)
    with pytest.raises(KeyboardInterrupt):
        animate(family, inputs["photo"], inputs["frames"], run_dir / "out.mp4", run_dir / "partial", SEGMENTS, progress=stop)
    assert (run_dir / "partial" / "segment-0000.safetensors").is_file()
    before = len(unet_calls)
    result = animate(family, inputs["photo"], inputs["frames"], run_dir / "out.mp4", run_dir / "partial", SEGMENTS)
    assert result.resumed
    assert len(unet_calls) - before == per_segment, "the finished segment must not be sampled again"
    assert torch.equal(result.latents, full.latents)
    assert sha256(run_dir / "out.mp4") == sha256(full_dir / "out.mp4")


def _video_with_audio(path: Path, num_frames: int, fps: int, seconds: float) -> Path:
    import av

    rate = 16000
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        audio = out.add_stream("aac", rate=rate, layout="mono")
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), 10 * i, np.uint8), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
        total = int(seconds * rate)
        for k in range(0, total, 1024):
            n = min(1024, total - k)
            samples = (0.2 * np.sin(np.arange(k, k + n) * 0.1)).astype(np.float32)[None]
            aframe = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            aframe.sample_rate, aframe.pts = rate, k
            for packet in audio.encode(aframe):
                out.mux(packet)
        for packet in audio.encode(None):
            out.mux(packet)
    return path


def test_extend_appends_frames_in_place_with_audio(family: Any, inputs: dict[str, Path], tmp_path: Path) -> None:
    driving = _video_with_audio(tmp_path / "dance.mp4", num_frames=10, fps=16, seconds=0.7)
    audio = AudioSource(driving, start_frame=0, frame_interval=2)  # 5 pose frames at 8 fps
    params = dataclass_replace(SEGMENTS, max_frames=3)
    video = tmp_path / "render" / "out.mp4"
    first = animate(family, inputs["photo"], inputs["frames"], video, tmp_path / "partial", params, fps=8,
                    audio=audio, latents_out=tmp_path / "latents.safetensors")
    assert first.num_frames == 3 and first.has_audio
    old_frames = [f.image for f in iter_frames(video)]

    result = extend(family, inputs["photo"], inputs["frames"], video, video, tmp_path / "extend-partial",
                    dataclass_replace(SEGMENTS, color_match=True), fps=8, audio=audio,
                    previous_latents=tmp_path / "latents.safetensors", num_new_frames=2)
    assert result.added_frames == 2 and result.num_frames == 5
    info = probe_video(video)
    assert info.num_frames == 5 and info.fps == Fraction(8)
    assert info.audio is not None and info.audio.duration_s is not None
    assert abs(info.audio.duration_s - 5 / 8) < 0.08
    assert torch.equal(result.latents[:, :, :3], first.latents), "the earlier frames are kept exactly"
    new_frames = [f.image for f in iter_frames(video)]
    for old, new in zip(old_frames, new_frames[:3]):
        assert np.abs(old.astype(int) - new.astype(int)).mean() < 3  # the same pictures, re-encoded

    # Without latents the earlier frames come from the video; nothing left to add is an error.
    with pytest.raises(InputError, match="nothing to extend"):
        extend(family, inputs["photo"], inputs["frames"], video, video, tmp_path / "extend-partial", SEGMENTS)


def test_extend_from_video_in_compare_layout(family: Any, inputs: dict[str, Path], tmp_path: Path) -> None:
    params = dataclass_replace(SEGMENTS, layout="compare", keep_audio=False)
    first_video = tmp_path / "first.mp4"
    animate(family, inputs["photo"], inputs["frames"], first_video, tmp_path / "p1", dataclass_replace(params, max_frames=3))
    assert (probe_video(first_video).width_px, probe_video(first_video).num_frames) == (3 * SIZE, 3)
    old = [f.image for f in iter_frames(first_video)]
    longer = tmp_path / "longer.mp4"
    result = extend(family, inputs["photo"], inputs["frames"], first_video, longer, tmp_path / "p2", params,
                    frames_dir=tmp_path / "png")
    info = probe_video(longer)
    assert (info.width_px, info.height_px, info.num_frames) == (3 * SIZE, SIZE, 5)
    assert result.added_frames == 2 and result.latents.shape[2] == 2  # only the new latents are known
    assert len(list((tmp_path / "png").iterdir())) == 5
    new = [f.image for f in iter_frames(longer)]
    for a, b in zip(old, new[:3]):
        assert np.abs(a.astype(int) - b.astype(int)).mean() < 4  # one more H.264 generation
    # The photo column is the photo, the pose column follows the pose frames.
    pose4 = np.asarray(Image.open(inputs["frames"] / "0004.png"))
    assert np.abs(new[4][:, SIZE : 2 * SIZE].astype(int) - pose4.astype(int)).mean() < 4
    with pytest.raises(InputError, match="not the"):
        extend(family, inputs["photo"], inputs["frames"], first_video, longer, tmp_path / "p2", SEGMENTS)


def test_progress_bars_open_one_bar_per_label_and_close_it() -> None:
    events: list[tuple[str, Any]] = []

    class Task:
        def __init__(self, label: str) -> None:
            self.label = label

        def update(self, done: int, total: int | None = None) -> None:
            events.append((self.label, (done, total)))

        def close(self) -> None:
            events.append((self.label, "closed"))

    bars = animation.ProgressBars(lambda label, total: Task(label))
    bars("steps", 0, 2)
    bars("steps", 1, 2)
    bars("decoding", 1, 3)
    bars("steps", 2, 2)
    assert events == [("steps", (0, 2)), ("steps", (1, 2)), ("decoding", (1, 3)), ("steps", (2, 2)), ("steps", "closed")]
    bars.close()
    assert events[-1] == ("decoding", "closed") and bars.tasks == {}


def test_timing_from_poses_reads_fps_and_audio_span(tmp_path: Path) -> None:
    from unianimate_cli.pose.keypoints import PoseFrame, PoseSequence, save_poses

    def frame() -> PoseFrame:
        z = np.zeros
        return PoseFrame(z((20, 2)), z(20), z((6, 2)), z(6), z((2, 21, 2)), z((2, 21)), z((68, 2)), z(68), SIZE, SIZE)

    path = tmp_path / "poses.jsonl"
    save_poses(path, PoseSequence(frames=(frame(), frame(), frame()), fps=12.5, source_frames=(4, 7, 10)))
    fps, audio = animation.timing_from_poses(path, tmp_path / "dance.mp4")
    assert fps == Fraction(25, 2)
    assert audio == AudioSource(tmp_path / "dance.mp4", start_frame=4, frame_interval=3)
    assert animation.timing_from_poses(path, None) == (Fraction(25, 2), None)
    still = tmp_path / "pose.png"  # extract-pose of an image: a still pose has no sound to carry
    cv2.imwrite(str(still), np.zeros((8, 8, 3), np.uint8))
    assert animation.timing_from_poses(path, still) == (Fraction(25, 2), None)
