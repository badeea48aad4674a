import os
import socket
from pathlib import Path

import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def one_thread():
    """For modules of tiny networks: one thread runs them as fast as two, and many times faster when the
    two cores are shared with other jobs (each parallel region then waits for a busy core)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _shared_data():
    path = Path(os.environ.get("GENLAB_SHARED_DATA", REPO.parent / "shared" / "data"))
    return path if path.is_dir() else None


SHARED = _shared_data()  # ../shared/data (or $GENLAB_SHARED_DATA); None when absent


def needs_shared(test):
    """Mark a test that reads the real datasets in ../shared/data; it skips without them."""
    skip = pytest.mark.skipif(SHARED is None, reason="needs ../shared/data (or GENLAB_SHARED_DATA)")
    return pytest.mark.shared_data(skip(test))


def unreachable_url():
    """A port nobody listens on: connecting fails at once, and nothing leaves this machine."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


# a U-Net small enough for tests: two levels of 16 and 32 channels on the 8x8 digits
TINY = ["--channels", "16,32", "--res-blocks", "1", "--attn", "4", "--norm-groups", "8", "--timesteps", "50",
        "--batch-size", "32", "--log-every", "5", "--sample-every", "0", "--grid-steps", "5", "--no-progress"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny digits run (4 steps of the TINY U-Net), one per test module that asks for it."""
    from genlab.cli import main

    out = tmp_path_factory.mktemp("run") / "run"
    assert main(["train", *TINY, "--steps", "4", "--eval-limit", "8", "--out", str(out)]) == 0
    return out


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """Never read or write the user's cache or $GENLAB_DATA from tests: the cache is tmp_path/cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("GENLAB_DATA", raising=False)


@pytest.fixture
def offline(monkeypatch):
    """Every download mirror points at a closed port on 127.0.0.1."""
    from genlab.data import download as dl

    url = unreachable_url()
    monkeypatch.setattr(dl, "MIRRORS", {name: (url,) for name in dl.MIRRORS})
