"""MNIST / Fashion-MNIST IDX loading: real files, layouts, and every kind of damaged file."""

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import SHARED, needs_shared
from genlab.data import load_dataset
from genlab.data.idx import IMAGES_MAGIC, LABELS_MAGIC, read_idx
from genlab.errors import DataError

pytestmark = pytest.mark.usefixtures("offline")


def write_idx(path, array, magic=None, gz=False):
    array = np.asarray(array, np.uint8)
    magic = (0x0800 | array.ndim) if magic is None else magic
    data = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape) + array.tobytes()
    path = Path(path)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def fake_split(folder, prefix="t10k", n=5, n_labels=None, gz=False):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 28, 28))
    labels = np.arange(n_labels if n_labels is not None else n) % 10
    sfx = ".gz" if gz else ""
    write_idx(folder / f"{prefix}-images-idx3-ubyte{sfx}", images, gz=gz)
    write_idx(folder / f"{prefix}-labels-idx1-ubyte{sfx}", labels, gz=gz)
    return images, labels


# ---------------------------------------------------------------- real files

@pytest.mark.parametrize("name,first", [("mnist", [5, 0, 4, 1, 9]), ("fashion-mnist", [9, 0, 0, 3, 0])])
@pytest.mark.parametrize("layout", ["root", "root/name"])
@needs_shared
def test_real_train(name, first, layout):
    root = SHARED if layout == "root/name" else SHARED / name
    d = load_dataset(name, "train", root=root)
    assert d.images.shape == (60000, 1, 28, 28) and d.images.dtype == torch.uint8
    assert d.labels.dtype == torch.int64 and d.labels.tolist()[:5] == first
    assert d.labels.min() == 0 and d.labels.max() == 9
    assert d.info.levels == 256 and d.info.num_classes == 10 and d.info.name == name
    assert torch.bincount(d.labels).min() > 5000


@pytest.mark.parametrize("name,first", [("mnist", [7, 2, 1, 0, 4]), ("fashion-mnist", [9, 2, 1, 1, 6])])
@needs_shared
def test_real_test_gz_and_plain_agree(tmp_path, name, first):
    d = load_dataset(name, "test", root=SHARED)
    assert d.images.shape == (10000, 1, 28, 28) and d.labels.tolist()[:5] == first
    plain = tmp_path / "plain"
    plain.mkdir()
    for f in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        with gzip.open(SHARED / name / f"{f}.gz") as src, open(plain / f, "wb") as dst:
            shutil.copyfileobj(src, dst)
    p = load_dataset(name, "test", root=plain)
    assert torch.equal(p.images, d.images) and torch.equal(p.labels, d.labels)


@needs_shared
def test_genlab_data_env(tmp_path, monkeypatch):
    monkeypatch.setenv("GENLAB_DATA", str(SHARED))
    assert len(load_dataset("mnist", "test")) == 10000


def test_cache_dir_is_searched(tmp_path):
    images, labels = fake_split(tmp_path / "cache" / "genlab" / "data" / "mnist", gz=True)
    d = load_dataset("mnist", "test")
    assert np.array_equal(d.images[:, 0].numpy(), images) and d.labels.tolist() == labels.tolist()


def test_fake_files_round_trip(tmp_path):
    images, labels = fake_split(tmp_path, prefix="train", n=7)
    d = load_dataset("fashion-mnist", "train", root=tmp_path)
    assert np.array_equal(d.images[:, 0].numpy(), images) and d.labels.tolist() == labels.tolist()
    assert d.info.class_names[9] == "Ankle boot"


# ---------------------------------------------------------------- damaged files

def assert_names(excinfo, path):
    assert str(path) in str(excinfo.value)


@needs_shared
def test_truncated_gz(tmp_path):
    fake_split(tmp_path, gz=True)
    raw = (SHARED / "mnist" / "t10k-images-idx3-ubyte.gz").read_bytes()
    bad = tmp_path / "t10k-images-idx3-ubyte.gz"
    bad.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="truncated or corrupt gzip") as e:
        load_dataset("mnist", "test", root=tmp_path)
    assert_names(e, bad)


def test_truncated_raw_idx(tmp_path):
    fake_split(tmp_path, n=5)
    bad = tmp_path / "t10k-images-idx3-ubyte"
    bad.write_bytes(bad.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"truncated \(expected 3920 bytes of pixels, found 3820\)") as e:
        load_dataset("mnist", "test", root=tmp_path)
    assert_names(e, bad)


def test_truncated_header(tmp_path):
    fake_split(tmp_path)
    bad = tmp_path / "t10k-labels-idx1-ubyte"
    bad.write_bytes(bad.read_bytes()[:6])
    with pytest.raises(DataError, match="truncated") as e:
        load_dataset("mnist", "test", root=tmp_path)
    assert_names(e, bad)


def test_extra_bytes(tmp_path):
    fake_split(tmp_path)
    bad = tmp_path / "t10k-labels-idx1-ubyte"
    bad.write_bytes(bad.read_bytes() + b"\0\0")
    with pytest.raises(DataError, match="2 bytes more") as e:
        load_dataset("mnist", "test", root=tmp_path)
    assert_names(e, bad)


def test_wrong_magic(tmp_path):
    fake_split(tmp_path)
    # a labels file where the images file should be
    bad = write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros(5), magic=LABELS_MAGIC)
    with pytest.raises(DataError, match="magic number 0x00000801, expected 0x00000803") as e:
        load_dataset("mnist", "test", root=tmp_path)
    assert_names(e, bad)


def test_label_count_mismatch(tmp_path):
    fake_split(tmp_path, n=5, n_labels=4)
    with pytest.raises(DataError, match="5 images but labels file .* 4 labels") as e:
        load_dataset("mnist", "test", root=tmp_path)
    assert_names(e, tmp_path / "t10k-images-idx3-ubyte")
    assert_names(e, tmp_path / "t10k-labels-idx1-ubyte")


def test_label_out_of_range(tmp_path):
    fake_split(tmp_path)
    bad = write_idx(tmp_path / "t10k-labels-idx1-ubyte", [1, 2, 3, 4, 10])
    with pytest.raises(DataError, match="label 10") as e:
        load_dataset("mnist", "test", root=tmp_path)
    assert_names(e, bad)


@pytest.mark.parametrize("gz", [False, True])
def test_garbage_bytes(tmp_path, gz):
    fake_split(tmp_path, gz=gz)
    garbage = np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8).tobytes()
    if gz:
        garbage = b"\x1f\x8b" + garbage  # looks like gzip, is not
    bad = tmp_path / f"t10k-images-idx3-ubyte{'.gz' if gz else ''}"
    bad.write_bytes(garbage)
    with pytest.raises(DataError) as e:
        load_dataset("mnist", "test", root=tmp_path)
    assert_names(e, bad)


def test_empty_file(tmp_path):
    fake_split(tmp_path)
    bad = tmp_path / "t10k-labels-idx1-ubyte"
    bad.write_bytes(b"")
    with pytest.raises(DataError, match="truncated") as e:
        load_dataset("mnist", "test", root=tmp_path)
    assert_names(e, bad)


def test_read_idx_directly(tmp_path):
    a = np.arange(24).reshape(2, 3, 4)
    write_idx(tmp_path / "x", a, gz=True)
    assert np.array_equal(read_idx(tmp_path / "x", IMAGES_MAGIC), a)


# ---------------------------------------------------------------- missing files

def test_missing_dir_fails_fast_when_download_fails(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match="could not download MNIST .*no network") as e:
        load_dataset("mnist", "test", root=missing)
    assert_names(e, missing)
    assert not any(p.name.endswith(".part") for p in missing.rglob("*"))


def test_missing_without_download(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="were not found") as e:
        load_dataset("fashion-mnist", "train", root=empty, download=False)
    assert_names(e, empty)
    assert list(empty.iterdir()) == []


def test_missing_cache_reports_cache_dir(tmp_path):
    with pytest.raises(DataError, match="could not download Fashion-MNIST") as e:
        load_dataset("fashion-mnist", "test")
    assert_names(e, tmp_path / "cache" / "genlab" / "data" / "fashion-mnist")


def test_root_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(DataError, match="is a file, not a folder"):
        load_dataset("mnist", "test", root=f)
