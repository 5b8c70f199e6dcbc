"""The work of the ``animate`` and ``extend`` stages as two library calls: photo + pose frames -> mp4.

:func:`animate` loads the photo, builds the conditions (CLIP embedding, local image, VAE
latent, pose frames), samples with DDIM (overlapping windows, or last-frame continuation
segments), decodes in chunks and writes the video atomically with the driving video's audio.
:func:`extend` continues a finished render from its last frame with more pose frames and
writes old + new frames into one new file. No printing: progress goes through
``progress(label, done, total)``, messages through ``logging``.

Random draws (all on CPU generators, so every device sees the same noise):

* windows mode: one generator seeded with ``seed`` draws, in the reference's order (spec 12),
  the VAE posterior sample of the photo, then eps, then the offset noise, over the full
  length at once. The checkpointed ``x_t`` carries the noise onward.
* continuation mode: segment ``i`` draws the same sequence from a fresh generator seeded from
  ``(seed, i)`` (``sampling.segments.segment_generator``), never from one earlier segments
  advanced.

Resume (``partial_dir``, everything written to a temp file and moved with ``os.replace``):

* ``render.json`` names what the partial files belong to (params that change the output,
  frame count, photo and pose hashes, model files). A different one is discarded with a log
  message, as are files that do not fit the latent shape or step plan.
* windows mode: ``state.safetensors`` = (completed steps, ``x_t``, visited timesteps) every
  ``checkpoint_every_steps`` steps and after the last; then ``latents.safetensors`` before
  decoding, so an interruption while decoding or encoding does not sample again.
* continuation mode: ``segment-NNNN.safetensors`` = latents and decoded uint8 frames of
  each finished segment (a rerun skips them).

A resumed render is bit-identical to an uninterrupted one on the same device, thread count
and ``window_batch_size``. The partial files are removed when the video is written.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from unianimate_cli.errors import InputError, ProjectError, WeightsError

if TYPE_CHECKING:
    import numpy as np
    import torch

    from unianimate_cli.distributed import DistContext
    from unianimate_cli.sampling.conditions import Conditions
    from unianimate_cli.sampling.render import RenderParams
    from unianimate_cli.weights import ModelSet

logger = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
"""``progress(label, done, total)``: "steps", "decoding", "encoding", "segments", ... ."""

REF_POSE_STEM = "ref_pose"
PLAN_FILE = "render.json"
STATE_FILE = "state.safetensors"
LATENTS_FILE = "latents.safetensors"
SEGMENT_FILE = "segment-{index:04d}.safetensors"
_PLAN_SCHEMA = 1
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# Bump when the same inputs and params would give other partial files.
_PARTIAL_VERSION = 1


# --------------------------------------------------------------------------- params


@dataclass(frozen=True)
class AnimateParams:
    """How a video is rendered; defaults are the reference's (512x768, 30 steps, CFG 2.5).

    * ``max_frames``: animate at most this many pose frames (None = all).
    * ``context_size`` / ``context_overlap``: frames per window and shared by neighbours
      (windows mode; a clip of at most ``context_size`` frames is one window, the short
      sampler with its noise prior at t = 949; longer ones use the long prior, t = 939).
    * ``long_mode``: "windows" (the reference's long sampler) or "continuation" (segments of
      ``segment_length`` frames, each starting from the previous segment's last frame).
    * ``embedding_mix``: continuation only; 0 keeps the photo's CLIP embedding for every
      segment (fights identity drift), 1 uses the hand-over frame's.
    * ``color_match``: continuation/extend only; give each hand-over frame the per-channel RGB
      mean and std of the photo before it becomes the next reference (fights colour drift).
    * ``fit``: how the photo reaches width x height: "stretch" (the reference), "crop", "pad".
    * ``device`` / ``dtype``: "auto" = CUDA with float16 when available, else CPU float32.
    * ``window_batch_size``, ``checkpoint_every_steps``, ``decode_chunk_frames``, ``device``
      change speed and memory, not the picture (batching changes float rounding slightly).
      ``decode_chunk_frames`` 0 sizes the VAE's chunks to free GPU memory (2 on the CPU).
    * ``batch_guidance``: "auto" (batch the two guidance passes when free memory allows),
      "on" or "off". ``low_memory``: two-pass guidance, conditions on the CPU, UNet blocks
      streamed from host memory (``runtime.stream_unet_weights``), small decode chunks: for
      GPUs of 4-8 GB, slower. ``compile``: ``torch.compile`` each UNet block (minutes at the
      first call; pays off over long renders). None of these change the picture beyond
      float rounding.
    * ``sampler``: "ddim" (the reference's) or "dpm++2m" (DPM-Solver++(2M), opt-in: fewer
      ``num_steps`` for a similar picture; not the reference's result).
    """

    width_px: int = 512
    height_px: int = 768
    num_steps: int = 30
    guide_scale: float = 2.5
    seed: int = 11
    variant: Literal["A", "B"] = "B"
    max_frames: int | None = None
    context_size: int = 32
    context_overlap: int = 8
    window_batch_size: int = 1
    long_mode: Literal["windows", "continuation"] = "windows"
    segment_length: int = 32
    embedding_mix: float = 0.0
    color_match: bool = False
    checkpoint_every_steps: int = 1
    fit: Literal["stretch", "crop", "pad"] = "stretch"
    layout: Literal["result", "compare"] = "result"
    crf: int = 18
    keep_audio: bool = True
    device: str = "auto"
    dtype: str = "auto"
    decode_chunk_frames: int = 0
    batch_guidance: Literal["auto", "on", "off"] = "auto"
    low_memory: bool = False
    compile: bool = False
    sampler: Literal["ddim", "dpm++2m"] = "ddim"

    def validate(self, size_multiple: int = 64) -> None:
        """Cheap checks before any model loads; InputError naming the value and a fix.

        ``size_multiple``: what width and height must be multiples of, 64 for the official UNet
        (the VAE divides by 8, the UNet halves the latent three times); :func:`animate` passes
        the loaded family's own (:func:`size_multiple`).
        """
        for name, value in (("width", self.width_px), ("height", self.height_px)):
            if isinstance(value, bool) or not isinstance(value, int) or value < size_multiple or value % size_multiple:
                raise InputError(
                    f"{name} {value} px is not a positive multiple of {size_multiple}",
                    "use e.g. 512x768 (the reference) or 768x1216; the VAE divides by 8 and the UNet halves the latent"
                    f" {size_multiple.bit_length() - 4} more time(s)",
                )
        for name, ivalue, low in (
            ("steps", self.num_steps, 1),
            ("context size", self.context_size, 1),
            ("window batch size", self.window_batch_size, 1),
            ("segment length", self.segment_length, 2),
            ("checkpoint interval", self.checkpoint_every_steps, 1),
            ("decode chunk", self.decode_chunk_frames, 0),
        ):
            if isinstance(ivalue, bool) or not isinstance(ivalue, int) or ivalue < low:
                raise InputError(f"{name} = {ivalue!r} is not an integer >= {low}")
        if self.max_frames is not None and (not isinstance(self.max_frames, int) or self.max_frames < 1):
            raise InputError(f"max frames = {self.max_frames!r} is not a positive integer", "leave it unset for every frame")
        if not 0 <= self.context_overlap < self.context_size:
            raise InputError(
                f"context overlap {self.context_overlap} must be >= 0 and below the context size {self.context_size}"
            )
        if self.variant not in ("A", "B"):
            raise InputError(f"variant {self.variant!r} is not A or B", "B (randomref) is the long entrance's")
        if self.long_mode not in ("windows", "continuation"):
            raise InputError(f"long mode {self.long_mode!r} is not 'windows' or 'continuation'")
        if self.layout not in ("result", "compare"):
            raise InputError(f"layout {self.layout!r} is not 'result' or 'compare'")
        if self.fit not in ("stretch", "crop", "pad"):
            raise InputError(f"fit {self.fit!r} is not 'stretch', 'crop' or 'pad'")
        if not 0 <= self.crf <= 51:
            raise InputError(f"crf {self.crf} is outside 0..51", "18 is visually lossless, 25 the reference's")
        if not 0.0 <= self.embedding_mix <= 1.0:
            raise InputError(f"embedding mix {self.embedding_mix} is outside 0..1")
        if self.guide_scale != self.guide_scale:  # NaN
            raise InputError("guide scale is NaN", "use 2.5, the reference's")
        if self.batch_guidance not in ("auto", "on", "off"):
            raise InputError(f"batch guidance {self.batch_guidance!r} is not 'auto', 'on' or 'off'")
        if self.sampler not in ("ddim", "dpm++2m"):
            raise InputError(f"sampler {self.sampler!r} is not 'ddim' or 'dpm++2m'", "ddim is the reference's")

    def render_params(self, context_size: int | None = None, context_overlap: int | None = None) -> RenderParams:
        """The sampler's settings (``sampling.render.RenderParams``)."""
        from unianimate_cli.sampling.conditions import Variant
        from unianimate_cli.sampling.render import RenderParams

        return RenderParams(
            num_steps=self.num_steps,
            guide_scale=self.guide_scale,
            variant=Variant(self.variant),
            context_size=self.context_size if context_size is None else context_size,
            context_overlap=self.context_overlap if context_overlap is None else context_overlap,
            window_batch_size=self.window_batch_size,
            batch_guidance=False if self.low_memory else {"auto": None, "on": True, "off": False}[self.batch_guidance],
            sampler=self.sampler,
        )

    def output_key(self) -> dict[str, Any]:
        """The fields that change the sampled latents (what partial files are tied to)."""
        keep = (
            "width_px", "height_px", "num_steps", "guide_scale", "seed", "variant", "max_frames",
            "context_size", "context_overlap", "long_mode", "segment_length", "embedding_mix",
            "color_match", "fit", "dtype",
        )
        key = {k: getattr(self, k) for k in keep}
        if self.sampler != "ddim":  # absent for DDIM: earlier partial files stay valid
            key["sampler"] = self.sampler
        return key


@dataclass(frozen=True)
class AudioSource:
    """Where the result's audio comes from: the driving video and how its frames were taken.

    Output frame ``i`` shows source frame ``start_frame + i * frame_interval``; the audio is
    cut to the same span (``media.video.source_span_s``).
    """

    video: Path
    start_frame: int = 0
    frame_interval: int = 1


@dataclass(frozen=True)
class AnimateResult:
    """What :func:`animate` / :func:`extend` wrote and did."""

    video: Path
    num_frames: int
    fps: Fraction
    width_px: int
    height_px: int
    has_audio: bool
    latents: torch.Tensor  # [1,4,f,h,w] float32 CPU: every frame (extend from a video alone: the new ones)
    steps_run: int  # DDIM steps sampled by this call (fewer after a resume)
    resumed: bool  # partial work of an earlier run was used
    num_segments: int = 1
    added_frames: int = 0  # extend: frames appended
    frames_dir: Path | None = None
    info: dict[str, Any] = field(default_factory=dict)


class ProgressBars:
    """Adapt :data:`Progress` reports to a stage's bar factory ``factory(label, total) -> task``.

    One bar per label, opened at its first report and closed when it completes (or by
    :meth:`close`); ``task.update(done, total)`` as ``stage.ProgressTask`` offers it.
    """

    def __init__(self, factory: Callable[[str, int | None], Any]) -> None:
        self.factory = factory
        self.tasks: dict[str, Any] = {}

    def __call__(self, label: str, done: int, total: int) -> None:
        task = self.tasks.get(label)
        if task is None:
            task = self.tasks[label] = self.factory(label, total)
        task.update(done, total)
        if done >= total:
            self.tasks.pop(label).close()

    def close(self) -> None:
        for task in self.tasks.values():
            task.close()
        self.tasks.clear()


def timing_from_poses(aligned_poses: Path, driving_video: Path | None) -> tuple[Fraction, AudioSource | None]:
    """(fps, audio span) of a render from the aligned pose file the align stage wrote.

    The pose file records its frame rate (8 if absent, the reference's) and the source frame
    of every pose: the first one and the step between the first two give the audio span.
    """
    from unianimate_cli.pose.keypoints import load_poses

    from unianimate_cli.media.image import media_kind

    seq = load_poses(Path(aligned_poses))
    fps = Fraction(seq.fps).limit_denominator(100000) if seq.fps else Fraction(8)
    if driving_video is None or media_kind(driving_video) == "image":  # a still pose has no sound
        return fps, None
    source = tuple(seq.source_frames or ())
    start = int(source[0]) if source else 0
    interval = max(1, int(source[1] - source[0])) if len(source) > 1 else 1
    return fps, AudioSource(Path(driving_video), start, interval)


# --------------------------------------------------------------------------- inputs


def condition_frame_files(frames_dir: Path) -> tuple[Path, list[Path]]:
    """(``ref_pose`` image, driving pose images in frame order) of an align frames folder.

    Driving frames are the image files named by a number (``0000.png`` ...), sorted by that
    number; stray files are ignored (fix of spec 16.9).
    """
    frames_dir = Path(frames_dir)
    if not frames_dir.is_dir():
        raise ProjectError(f"pose frames folder {frames_dir} does not exist", "run `unianimate align` first")
    refs = [p for p in frames_dir.iterdir() if p.stem == REF_POSE_STEM and p.suffix.lower() in _IMAGE_SUFFIXES]
    if not refs:
        raise ProjectError(f"{frames_dir} holds no ref_pose image", "run `unianimate align --force` on the project")
    numbered = [p for p in frames_dir.iterdir() if p.stem.isdigit() and p.suffix.lower() in _IMAGE_SUFFIXES]
    if not numbered:
        raise ProjectError(f"{frames_dir} holds no pose frames (0000.png ...)", "run `unianimate align --force` on the project")
    return sorted(refs)[0], sorted(numbered, key=lambda p: (int(p.stem), p.name))


def size_multiple(model_set: ModelSet) -> int:
    """Pixel sizes a family can render are multiples of this: 8 (VAE) x 2 per UNet downsampling (64 official)."""
    config = model_set.unet_config()
    return int(8 * 2 ** (len(config.dim_mult) - 1))


def _sha256(path: Path) -> str:
    from unianimate_cli.project import sha256_file

    return sha256_file(path)


def _fingerprint(
    mode: str, params: AnimateParams, photo: Path, ref_pose: Path, pose_files: Sequence[Path], model_set: ModelSet, extra: dict[str, Any]
) -> dict[str, Any]:
    """What partial files are tied to: content hashes of the inputs, output params, model files."""
    models: dict[str, Any] = {}
    for component in ("unet", "vae", "clip"):
        try:
            path = model_set.path(component)
        except WeightsError:  # raised again, with its hint, when the model loads
            continue
        stat = path.stat()
        models[component] = {"file": path.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    return {
        "schema": _PLAN_SCHEMA,
        "version": _PARTIAL_VERSION,
        "mode": mode,
        "params": params.output_key(),
        "photo": _sha256(photo),
        "ref_pose": _sha256(ref_pose),
        "poses": [_sha256(p) for p in pose_files],
        "models": models,
        **extra,
    }


def _prepare_partial(partial_dir: Path, plan: dict[str, Any]) -> bool:
    """Keep ``partial_dir``'s files if they belong to ``plan``; else clear them. True if kept."""
    from unianimate_cli.project import atomic_write_json

    partial_dir.mkdir(parents=True, exist_ok=True)
    plan_path = partial_dir / PLAN_FILE
    try:
        saved = json.loads(plan_path.read_text()) if plan_path.is_file() else None
    except (OSError, ValueError):
        saved = None
    files = _partial_files(partial_dir)
    if saved == plan:
        return bool(files)
    if files:
        why = "no record of what they belong to" if saved is None else _plan_difference(saved, plan)
        logger.warning("discarding %d partial file(s) in %s: %s", len(files), partial_dir, why)
        for f in files:
            f.unlink(missing_ok=True)
    atomic_write_json(plan_path, plan)
    return False


def _plan_difference(saved: dict[str, Any], plan: dict[str, Any]) -> str:
    changed = sorted(k for k in set(saved) | set(plan) if saved.get(k) != plan.get(k))
    if "params" in changed:
        old, new = saved.get("params", {}), plan["params"]
        return "params changed (" + ", ".join(f"{k} {old.get(k)!r} -> {new[k]!r}" for k in sorted(new) if old.get(k) != new[k]) + ")"
    return "changed: " + ", ".join(changed)


def _partial_files(partial_dir: Path) -> list[Path]:
    return [p for p in partial_dir.glob("*.safetensors") if p.is_file()]


def _clear_partial(partial_dir: Path) -> None:
    for f in _partial_files(partial_dir):
        f.unlink(missing_ok=True)
    (partial_dir / PLAN_FILE).unlink(missing_ok=True)


def _save_tensors(path: Path, tensors: dict[str, Any]) -> None:
    """safetensors written to a temp file beside ``path`` and moved into place."""
    from safetensors.torch import save_file

    from unianimate_cli.project import atomic_path

    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))


def _load_tensors(path: Path) -> dict[str, Any] | None:
    """A checkpoint's tensors, or None when absent or unreadable (a torn file is recomputed)."""
    from safetensors.torch import load_file

    if not path.is_file():
        return None
    try:
        return dict(load_file(str(path)))
    except Exception as exc:  # a foreign or corrupt file: a miss, not a failure
        logger.warning("ignoring unreadable checkpoint %s (%s)", path, exc)
        path.unlink(missing_ok=True)
        return None


# --------------------------------------------------------------------------- models


class _Models:
    """Models loaded on first use; each moved off the accelerator when its phase is over.

    CLIP and the VAE encoder are needed before sampling, the UNet during it, the VAE
    decoder after it. On the CPU moving is a no-op, so this stays simple there.
    """

    def __init__(
        self,
        model_set: ModelSet,
        device: torch.device,
        dtype: torch.dtype,
        width_px: int,
        height_px: int,
        low_memory: bool = False,
        compile_blocks: bool = False,
    ) -> None:
        self.model_set = model_set
        self.device = device
        self.dtype = dtype
        self.size = (width_px, height_px)
        self.low_memory = low_memory  # UNet blocks streamed from host memory (CUDA only)
        self.compile_blocks = compile_blocks
        self._clip: Any = None
        self._vae: Any = None
        self._unet: Any = None
        self._zero_y: Any = None
        self._streamer: Any = None

    def clip(self) -> Any:
        if self._clip is None:
            logger.info("loading CLIP (%s)", self.model_set.filename("clip"))
            self._clip = self.model_set.load_clip(self.device, self.dtype)
        elif self._clip.device != self.device:
            self._clip.to(self.device)
        return self._clip

    def vae(self) -> Any:
        if self._vae is None:
            logger.info("loading the VAE (%s)", self.model_set.filename("vae"))
            self._vae = self.model_set.load_vae(self.device, self.dtype)
        else:
            self._to_device(self._vae)
        return self._vae

    def unet(self) -> Any:
        if self._zero_y is None:
            self._zero_y = self.clip().empty_text_features().float().cpu()
        if self._unet is None:
            from unianimate_cli import runtime

            logger.info("loading the UNet (%s)", self.model_set.filename("unet"))
            stream = self.low_memory and self.device.type == "cuda"
            self._unet = self.model_set.load_unet("cpu" if stream else self.device, self.dtype)
            if tuple(self._unet.config.resolution) != self.size:
                self._unet.set_resolution(self.size)
            self._unet.set_zero_y(self._zero_y.to(next(self._unet.parameters()).device))
            if stream:
                self._streamer = runtime.stream_unet_weights(self._unet, self.device)
            elif self.compile_blocks:
                try:
                    logger.info("compiled %d UNet blocks (compiling takes minutes at the first step)", runtime.compile_blocks(self._unet))
                except Exception as exc:  # noqa: BLE001 -- any compiler problem means: run eagerly
                    logger.warning("torch.compile is unavailable (%s); running eagerly", exc)
        elif self._streamer is not None:
            self._streamer.restore()
        else:
            self._to_device(self._unet)
        return self._unet

    def zero_y(self) -> torch.Tensor:
        """The empty-text embedding the UNet gets (float32 CPU), from CLIP once."""
        if self._zero_y is None:
            self._zero_y = self.clip().empty_text_features().float().cpu()
        return self._zero_y

    def set_zero_y(self, zero_y: torch.Tensor) -> None:
        """Use a known empty-text embedding (sent by rank 0), so CLIP need not load here."""
        self._zero_y = zero_y.float().cpu()

    def _to_device(self, module: Any) -> None:
        if next(module.parameters()).device != self.device:
            module.to(self.device)

    def offload(self, *names: str) -> None:
        """Move the named models (``clip``, ``vae``, ``unet``) to the CPU, freeing accelerator memory."""
        if self.device.type == "cpu":
            return
        from unianimate_cli.runtime import offload

        for name in names:
            model = getattr(self, f"_{name}")
            if model is None:
                continue
            if name == "unet" and self._streamer is not None:
                self._streamer.offload()  # its blocks are in host memory already
                continue
            if name == "clip":
                model.to("cpu")
                import torch

                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            else:
                offload(model, "cpu")

    # -- encoders: draws on CPU generators so the noise is the same on every device
    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """CLIP input [1,3,224,224] -> embedding [1,d] float32 CPU."""
        import torch

        clip = self.clip()
        if self._zero_y is None:  # while CLIP is loaded: the UNet needs it later
            self._zero_y = clip.empty_text_features().float().cpu()
        size = tuple(clip.image_size)
        if tuple(pixels.shape[-2:]) != size:
            # A non-official family (models.json) may take another input size; the official
            # ViT-H-14 takes the reference's 224x224 squash unchanged.
            pixels = torch.nn.functional.interpolate(pixels, size=size, mode="bilinear", align_corners=False)
        with torch.no_grad():
            return clip.encode_image(pixels.to(self.device)).float().cpu()

    def latent_encoder(self, generator: torch.Generator) -> Callable[[torch.Tensor], torch.Tensor]:
        """VAE input [1,3,H,W] in [-1,1] -> scaled posterior sample [1,4,h,w] (noise from ``generator``)."""
        import torch

        from unianimate_cli.models.vae import encode_to_latent

        def encode(pixels: torch.Tensor) -> torch.Tensor:
            vae = self.vae()
            factor = vae.config.downsample_factor
            shape = (pixels.shape[0], vae.config.embed_dim, pixels.shape[2] // factor, pixels.shape[3] // factor)
            noise = torch.randn(shape, generator=generator, dtype=torch.float32)
            with torch.no_grad():
                latent = encode_to_latent(vae, pixels.to(device=self.device, dtype=self.dtype), noise=noise)
            return latent.float().cpu()

        return encode

    def decode(self, latents: torch.Tensor, chunk_frames: int, progress: Callable[[int, int], None] | None) -> np.ndarray:
        """Latents [1,4,f,h,w] -> uint8 frames [f,H,W,3], converted exactly as the reference saves."""
        import torch

        from unianimate_cli.media.layout import to_uint8_frames
        from unianimate_cli.models.vae import decode_latents

        vae = self.vae()
        with torch.no_grad():
            pixels = decode_latents(vae, latents, chunk_frames=chunk_frames, out_device="cpu", progress=progress)
        return to_uint8_frames(pixels[0])


# --------------------------------------------------------------------------- shared pieces


@dataclass
class _Job:
    """Everything a render needs, loaded and checked once."""

    params: AnimateParams
    models: _Models
    photo_rgb: np.ndarray  # the photo as the model sees it: fitted (crop/pad) or original (stretch)
    ref_pose_rgb: np.ndarray
    pose_files: list[Path]
    progress: Progress
    partial_dir: Path
    dist: DistContext | None = None  # windows mode: the ranks that share the sampling

    def pose_images(self, indices: Sequence[int]) -> list[np.ndarray]:
        from unianimate_cli.media.image import load_image

        return [load_image(self.pose_files[i]) for i in indices]

    def conditions(self, reference_rgb: np.ndarray, ref_pose_rgb: np.ndarray, indices: Sequence[int], generator: torch.Generator) -> Conditions:
        from unianimate_cli.sampling.conditions import build_conditions

        return build_conditions(
            reference_rgb, ref_pose_rgb, self.pose_images(indices), self.params.width_px, self.params.height_px,
            self.models.encode_image, self.models.latent_encoder(generator),
        )

    def decode(self, latents: torch.Tensor, label: str = "decoding") -> np.ndarray:
        import torch

        from unianimate_cli.runtime import choose_decode_chunk, out_of_memory_error

        total = int(latents.shape[2])
        self.progress(label, 0, total)
        chunk = self.params.decode_chunk_frames
        if not chunk:  # sized to the memory free now (the UNet is off the device by then)
            most = 2 if self.params.low_memory else 8
            size = (self.params.height_px, self.params.width_px)
            chunk = choose_decode_chunk(self.models.device, size, self.models.dtype, most=most)
        try:
            return self.models.decode(latents, chunk, lambda d, n: self.progress(label, d, n))
        except torch.cuda.OutOfMemoryError as exc:
            raise out_of_memory_error(f"decoding (chunks of {chunk} frames)", exc) from exc


def _noop_progress(label: str, done: int, total: int) -> None:
    return None


def _check_photo(photo: Path) -> None:
    if not Path(photo).is_file():
        raise InputError(f"photo {photo} does not exist", "pass the path of a JPEG or PNG photo")


def _load_job(
    model_set: ModelSet,
    photo: Path,
    condition_frames_dir: Path,
    partial_dir: Path,
    params: AnimateParams,
    progress: Progress | None,
) -> _Job:
    from unianimate_cli import runtime
    from unianimate_cli.media.image import fit_image, load_image

    params.validate(size_multiple(model_set))
    _check_photo(photo)
    ref_pose_file, pose_files = condition_frame_files(condition_frames_dir)
    if params.max_frames is not None:
        pose_files = pose_files[: params.max_frames]
    device = runtime.choose_device(params.device)
    dtype = runtime.choose_dtype(device, params.dtype)
    runtime.apply_precision_policy(dtype)
    photo_rgb = load_image(photo)
    if params.fit != "stretch":
        # crop/pad first; build_conditions then stretches an image already at the size (a copy).
        photo_rgb = fit_image(photo_rgb, params.width_px, params.height_px, params.fit)
    return _Job(
        params=params,
        models=_Models(model_set, device, dtype, params.width_px, params.height_px, params.low_memory, params.compile),
        photo_rgb=photo_rgb,
        ref_pose_rgb=load_image(ref_pose_file),
        pose_files=pose_files,
        progress=progress or _noop_progress,
        partial_dir=Path(partial_dir),
    )


def _sample(
    job: _Job, conditions: Conditions, x_T: torch.Tensor, rparams: RenderParams, on_step: Any = None, resume: Any = None, dist: DistContext | None = None
) -> torch.Tensor:
    import contextlib

    import torch

    from unianimate_cli.sampling.render import render_latents, resolve_batch_guidance

    unet = job.models.unet()
    shared: Any = contextlib.nullcontext()
    if dist is not None and dist.is_distributed:
        from unianimate_cli import launch

        rparams = resolve_batch_guidance(rparams, x_T.to(job.models.device), unet)  # one choice for every rank

        payload = _SharedRender(
            job.models.model_set, job.models.dtype, job.models.size, rparams, resume, job.params.low_memory, job.params.compile
        )
        tensors = {"x_T": x_T, "zero_y": job.models.zero_y(), **_condition_tensors(conditions)}
        shared = launch.shared_task(dist, _follow_render, payload, tensors)
    # Low memory: conditions stay on the CPU; the sampler moves each window's share once.
    conditions = conditions if job.params.low_memory else conditions.to(job.models.device)
    try:
        with shared, torch.no_grad():
            out = render_latents(
                unet, conditions, x_T.to(job.models.device), rparams, on_step=on_step, resume=resume, dist=dist
            )
    except torch.cuda.OutOfMemoryError as exc:
        from unianimate_cli.runtime import out_of_memory_error

        raise out_of_memory_error("sampling", exc) from exc
    return out.float().cpu()


@dataclass(frozen=True)
class _SharedRender:
    """What another rank needs to take its share of rank 0's windows-mode render (picklable)."""

    model_set: ModelSet
    dtype: torch.dtype
    size: tuple[int, int]
    rparams: RenderParams
    resume: Any  # sampling.render.ResumeState (x_t on the CPU) or None
    low_memory: bool = False  # the follower streams its UNet blocks too, and keeps conditions on the CPU
    compile_blocks: bool = False


def _condition_tensors(conditions: Conditions) -> dict[str, torch.Tensor]:
    from unianimate_cli.sampling.conditions import CONDITION_KEYS

    return {f"cond.{k}": getattr(conditions, k) for k in CONDITION_KEYS if getattr(conditions, k) is not None}


def _follow_render(order: _SharedRender, tensors: dict[str, torch.Tensor], dist: DistContext) -> None:
    """A follower rank's part of a windows-mode render (``launch.follow`` calls it).

    The same UNet, conditions, x_T and resume state as rank 0 (sent by it), this rank's own
    device; the latents come out on every rank, but only rank 0 keeps and writes them.
    """
    import torch

    from unianimate_cli import runtime
    from unianimate_cli.sampling.conditions import Conditions
    from unianimate_cli.sampling.render import render_latents

    runtime.apply_precision_policy(order.dtype)
    models = _Models(order.model_set, dist.device, order.dtype, *order.size, order.low_memory, order.compile_blocks)
    models.set_zero_y(tensors["zero_y"])
    conditions = Conditions(**{k[len("cond.") :]: v for k, v in tensors.items() if k.startswith("cond.")})
    conditions = conditions if order.low_memory else conditions.to(dist.device)
    with torch.no_grad():
        render_latents(
            models.unet(), conditions, tensors["x_T"].to(dist.device), order.rparams, resume=order.resume, dist=dist
        )


# --------------------------------------------------------------------------- windows mode


def _render_windows(job: _Job, resumed: list[bool]) -> tuple[torch.Tensor, np.ndarray, int]:
    """Sample every frame at once (one or overlapping windows); returns (latents, frames, steps run)."""
    import torch

    from unianimate_cli.sampling.render import ResumeState, keeps_x0, make_initial_latent, plan_steps
    from unianimate_cli.sampling.schedule import NoisePrior

    p = job.params
    num_frames = len(job.pose_files)
    rparams = p.render_params()
    plan = plan_steps(rparams)  # InputError for step counts that would visit t = 999
    state_path = job.partial_dir / STATE_FILE
    latents_path = job.partial_dir / LATENTS_FILE
    h, w = p.height_px // 8, p.width_px // 8
    shape = (1, 4, num_frames, h, w)

    done = _load_tensors(latents_path)
    if done is not None and tuple(done["latents"].shape) == shape:
        logger.info("latents already sampled by an interrupted run; decoding them")
        resumed.append(True)
        latents = done["latents"]
        job.models.offload("clip", "unet")
        return latents, job.decode(latents), 0

    # The reference's draw order on one generator: VAE posterior sample, eps, offset noise.
    generator = torch.Generator(device="cpu").manual_seed(int(p.seed))
    conditions = job.conditions(job.photo_rgb, job.ref_pose_rgb, range(num_frames), generator)
    prior = NoisePrior.for_entrance("long" if num_frames > p.context_size else "short")
    assert conditions.randomref is not None  # build_conditions always builds it
    x_T = make_initial_latent(conditions.randomref, generator, prior)
    job.models.offload("clip", "vae")

    resume = None
    saved = _load_tensors(state_path)
    if saved is not None:
        try:
            resume = ResumeState.from_tensors(saved)
        except (KeyError, ValueError) as exc:
            logger.warning("ignoring checkpoint %s (%s)", state_path, exc)
        else:
            if resume.timesteps != tuple(s.t for s in plan) or tuple(resume.x_t.shape) != shape:
                logger.warning(
                    "discarding the saved sampler state: it is for %d frames and timesteps %s..., this render %d frames and %s...",
                    resume.x_t.shape[2], list(resume.timesteps[:3]), num_frames, [s.t for s in plan[:3]],
                )
                state_path.unlink(missing_ok=True)
                resume = None
    start = resume.completed_steps if resume is not None else 0
    if resume is not None:
        resumed.append(True)
        logger.info("resuming after DDIM step %d of %d", start, len(plan))
    job.progress("steps", start, len(plan))

    def on_step(state: Any) -> None:
        finished = state.completed_steps
        if finished % p.checkpoint_every_steps == 0 or finished == len(plan):
            _save_tensors(state_path, ResumeState.from_step(state, plan, keeps_x0(rparams)).to_tensors())
        job.progress("steps", finished, len(plan))

    latents = _sample(job, conditions, x_T, rparams, on_step=on_step, resume=resume, dist=job.dist)
    _save_tensors(latents_path, {"latents": latents})
    job.models.offload("unet")
    return latents, job.decode(latents), len(plan) - start


# --------------------------------------------------------------------------- continuation mode


def _color_matched(job: _Job, frame: np.ndarray) -> np.ndarray:
    """``frame`` with the photo's per-channel RGB mean and std (at the model size), as uint8."""
    import torch

    from unianimate_cli.sampling.conditions import match_color_statistics, reference_pixels

    p = job.params
    matched = match_color_statistics(
        reference_pixels(frame, p.width_px, p.height_px), reference_pixels(job.photo_rgb, p.width_px, p.height_px)
    )
    out: np.ndarray = (matched.clamp(0, 1) * 255).round().to(dtype=torch.uint8)[0].permute(1, 2, 0).numpy()
    return out


def _render_segments(
    job: _Job,
    first_start: int,
    existing_frames: np.ndarray | None,
    resumed: list[bool],
) -> tuple[torch.Tensor, np.ndarray, int, int]:
    """Last-frame continuation over ``job.pose_files[first_start:]``.

    ``existing_frames`` [first_start,H,W,3] are the frames of an earlier render (extend); the
    first new segment hands over from its last one. Returns (new latents [1,4,n,h,w], new uint8
    frames [n,H,W,3], steps run, number of segments); ``n = len(pose_files) - first_start``.
    """
    import numpy as np
    import torch

    from unianimate_cli.sampling.conditions import clip_input
    from unianimate_cli.sampling.render import make_initial_latent, plan_steps
    from unianimate_cli.sampling.schedule import NoisePrior
    from unianimate_cli.sampling.segments import mix_image_embedding, plan_segments, segment_generator

    p = job.params
    segments = plan_segments(len(job.pose_files), clip_frames=p.segment_length, handover=True, first_start=first_start)
    # One window per segment: the short sampler and its prior (t = 949).
    rparams = p.render_params(context_size=p.segment_length, context_overlap=0)
    num_steps = len(plan_steps(rparams))
    photo_embedding: torch.Tensor | None = None
    new_latents: list[torch.Tensor] = []
    new_frames: list[np.ndarray] = []
    steps_run = 0

    def frame_at(index: int) -> np.ndarray:
        if index < first_start:
            assert existing_frames is not None
            return existing_frames[index]
        offset = first_start
        for part in new_frames:
            if index < offset + part.shape[0]:
                return part[index - offset]
            offset += part.shape[0]
        raise IndexError(index)

    job.progress("segments", 0, len(segments))
    for seg in segments:
        ckpt = job.partial_dir / SEGMENT_FILE.format(index=seg.index)
        saved = _load_tensors(ckpt)
        expect = (1, 4, seg.num_output_frames, p.height_px // 8, p.width_px // 8)
        if saved is not None and tuple(saved["latents"].shape) == expect and saved["frames"].shape[0] == seg.num_output_frames:
            logger.info("segment %d of %d already rendered; reusing it", seg.index + 1, len(segments))
            resumed.append(True)
            new_latents.append(saved["latents"])
            new_frames.append(saved["frames"].numpy())
            job.progress("segments", seg.index + 1, len(segments))
            continue
        if seg.reference_frame is None:
            reference_rgb, ref_pose_rgb = job.photo_rgb, job.ref_pose_rgb
        else:
            reference_rgb = frame_at(seg.reference_frame)
            if p.color_match:
                reference_rgb = _color_matched(job, reference_rgb)
            ref_pose_rgb = job.pose_images([seg.reference_frame])[0]
        generator = segment_generator(int(p.seed), seg.index)
        conditions = job.conditions(reference_rgb, ref_pose_rgb, seg.clip_frames, generator)
        if seg.reference_frame is not None and conditions.image is not None:
            # Keep (or blend in) the photo's CLIP embedding: identity does not drift over segments.
            if photo_embedding is None:
                photo_embedding = job.models.encode_image(clip_input(job.photo_rgb))
            image = mix_image_embedding(photo_embedding.reshape(conditions.image.shape), conditions.image, p.embedding_mix)
            conditions = dataclasses.replace(conditions, image=image)
        assert conditions.randomref is not None
        x_T = make_initial_latent(conditions.randomref, generator, NoisePrior.for_entrance("short"))
        job.models.offload("clip", "vae")
        label = f"segment {seg.index + 1}/{len(segments)} steps"
        job.progress(label, 0, num_steps)
        latents = _sample(job, conditions, x_T, rparams, on_step=lambda s, label=label: job.progress(label, s.completed_steps, num_steps))
        steps_run += num_steps
        latents = latents[:, :, seg.drop_first :].contiguous()
        job.models.offload("unet")
        frames = job.decode(latents, label=f"segment {seg.index + 1}/{len(segments)} decoding")
        _save_tensors(ckpt, {"latents": latents, "frames": torch.from_numpy(np.ascontiguousarray(frames))})
        new_latents.append(latents)
        new_frames.append(frames)
        job.progress("segments", seg.index + 1, len(segments))
    return torch.cat(new_latents, dim=2), np.concatenate(new_frames, axis=0), steps_run, len(segments)


# --------------------------------------------------------------------------- output


def _audio_kwargs(audio: AudioSource | None, num_frames: int) -> dict[str, Any]:
    """write_video's audio arguments for ``num_frames`` output frames, or {} (logged) when none."""
    from unianimate_cli.errors import UnianimateError
    from unianimate_cli.media.video import probe_video, source_span_s

    if audio is None:
        return {}
    try:
        info = probe_video(audio.video)
    except UnianimateError as exc:
        logger.warning("writing no audio: %s", exc.message)
        return {}
    if info.audio is None:
        logger.info("%s has no audio track; the result is silent", audio.video)
        return {}
    start_s, duration_s = source_span_s(info, audio.start_frame, audio.frame_interval, num_frames)
    return {"audio_source": audio.video, "audio_start_s": start_s, "audio_duration_s": duration_s}


def _layout_frames(job: _Job, frames: np.ndarray, layout: str, first_pose: int = 0) -> Iterator[np.ndarray]:
    """The video's frames: the result, or photo | pose | result (pose frame ``first_pose + i``)."""
    from unianimate_cli.media.image import load_image, resize_exact
    from unianimate_cli.media.layout import compose_compare_frames

    if layout != "compare":
        return iter(frames)
    w, h = job.params.width_px, job.params.height_px
    photo = resize_exact(job.photo_rgb, w, h)
    poses = (resize_exact(load_image(f), w, h) for f in job.pose_files[first_pose : first_pose + len(frames)])
    return compose_compare_frames(photo, poses, iter(frames))


def _write(
    job: _Job,
    out_video: Path,
    stream: Iterator[np.ndarray],
    num_frames: int,
    fps: Fraction | float,
    audio: AudioSource | None,
) -> bool:
    from unianimate_cli.media.video import write_video

    out_video = Path(out_video)
    out_video.parent.mkdir(parents=True, exist_ok=True)
    kwargs = _audio_kwargs(audio, num_frames) if job.params.keep_audio else {}
    job.progress("encoding", 0, num_frames)
    written = write_video(
        out_video, stream, fps, crf=job.params.crf, on_frame=lambda n: job.progress("encoding", n, num_frames), **kwargs
    )
    return bool(written.has_audio)


def _save_frames(frames_dir: Path | None, frames: np.ndarray) -> Path | None:
    if frames_dir is None:
        return None
    from unianimate_cli.media.image import save_frames

    save_frames(frames_dir, frames, pattern="{index:05d}.png")
    return Path(frames_dir)


def _as_fps(fps: Fraction | float | int) -> Fraction:
    value = Fraction(fps).limit_denominator(100000) if not isinstance(fps, Fraction) else fps
    if value <= 0:
        raise InputError(f"frame rate {fps} is not positive", "use the rate the pose stage recorded (8 by default)")
    return value


# --------------------------------------------------------------------------- animate


def animate(
    model_set: ModelSet,
    photo: Path,
    condition_frames_dir: Path,
    out_video: Path,
    partial_dir: Path,
    params: AnimateParams = AnimateParams(),
    fps: Fraction | float = Fraction(8),
    audio: AudioSource | None = None,
    progress: Progress | None = None,
    frames_dir: Path | None = None,
    latents_out: Path | None = None,
    dist: DistContext | None = None,
) -> AnimateResult:
    """Render ``out_video`` from ``photo`` and the pose frames of ``condition_frames_dir``.

    ``condition_frames_dir`` is the align stage's folder: ``0000.png``... (one per output
    frame) and ``ref_pose.png``. ``fps`` is the rate the pose stage recorded; ``audio`` the
    driving video and its frame span (None or ``params.keep_audio = False``: silent).
    Writes ``out_video`` atomically, optionally the result frames as PNGs in ``frames_dir``
    (``00000.png``...) and the latents [1,4,f,h,w] to ``latents_out`` (safetensors, key
    ``latents``; ``extend`` reads it). Resumes from ``partial_dir`` (module docstring).
    Raises InputError/ProjectError for bad inputs before loading any model; a
    KeyboardInterrupt (e.g. raised by ``progress``) leaves the last checkpoint in place.

    ``dist``: on rank 0 of a torchrun launch (``launch.active_dist()``), the ranks that
    share the windows of every DDIM step while the others run ``launch.follow``; this call
    still does all the rest (and all the writing) alone. Continuation segments depend on
    each other, so that mode renders on rank 0 alone.
    """
    fps = _as_fps(fps)
    job = _load_job(model_set, photo, condition_frames_dir, partial_dir, params, progress)
    if dist is not None and dist.is_distributed:
        if params.long_mode == "continuation":
            logger.warning(
                "segments mode renders on rank 0 alone (each segment starts from the last one's frame); "
                "the other %d rank(s) wait. Use --mode windows to split the render across ranks",
                dist.world_size - 1,
            )
        else:
            job.dist = dist
    ref_pose_file = condition_frame_files(condition_frames_dir)[0]
    plan = _fingerprint(params.long_mode, params, Path(photo), ref_pose_file, job.pose_files, model_set, {})
    resumed: list[bool] = []
    _prepare_partial(job.partial_dir, plan)
    num_frames = len(job.pose_files)
    logger.info(
        "animating %d frames at %dx%d, %s mode, %d steps, seed %d on %s",
        num_frames, params.width_px, params.height_px, params.long_mode, params.num_steps, params.seed, job.models.device,
    )
    if params.long_mode == "continuation":
        latents, frames, steps_run, num_segments = _render_segments(job, 0, None, resumed)
    else:
        latents, frames, steps_run = _render_windows(job, resumed)
        num_segments = 1
    if latents_out is not None:
        _save_tensors(Path(latents_out), {"latents": latents})
    has_audio = _write(job, out_video, _layout_frames(job, frames, params.layout), num_frames, fps, audio)
    saved_dir = _save_frames(frames_dir, frames)
    _clear_partial(job.partial_dir)
    return AnimateResult(
        video=Path(out_video), num_frames=num_frames, fps=fps, width_px=params.width_px, height_px=params.height_px,
        has_audio=has_audio, latents=latents, steps_run=steps_run, resumed=bool(resumed), num_segments=num_segments,
        frames_dir=saved_dir,
        info={"device": str(job.models.device), "dtype": str(job.models.dtype).replace("torch.", "")},
    )


# --------------------------------------------------------------------------- extend


def read_previous_frames(previous_video: Path, width_px: int, height_px: int, layout: str = "result") -> np.ndarray:
    """Frames [n,H,W,3] uint8 of an earlier render; for a compare layout, its result column.

    The size must be the render's (``width_px`` x ``height_px``, or 3x as wide for compare).
    """
    import numpy as np

    from unianimate_cli.media.video import iter_frames, probe_video

    info = probe_video(previous_video)
    columns = 3 if layout == "compare" else 1
    if (info.width_px, info.height_px) != (width_px * columns, height_px):
        raise InputError(
            f"{previous_video} is {info.width_px}x{info.height_px} px, not the {width_px * columns}x{height_px} of a "
            f"{layout} render at {width_px}x{height_px}",
            "extend with the width, height and layout the video was rendered with",
        )
    frames = [f.image[:, -width_px:] if columns > 1 else f.image for f in iter_frames(previous_video)]
    if not frames:
        raise InputError(f"{previous_video} holds no frames", "render it again with `unianimate animate`")
    return np.stack(frames)


def extend(
    model_set: ModelSet,
    photo: Path,
    condition_frames_dir: Path,
    previous_video: Path,
    out_video: Path,
    partial_dir: Path,
    params: AnimateParams = AnimateParams(),
    fps: Fraction | float = Fraction(8),
    audio: AudioSource | None = None,
    progress: Progress | None = None,
    previous_latents: Path | None = None,
    num_new_frames: int | None = None,
    frames_dir: Path | None = None,
    latents_out: Path | None = None,
) -> AnimateResult:
    """Continue a finished render from its last frame with the next pose frames; write old + new.

    The earlier render covered pose frames ``0..n-1`` of ``condition_frames_dir`` (the same
    align folder, holding more frames now or from the start). New frames ``n..`` are rendered
    in last-frame continuation segments of ``params.segment_length``; the first one takes the
    earlier render's last frame as its reference (and that frame's pose as reference pose),
    with ``params.color_match`` optionally matching it to the photo's colours first.
    ``num_new_frames`` caps how many are added (None: every remaining pose frame).

    The earlier frames come from ``previous_latents`` when given (decoded: exact, and ``n`` is
    their frame count), else from decoding ``previous_video`` (one more H.264 generation for
    those frames). ``out_video`` (may equal ``previous_video``) is replaced atomically by all
    frames in ``params.layout``, with audio cut from ``audio`` for the whole span, so it stays
    aligned. ``latents_out`` gets the latents of every frame when the earlier latents are known.
    """
    import numpy as np
    import torch

    fps = _as_fps(fps)
    job = _load_job(model_set, photo, condition_frames_dir, partial_dir, params, progress)
    old_latents: torch.Tensor | None = None
    if previous_latents is not None:
        saved = _load_tensors(Path(previous_latents))
        if saved is None or "latents" not in saved:
            raise ProjectError(f"{previous_latents} is missing or unreadable", "run `unianimate animate --force` on the project")
        old_latents = saved["latents"].float()
        expect_hw = (params.height_px // 8, params.width_px // 8)
        if old_latents.ndim != 5 or tuple(old_latents.shape[-2:]) != expect_hw:
            raise InputError(
                f"{previous_latents} holds latents of shape {list(old_latents.shape)}, not [1,4,f,{expect_hw[0]},{expect_hw[1]}]",
                "extend with the width and height the render was made with",
            )
        first_start = int(old_latents.shape[2])
    else:
        if not Path(previous_video).is_file():
            raise ProjectError(f"earlier render {previous_video} does not exist", "run `unianimate animate` first")
        old_frames = read_previous_frames(Path(previous_video), params.width_px, params.height_px, params.layout)
        first_start = int(old_frames.shape[0])
    available = len(job.pose_files)
    total = available if num_new_frames is None else min(available, first_start + int(num_new_frames))
    if total <= first_start:
        raise InputError(
            f"nothing to extend: the render already has {first_start} frames and {condition_frames_dir} holds {available} pose frames",
            "align a longer driving video, or render fewer frames with `unianimate animate --max-frames N`",
        )
    job.pose_files = job.pose_files[:total]
    ref_pose_file = condition_frame_files(condition_frames_dir)[0]
    previous_hash = _sha256(Path(previous_latents)) if previous_latents is not None else _sha256(Path(previous_video))
    plan = _fingerprint("extend", params, Path(photo), ref_pose_file, job.pose_files, model_set, {"previous": previous_hash, "first_start": first_start})
    resumed: list[bool] = []
    _prepare_partial(job.partial_dir, plan)
    if old_latents is not None:
        old_frames = job.decode(old_latents, label="decoding the earlier render")
    logger.info("extending a %d-frame render by %d frames", first_start, total - first_start)
    new_latents, new_frames, steps_run, num_segments = _render_segments(job, first_start, old_frames, resumed)
    frames = np.concatenate([old_frames, new_frames], axis=0)
    latents = torch.cat([old_latents, new_latents], dim=2) if old_latents is not None else new_latents
    if latents_out is not None:
        _save_tensors(Path(latents_out), {"latents": latents})
    has_audio = _write(job, out_video, _layout_frames(job, frames, params.layout), total, fps, audio)
    saved_dir = _save_frames(frames_dir, frames)
    _clear_partial(job.partial_dir)
    return AnimateResult(
        video=Path(out_video), num_frames=total, fps=fps, width_px=params.width_px, height_px=params.height_px,
        has_audio=has_audio, latents=latents, steps_run=steps_run, resumed=bool(resumed), num_segments=num_segments,
        added_frames=total - first_start, frames_dir=saved_dir,
        info={"device": str(job.models.device), "dtype": str(job.models.dtype).replace("torch.", "")},
    )
