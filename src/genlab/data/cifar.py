"""CIFAR-10 from the official binary or python (pickle) batches; never downloaded.

Accepted layouts, searched in ``root`` (else ``$GENLAB_DATA``, then the cache; each
also under a ``cifar10/`` sub-folder):

- ``cifar-10-batches-bin/`` with ``data_batch_1.bin`` .. ``data_batch_5.bin`` and
  ``test_batch.bin``: records of 1 label byte + 3072 pixel bytes (R, G, B planes of
  32x32, row-major), preferred because reading it involves no pickle;
- ``cifar-10-batches-py/`` with ``data_batch_1`` .. ``data_batch_5`` and ``test_batch``:
  Python 2 pickles of ``{b"data": uint8 [n, 3072], b"labels": [n ints], ...}``;
- either folder given directly as ``root``, or the unextracted official archives
  ``cifar-10-binary.tar.gz`` / ``cifar-10-python.tar.gz`` (read in place).

The pickles go through :class:`RestrictedUnpickler`, which resolves only the globals
that numpy arrays need, so a crafted batch file cannot run code.
"""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import cast

import numpy as np
import torch

from genlab.data.core import DatasetInfo, ImageDataset, search_dirs
from genlab.errors import DataError

CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
RECORD = 1 + 3 * 32 * 32
BATCHES = {
    "bin": {"train": [f"data_batch_{i}.bin" for i in range(1, 6)], "test": ["test_batch.bin"]},
    "py": {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]},
}
ARCHIVES = {"bin": "cifar-10-binary.tar.gz", "py": "cifar-10-python.tar.gz"}


def _numpy_globals() -> dict[tuple[str, str], object]:
    # Old pickles name numpy.core.*, numpy >= 2 writes numpy._core.*; resolve both to
    # whatever this numpy has, without importing the deprecated numpy.core alias.
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy < 2
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
    allowed: dict[tuple[str, str], object] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for pkg in ("numpy.core", "numpy._core"):
        allowed[(f"{pkg}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{pkg}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{pkg}.numeric", "_frombuffer")] = numeric._frombuffer  # type: ignore[attr-defined]  # pickle protocol 5; private, not in numpy's stubs
    allowed[("_codecs", "encode")] = _latin1_encode  # bytes in protocol-2 pickles written by Python 3
    return allowed


def _latin1_encode(text, encoding="latin1", errors="strict"):
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1", errors)


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler for numpy arrays in plain containers; any other global is refused."""

    _allowed: dict[tuple[str, str], object] | None = None

    def find_class(self, module: str, name: str):
        if RestrictedUnpickler._allowed is None:
            RestrictedUnpickler._allowed = _numpy_globals()
        allowed = self._allowed
        assert allowed is not None  # set just above
        try:
            return allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}") from None


def restricted_loads(data: bytes, encoding: str = "bytes"):
    return RestrictedUnpickler(io.BytesIO(data), encoding=encoding).load()


def _parse_bin(data: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    if len(data) == 0 or len(data) % RECORD:
        raise DataError(f"CIFAR-10 batch {where} is truncated or corrupt ({len(data)} bytes is not a "
                        f"whole number of {RECORD}-byte records); replace it with a complete copy.")
    records = np.frombuffer(data, np.uint8).reshape(-1, RECORD)
    return records[:, 1:].reshape(-1, 3, 32, 32), records[:, 0].astype(np.int64)


def _parse_py(data: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    fix = "replace it with a copy from the official cifar-10-python.tar.gz"
    try:
        batch = restricted_loads(data)
    except Exception as e:  # a crafted or damaged pickle can raise nearly anything
        raise DataError(f"CIFAR-10 batch {where} cannot be read safely ({type(e).__name__}: {e}); {fix}.") from e
    if not isinstance(batch, dict):
        raise DataError(f"CIFAR-10 batch {where} is not a CIFAR-10 python batch (it holds a "
                        f"{type(batch).__name__}, not a dict); {fix}.")
    get = lambda key: batch.get(key.encode(), batch.get(key))  # noqa: E731 (bytes keys, or str if re-saved)
    images, labels = get("data"), get("labels")
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 2 \
            or images.shape[1] != 3072:
        raise DataError(f"CIFAR-10 batch {where} has no uint8 [n, 3072] 'data' array; {fix}.")
    try:
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError) as e:
        raise DataError(f"CIFAR-10 batch {where} has no list of integer 'labels'; {fix}.") from e
    if labels.shape[0] != images.shape[0]:
        raise DataError(f"CIFAR-10 batch {where} holds {images.shape[0]} images but {labels.shape[0]} "
                        f"labels; {fix}.")
    return images.reshape(-1, 3, 32, 32), labels


def _locate(root) -> tuple[str, Callable[[list[str]], list[bytes]], str] | None:
    """Find a CIFAR-10 copy: (format, reader of batches by file names, description) or None."""
    bases = []
    for d in search_dirs("cifar10", root):
        bases += [d, d / "cifar-10-batches-bin", d / "cifar-10-batches-py"]
    for d in bases:
        for fmt in ("bin", "py"):
            if (d / BATCHES[fmt]["test"][0]).is_file() or (d / BATCHES[fmt]["train"][0]).is_file():
                return fmt, _dir_reader(d), str(d)
    for d in search_dirs("cifar10", root):
        for fmt in ("bin", "py"):
            archive = d if d.name == ARCHIVES[fmt] else d / ARCHIVES[fmt]
            if archive.is_file():
                return fmt, _tar_reader(archive, f"cifar-10-batches-{fmt}/"), str(archive)
    return None


def _dir_reader(folder: Path) -> Callable[[list[str]], list[bytes]]:
    def read(filenames: list[str]) -> list[bytes]:
        out = []
        for filename in filenames:
            path = folder / filename
            if not path.is_file():
                raise DataError(f"CIFAR-10 batch {path} is missing; copy all the batches of the official "
                                f"archive into {folder}.")
            try:
                out.append(path.read_bytes())
            except OSError as e:
                raise DataError(f"cannot read CIFAR-10 batch {path} ({e.strerror}); check its permissions.") from e
        return out
    return read


def _tar_reader(archive: Path, prefix: str) -> Callable[[list[str]], list[bytes]]:
    def read(filenames: list[str]) -> list[bytes]:
        # One pass over the (gzipped) archive; members are read in place, never extracted.
        wanted: dict[str, bytes | None] = {prefix + f: None for f in filenames}
        try:
            with tarfile.open(archive, "r:*") as tar:
                for member in tar:
                    if member.name in wanted and member.isfile():
                        f = tar.extractfile(member)
                        assert f is not None  # a regular file's member
                        wanted[member.name] = f.read()
        except (tarfile.TarError, OSError, EOFError) as e:
            raise DataError(f"CIFAR-10 archive {archive} is truncated or corrupt ({e}); download the "
                            f"official archive again.") from e
        missing = [name for name, data in wanted.items() if data is None]
        if missing:
            raise DataError(f"CIFAR-10 archive {archive} has no member {missing[0]}; download the "
                            f"official archive again.")
        return cast("list[bytes]", list(wanted.values()))  # none is missing
    return read


def load_cifar10(split: str, root=None) -> ImageDataset:
    """CIFAR-10 ``split`` ("train": data_batch_1..5, 50000 images; "test": test_batch, 10000), 3x32x32."""
    found = _locate(root)
    if found is None:
        where = Path(root).expanduser() if root is not None else (
            os.environ.get("GENLAB_DATA") or search_dirs("cifar10", None)[-1])
        raise DataError(f"CIFAR-10 was not found; put the extracted cifar-10-batches-py or cifar-10-batches-bin "
                        f"folder (from https://www.cs.toronto.edu/~kriz/cifar.html) in {where}, or pass "
                        f"{{data.root}} to a folder that holds one.")
    fmt, read, where = found
    parse = _parse_bin if fmt == "bin" else _parse_py
    images, labels = [], []
    filenames = BATCHES[fmt][split]
    for filename, data in zip(filenames, read(filenames), strict=False):
        x, y = parse(data, f"{where}/{filename}")
        if y.size and (y.min() < 0 or y.max() >= len(CLASS_NAMES)):
            raise DataError(f"CIFAR-10 batch {where}/{filename} is corrupt (a label is outside 0..9); "
                            f"replace it with a complete copy.")
        images.append(x)
        labels.append(y)
    info = DatasetInfo(name="cifar10", channels=3, height=32, width=32, levels=256,
                       num_classes=len(CLASS_NAMES), class_names=CLASS_NAMES)
    return ImageDataset(images=torch.from_numpy(np.concatenate(images)),
                        labels=torch.from_numpy(np.concatenate(labels)), info=info, split=split)
