"""Video decode/encode on small videos the tests make with PyAV (CFR, VFR, rotated, with/without audio)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from unianimate_cli.errors import InputError
from unianimate_cli.media.video import iter_frames, output_fps, probe_video, source_span_s, write_video

W, H = 64, 48
RATE = 48000
# libx264 at crf 10 on flat blocks, then yuv420p -> rgb: a few levels of error inside the
# blocks; near colour edges 4:2:0 chroma is interpolated, so those pixels only count in the mean.
# A wrong frame is off by >= 11 levels on average.
MEAN_TOL, FLAT_TOL, EDGE_PX = 3.0, 8, 2


def pattern(i: int, width: int = W, height: int = H) -> np.ndarray:
    """A frame whose colours say which frame it is: flat blocks survive H.264 well."""
    img = np.zeros((height, width, 3), np.uint8)
    img[:, :, 0] = (i * 37) % 200 + 20
    img[: height // 2, : width // 2, 1] = 220  # a marker in the top-left quadrant
    img[height // 2 :, :, 2] = (i * 11) % 150 + 50
    return img


def tone(num_samples: int, start_sample: int = 0, silent_until: int = 0) -> np.ndarray:
    """Stereo 440 Hz at 0.3 amplitude, silent before absolute sample ``silent_until``."""
    t = np.arange(start_sample, start_sample + num_samples)
    sig = (0.3 * np.sin(2 * np.pi * 440 * t / RATE)).astype(np.float32)
    sig[t < silent_until] = 0.0
    return np.stack([sig, sig])


def make_video(
    path: Path,
    num_frames: int = 30,
    fps: int = 15,
    *,
    audio_s: float | None = None,
    audio_silent_s: float = 0.0,
    audio_offset_s: float = 0.0,
    rotation: int | None = None,
    pts_ms: list[int] | None = None,
    gop: int | None = None,
    size: tuple[int, int] = (W, H),
) -> Path:
    """Write an H.264 MP4: constant rate, or variable with ``pts_ms``; optional AAC tone and display rotation."""
    width, height = size
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "10"}
        if gop is not None:
            stream.codec_context.gop_size = gop
        if pts_ms is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
            stream.time_base = Fraction(1, 1000)
        if rotation is not None:
            stream.set_display_rotation(rotation)
        audio = out.add_stream("aac", rate=RATE, layout="stereo") if audio_s else None
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(pattern(i, width, height), format="rgb24")
            if pts_ms is not None:
                frame.pts, frame.time_base = pts_ms[i], Fraction(1, 1000)
            else:
                frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
        if audio is not None and audio_s:
            total = round(audio_s * RATE)
            for k in range(0, total, 1024):
                chunk = tone(min(1024, total - k), k, round(audio_silent_s * RATE))
                aframe = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
                aframe.sample_rate, aframe.pts = RATE, k + round(audio_offset_s * RATE)
                for packet in audio.encode(aframe):
                    out.mux(packet)
            for packet in audio.encode(None):
                out.mux(packet)
    return path


def decoded_audio(path: Path) -> np.ndarray:
    """All audio of ``path`` as float32 [channels, samples], decoder priming already trimmed."""
    with av.open(str(path)) as src:
        chunks = [f.to_ndarray().reshape(f.layout.nb_channels, -1) for f in src.decode(audio=0)]
    return np.concatenate(chunks, axis=1)


def assert_close(decoded: np.ndarray, expected: np.ndarray) -> None:
    """Within codec tolerance: small mean error, and small error away from colour edges."""
    assert decoded.shape == expected.shape
    diff = np.abs(decoded.astype(np.int16) - expected.astype(np.int16))
    flat = np.ones(expected.shape[:2], bool)
    for dy in range(-EDGE_PX, EDGE_PX + 1):
        for dx in range(-EDGE_PX, EDGE_PX + 1):
            shifted = np.roll(expected, (dy, dx), axis=(0, 1))
            flat &= (shifted == expected).all(axis=2)
    assert diff.mean() <= MEAN_TOL, diff.mean()
    assert diff[flat].max() <= FLAT_TOL, diff[flat].max()


@pytest.fixture(scope="module")
def cfr_audio(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_video(tmp_path_factory.mktemp("v") / "cfr_audio.mp4", 30, 15, audio_s=2.0, audio_silent_s=1.0, gop=5)


# --------------------------------------------------------------------------- probe and decode


def test_probe_constant_rate_with_audio(cfr_audio: Path) -> None:
    info = probe_video(cfr_audio)
    assert info.fps == Fraction(15) and info.fps_float == 15.0
    assert info.num_frames == 30 and not info.is_num_frames_estimated
    assert info.duration_s == pytest.approx(2.0, abs=0.01)
    assert (info.width_px, info.height_px, info.rotation_deg) == (W, H, 0)
    assert info.has_audio and info.audio is not None
    assert (info.audio.sample_rate, info.audio.channels) == (RATE, 2)
    assert info.audio.duration_s == pytest.approx(2.0, abs=0.05)


def test_probe_estimates_frame_count_without_container_count(tmp_path: Path) -> None:
    source = make_video(tmp_path / "a.mp4", 12, 12)
    mkv = tmp_path / "a.mkv"
    with av.open(str(source)) as src, av.open(str(mkv), "w") as dst:
        out = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(video=0):
            if packet.dts is not None:
                packet.stream = out
                dst.mux(packet)
    info = probe_video(mkv)
    assert info.is_num_frames_estimated
    assert info.num_frames == 12
    assert len(list(iter_frames(mkv))) == 12


def test_iter_frames_all_match_pixels(cfr_audio: Path) -> None:
    frames = list(iter_frames(cfr_audio))
    assert [f.index for f in frames] == list(range(30))
    assert [f.time_s for f in frames] == pytest.approx([i / 15 for i in range(30)])
    for f in frames:
        assert f.image.dtype == np.uint8 and f.image.shape == (H, W, 3)
        assert_close(f.image, pattern(f.index))


def test_iter_frames_interval_start_max(cfr_audio: Path) -> None:
    everything = list(iter_frames(cfr_audio))
    picked = list(iter_frames(cfr_audio, frame_interval=2, start_frame=3, max_frames=5))
    assert [f.index for f in picked] == [3, 5, 7, 9, 11]
    for f in picked:
        assert np.array_equal(f.image, everything[f.index].image)
    assert [f.index for f in iter_frames(cfr_audio, frame_interval=4)] == list(range(0, 30, 4))


def test_iter_frames_seek_is_frame_exact(cfr_audio: Path) -> None:
    everything = list(iter_frames(cfr_audio))
    late = list(iter_frames(cfr_audio, start_frame=22, frame_interval=3))  # 22/15 s > 1 s: seeks
    assert [f.index for f in late] == [22, 25, 28]
    for f in late:
        assert np.array_equal(f.image, everything[f.index].image)


def test_variable_frame_rate_is_resampled_by_timestamps(tmp_path: Path) -> None:
    pts_ms = [0, 100, 200, 300, 340, 380, 420, 460, 500, 700, 900, 1000, 1040, 1080]
    path = make_video(tmp_path / "vfr.mp4", len(pts_ms), 25, pts_ms=pts_ms)
    info = probe_video(path)
    fps = float(info.fps)
    with av.open(str(path)) as src:
        times = [float(f.time) for f in src.decode(video=0)]
    frames = list(iter_frames(path))
    # Evenly timed slots 0, 1, 2, ... up to the last frame's slot.
    assert [f.index for f in frames] == list(range(round((times[-1] - times[0]) * fps) + 1))
    assert [f.time_s for f in frames] == pytest.approx([times[0] + i / fps for i in range(len(frames))])
    for f in frames:
        # The picture on screen at the slot: the latest frame stamped at or before slot + half a period.
        expected = max(i for i, t in enumerate(times) if t <= f.time_s + 0.5 / fps + 1e-9)
        assert f.source_time_s == pytest.approx(times[expected])
        assert_close(f.image, pattern(expected))
    # Over the gaps a frame is repeated; where frames are dense some are dropped.
    shown = [round(f.source_time_s * 1000) for f in frames]
    assert len(shown) != len(set(shown))
    assert set(pts_ms) - set(shown)


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_display_rotation_is_applied(tmp_path: Path, rotation: int) -> None:
    path = make_video(tmp_path / f"rot{rotation}.mp4", 3, 10, rotation=rotation)
    info = probe_video(path)
    assert info.rotation_deg == rotation
    assert (info.coded_width_px, info.coded_height_px) == (W, H)
    expected_size = (H, W) if rotation in (90, 270) else (W, H)
    assert (info.width_px, info.height_px) == expected_size
    with av.open(str(path)) as src:
        raw = [f.to_ndarray(format="rgb24") for f in src.decode(video=0)]
    frames = list(iter_frames(path))
    for f in frames:
        assert f.image.shape == (info.height_px, info.width_px, 3)
        assert np.array_equal(f.image, np.rot90(raw[f.index], k=rotation // 90))
    # The green marker (top-left when coded) moves the way a counter-clockwise turn moves it.
    green = frames[0].image[:, :, 1] > 128
    corner = {90: (-1, 0), 180: (-1, -1), 270: (0, -1)}[rotation]
    assert green[corner]


# --------------------------------------------------------------------------- encode


def test_write_video_round_trip_with_trimmed_audio(cfr_audio: Path, tmp_path: Path) -> None:
    info = probe_video(cfr_audio)
    interval, start, count = 2, 8, 8
    frames = list(iter_frames(cfr_audio, frame_interval=interval, start_frame=start, max_frames=count))
    audio_start, audio_len = source_span_s(info, start, interval, len(frames))
    assert audio_start == pytest.approx(frames[0].time_s)
    out = tmp_path / "out.mp4"
    written = write_video(
        out, (f.image for f in frames), output_fps(info.fps, interval), audio_source=cfr_audio, audio_start_s=audio_start
    )
    assert written.num_frames == count and written.has_audio
    assert written.audio_duration_s == pytest.approx(audio_len, abs=1e-3)

    back = probe_video(out)
    assert back.fps == Fraction(15, 2)
    assert back.num_frames == count
    assert back.duration_s == pytest.approx(count * interval / 15, abs=0.01)
    assert back.audio is not None and back.audio.codec == "aac"
    assert back.audio.duration_s == pytest.approx(audio_len, abs=0.03)
    for original, decoded in zip(frames, iter_frames(out), strict=True):
        assert_close(decoded.image, original.image)

    # Source audio is silent before 1.0 s; the cut starts at 8/15 s, so the tone begins
    # at about 0.467 s into the output, not at 0 and not 1.0 s in.
    samples = decoded_audio(out)
    assert samples.shape[1] == pytest.approx(audio_len * RATE, abs=1100)

    def rms(a: float, b: float) -> float:
        return float(np.sqrt(np.mean(samples[:, round(a * RATE) : round(b * RATE)] ** 2)))

    onset = 1.0 - audio_start
    assert rms(0.0, onset - 0.05) < 0.01
    assert rms(onset + 0.05, audio_len - 0.05) == pytest.approx(0.3 / np.sqrt(2), rel=0.1)


def test_write_video_audio_duration_and_source_ending_early(cfr_audio: Path, tmp_path: Path) -> None:
    frames = [pattern(i) for i in range(15)]
    out = tmp_path / "out.mp4"
    written = write_video(out, frames, 15, audio_source=cfr_audio, audio_start_s=1.5)
    # 1 s of video, but the source has only 0.5 s left: the audio stops there.
    assert written.audio_duration_s == pytest.approx(0.5, abs=1e-3)
    audio = probe_video(out).audio
    assert audio is not None and audio.duration_s == pytest.approx(0.5, abs=0.03)

    explicit = write_video(tmp_path / "b.mp4", frames, 15, audio_source=cfr_audio, audio_duration_s=0.25)
    assert explicit.audio_duration_s == pytest.approx(0.25, abs=1e-3)


def test_audio_starting_late_is_padded_with_silence(tmp_path: Path) -> None:
    source = make_video(tmp_path / "late.mp4", 15, 15, audio_s=0.5, audio_offset_s=0.5)
    audio = probe_video(source).audio
    assert audio is not None and audio.start_time_s == pytest.approx(0.5, abs=0.03)
    written = write_video(tmp_path / "out.mp4", [pattern(i) for i in range(15)], 15, audio_source=source)
    assert written.audio_duration_s == pytest.approx(1.0, abs=1e-3)
    samples = decoded_audio(tmp_path / "out.mp4")
    head, tail = samples[:, : round(0.45 * RATE)], samples[:, round(0.55 * RATE) : round(0.95 * RATE)]
    assert np.sqrt(np.mean(head**2)) < 0.01
    assert np.sqrt(np.mean(tail**2)) == pytest.approx(0.3 / np.sqrt(2), rel=0.1)


def test_write_video_without_audio_track_in_source(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    silent = make_video(tmp_path / "silent.mp4", 4, 8)
    written = write_video(tmp_path / "out.mp4", [pattern(i) for i in range(4)], 8, audio_source=silent)
    assert not written.has_audio
    assert not probe_video(tmp_path / "out.mp4").has_audio
    assert "no audio track" in caplog.text


def test_write_video_pads_odd_sizes(tmp_path: Path) -> None:
    frames = [pattern(i, 33, 25) for i in range(3)]
    written = write_video(tmp_path / "odd.mp4", frames, Fraction(30000, 1001))
    assert (written.width_px, written.height_px) == (34, 26)
    info = probe_video(tmp_path / "odd.mp4")
    assert (info.width_px, info.height_px) == (34, 26)
    assert info.fps == Fraction(30000, 1001)
    for original, decoded in zip(frames, iter_frames(tmp_path / "odd.mp4"), strict=True):
        assert_close(decoded.image[:25, :33], original)
        assert_close(decoded.image[:25, 33:34], original[:, 32:33])  # edge repeated, not black


def test_write_video_is_atomic(tmp_path: Path) -> None:
    target = tmp_path / "render.mp4"
    target.write_bytes(b"previous render")

    def failing() -> object:
        yield pattern(0)
        yield pattern(1)
        raise RuntimeError("decoder died")

    with pytest.raises(RuntimeError, match="decoder died"):
        write_video(target, failing(), 8)  # type: ignore[arg-type]
    assert target.read_bytes() == b"previous render"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["render.mp4"]

    def interrupted() -> object:
        yield pattern(0)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_video(tmp_path / "new.mp4", interrupted(), 8)  # type: ignore[arg-type]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["render.mp4"]

    with pytest.raises(InputError, match="no frames"):
        write_video(tmp_path / "empty.mp4", [], 8)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["render.mp4"]

    write_video(target, [pattern(0), pattern(1)], 8)
    assert probe_video(target).num_frames == 2


# --------------------------------------------------------------------------- bad input


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=RATE, layout="stereo")
        for k in range(0, RATE // 4, 1024):
            frame = av.AudioFrame.from_ndarray(tone(1024, k), format="fltp", layout="stereo")
            frame.sample_rate, frame.pts = RATE, k
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def _zero_frames(path: Path, with_audio: bool) -> Path:
    """A video track with no frames. MP4 drops empty tracks, so the audio variant is Matroska."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.codec_context.open()
        audio = out.add_stream("aac", rate=RATE, layout="stereo") if with_audio else None
        out.start_encoding()
        if audio is not None:
            frame = av.AudioFrame.from_ndarray(tone(1024), format="fltp", layout="stereo")
            frame.sample_rate, frame.pts = RATE, 0
            for packet in [*audio.encode(frame), *audio.encode(None)]:
                out.mux(packet)
    return path


def _png_as_mp4(path: Path) -> Path:
    from PIL import Image

    Image.fromarray(pattern(0)).save(path, format="PNG")
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.mp4", "not found"),
        (lambda d: _write(d / "empty.mp4", b""), "empty"),
        (lambda d: _write(d / "junk.mp4", b"not a video at all" * 50), "cannot read"),
        (lambda d: _audio_only(d / "song.m4a"), "no video track"),
        (lambda d: _zero_frames(d / "zero.mkv", True), "no frames could be decoded"),
        (lambda d: _zero_frames(d / "zero.mp4", False), "zero frames"),
        (lambda d: _png_as_mp4(d / "photo.png"), "is an image"),
        (lambda d: _png_as_mp4(d / "photo_named.mp4"), "is an image"),
        (lambda d: d, "folder"),
    ],
    ids=["missing", "empty", "garbage", "audio-only", "zero-frames", "zero-frames-mp4", "image", "image-named-mp4", "folder"],
)
def test_bad_video_input(tmp_path: Path, make: object, message: str) -> None:
    path = make(tmp_path)  # type: ignore[operator]
    with pytest.raises(InputError, match=message) as caught:
        probe_video(path)
    text = str(caught.value)
    assert str(path) in text and "\n" not in text
    assert caught.value.hint
    with pytest.raises(InputError):
        list(iter_frames(path))


def test_bad_arguments() -> None:
    with pytest.raises(InputError):
        output_fps(30, 0)
    assert output_fps(Fraction(30000, 1001), 2) == Fraction(15000, 1001)


def test_small_videos_encode_to_the_same_bytes_every_time(tmp_path: Path) -> None:
    # A resumed render must write the same file as an uninterrupted one. x264 alone did not
    # always repeat itself on 64 px frames (1 run in 6 differed under CPU load; see
    # media.video._X264_REPEATABLE_MIN_PX), so this can only catch a regression by chance.
    import hashlib

    rng = np.random.default_rng(3)
    frames = [np.clip(pattern(i, 64, 64) + rng.integers(0, 40, (64, 64, 3)), 0, 255).astype(np.uint8) for i in range(6)]
    digests = set()
    for k in range(12):
        out = write_video(tmp_path / f"out{k}.mp4", iter(frames), Fraction(4))
        digests.add(hashlib.sha256(out.path.read_bytes()).hexdigest())
    assert len(digests) == 1
