"""Image folders and zips (<split>/<class>/<image>), the .npz cache, and the real CIFAR-10 JPEG zip."""

import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import SHARED, needs_shared
from genlab.data import folder as folder_mod
from genlab.data import load_dataset
from genlab.errors import DataError


def make_tree(root, spec, size=(6, 4), mode="RGB", ext="png", seed=0):
    """spec: {split: {class: count}}; returns {split: [(array, class), ...]} in load order."""
    rng = np.random.default_rng(seed)
    made = {}
    for split, classes in spec.items():
        made[split] = []
        for cls in sorted(classes):
            d = Path(root) / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(classes[cls]):
                shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
                a = rng.integers(0, 256, shape, dtype=np.uint8)
                Image.fromarray(a, mode).save(d / f"{i:03d}.{ext}")
                made[split].append((a, cls))
    return made


def zip_tree(src, archive, prefix=""):
    with zipfile.ZipFile(archive, "w") as z:
        for p in sorted(Path(src).rglob("*")):
            if p.is_file():
                z.write(p, prefix + p.relative_to(src).as_posix())
    return archive


SPEC = {"train": {"cat": 3, "dog": 2, "emu": 1}, "test": {"cat": 1, "emu": 2}}


@pytest.mark.parametrize("mode,channels", [("RGB", 3), ("L", 1)])
def test_folder_round_trip(tmp_path, mode, channels):
    made = make_tree(tmp_path / "imgs", SPEC, mode=mode)
    for split in ("train", "test"):
        d = load_dataset("folder", split, root=tmp_path / "imgs")
        assert d.info.class_names == ("cat", "dog", "emu")  # union of both splits
        assert (d.info.channels, d.info.height, d.info.width, d.info.levels) == (channels, 4, 6, 256)
        assert d.images.dtype == torch.uint8 and d.images.shape == (len(made[split]), channels, 4, 6)
        expected = np.stack([a if a.ndim == 3 else a[..., None] for a, _ in made[split]]).transpose(0, 3, 1, 2)
        assert np.array_equal(d.images.numpy(), expected)
        assert d.labels.tolist() == [d.info.class_names.index(c) for _, c in made[split]]
    assert load_dataset("folder", "test", root=tmp_path / "imgs").labels.tolist() == [0, 2, 2]


@pytest.mark.parametrize("prefix", ["", "wrapped/"])
def test_zip_equals_folder(tmp_path, prefix):
    make_tree(tmp_path / "imgs", SPEC, ext="jpg")
    (tmp_path / "imgs" / "train" / "cat" / "notes.txt").write_text("ignored")
    archive = zip_tree(tmp_path / "imgs", tmp_path / "imgs.zip", prefix)
    a = load_dataset("folder", "train", root=tmp_path / "imgs")
    b = load_dataset("folder", "train", root=archive)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert a.info == b.info


def test_mixed_modes_give_rgb_and_channels_can_be_forced(tmp_path):
    make_tree(tmp_path / "imgs", {"train": {"a": 2}}, mode="L")
    make_tree(tmp_path / "imgs", {"train": {"b": 1}}, mode="RGB", seed=1)
    d = load_dataset("folder", "train", root=tmp_path / "imgs")
    assert d.info.channels == 3
    grey = d.images[0]
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])  # replicated
    one = load_dataset("folder", "train", root=tmp_path / "imgs", channels=1)
    assert one.images.shape == (3, 1, 4, 6) and torch.equal(one.images[0], grey[:1])
    with pytest.raises(DataError, match="channels must be 1 or 3"):
        load_dataset("folder", "train", root=tmp_path / "imgs", channels=2)


def test_size_mismatch_names_the_file(tmp_path):
    make_tree(tmp_path / "imgs", {"train": {"a": 2}})
    Image.new("RGB", (5, 5)).save(tmp_path / "imgs" / "train" / "a" / "odd.png")
    with pytest.raises(DataError, match="odd.png is 5x5 but .* is 6x4"):
        load_dataset("folder", "train", root=tmp_path / "imgs")


@pytest.mark.parametrize("zipped", [False, True])
def test_corrupt_image_names_the_file(tmp_path, zipped):
    make_tree(tmp_path / "imgs", {"train": {"a": 2}})
    good = (tmp_path / "imgs" / "train" / "a" / "000.png").read_bytes()
    (tmp_path / "imgs" / "train" / "a" / "001.png").write_bytes(good[: len(good) // 2])  # truncated
    (tmp_path / "imgs" / "train" / "a" / "002.jpg").write_bytes(b"not a jpeg at all")
    root = zip_tree(tmp_path / "imgs", tmp_path / "x.zip") if zipped else tmp_path / "imgs"
    with pytest.raises(DataError, match="001.png is corrupt or not an image"):
        load_dataset("folder", "train", root=root, cache=False)


def test_layout_errors(tmp_path):
    with pytest.raises(DataError, match="needs a folder"):
        load_dataset("folder", "train")
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("folder", "train", root=tmp_path / "missing")
    make_tree(tmp_path / "imgs", {"train": {"a": 1}})
    with pytest.raises(DataError, match="no images under test/<class>/ .*found: train"):
        load_dataset("folder", "test", root=tmp_path / "imgs")
    Image.new("RGB", (6, 4)).save(tmp_path / "imgs" / "train" / "loose.png")
    with pytest.raises(DataError, match="loose.png lies directly in the train folder"):
        load_dataset("folder", "train", root=tmp_path / "imgs")
    bad_zip = tmp_path / "bad.zip"
    bad_zip.write_bytes(b"PK\x03\x04 garbage")
    with pytest.raises(DataError, match="not a readable zip"):
        load_dataset("folder", "train", root=bad_zip)


def test_cache_is_used_and_invalidated(tmp_path, monkeypatch):
    make_tree(tmp_path / "imgs", SPEC)
    archive = zip_tree(tmp_path / "imgs", tmp_path / "imgs.zip")
    first = load_dataset("folder", "train", root=archive)
    cached = list((tmp_path / "cache" / "genlab" / "data" / "folder").glob("*.npz"))
    assert len(cached) == 1 and not list(cached[0].parent.glob("*.part"))
    with np.load(cached[0], allow_pickle=False) as z:
        assert set(z.files) == {"images", "labels", "class_names"}

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although the cache is valid")

    monkeypatch.setattr(folder_mod, "_decode_all", no_decoding)
    second = load_dataset("folder", "train", root=archive)
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)
    assert first.info == second.info
    monkeypatch.undo()
    monkeypatch.delenv("GENLAB_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    # a changed archive (new size and mtime) is decoded again
    make_tree(tmp_path / "imgs", {"train": {"cat": 4}}, seed=5)
    zip_tree(tmp_path / "imgs", archive)
    os.utime(archive, ns=(0, 10**18))
    third = load_dataset("folder", "train", root=archive)
    assert len(third) == len(first) + 1

    # a damaged cache file is ignored and rebuilt
    for f in (tmp_path / "cache" / "genlab" / "data" / "folder").glob("*.npz"):
        f.write_bytes(b"junk")
    assert torch.equal(load_dataset("folder", "train", root=archive).images, third.images)


@needs_shared
def test_real_cifar10_jpeg_zip_test_split(tmp_path, monkeypatch):
    archive = SHARED / "cifar10-jpeg" / "cifar10-jpeg-q75.zip"
    d = load_dataset("folder", "test", root=archive)
    assert d.images.shape == (10000, 3, 32, 32) and d.images.dtype == torch.uint8
    assert d.info.class_names == ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                                  "ship", "truck")
    assert torch.bincount(d.labels).tolist() == [1000] * 10
    assert 0 < d.images.float().mean() < 255
    # the alias finds the zip through GENLAB_DATA and reuses the cache (same archive, same key)
    monkeypatch.setenv("GENLAB_DATA", str(SHARED))
    monkeypatch.setattr(folder_mod, "_decode_all", lambda *a, **k: pytest.fail("cache not used"))
    alias = load_dataset("cifar10-jpeg", "test")
    assert alias.info.name == "cifar10-jpeg" and torch.equal(alias.images, d.images)
    assert torch.equal(load_dataset("cifar10-jpeg", "test", root=SHARED).labels, d.labels)


def test_cifar10_jpeg_missing(tmp_path):
    with pytest.raises(DataError, match="cifar10-jpeg-q75.zip was not found"):
        load_dataset("cifar10-jpeg", "test", root=tmp_path)
