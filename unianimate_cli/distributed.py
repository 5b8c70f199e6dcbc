"""Several processes (GPUs or machines) on one render or one batch, over torch.distributed.

A thin layer over ``torch.distributed`` as launched by ``torchrun``: no process pool or
socket protocol of our own. ``torchrun`` starts one process per GPU and sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_from_env`
turns those into a :class:`DistContext` (NCCL on CUDA, one GPU per process; gloo on the CPU).
Without those variables (a plain ``unianimate ...``) it returns a single-process context
whose collectives are no-ops, so callers never branch on "am I distributed".

Launching::

    # one machine, 4 GPUs: one long render, its windows split across the GPUs
    torchrun --nproc_per_node 4 -m unianimate_cli animate photo.jpg dance.mp4
    # two machines with 8 GPUs each (run on both; node 0's address in --master_addr)
    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 8 --master_addr 10.0.0.1 \\
        --master_port 29500 -m unianimate_cli animate photo.jpg dance.mp4
    # CPU only (tests, or no GPU): gloo, one process per core group
    torchrun --nproc_per_node 2 -m unianimate_cli animate --device cpu photo.jpg dance.mp4

``torchrun`` sets ``OMP_NUM_THREADS=1`` in each worker when it starts more than one; set it
yourself to give CPU workers more threads. When one worker fails, ``torchrun`` stops the
others, so a rank that raises never leaves the rest waiting in a collective.

Two ways to use the ranks:

* **One long render** (windowed sampling): pass the context to
  :class:`~unianimate_cli.sampling.denoiser.GuidedDenoiser` (``dist=``). Every rank runs the
  same DDIM loop on the same ``x_t``; at each step each rank evaluates its share of the
  windows and the per-window outputs are gathered, so every rank ends the step with the same
  ``x_t``. Only rank 0 (:attr:`DistContext.is_main_process`) writes files.
* **A batch of jobs**: :func:`plan_batch_jobs` gives each rank whole jobs; each job then runs
  single-process (:meth:`DistContext.single`) in its own project directory.
  :func:`run_batch_jobs` does that and hands every rank all the results.

What only rank 0 does, in the launcher integration: take the project lock, write anything
under the project (checkpoints, outputs, manifest, log file), decode and encode the video,
show progress. Decisions that lead into collectives (resume or not, which stages run) are
made on rank 0 and sent with :meth:`DistContext.broadcast_object`, so no rank waits in a
collective the others skip.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Generic, Literal, TypeVar

import torch
import torch.distributed as dist

from unianimate_cli.errors import InputError, ResourceError, UnianimateError

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")
Backend = Literal["nccl", "gloo"]

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
DEFAULT_TIMEOUT = timedelta(minutes=60)
"""How long a collective waits for the slowest rank. Sampling collectives are quick, but the
other ranks wait at a barrier or broadcast while rank 0 alone loads models, decodes and
encodes the video; a longer wait (e.g. upstream stages run inside the launch) needs more."""


@dataclass(frozen=True)
class DistContext:
    """Where this process stands among the ranks of one ``torchrun`` launch.

    ``device`` is the device this rank computes on (``cuda:LOCAL_RANK`` under NCCL).
    ``backend`` is None for a single-process context, whose collectives return their input.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: Backend | None = None
    owns_group: bool = False

    @classmethod
    def single(cls, device: torch.device | str = "cpu") -> DistContext:
        """A one-process context on ``device`` (also what a batch job runs under)."""
        return cls(device=torch.device(device))

    @property
    def is_distributed(self) -> bool:
        """True when collectives really talk to other ranks."""
        return self.world_size > 1

    @property
    def is_main_process(self) -> bool:
        """Rank 0: the only rank that writes project files, logs to the console and decodes."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait until every rank gets here."""
        if self.is_distributed:
            dist.barrier()

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The element-wise sum of ``tensor`` over all ranks (a new tensor; input untouched).

        The summation order is the backend's, so sums of floats can differ from a serial sum
        in the last bits; use :meth:`all_gather` and sum in a fixed order where that matters.
        """
        if not self.is_distributed:
            return tensor.clone()
        buffer = tensor.detach().to(self.device, copy=True).contiguous()
        dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
        return buffer.to(tensor.device)

    def all_gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's ``tensor``, in rank order; all ranks must pass the same shape and dtype."""
        if not self.is_distributed:
            return [tensor]
        buffer = tensor.detach().to(self.device).contiguous()
        parts = [torch.empty_like(buffer) for _ in range(self.world_size)]
        dist.all_gather(parts, buffer)
        return [p.to(tensor.device) for p in parts]

    def broadcast(self, tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
        """Rank ``src``'s ``tensor`` on every rank (a new tensor on the input's device).

        Every rank passes a tensor of the same shape and dtype (e.g. its own x_T, which rank
        0's replaces): cheaper than :meth:`broadcast_object` for large tensors.
        """
        if not self.is_distributed:
            return tensor.clone()
        buffer = tensor.detach().to(self.device, copy=True).contiguous()
        dist.broadcast(buffer, src=src)
        return buffer.to(tensor.device)

    def broadcast_object(self, obj: T, src: int = 0) -> T:
        """Rank ``src``'s ``obj`` (picklable) on every rank; other ranks' ``obj`` is ignored.

        Tensors inside come back on the device they were pickled from (NCCL: this rank's GPU).
        """
        if not self.is_distributed:
            return obj
        box: list[Any] = [obj]
        dist.broadcast_object_list(box, src=src, device=self._object_device())
        return box[0]  # type: ignore[no-any-return]

    def broadcast_tensors(self, tensors: Mapping[str, torch.Tensor] | None, src: int = 0) -> dict[str, torch.Tensor]:
        """Rank ``src``'s named tensors on every rank (on the CPU); other ranks pass None.

        Names, shapes and dtypes go first as one small object, then each tensor as a tensor
        collective (no pickling of the data: conditions of a long clip are gigabytes).
        """
        if not self.is_distributed:
            return {name: t.detach().cpu() for name, t in (tensors or {}).items()}
        specs: list[tuple[str, tuple[int, ...], torch.dtype]] = []
        if self.rank == src:
            assert tensors is not None, "the source rank must pass its tensors"
            specs = [(name, tuple(t.shape), t.dtype) for name, t in tensors.items()]
        out: dict[str, torch.Tensor] = {}
        for name, shape, dtype in self.broadcast_object(specs, src=src):
            local = tensors[name].detach().cpu() if self.rank == src and tensors is not None else torch.empty(shape, dtype=dtype)
            out[name] = self.broadcast(local, src=src)
        return out

    def all_gather_object(self, obj: T) -> list[T]:
        """Every rank's picklable ``obj``, in rank order (e.g. batch job results for rank 0)."""
        if not self.is_distributed:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def _object_device(self) -> torch.device | None:
        return self.device if self.backend == "nccl" else None


def _env_int(env: Mapping[str, str], name: str) -> int:
    raw = env.get(name, "")
    try:
        value = int(raw)
    except ValueError:
        raise InputError(
            f"environment variable {name} = {raw!r} is not an integer",
            "launch with torchrun, which sets RANK, WORLD_SIZE and LOCAL_RANK",
        ) from None
    if value < 0:
        raise InputError(f"environment variable {name} = {value} is negative", "launch with torchrun")
    return value


def is_launched_by_torchrun(env: Mapping[str, str] | None = None) -> bool:
    """True when ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` are all set (torchrun's workers)."""
    env = os.environ if env is None else env
    return all(name in env for name in TORCHRUN_VARS)


def _choose_device(requested: torch.device | str | None, local_rank: int, world_size: int) -> torch.device:
    """This rank's device: ``cuda:LOCAL_RANK`` when CUDA is asked for or available, else CPU."""
    try:
        wanted = None if requested in (None, "", "auto") else torch.device(str(requested))
    except RuntimeError:
        raise InputError(f"unknown device {str(requested)!r}", "use cpu or cuda") from None
    if wanted is not None and wanted.type == "cpu":
        return wanted
    if wanted is None and not torch.cuda.is_available():
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise InputError(f"device {str(requested)!r} asked for but CUDA is not available", "use --device cpu")
    count = torch.cuda.device_count()
    if world_size > 1 and wanted is not None and wanted.index is not None:
        raise InputError(
            f"device {str(requested)!r} names one GPU, but torchrun started {world_size} processes",
            "use --device cuda: each process takes the GPU of its LOCAL_RANK",
        )
    index = local_rank if wanted is None or wanted.index is None else wanted.index
    if index >= count:
        raise ResourceError(
            f"process with LOCAL_RANK {local_rank} needs GPU {index}, but only {count} are visible",
            f"use torchrun --nproc_per_node {count} or fewer (or set CUDA_VISIBLE_DEVICES)",
        )
    return torch.device("cuda", index)


def init_from_env(
    device: torch.device | str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: timedelta = DEFAULT_TIMEOUT,
) -> DistContext:
    """Join the process group ``torchrun`` describes in the environment, or stay single.

    ``device``: None/"auto" (CUDA when available), "cpu" (forces gloo), "cuda". Under
    torchrun with WORLD_SIZE > 1 this initialises ``torch.distributed`` (``env://``) with
    NCCL on CUDA, pinning the process to ``cuda:LOCAL_RANK``, or gloo on the CPU; an
    already initialised default group is reused (and not destroyed by :func:`cleanup`).
    Otherwise (no torchrun, or WORLD_SIZE 1) it returns a single-process context and starts
    nothing. Raises InputError for malformed variables, ResourceError for too few GPUs.
    """
    env = os.environ if env is None else env
    if not is_launched_by_torchrun(env):
        return DistContext.single(_choose_device(device, 0, 1))
    rank, world_size, local_rank = (_env_int(env, name) for name in TORCHRUN_VARS)
    if world_size == 0 or rank >= world_size:
        raise InputError(f"RANK {rank} does not fit WORLD_SIZE {world_size}", "launch with torchrun")
    chosen = _choose_device(device, local_rank, world_size)
    if world_size == 1:
        return DistContext.single(chosen)
    backend: Backend = "nccl" if chosen.type == "cuda" else "gloo"
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
    owns_group = False
    if dist.is_initialized():
        if dist.get_world_size() != world_size or dist.get_rank() != rank:
            raise RuntimeError(
                f"a process group of {dist.get_world_size()} ranks is already initialised, "
                f"but the environment says rank {rank} of {world_size}"
            )
        backend = "nccl" if dist.get_backend() == "nccl" else "gloo"
    else:
        missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if name not in env]
        if missing:
            raise InputError(f"environment variables {missing} are not set", "launch with torchrun")
        # env:// lets torchrun's agent store serve the rendezvous (it already listens on
        # MASTER_PORT); an explicit mapping (tests, embedding) gets its own tcp:// store.
        if env is os.environ:
            init_method = "env://"
        else:
            init_method = f"tcp://{env['MASTER_ADDR']}:{env['MASTER_PORT']}"
        dist.init_process_group(
            backend=backend,
            init_method=init_method,
            rank=rank,
            world_size=world_size,
            timeout=timeout,
        )
        owns_group = True
    logger.info("rank %d of %d on %s (%s)", rank, world_size, chosen, backend)
    return DistContext(rank, world_size, local_rank, chosen, backend, owns_group)


def cleanup(ctx: DistContext) -> None:
    """Leave the process group this context started (no-op otherwise)."""
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def distributed_context(
    device: torch.device | str | None = None, env: Mapping[str, str] | None = None
) -> Iterator[DistContext]:
    """:func:`init_from_env` for a ``with`` block; the group is destroyed on the way out."""
    ctx = init_from_env(device, env)
    try:
        yield ctx
    finally:
        cleanup(ctx)


def shard_indices(num_items: int, rank: int, world_size: int) -> range:
    """Indices of ``num_items`` work items that ``rank`` takes: ``rank, rank + W, ...``.

    Round-robin keeps the shares balanced (they differ by at most one item) and, for items
    sorted by size, spreads large and small ones; the split depends only on the arguments.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} does not fit world size {world_size}")
    return range(rank, num_items, world_size)


def shard(items: Sequence[T], ctx: DistContext) -> list[T]:
    """This rank's share of ``items`` (same order); the shares of all ranks cover each item once."""
    return [items[i] for i in shard_indices(len(items), ctx.rank, ctx.world_size)]


def plan_batch_jobs(jobs: Sequence[T], ctx: DistContext, describe: Callable[[T], str] | None = str) -> list[T]:
    """The whole jobs this rank runs in batch mode.

    Contract for the batch command:

    * every rank builds the same ``jobs`` list in the same order (sort a directory listing);
      with ``describe`` given (default ``str``), the ranks compare a hash of the described
      list and raise RuntimeError on a mismatch instead of silently running a job twice or
      never (pass None where jobs cannot be described the same way on every rank);
    * each job has its own project directory, so no two ranks share a project, its lock or
      its manifest; a job runs single-process (:meth:`DistContext.single`): no collective
      inside a job, since the other ranks are busy with their own jobs;
    * each job is resumable on its own: rerunning the batch, with any number of ranks,
      skips finished stages and resumes partial ones, whichever rank gets the job now;
    * a job's failure is recorded and the rank goes on with its next job; the results can
      be collected on rank 0 with :meth:`DistContext.all_gather_object` for one summary.
    """
    if ctx.is_distributed and describe is not None:
        digest = hashlib.sha256("\n".join(describe(job) for job in jobs).encode()).hexdigest()
        digests = ctx.all_gather_object((len(jobs), digest))
        if len(set(digests)) != 1:
            raise RuntimeError(
                f"ranks disagree on the batch job list (jobs, hash per rank: {digests}); "
                "build it in the same order on every rank"
            )
    mine = shard(jobs, ctx)
    logger.info("rank %d of %d takes %d of %d job(s)", ctx.rank, ctx.world_size, len(mine), len(jobs))
    return mine


@dataclass(frozen=True)
class JobResult(Generic[T, R]):
    """How one batch job ended: ``value`` when it succeeded, else the user-facing ``error``."""

    index: int
    job: T
    rank: int
    value: R | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def run_batch_jobs(
    jobs: Sequence[T],
    ctx: DistContext,
    run_job: Callable[[T], R],
    describe: Callable[[T], str] | None = str,
) -> list[JobResult[T, R]]:
    """Run this rank's share of ``jobs`` (see :func:`plan_batch_jobs`), then collect every rank's.

    ``run_job(job)`` runs one whole job single-process in its own project directory. A job
    raising :class:`~unianimate_cli.errors.UnianimateError` is recorded (``error``, one line)
    and the rank goes on; any other exception is our bug and stops the launch (torchrun then
    stops every rank; rerunning resumes each job). Returns the results of all jobs, in job
    order, on every rank (jobs and values must be picklable), so rank 0 can report and every
    rank can exit with the same status.
    """
    mine = plan_batch_jobs(jobs, ctx, describe)
    indices = list(shard_indices(len(jobs), ctx.rank, ctx.world_size))
    results: list[JobResult[T, R]] = []
    for index, job in zip(indices, mine):
        try:
            results.append(JobResult(index, job, ctx.rank, value=run_job(job)))
        except UnianimateError as exc:
            logger.warning("job %d (%s) failed: %s", index, job, exc)
            results.append(JobResult(index, job, ctx.rank, error=str(exc)))
    everyone = [r for share in ctx.all_gather_object(results) for r in share]
    return sorted(everyone, key=lambda r: r.index)
