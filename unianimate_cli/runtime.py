"""Where and how the networks run: device and dtype choice, TF32 policy, memory probe, offload.

Library code: no printing, no rich. The choices here are the measured ones recorded in
``docs/PERFORMANCE.md`` and ``docs/PARITY.md``:

* float16 on CUDA by default (the reference's precision; on the tiny fixture float16 is
  about 8x closer to float32 than bfloat16), bfloat16 on request, float32 on the CPU.
* TF32 off whenever float32 is asked for (parity is claimed for float32 with TF32 off).
* ``torch.compile`` is optional and falls back to eager when it fails.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, TypeVar

import torch
from torch import nn

from unianimate_cli.errors import InputError, ResourceError

logger = logging.getLogger(__name__)

DTypeName = Literal["auto", "float32", "float16", "bfloat16"]
_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}
GIB = 1024**3

M = TypeVar("M", bound=nn.Module)


def choose_device(requested: str | None = None) -> torch.device:
    """``requested`` ("cpu", "cuda", "cuda:1", None = CUDA when available) as a checked device."""
    if requested in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(str(requested))
    except RuntimeError as exc:
        raise InputError(f"unknown device {requested!r}", "use cpu, cuda or cuda:N") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {requested!r} asked for but CUDA is not available", "use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(
                f"device {requested!r} does not exist ({torch.cuda.device_count()} CUDA device(s))", "use cuda:0"
            )
    return device


def choose_dtype(device: torch.device, requested: str | None = None) -> torch.dtype:
    """The compute dtype for ``device``: float16 on CUDA, float32 on the CPU, unless asked otherwise.

    Half precision on the CPU is refused: it is many times slower there than float32.
    """
    if requested in (None, "", "auto"):
        return torch.float16 if device.type == "cuda" else torch.float32
    dtype = _DTYPES.get(str(requested).lower())
    if dtype is None:
        raise InputError(f"unknown dtype {requested!r}", "use float32, float16 or bfloat16")
    if device.type == "cpu" and dtype != torch.float32:
        raise InputError(f"dtype {requested} on the CPU is very slow", "use float32 on the CPU")
    return dtype


def set_tf32(enabled: bool) -> None:
    """Allow or forbid TF32 in float32 matmuls and convolutions (CUDA; harmless elsewhere)."""
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


@contextlib.contextmanager
def tf32(enabled: bool) -> Iterator[None]:
    """Temporarily allow or forbid TF32, restoring the previous settings."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    set_tf32(enabled)
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def apply_precision_policy(dtype: torch.dtype) -> None:
    """TF32 off for float32 (the parity setting); half precision does not use it anyway."""
    set_tf32(False)
    if dtype != torch.float32:
        logger.debug("computing in %s; norms keep float32 statistics inside PyTorch's kernels", dtype)


@dataclass(frozen=True)
class MemoryInfo:
    """Free and total memory of a CUDA device in bytes (None for the CPU)."""

    free_bytes: int
    total_bytes: int

    @property
    def free_gib(self) -> float:
        return self.free_bytes / GIB

    @property
    def total_gib(self) -> float:
        return self.total_bytes / GIB


def memory_info(device: torch.device) -> MemoryInfo | None:
    """Free/total memory of ``device`` as the driver reports it, None for non-CUDA devices."""
    if device.type != "cuda":
        return None
    free, total = torch.cuda.mem_get_info(device)
    return MemoryInfo(int(free), int(total))


@dataclass(frozen=True)
class PeakMemory:
    """Peak allocated / reserved bytes of a CUDA device since the last reset."""

    allocated_bytes: int
    reserved_bytes: int

    @property
    def allocated_gib(self) -> float:
        return self.allocated_bytes / GIB

    @property
    def reserved_gib(self) -> float:
        return self.reserved_bytes / GIB


def reset_peak(device: torch.device) -> None:
    """Start a new peak-memory measurement on ``device`` (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> PeakMemory:
    """Peak allocated and reserved memory since :func:`reset_peak` (zeros on the CPU)."""
    if device.type != "cuda":
        return PeakMemory(0, 0)
    torch.cuda.synchronize(device)
    return PeakMemory(torch.cuda.max_memory_allocated(device), torch.cuda.max_memory_reserved(device))


def offload(module: M, device: torch.device | str = "cpu") -> M:
    """Move ``module`` to ``device`` (default the CPU) and give its GPU memory back to the driver.

    Use it to keep CLIP and the VAE off the GPU while the UNet samples, and the UNet off it
    while the VAE decodes.
    """
    source = next(module.parameters(), None)
    module.to(device)
    if source is not None and source.device.type == "cuda" and torch.device(device).type != "cuda":
        torch.cuda.empty_cache()
    return module


def compile_or_eager(module: M, enabled: bool = True, mode: str | None = None) -> M:
    """``torch.compile(module)`` when enabled and available, else ``module`` unchanged.

    Compilation happens lazily at the first call; a failure there is not caught here, so
    callers that must never fail should make one warm-up call in a try block and fall back.
    """
    if not enabled:
        return module
    try:
        return torch.compile(module, mode=mode)  # type: ignore[return-value]
    except Exception as exc:  # noqa: BLE001 -- any compiler problem means: run eager
        logger.warning("torch.compile is unavailable (%s); running eagerly", exc)
        return module


def out_of_memory_error(what: str, exc: BaseException) -> ResourceError:
    """A CUDA out-of-memory error as a user-facing ResourceError that names the knobs."""
    return ResourceError(
        f"the GPU ran out of memory while {what} ({str(exc).splitlines()[0]})",
        "lower the resolution or the window size, run guidance as two passes, or offload CLIP/VAE to the CPU",
    )


def compile_blocks(model: nn.Module, block_types: tuple[type[nn.Module], ...] | None = None) -> int:
    """Compile each UNet block in place (regional compilation); returns how many.

    Blocks of one class and one shape share compiled code, so this compiles a few dozen
    small graphs instead of one huge one (measured in ``docs/PERFORMANCE.md``). Shapes are
    kept static (no automatic dynamic shapes) so each level gets specialised kernels.
    """
    import torch._dynamo

    if block_types is None:
        from unianimate_cli.models.layers import ResBlock, SpatialTransformer, TemporalTransformer

        block_types = (ResBlock, SpatialTransformer, TemporalTransformer)
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    torch._dynamo.config.automatic_dynamic_shapes = False
    count = 0
    for module in model.modules():
        if isinstance(module, block_types):
            module.compile()
            count += 1
    return count


def conv2d_channels_last_(model: nn.Module) -> None:
    """Store every 2-D convolution weight channels-last (NHWC), in place; other weights untouched."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            module.weight.data = module.weight.data.contiguous(memory_format=torch.channels_last)


#: fp16 UNet weights resident on the GPU (1,416,564,300 parameters), measured 2.69 GiB.
UNET_FP16_RESIDENT_BYTES = int(2.69 * GIB)
#: Peak activation bytes per UNet batch item and latent frame-pixel, fp16, chunked
#: feed-forward; measured on an H100 on 2026-11-24 at 33 frames x 96 x 64 latents:
#: 2.27 GiB for one item (two-call guidance), 4.48 GiB for two (batched guidance).
ACTIVATION_BYTES_PER_ITEM_PIXEL = 11_900
#: Slack for the allocator's fragmentation and the caller's own tensors.
MEMORY_HEADROOM = 1.15


def estimate_sampling_peak_bytes(num_frames: int, latent_hw: tuple[int, int], batched_guidance: bool) -> int:
    """Estimated peak GPU bytes of fp16 sampling for one window of ``num_frames`` frames.

    ``latent_hw`` is (h, w) of the latents (pixels / 8). The UNet sees one extra frame (the
    reference frame). Batched guidance doubles the activations.
    """
    items = 2 if batched_guidance else 1
    pixels = (num_frames + 1) * latent_hw[0] * latent_hw[1]
    return int(UNET_FP16_RESIDENT_BYTES + items * pixels * ACTIVATION_BYTES_PER_ITEM_PIXEL)


def sampling_memory_budget(device: torch.device, model: object = None) -> int | None:
    """Bytes a sampler may plan with on ``device`` once ``model`` is loaded there (None on the CPU).

    The driver's free memory, plus what PyTorch's cache holds unused, plus the UNet's fp16
    weights when ``model`` already sits on the device (the estimates count them).
    """
    info = memory_info(device)
    if info is None:
        return None
    budget = info.free_bytes + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    params = getattr(model, "parameters", None)
    first = next(params(), None) if callable(params) else None
    if isinstance(first, torch.Tensor) and first.device.type == "cuda":
        budget += UNET_FP16_RESIDENT_BYTES
    return int(budget)


def choose_guidance_batching(
    device: torch.device, num_frames: int, latent_hw: tuple[int, int], budget_bytes: int | None = None
) -> bool:
    """Whether to batch the conditional and unconditional passes into one UNet call.

    True when the estimated batched peak (UNet weights included, with headroom) fits
    ``budget_bytes``; the default budget is the device's free memory now, so call it before
    the UNet is loaded or pass a budget. Batching made a step 1.12x faster (eager, H100,
    docs/PERFORMANCE.md); always False on the CPU, where it gains nothing.
    """
    if device.type != "cuda":
        return False
    if budget_bytes is None:
        info = memory_info(device)
        budget_bytes = info.free_bytes if info is not None else 0
    need = estimate_sampling_peak_bytes(num_frames, latent_hw, batched_guidance=True) * MEMORY_HEADROOM
    return need <= budget_bytes
