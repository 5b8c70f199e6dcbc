"""The CLI under ``torchrun``: rank 0 runs the command, the other ranks join its renders.

``torchrun --nproc_per_node N -m unianimate_cli animate photo.jpg dance.mp4`` starts N
copies of the same command. Only rank 0 runs it as usual: it takes the project lock, runs
the stale upstream stages (extract-pose, align), loads the models, builds the conditions,
writes every checkpoint and output, shows progress and prints the results. The other ranks
(the *followers*) wait in :func:`follow` for rank 0's messages, sent over a gloo group of
their own (so waiting costs no GPU and may last as long as the upstream stages take):

* a **task**: a module-level function, its picklable arguments and named tensors; every
  follower calls ``fn(payload, tensors, ctx)`` while rank 0 does its own share of the same
  collectives (:func:`shared_task`). A windows-mode render is one task: rank 0 sends the
  conditions, x_T and the resume state it loaded, and every rank samples its share of the
  windows at each step (``animation``'s ``dist=``);
* **done**: the command's exit code, which every follower exits with.

So a resumed render starts from the checkpoint rank 0 read, on every rank, and there is
one writer per project. When rank 0 fails inside a task, the followers are inside the
task's collectives and cannot take a message: rank 0 then exits without one, and
``torchrun`` stops the others (or gloo reports the lost peer, which becomes a one-line
error). SIGTERM (what ``torchrun`` sends to stop its workers) is raised as
KeyboardInterrupt, so checkpoints stay and locks are released as after Ctrl-C.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from types import FrameType
from typing import TYPE_CHECKING, Any

from unianimate_cli.errors import EXIT_INTERRUPTED, EXIT_USER_ERROR, UnianimateError

if TYPE_CHECKING:
    import torch

    from unianimate_cli.distributed import DistContext

logger = logging.getLogger(__name__)

CONTROL_TIMEOUT = timedelta(days=7)
"""How long followers wait for rank 0's next message (it may run upstream stages, decode,
or render segments alone for hours); torchrun stops every rank when one fails anyway."""

Task = Callable[[Any, dict[str, "torch.Tensor"], "DistContext"], None]


@dataclass
class Launch:
    """This process's part of one torchrun launch of a command."""

    ctx: DistContext
    control: Any = None  # the gloo process group messages go through (None: single process)
    busy: bool = False  # rank 0: followers are inside a task's collectives, deaf to messages
    previous_sigterm: Any = None
    share_renders: bool = True  # False in batch mode: every rank renders its own jobs alone


@dataclass(frozen=True)
class _TaskMessage:
    fn: Task
    payload: Any


@dataclass(frozen=True)
class _Done:
    exit_code: int


_ACTIVE: Launch | None = None
"""The launch of the running command: one per process, as torch.distributed's default group."""


def rank_from_env(env: Mapping[str, str] | None = None) -> int:
    """This process's RANK as torchrun set it (0 when not launched, or when malformed: init says why)."""
    env = os.environ if env is None else env
    try:
        return int(env.get("RANK", "0"))
    except ValueError:
        return 0


def active_dist() -> DistContext | None:
    """The ranks a render of the running command may share (torchrun, not batch mode), else None."""
    if _ACTIVE is None or not _ACTIVE.share_renders or not _ACTIVE.ctx.is_distributed:
        return None
    return _ACTIVE.ctx


def active_context() -> DistContext | None:
    """The context of the torchrun launch the running command is in (batch mode too), else None."""
    return _ACTIVE.ctx if _ACTIVE is not None else None


@contextmanager
def renders_alone() -> Iterator[None]:
    """Within the block, renders run on this rank alone (batch mode's whole jobs per rank)."""
    if _ACTIVE is None:
        yield
        return
    saved, _ACTIVE.share_renders = _ACTIVE.share_renders, False
    try:
        yield
    finally:
        _ACTIVE.share_renders = saved


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def start(device: str | None) -> Launch:
    """Join the process group torchrun describes (gloo on the CPU, NCCL with one GPU per rank).

    Every rank calls this with the same ``device`` (the command's ``--device``). Raises
    InputError/ResourceError for a bad device or too few GPUs, on every rank.
    """
    global _ACTIVE
    import torch.distributed as dist

    from unianimate_cli import distributed

    # The long timeout also covers the default group: in batch mode a rank that finished its
    # jobs waits in the final gather for the slowest rank.
    ctx = distributed.init_from_env(device, timeout=CONTROL_TIMEOUT)
    launch = Launch(ctx)
    if ctx.is_distributed:
        launch.control = dist.new_group(backend="gloo", timeout=CONTROL_TIMEOUT)
        launch.previous_sigterm = signal.signal(signal.SIGTERM, _raise_interrupt)
    _ACTIVE = launch
    return launch


def stop(launch: Launch, exit_code: int) -> None:
    """Rank 0: send followers the exit code (unless they are stuck in a failed task); leave the group."""
    global _ACTIVE
    import torch.distributed as dist

    from unianimate_cli import distributed

    if launch.previous_sigterm is not None:
        signal.signal(signal.SIGTERM, launch.previous_sigterm)
    try:
        if launch.ctx.is_distributed and launch.ctx.is_main_process and not launch.busy:
            _send(launch, _Done(exit_code))
    finally:
        if launch.control is not None and dist.is_initialized():
            dist.destroy_process_group(launch.control)
        distributed.cleanup(launch.ctx)
        _ACTIVE = None


def _send(launch: Launch, message: Any) -> Any:
    import torch.distributed as dist

    box = [message]
    dist.broadcast_object_list(box, src=0, group=launch.control)
    return box[0]


def _launch_of(ctx: DistContext) -> Launch:
    if _ACTIVE is None or _ACTIVE.ctx is not ctx:
        raise RuntimeError("a shared task needs the launch that unianimate_cli.launch.start() began")
    return _ACTIVE


def is_peer_lost(exc: BaseException) -> bool:
    """True for the error a collective raises when another rank's process went away."""
    import torch.distributed as dist

    text = str(exc)
    return isinstance(exc, dist.DistError) or "Connection closed by peer" in text or "Connection reset by peer" in text


@contextmanager
def shared_task(ctx: DistContext, fn: Task, payload: Any, tensors: Mapping[str, torch.Tensor]) -> Iterator[None]:
    """Rank 0: start ``fn(payload, tensors, ctx)`` on every follower; do rank 0's part in the block.

    ``fn`` must be a module-level function (it is pickled by name) and ``payload`` picklable;
    the tensors arrive on the followers' CPU. A lost peer inside the block becomes a
    one-line UnianimateError.
    """
    launch = _launch_of(ctx)
    _send(launch, _TaskMessage(fn, payload))
    launch.busy = True
    ctx.broadcast_tensors(tensors)
    try:
        yield
    except RuntimeError as exc:
        if is_peer_lost(exc):
            raise UnianimateError(
                "another rank stopped while the ranks worked together (its own message says why)",
                "run the same command again to resume from the last checkpoint",
            ) from exc
        raise
    launch.busy = False


def follow(launch: Launch) -> int:
    """A follower's whole command: run rank 0's tasks until it sends the exit code."""
    while True:
        message = _send(launch, None)
        if isinstance(message, _Done):
            return message.exit_code
        tensors = launch.ctx.broadcast_tensors(None)
        message.fn(message.payload, tensors, launch.ctx)


def run_follower(device: str | None, debug: bool = False) -> int:
    """A follower rank's command: join, follow, leave; errors as one line on stderr. Exit code.

    Followers print nothing on stdout and show no progress; their messages carry
    ``rank N:`` so they can be told from rank 0's.
    """
    from unianimate_cli.console import make_console, setup_logging

    console = make_console()
    prefix = f"rank {rank_from_env()}: "
    logs = setup_logging(console, 0, quiet=True)
    launch: Launch | None = None
    code = EXIT_USER_ERROR
    try:
        message = ""
        try:
            launch = start(device)
            code = follow(launch)
        except KeyboardInterrupt:
            code = EXIT_INTERRUPTED
        except UnianimateError as exc:
            message, code = exc.message, exc.exit_code
        except Exception as exc:
            if debug:
                raise
            if is_peer_lost(exc):
                message = "rank 0 stopped while the ranks worked together (its message says why)"
            else:
                first = str(exc).splitlines()[0] if str(exc) else ""
                message = f"unexpected {type(exc).__name__}: {first} (rerun with --debug for the traceback)"
        if message:
            console.print(f"{prefix}error: {message}", markup=False, highlight=False)
    except KeyboardInterrupt:  # SIGTERM from torchrun while reporting
        code = EXIT_INTERRUPTED
    finally:
        if launch is not None:
            stop(launch, code)
        logs.close()
        sys.stderr.flush()
    return code
