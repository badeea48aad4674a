"""Datasets as uint8 tensors, and the transforms to and from model space.

``load_dataset(name, split, root=None, **options)`` returns an :class:`ImageDataset`
(uint8 images ``[N, C, H, W]`` in ``0..K-1`` + int64 labels) or, for ``toy2d``, a
:class:`PointDataset`. Every problem a user can cause raises
:class:`genlab.errors.DataError` with one sentence saying what to do.

| name            | source                                                   | options |
|-----------------|----------------------------------------------------------|---------|
| ``digits``      | scikit-learn's bundled 8x8 digits, 17 levels             | |
| ``mnist``       | IDX files, downloaded (sha256-checked) when missing       | download, timeout |
| ``fashion-mnist`` | same as MNIST                                          | download, timeout |
| ``cifar10``     | official binary or python batches (never downloaded)     | |
| ``cifar10-jpeg``| ``cifar10-jpeg-q75.zip`` through the folder loader       | channels, cache |
| ``folder``      | any folder or .zip of ``<split>/<class>/<image>``        | channels, cache |
| ``toy2d``       | 2-D densities: moons, 8gaussians, swissroll, checkerboard | variant, n, seed |
| ``digits-captions`` | digits in a 12x12 canvas, with captions (:mod:`genlab.data.captions`) | |
| ``mnist-captions`` | MNIST shifted -4/0/+4 px, with captions; files as ``mnist`` | download, timeout |
| ``fashion-mnist-captions`` | Fashion-MNIST the same way; files as ``fashion-mnist`` | download, timeout |

Every image dataset also takes ``classes``: a comma-separated list of its class names (or a
sequence of them); only the images of those classes are kept, with their original labels
(``cifar10-jpeg`` with ``classes="horse"``: the horses, for one domain of a CycleGAN).

The ``-captions`` datasets are :class:`~genlab.data.captions.CaptionedDataset` s: each image
with a caption of its class and measured attributes, its tokens and held-out marks.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Sequence
from functools import partial

import torch

from genlab.data.captions import load_digits_captions, load_idx_captions
from genlab.data.cifar import load_cifar10
from genlab.data.core import DatasetInfo, ImageDataset, PointDataset, check_split
from genlab.data.digits import load_digits
from genlab.data.folder import load_cifar10_jpeg, load_folder
from genlab.data.idx import load_idx_dataset
from genlab.data.toy import load_toy2d
from genlab.data.transforms import from_model, levels_to_pixels, to_model
from genlab.errors import DataError

_LOADERS: dict[str, Callable[..., ImageDataset | PointDataset]] = {
    "digits": load_digits,
    "mnist": partial(load_idx_dataset, "mnist"),
    "fashion-mnist": partial(load_idx_dataset, "fashion-mnist"),
    "cifar10": load_cifar10,
    "cifar10-jpeg": load_cifar10_jpeg,
    "folder": load_folder,
    "toy2d": load_toy2d,
    "digits-captions": load_digits_captions,
    "mnist-captions": partial(load_idx_captions, "mnist"),
    "fashion-mnist-captions": partial(load_idx_captions, "fashion-mnist"),
}
DATASETS: tuple[str, ...] = tuple(_LOADERS)


def load_dataset(name: str, split: str = "train", root: str | os.PathLike | None = None,
                 classes: str | Sequence[str] | None = None, **options) -> ImageDataset | PointDataset:
    """Load ``split`` ("train" or "test") of dataset ``name`` (one of :data:`DATASETS`).

    ``root`` is where the files are (ignored by ``digits`` and ``toy2d``); without it,
    loaders look in ``$GENLAB_DATA`` then ``$XDG_CACHE_HOME/genlab/data`` (see
    :mod:`genlab.data.core`). ``options`` are the dataset's own keywords (table above);
    an unknown one is an error.
    """
    loader = _LOADERS.get(name)
    if loader is None:
        raise DataError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}.")
    check_split(split)
    accepted = [p.name for p in inspect.signature(loader).parameters.values() if p.kind is p.KEYWORD_ONLY
                and p.name != "name"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise DataError(f"dataset {name} has no option {unknown[0]!r}; it accepts: "
                        f"{', '.join(accepted) or 'no options'}.")
    ds = loader(split, root, **options)
    return ds if not classes else select_classes(ds, classes)


def select_classes(ds: ImageDataset | PointDataset, classes: str | Sequence[str]) -> ImageDataset:
    """The images of ``ds`` whose class is one of ``classes`` (names; comma-separated in a string), labels kept."""
    if type(ds) is not ImageDataset:  # points, or captioned images whose captions would be lost
        raise DataError(f"{ds.info.name} does not take classes (it is not a plain image dataset); drop the classes.")
    wanted = [c.strip() for c in (classes.split(",") if isinstance(classes, str) else classes) if c.strip()]
    names = ds.info.class_names
    unknown = [c for c in wanted if c not in names]
    if unknown:
        raise DataError(f"{ds.info.name} has no class {unknown[0]!r}; its classes are: {', '.join(names)}.")
    keep = torch.isin(ds.labels, torch.tensor([names.index(c) for c in wanted]))
    if not keep.any():
        raise DataError(f"the {ds.split} split of {ds.info.name} holds no image of {', '.join(wanted)}; choose other classes.")
    return ImageDataset(ds.images[keep], ds.labels[keep], ds.info, ds.split)


__all__ = ["load_dataset", "ImageDataset", "PointDataset", "DatasetInfo", "DATASETS",
           "to_model", "from_model", "levels_to_pixels"]
