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
        "try --low-memory (UNet weights streamed from host memory), or lower --width/--height or --window-size",
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


class WeightStreamer:
    """Keep the large layers of a model in (pinned) host memory; each visits the GPU only while it runs.

    The low-memory mode: a float16 UNet is 2.69 GiB resident, two thirds of a 4 GiB budget.
    Streamed, the GPU holds the small layers plus one or two large ones at a time (the next
    one is copied on a side stream while the current one computes), about 0.3-0.5 GiB. The
    copies cost PCIe time per call (2.7 GB per UNet forward), partly hidden by the prefetch.
    Outputs equal the resident model's: only where the weights live changes.

    ``units``: the modules to stream, each run as a whole by a ``module(...)`` call (UNet
    blocks). Everything else of ``model`` moves to ``device``. The order of units is learnt
    on the first call and used to prefetch from then on. :meth:`remove` puts every weight
    back on ``device``.
    """

    def __init__(self, model: nn.Module, units: list[nn.Module], device: torch.device) -> None:
        self.device = torch.device(device)
        self.units = list(units)
        self.loads = 0
        unit_tensors: set[int] = set()
        self._host: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        pin = self.device.type == "cuda"
        for unit in self.units:
            pairs = []
            for tensor in [*unit.parameters(), *unit.buffers()]:
                host = tensor.data.to("cpu")
                if pin:
                    host = host.pin_memory()
                tensor.data = host
                pairs.append((tensor, host))
                unit_tensors.add(id(tensor))
            self._host[id(unit)] = pairs
        self._resident = [t for t in [*model.parameters(), *model.buffers()] if id(t) not in unit_tensors]
        self.restore()
        self._order: list[int] = []
        self._order_known = False
        self._ready: dict[int, tuple[list[torch.Tensor], torch.cuda.Event | None]] = {}
        self._copy_stream = torch.cuda.Stream(self.device) if pin else None
        self._by_id = {id(u): u for u in self.units}
        self._handles = []
        for unit in self.units:
            self._handles.append(unit.register_forward_pre_hook(self._before))
            self._handles.append(unit.register_forward_hook(self._after))
        if self.units:
            logger.debug("streaming %d blocks' weights from host memory", len(self.units))

    def _load(self, unit_id: int) -> None:
        if unit_id in self._ready:
            return
        stream = self._copy_stream
        with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
            copies = [host.to(self.device, non_blocking=True) for _, host in self._host[unit_id]]
            event = None
            if stream is not None:
                event = torch.cuda.Event()
                event.record(stream)
        self.loads += 1
        self._ready[unit_id] = (copies, event)

    def _before(self, unit: nn.Module, args: object) -> None:
        uid = id(unit)
        if not self._order_known:
            if self._order and self._order[0] == uid:
                self._order_known = True
            else:
                self._order.append(uid)
        self._load(uid)
        copies, event = self._ready[uid]
        if event is not None:
            torch.cuda.current_stream(self.device).wait_event(event)
        for (tensor, _), copy in zip(self._host[uid], copies):
            tensor.data = copy
        if self._order_known:
            nxt = self._order[(self._order.index(uid) + 1) % len(self._order)]
            self._load(nxt)

    def _after(self, unit: nn.Module, args: object, output: object) -> None:
        uid = id(unit)
        copies, _ = self._ready.pop(uid)
        current = torch.cuda.current_stream(self.device) if self._copy_stream is not None else None
        for (tensor, host), copy in zip(self._host[uid], copies):
            if current is not None:
                copy.record_stream(current)  # made on the copy stream, last used here
            tensor.data = host

    def offload(self) -> None:
        """Move the model's resident (small) layers to the CPU too, e.g. while the VAE decodes."""
        self._ready.clear()
        for tensor in self._resident:
            tensor.data = tensor.data.to("cpu")
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def restore(self) -> None:
        """Bring the resident layers back onto the device (after :meth:`offload`)."""
        for tensor in self._resident:
            tensor.data = tensor.data.to(self.device)

    def remove(self) -> None:
        """Stop streaming: every weight goes back onto the device, hooks removed."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._ready.clear()
        for pairs in self._host.values():
            for tensor, host in pairs:
                tensor.data = host.to(self.device)


def stream_unet_weights(model: nn.Module, device: torch.device) -> WeightStreamer:
    """:class:`WeightStreamer` over a UNet's blocks (ResBlock, transformers, resampling convs).

    ``model`` may sit anywhere; afterwards its small layers (embeddings, condition encoders,
    head) are on ``device`` and its blocks in host memory.
    """
    from unianimate_cli.models.layers import Downsample, ResBlock, SpatialTransformer, TemporalTransformer, Upsample

    kinds = (ResBlock, SpatialTransformer, TemporalTransformer, Downsample, Upsample)
    units: list[nn.Module] = [m for m in model.modules() if isinstance(m, kinds)]
    return WeightStreamer(model, units, device)


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


#: Peak bytes of a float16 VAE decode per output pixel and frame of a chunk, plus the VAE:
#: 1.9 / 3.5 / 6.7 GiB for chunks of 2 / 4 / 8 frames at 768x512 (H100, 2026-11-24).
DECODE_BYTES_PER_PIXEL_FRAME = 2_200
DECODE_BASE_BYTES = int(0.3 * GIB)


def choose_decode_chunk(
    device: torch.device, frame_hw_px: tuple[int, int], dtype: torch.dtype, budget_bytes: int | None = None, most: int = 8
) -> int:
    """Frames per VAE decode call that fit ``budget_bytes`` (default: free memory now), 1..``most``.

    More frames per call decode faster (0.82 s for 32 frames in chunks of 2, 0.61 s in 8 on
    an H100). On the CPU: 2, the reference's chunk. Call it with the UNet off the device.
    """
    if device.type != "cuda":
        return 2
    if budget_bytes is None:
        budget_bytes = sampling_memory_budget(device) or 0
    per_frame = frame_hw_px[0] * frame_hw_px[1] * DECODE_BYTES_PER_PIXEL_FRAME * (2 if dtype == torch.float32 else 1)
    fits = int((budget_bytes / MEMORY_HEADROOM - DECODE_BASE_BYTES) // per_frame)
    return max(1, min(most, fits))


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
