"""Downloading IDX files, against an HTTP server on 127.0.0.1 started inside the test (never the internet)."""

import functools
import gzip
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from conftest import SHARED, unreachable_url
from genlab.data import download as dl
from genlab.data import load_dataset
from genlab.errors import DataError

pytestmark = [pytest.mark.usefixtures("offline"), pytest.mark.shared_data,
              pytest.mark.skipif(SHARED is None, reason="needs ../shared/data (or GENLAB_SHARED_DATA)")]
TEST_FILES = ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def serve():
    """serve(folder) -> base URL of an HTTP server on 127.0.0.1 serving that folder."""
    servers = []

    def start(folder):
        handler = functools.partial(QuietHandler, directory=str(folder))
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def no_partial_files(folder):
    return not any(".part" in p.name for p in Path(folder).rglob("*"))


def test_download_into_root(tmp_path, serve, monkeypatch):
    monkeypatch.setitem(dl.MIRRORS, "mnist", (serve(SHARED / "mnist"),))
    root = tmp_path / "new" / "mnist-data"
    d = load_dataset("mnist", "test", root=root)
    assert sorted(p.name for p in root.iterdir()) == TEST_FILES
    for f in TEST_FILES:
        assert (root / f).read_bytes() == (SHARED / "mnist" / f).read_bytes()
    ref = load_dataset("mnist", "test", root=SHARED)
    assert torch.equal(d.images, ref.images) and torch.equal(d.labels, ref.labels)


def test_download_into_cache_and_reuse(tmp_path, serve, monkeypatch):
    monkeypatch.setitem(dl.MIRRORS, "fashion-mnist", (serve(SHARED / "fashion-mnist"),))
    load_dataset("fashion-mnist", "test")
    cache = tmp_path / "cache" / "genlab" / "data" / "fashion-mnist"
    assert sorted(p.name for p in cache.iterdir()) == TEST_FILES
    # second load: no server needed
    monkeypatch.setitem(dl.MIRRORS, "fashion-mnist", (unreachable_url(),))
    assert len(load_dataset("fashion-mnist", "test")) == 10000


def test_404_falls_through_to_next_mirror(tmp_path, serve):
    empty = tmp_path / "empty"
    empty.mkdir()
    paths = dl.download("mnist", TEST_FILES, tmp_path / "out", mirrors=[serve(empty), serve(SHARED / "mnist")])
    assert [p.name for p in paths] == TEST_FILES and all(p.is_file() for p in paths)
    assert no_partial_files(tmp_path / "out")


def test_every_mirror_404s(tmp_path, serve):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="could not download MNIST .*404") as e:
        dl.download("mnist", TEST_FILES, tmp_path / "out", mirrors=[serve(empty), serve(empty)])
    assert str(tmp_path / "out") in str(e.value)
    assert list((tmp_path / "out").iterdir()) == []


def test_checksum_mismatch_keeps_nothing(tmp_path, serve):
    evil = tmp_path / "evil"
    evil.mkdir()
    # a valid gzip of different content, served under the right name
    with gzip.open(SHARED / "mnist" / "t10k-labels-idx1-ubyte.gz") as f:
        data = bytearray(f.read())
    data[-1] = (data[-1] + 1) % 10
    (evil / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes(data)))
    with pytest.raises(DataError, match="corrupt .*sha256") as e:
        dl.download("mnist", ["t10k-labels-idx1-ubyte.gz"], tmp_path / "out", mirrors=[serve(evil)])
    assert "t10k-labels-idx1-ubyte.gz" in str(e.value)
    assert list((tmp_path / "out").iterdir()) == []


def test_checksum_mismatch_then_good_mirror(tmp_path, serve):
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not the file")
    out = tmp_path / "out"
    dl.download("mnist", ["t10k-labels-idx1-ubyte.gz"], out, mirrors=[serve(evil), serve(SHARED / "mnist")])
    assert dl.sha256_file(out / "t10k-labels-idx1-ubyte.gz") == dl.SHA256["mnist"]["t10k-labels-idx1-ubyte.gz"]
    assert no_partial_files(out)


def test_existing_files_are_not_downloaded_again(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    for f in TEST_FILES:
        shutil.copy(SHARED / "mnist" / f, out / f)
    # the only mirror is unreachable, so any download attempt would fail
    assert dl.download("mnist", TEST_FILES, out) == [out / f for f in TEST_FILES]


def test_destination_is_a_file(tmp_path, serve):
    (tmp_path / "f").write_text("x")
    with pytest.raises(DataError, match="cannot create the data folder"):
        dl.download("mnist", TEST_FILES, tmp_path / "f", mirrors=[serve(SHARED / "mnist")])


def test_unknown_file_name(tmp_path):
    with pytest.raises(DataError, match="not a file of MNIST"):
        dl.download("mnist", ["mnist.npz"], tmp_path)


def test_hardcoded_checksums_match_shared_sums():
    sums = {}
    for line in (SHARED / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split()
        sums[name] = digest
    for dataset, files in dl.SHA256.items():
        for filename, digest in files.items():
            assert sums[f"{dataset}/{filename}"] == digest
