"""Distributed rendering: the context layer, and 2-process gloo runs under torchrun on the CPU.

The multi-process part starts ``torchrun --nproc_per_node 2`` once on
``test_distributed_worker.py`` (127.0.0.1, a free port) and checks what rank 0 wrote:
sharded windowed render == the same render alone, bit for bit (same process, same threads),
a stopped and resumed sharded render == the uninterrupted one, and batch jobs split exactly
once across the ranks with single-process results.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

import test_distributed_worker as worker
from unianimate_cli.distributed import (
    DistContext,
    init_from_env,
    is_launched_by_torchrun,
    plan_batch_jobs,
    run_batch_jobs,
    shard,
    shard_indices,
)
from unianimate_cli.errors import InputError
from unianimate_cli.parity.diffusion import load_fixture_unet
from unianimate_cli.sampling.ddim import ddim_sample
from unianimate_cli.sampling.denoiser import GuidedDenoiser, WindowOutput
from unianimate_cli.sampling.render import plan_steps, plan_windows, render_latents
from unianimate_cli.sampling.schedule import NoiseSchedule

WORLD_SIZE = 2
TORCHRUN = Path(sys.executable).with_name("torchrun")
# torchrun is the console script of torch.distributed.run; use the module where it is absent.
LAUNCHER = [str(TORCHRUN)] if TORCHRUN.exists() else [sys.executable, "-m", "torch.distributed.run"]


# ---------------------------------------------------------------- single process, no launcher


def test_without_torchrun_the_context_is_single_and_collectives_are_identity() -> None:
    ctx = init_from_env("cpu", env={})
    assert (ctx.rank, ctx.world_size, ctx.backend, ctx.device) == (0, 1, None, torch.device("cpu"))
    assert ctx.is_main_process and not ctx.is_distributed
    value = torch.arange(3.0)
    summed = ctx.all_reduce_sum(value)
    assert torch.equal(summed, value) and summed is not value
    assert ctx.all_gather(value)[0] is value
    assert ctx.broadcast_object({"a": 1}) == {"a": 1}
    assert torch.equal(ctx.broadcast(value), value)
    assert ctx.all_gather_object("x") == ["x"]
    ctx.barrier()


def test_world_size_one_under_torchrun_starts_no_process_group() -> None:
    env = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}
    assert is_launched_by_torchrun(env)
    ctx = init_from_env("cpu", env=env)
    assert not ctx.is_distributed and not ctx.owns_group
    assert not torch.distributed.is_initialized()


@pytest.mark.parametrize(
    "env",
    [
        {"RANK": "one", "WORLD_SIZE": "2", "LOCAL_RANK": "0"},
        {"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0"},
        {"RANK": "-1", "WORLD_SIZE": "2", "LOCAL_RANK": "0"},
        {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"},  # no MASTER_ADDR / MASTER_PORT
    ],
)
def test_malformed_launch_environment_is_an_input_error(env: dict[str, str]) -> None:
    with pytest.raises(InputError):
        init_from_env("cpu", env=env)
    assert not torch.distributed.is_initialized()


def test_unknown_device_is_an_input_error() -> None:
    with pytest.raises(InputError, match="gpu0"):
        init_from_env("gpu0", env={})


@pytest.mark.parametrize("num_items", [0, 1, 2, 5, 7, 16])
@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_shards_cover_every_item_once_and_are_balanced(num_items: int, world_size: int) -> None:
    items = [f"item{i}" for i in range(num_items)]
    shares = [shard(items, DistContext(rank=r, world_size=world_size)) for r in range(world_size)]
    flat = [item for share in shares for item in share]
    assert sorted(flat) == sorted(items) and len(flat) == len(items)
    sizes = [len(share) for share in shares]
    assert max(sizes) - min(sizes) <= 1
    for share in shares:  # each share keeps the list order
        assert share == sorted(share, key=items.index)
    again = [shard(items, DistContext(rank=r, world_size=world_size)) for r in range(world_size)]
    assert again == shares


def test_shard_refuses_a_rank_outside_the_world() -> None:
    with pytest.raises(ValueError):
        shard_indices(4, 2, 2)


def test_single_process_batch_plan_keeps_every_job() -> None:
    jobs = [Path("a"), Path("b"), Path("c")]
    assert plan_batch_jobs(jobs, DistContext.single()) == jobs


def test_single_process_context_leaves_the_denoiser_unchanged() -> None:
    sizes = dict(worker.TOY_SIZES)
    conditions, x_T = worker.make_clip(16, sizes, seed=5)
    windows = plan_windows(16, worker.TOY)
    plain = GuidedDenoiser(worker.ToyUNet(), conditions, windows=windows)
    single = GuidedDenoiser(worker.ToyUNet(), conditions, windows=windows, dist=DistContext.single())
    a, b = plain.evaluate(x_T, 901), single.evaluate(x_T, 901)
    assert torch.equal(a.v, b.v) and torch.equal(a.v_cond, b.v_cond)
    assert single.unet_calls == plain.unet_calls == 2 * len(windows)


class _Exchange:
    """In-process stand-in for a collective: each thread posts its value, all read all."""

    def __init__(self, world_size: int) -> None:
        self.barrier = threading.Barrier(world_size, timeout=30)
        self.slots: list[Any] = [None] * world_size

    def gather(self, rank: int, value: Any) -> list[Any]:
        self.slots[rank] = value
        self.barrier.wait()
        out = list(self.slots)
        self.barrier.wait()
        return out


@dataclass(frozen=True)
class _ThreadDist(DistContext):
    """A DistContext whose all-gathers go through an :class:`_Exchange` between threads."""

    exchange: Any = None

    def all_gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        return [t.clone() for t in self.exchange.gather(self.rank, tensor.clone())]

    def all_gather_object(self, obj: Any) -> list[Any]:
        return list(self.exchange.gather(self.rank, obj))


@pytest.mark.parametrize("world_size", [3, 4, 7])
def test_uneven_and_empty_shards_give_the_single_process_latent(world_size: int) -> None:
    """16 frames = 5 windows: shares 2/2/1, 2/1/1/1, and two ranks with no window at 7."""
    conditions, x_T = worker.make_clip(16, worker.TOY_SIZES, seed=9)
    conditions = conditions.select(worker.TOY.variant)
    windows = plan_windows(16, worker.TOY)
    plan = plan_steps(worker.TOY)
    schedule = NoiseSchedule.official()
    seen_alone: list[list[WindowOutput]] = []
    alone = GuidedDenoiser(worker.ToyUNet(), conditions, windows=windows, on_windows=lambda t, w: seen_alone.append(w))
    expected = ddim_sample(alone, x_T, plan, schedule)
    exchange = _Exchange(world_size)
    results: dict[int, tuple[torch.Tensor, GuidedDenoiser, list[list[WindowOutput]]]] = {}
    errors: list[BaseException] = []

    def rank_main(rank: int) -> None:
        try:
            seen: list[list[WindowOutput]] = []
            ctx = _ThreadDist(rank=rank, world_size=world_size, exchange=exchange)
            denoiser = GuidedDenoiser(
                worker.ToyUNet(), conditions, windows=windows, on_windows=lambda t, w: seen.append(w), dist=ctx
            )
            results[rank] = (ddim_sample(denoiser, x_T, plan, schedule), denoiser, seen)
        except BaseException as exc:  # surfaced below: a thread's failure must fail the test
            errors.append(exc)
            exchange.barrier.abort()

    threads = [threading.Thread(target=rank_main, args=(r,)) for r in range(world_size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    for rank, (latent, denoiser, seen) in results.items():
        assert torch.equal(latent, expected)
        assert denoiser.unet_calls == len(plan) * 2 * len(shard_indices(len(windows), rank, world_size))
        assert [[o.window for o in step] for step in seen] == [[o.window for o in step] for step in seen_alone]
        last, last_alone = seen[-1], seen_alone[-1]
        assert all(torch.equal(a.v_cond, b.v_cond) and torch.equal(a.v_uncond, b.v_uncond) for a, b in zip(last, last_alone))
    assert sum(d.unet_calls for _, d, _ in results.values()) == alone.unet_calls


# ---------------------------------------------------------------- 2 processes, gloo, torchrun


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Launch:
    ranks: list[dict[str, Any]]
    tensors: dict[str, torch.Tensor]


@pytest.fixture(scope="module")
def launch(tmp_path_factory: pytest.TempPathFactory, fixtures_dir: Path) -> Launch:
    """Run the worker once under ``torchrun --nproc_per_node 2`` on 127.0.0.1."""
    out = tmp_path_factory.mktemp("dist")
    command = [
        *LAUNCHER,
        f"--nproc_per_node={WORLD_SIZE}",
        "--nnodes=1",
        "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}",
        str(Path(worker.__file__)),
        str(out),
        str(fixtures_dir / "unet_tiny"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    proc = subprocess.run(command, capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads((out / "report.json").read_text())
    return Launch(report["ranks"], load_file(str(out / "results.safetensors")))


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _local_windows(rank: int) -> int:
    return len(shard_indices(len(plan_windows(13, worker.WINDOWED)), rank, WORLD_SIZE))


@pytest.mark.slow
def test_ranks_join_one_gloo_group_and_collectives_agree(launch: Launch) -> None:
    assert [r["rank"] for r in launch.ranks] == list(range(WORLD_SIZE))
    for r in launch.ranks:
        assert (r["world_size"], r["backend"]) == (WORLD_SIZE, "gloo")
        assert r["all_reduce_sum"] == sum(range(1, WORLD_SIZE + 1))
        assert r["broadcast"] == {"from": 0}
        assert r["broadcast_tensor"] == [5.0, 5.0]
        assert r["all_gather"] == [10 * k for k in range(WORLD_SIZE)]
        assert r["broadcast_tensors"] == {"a": ["torch.float32", [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]], "b": ["torch.int64", [7]]}


@pytest.mark.slow
def test_sharded_windowed_render_equals_single_process_bit_for_bit(launch: Launch, fixtures_dir: Path) -> None:
    steps = len(plan_steps(worker.WINDOWED))
    for rank, r in enumerate(launch.ranks):
        assert torch.equal(launch.tensors[f"sharded_rank{rank}"], launch.tensors[f"alone_rank{rank}"])
        assert r["sharded_equals_alone"] and r["resumed_equals_alone"]
        # each rank ran only its windows, both branches, at every step
        assert r["sharded_calls"] == steps * 2 * _local_windows(rank)
        assert r["alone_calls"] == steps * 2 * len(plan_windows(13, worker.WINDOWED))
    assert sum(r["sharded_calls"] for r in launch.ranks) == launch.ranks[0]["alone_calls"]
    assert torch.equal(launch.tensors["sharded_rank0"], launch.tensors["sharded_rank1"])
    # And it matches a render in this process (float tolerance: another process's threads).
    unet = load_fixture_unet(fixtures_dir / "unet_tiny")
    conditions, x_T = worker.make_clip(13, worker.clip_sizes(fixtures_dir / "unet_tiny"), seed=3)
    with _one_thread():  # as the workers; 2 threads on a busy 2-core machine are 10x slower
        here = render_latents(unet, conditions, x_T, worker.WINDOWED)
    assert torch.isfinite(here).all()
    torch.testing.assert_close(launch.tensors["sharded_rank0"], here, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_stopped_sharded_render_resumes_to_the_same_latent(launch: Launch) -> None:
    steps = len(plan_steps(worker.WINDOWED))
    k = worker.STOP_AFTER
    # only rank 0 keeps checkpoints (the CLI's rule for files), one per finished step
    assert (launch.ranks[0]["checkpoints_full"], launch.ranks[0]["checkpoints_stopped"]) == (steps, k)
    assert (launch.ranks[1]["checkpoints_full"], launch.ranks[1]["checkpoints_stopped"]) == (0, 0)
    for rank, r in enumerate(launch.ranks):
        assert r["stopped"] and r["resumed_from"] == k
        assert r["resumed_calls"] == (steps - k) * 2 * _local_windows(rank)  # steps 0..k-1 not redone
        assert torch.equal(launch.tensors[f"resumed_rank{rank}"], launch.tensors[f"alone_rank{rank}"])


@pytest.mark.slow
def test_ranks_with_different_inputs_are_refused(launch: Launch) -> None:
    assert all(r["mismatch_refused"] for r in launch.ranks)
    assert all(r["batch_mismatch_refused"] for r in launch.ranks)


@pytest.mark.slow
def test_batch_jobs_run_once_each_with_single_process_results(launch: Launch) -> None:
    jobs = [f"job-{i}" for i in range(worker.NUM_JOBS)]
    seen = launch.ranks[0]["batch_seen"]
    assert all(r["batch_seen"] == seen for r in launch.ranks)  # every rank has every result
    assert [job for _, job, _, _ in seen] == jobs  # each job exactly once, in job order
    per_rank = [sum(1 for _, _, rank, _ in seen if rank == r) for r in range(WORLD_SIZE)]
    assert sum(per_rank) == len(jobs) and max(per_rank) - min(per_rank) <= 1
    assert len({rank for _, _, rank, _ in seen}) == WORLD_SIZE
    for index, job, _, error in seen:
        if index == worker.FAILING_JOB:  # a user error is recorded; the rank went on
            assert error is not None and "no person found" in error
            assert f"batch_{job}" not in launch.tensors
            continue
        assert error is None
        conditions, x_T = worker.make_clip(16, worker.TOY_SIZES, seed=index)
        here = render_latents(worker.ToyUNet(), conditions, x_T, worker.TOY)
        torch.testing.assert_close(launch.tensors[f"batch_{job}"], here, rtol=1e-6, atol=1e-6)


def test_single_process_batch_records_user_errors_and_goes_on() -> None:
    def run_job(job: int) -> int:
        if job == 2:
            raise InputError("job 2: bad photo", "use another")
        return job * 10

    results = run_batch_jobs([1, 2, 3], DistContext.single(), run_job)
    assert [(r.job, r.ok, r.value) for r in results] == [(1, True, 10), (2, False, None), (3, True, 30)]
    assert results[1].error is not None and "bad photo" in results[1].error

    def buggy(job: int) -> int:
        raise KeyError(job)

    with pytest.raises(KeyError):  # our bugs are not swallowed
        run_batch_jobs([1], DistContext.single(), buggy)
