"""Test isolation shared by every test: no network, no user config, built-in stages only.

The golden fixtures are read in place from ``../shared/fixtures`` (or ``$UNIANIMATE_FIXTURES``);
they are never copied into the project.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

# huggingface_hub reads HF_HUB_OFFLINE once, when first imported (open_clip imports it while
# test modules are collected, before any fixture runs): set it before that happens.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _find_fixtures() -> Path:
    configured = os.environ.get("UNIANIMATE_FIXTURES")
    if configured:
        return Path(configured)
    return REPO_ROOT.parent / "shared" / "fixtures"


FIXTURES = _find_fixtures()


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The shared golden fixtures; tests that need them skip only if the folder is absent."""
    if not FIXTURES.is_dir():
        pytest.skip(f"shared fixtures not found at {FIXTURES}")
    return FIXTURES


@pytest.fixture(autouse=True)
def _isolated_environment(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point user config and data dirs at temp dirs and load only the built-in stages."""
    home = tmp_path_factory.mktemp("user")
    monkeypatch.setenv("UNIANIMATE_CONFIG_DIR", str(home / "config"))
    monkeypatch.setenv("UNIANIMATE_DATA_DIR", str(home / "data"))
    monkeypatch.setenv("UNIANIMATE_STAGES", "builtin")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in list(os.environ):
        if name.startswith("UNIANIMATE_") and name not in {
            "UNIANIMATE_CONFIG_DIR",
            "UNIANIMATE_DATA_DIR",
            "UNIANIMATE_STAGES",
            "UNIANIMATE_FIXTURES",
        }:
            monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any test that opens a connection to anything but this machine."""
    real_connect = socket.socket.connect

    def guarded_connect(self: socket.socket, address: object) -> None:
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and (host.startswith("127.") or host in {"localhost", "::1"}):
            return real_connect(self, address)  # type: ignore[arg-type]
        if self.family == socket.AF_UNIX:
            return real_connect(self, address)  # type: ignore[arg-type]
        raise RuntimeError(f"tests must not use the network (tried {address!r})")

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)


@pytest.fixture(autouse=True, scope="session")
def _deterministic_torch() -> None:
    """float32 parity needs TF32 off; set once, cheaply, only if torch is importable."""
    try:
        import torch
    except ImportError:
        return
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``@pytest.mark.gpu`` tests where no CUDA device is present."""
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if has_cuda:
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="module")
def torch_threads(request: pytest.FixtureRequest) -> Iterator[int]:
    """Cap torch's intra-op threads for a test module (its ``TORCH_THREADS``, default 2).

    Tiny models gain nothing from more threads, and on a shared, busy 2-core machine OpenMP's
    spinning threads slow them down many times. Use with
    ``pytestmark = pytest.mark.usefixtures("torch_threads")``.
    """
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(min(int(getattr(request.module, "TORCH_THREADS", 2)), saved))
    yield torch.get_num_threads()
    torch.set_num_threads(saved)
