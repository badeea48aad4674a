"""MNIST and Fashion-MNIST from their original IDX files (gzipped or not).

IDX format (LeCun): a 4-byte magic number ``0x0000TTDD`` (TT = 0x08 for unsigned
bytes, DD = number of dimensions), DD big-endian uint32 sizes, then the data in C
order. Images are ``0x00000803`` ``[N, rows, cols]``, labels ``0x00000801`` ``[N]``.
A file is read as gzip when it starts with the gzip magic bytes, whatever its name.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np
import torch

from genlab.data import download as dl
from genlab.data.core import DatasetInfo, ImageDataset, download_dir, search_dirs
from genlab.errors import DataError

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801

CLASS_NAMES = {
    "mnist": tuple(str(i) for i in range(10)),
    "fashion-mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
}
_PREFIX = {"train": "train", "test": "t10k"}


def split_files(split: str) -> tuple[str, str]:
    """Base names (without .gz) of the image and label files of ``split``."""
    p = _PREFIX[split]
    return f"{p}-images-idx3-ubyte", f"{p}-labels-idx1-ubyte"


def _read_bytes(path: Path, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DataError(f"cannot read {what} file {path} ({e.strerror}); check its permissions "
                        f"or pass {{data.root}} to another copy.") from e
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        # gzip.BadGzipFile is an OSError; a cut file gives EOFError.
        raise DataError(f"{what} file {path} is a truncated or corrupt gzip file ({e}); delete it and "
                        f"download it again, or pass {{data.root}} to a complete copy.") from e


def read_idx(path: str | os.PathLike, magic: int, what: str = "IDX") -> np.ndarray:
    """Read one IDX file (gzipped or not) whose magic number must be ``magic``; uint8 array."""
    path = Path(path)
    data = _read_bytes(path, what)
    fix = "delete it and download it again, or pass --data-dir to a complete copy"
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < 4:
        raise DataError(f"{what} file {path} is truncated (only {len(data)} bytes, not even an IDX "
                        f"header); {fix}.")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise DataError(f"{what} file {path} is not the expected IDX file (magic number 0x{found:08x}, "
                        f"expected 0x{magic:08x}); {fix}.")
    if len(data) < header:
        raise DataError(f"{what} file {path} is truncated (its IDX header needs {header} bytes, found "
                        f"{len(data)}); {fix}.")
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    expected = int(np.prod(shape, dtype=np.int64))
    found_n = len(data) - header
    if found_n < expected:
        raise DataError(f"{what} file {path} is truncated (expected {expected} bytes of "
                        f"{'pixels' if ndim > 1 else 'labels'}, found {found_n}); {fix}.")
    if found_n > expected:
        raise DataError(f"{what} file {path} is corrupt ({found_n - expected} bytes more than its header "
                        f"{shape} announces); {fix}.")
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


def _find(name: str, split: str, root) -> tuple[Path, Path] | None:
    """The first folder holding both files of ``split`` (each with or without .gz)."""
    for d in search_dirs(name, root):
        found: list[Path | None] = []
        for base in split_files(split):
            # Prefer the plain file: reading it skips the decompression.
            hit = next((d / f for f in (base, base + ".gz") if (d / f).is_file()), None)
            found.append(hit)
        images, labels = found  # split_files gives two names
        if images is not None and labels is not None:
            return images, labels
    return None


def load_idx_dataset(name: str, split: str, root=None, *, download: bool = True,
                     timeout: float = 30.0) -> ImageDataset:
    """MNIST or Fashion-MNIST ``split`` ("train": 60000 images, "test": 10000), 1x28x28, 256 levels.

    Looks for ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`` in ``root`` or
    ``root/<name>/``; without ``root``, in ``$GENLAB_DATA[/<name>]`` then the cache.
    Missing files are downloaded (sha256-checked) into ``root`` or the cache unless
    ``download=False``.
    """
    display = dl.DISPLAY_NAMES[name]
    if root is not None and Path(root).expanduser().exists() and not Path(root).expanduser().is_dir():
        raise DataError(f"{display} data folder {root} is a file, not a folder; pass {{data.root}} to the "
                        f"folder that holds the IDX files.")
    paths: tuple[Path, ...] | None = _find(name, split, root)
    if paths is None:
        target = download_dir(name, root)
        wanted = [f + ".gz" for f in split_files(split)]
        if not download:
            looked = ", ".join(str(d) for d in search_dirs(name, root))
            raise DataError(f"{display} files {' and '.join(wanted)} were not found (looked in {looked}); "
                            f"put them in {target} or pass {{data.root}} to a folder that holds them.")
        paths = tuple(dl.download(name, wanted, target, timeout=timeout))
    images_path, labels_path = paths
    images = read_idx(images_path, IMAGES_MAGIC, f"{display} images")
    labels = read_idx(labels_path, LABELS_MAGIC, f"{display} labels")
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{display} images file {images_path} holds {images.shape[0]} images but labels "
                        f"file {labels_path} holds {labels.shape[0]} labels; replace the mismatched file "
                        f"with a complete copy.")
    classes = CLASS_NAMES[name]
    if labels.size and int(labels.max()) >= len(classes):
        raise DataError(f"{display} labels file {labels_path} is corrupt (label {int(labels.max())} is not "
                        f"in 0..{len(classes) - 1}); delete it and download it again.")
    n, h, w = images.shape
    info = DatasetInfo(name=name, channels=1, height=h, width=w, levels=256,
                       num_classes=len(classes), class_names=classes)
    # frombuffer arrays are read-only views of a bytes object; copy into a torch-owned tensor.
    return ImageDataset(images=torch.from_numpy(images.reshape(n, 1, h, w).copy()),
                        labels=torch.from_numpy(labels.astype(np.int64)), info=info, split=split)
