"""Dataset containers and the shared helpers of the loaders (splits, search paths, cache).

Images stay uint8 until :mod:`genlab.data.transforms` turns them into model floats:
``images`` is ``[N, C, H, W]`` with values ``0..levels-1`` (``levels`` = K grey
levels per channel: 256 for 8-bit data, 17 for scikit-learn's digits).

Where data is looked for (IDX files, CIFAR-10 batches, the CIFAR-10 JPEG zip):

1. ``root`` when given (and only there: an explicit path is never second-guessed);
2. otherwise the folder named by the environment variable ``GENLAB_DATA``;
3. then the cache, ``$XDG_CACHE_HOME/genlab/data`` (default ``~/.cache/genlab/data``),
   which is also where downloads go when no ``root`` is given.

In each place a dataset may sit directly in the folder or in a sub-folder named after
the dataset (``<dir>/mnist/``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from genlab.errors import DataError

SPLITS = ("train", "test")


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a dataset's samples."""

    name: str  # "digits", "mnist", "fashion-mnist", "cifar10", "cifar10-jpeg", "folder", "toy2d"
    channels: int
    height: int
    width: int
    levels: int  # K values per channel: 256 for 8-bit data, 17 for the digits, 0 = continuous
    num_classes: int
    class_names: tuple[str, ...]


@dataclass
class ImageDataset:
    """uint8 images ``[N, C, H, W]`` in ``0..info.levels-1`` and int64 labels ``[N]``."""

    images: torch.Tensor
    labels: torch.Tensor
    info: DatasetInfo
    split: str

    def __post_init__(self) -> None:
        # Cheap shape/dtype checks: a loader bug should fail here, not in the training loop.
        info = self.info
        expected = (info.channels, info.height, info.width)
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or tuple(self.images.shape[1:]) != expected:
            raise ValueError(f"images must be uint8 [N, {expected[0]}, {expected[1]}, {expected[2]}], "
                             f"got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or tuple(self.labels.shape) != (self.images.shape[0],):
            raise ValueError(f"labels must be int64 [{self.images.shape[0]}], got {self.labels.dtype} "
                             f"{tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index):
        return self.images[index], self.labels[index]


@dataclass
class PointDataset:
    """float32 points ``[N, 2]`` of a 2-D toy density and int64 labels ``[N]`` (mixture component, else 0)."""

    points: torch.Tensor
    labels: torch.Tensor
    info: DatasetInfo
    split: str
    variant: str

    def __len__(self) -> int:
        return self.points.shape[0]

    def __getitem__(self, index):
        return self.points[index], self.labels[index]


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}.")
    return split


def cache_dir() -> Path:
    """Root of genlab's data cache: ``$XDG_CACHE_HOME/genlab/data`` or ``~/.cache/genlab/data``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "genlab" / "data"


def search_dirs(name: str, root: str | os.PathLike | None) -> list[Path]:
    """Folders to look in for dataset ``name``, in order (see the module docstring)."""
    if root is not None:
        r = Path(root).expanduser()
        return [r, r / name]
    dirs = []
    env = os.environ.get("GENLAB_DATA")
    if env:
        e = Path(env).expanduser()
        dirs += [e, e / name]
    dirs.append(cache_dir() / name)
    return dirs


def download_dir(name: str, root: str | os.PathLike | None) -> Path:
    """Where missing files of ``name`` are downloaded: ``root`` itself, else the cache."""
    return Path(root).expanduser() if root is not None else cache_dir() / name
