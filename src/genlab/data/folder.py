"""Any folder (or .zip) of images laid out ``<split>/<class>/<image>``.

- Images: .png .jpg .jpeg .bmp .gif .webp (any case), decoded with Pillow; class
  folders may hold sub-folders. Hidden files and folders (``.*``, ``__MACOSX``) and
  files with other extensions are ignored.
- Labels: the class folder names of all splits together, sorted alphabetically
  (so train and test agree even when a class is missing from one split), numbered 0..
- Channels: 1 (Pillow mode "L") when every image is greyscale, else 3 (RGB; grey
  images are replicated, alpha is dropped); ``channels=1|3`` forces either.
- All images must share one size; levels = 256.
- A zip may wrap the layout in one top-level folder (``name/train/...``).

Decoded arrays are cached as ``.npz`` (no pickle) under ``<cache>/folder/``, keyed
by the absolute path, size and mtime of the zip (of every image, for a folder), the
split and the channel option, so a second load skips the decoding.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from genlab.data.core import SPLITS, DatasetInfo, ImageDataset, cache_dir, search_dirs
from genlab.errors import DataError
from genlab.io import atomic_write

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
CIFAR10_JPEG_ZIP = "cifar10-jpeg-q75.zip"
_CACHE_VERSION = 1


class _Source:
    """The image files of a folder or a zip archive, as relative POSIX paths."""

    def __init__(self, root: Path):
        self.root = root
        self.zip: zipfile.ZipFile | None = None
        if root.is_dir():
            names = []
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames[:] = [d for d in dirnames if not _hidden(d)]
                rel = Path(dirpath).relative_to(root)
                names += [(rel / f).as_posix() for f in filenames]
        elif root.is_file():
            try:
                self.zip = zipfile.ZipFile(root)
                names = [n for n in self.zip.namelist() if not n.endswith("/")]
            except (zipfile.BadZipFile, OSError, EOFError) as e:
                raise DataError(f"image archive {root} is not a readable zip file ({e}); pass {{data.root}} to "
                                f"a folder or a complete .zip of <split>/<class>/<image> files.") from e
        else:
            raise DataError(f"image folder {root} does not exist; pass {{data.root}} to a folder or .zip laid "
                            f"out as <split>/<class>/<image>.")
        self.names = sorted(n for n in names
                            if not any(_hidden(p) for p in n.split("/"))
                            and n.lower().endswith(IMAGE_EXTENSIONS))

    def describe(self, name: str) -> str:
        return f"{self.root}/{name}" if self.zip is None else f"{self.root}:{name}"

    def read(self, name: str) -> bytes:
        try:
            if self.zip is not None:
                return self.zip.read(name)
            return (self.root / name).read_bytes()
        except Exception as e:  # noqa: BLE001 (a damaged zip member can also raise zlib.error)
            raise DataError(f"cannot read image {self.describe(name)} ({e}); replace the file or the "
                            f"archive with a complete copy.") from e

    def fingerprint(self, names: list[str]) -> dict:
        st = self.root.stat()
        if self.zip is not None:
            return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
        h = hashlib.sha256()
        for n in names:
            s = (self.root / n).stat()
            h.update(f"{n}\0{s.st_size}\0{s.st_mtime_ns}\n".encode())
        return {"files": h.hexdigest()}

    def close(self) -> None:
        if self.zip is not None:
            self.zip.close()


def _hidden(part: str) -> bool:
    return part.startswith(".") or part == "__MACOSX"


def _layout(source: _Source, split: str) -> tuple[dict[str, list[str]], tuple[str, ...]]:
    """Images of ``split`` grouped by class, and the sorted class names of all splits."""
    names = source.names
    tops = {n.split("/", 1)[0] for n in names if "/" in n}
    if not tops & set(SPLITS) and len(tops) == 1:
        # One wrapping folder (name/train/...): strip it.
        prefix = next(iter(tops))
        names = [n[len(prefix) + 1:] for n in names if n.startswith(prefix + "/")]
    else:
        prefix = None
    groups: dict[str, dict[str, list[str]]] = {s: {} for s in SPLITS}
    for n in names:
        parts = n.split("/")
        if parts[0] not in groups:
            continue
        full = n if prefix is None else f"{prefix}/{n}"
        if len(parts) < 3:
            raise DataError(f"image {source.describe(full)} lies directly in the {parts[0]} folder; move it "
                            f"into a class folder ({parts[0]}/<class>/).")
        groups[parts[0]].setdefault(parts[1], []).append(full)
    if not groups[split]:
        found = ", ".join(sorted(tops)) or "no image files"
        raise DataError(f"{source.root} has no images under {split}/<class>/ (found: {found}); lay the images "
                        f"out as <split>/<class>/<image> with split train or test.")
    classes = tuple(sorted(set(groups["train"]) | set(groups["test"])))
    return groups[split], classes


def _decode(source: _Source, name: str, channels: int | None) -> tuple[np.ndarray, bool]:
    """Decode one image: (array [H, W] or [H, W, 3] uint8, whether it was greyscale)."""
    data = source.read(name)
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            grey = im.mode in GREY_MODES
            modes: dict[int | None, str] = {1: "L", 3: "RGB"}
            mode = modes.get(channels, "L" if grey else "RGB")
            return np.asarray(im.convert(mode)), grey
    except Exception as e:  # noqa: BLE001 (Pillow raises many types on damaged files)
        raise DataError(f"image {source.describe(name)} is corrupt or not an image ({type(e).__name__}: {e}); "
                        f"delete or replace it.") from e


def _decode_all(source: _Source, by_class: dict[str, list[str]], classes: tuple[str, ...],
                channels: int | None) -> tuple[np.ndarray, np.ndarray]:
    arrays, labels = [], []
    all_grey = True
    size: tuple[int, ...] | None = None
    first: str | None = None
    for label, cls in enumerate(classes):
        for name in by_class.get(cls, []):
            a, grey = _decode(source, name, channels)
            all_grey &= grey
            if size is None:
                size, first = a.shape[:2], name
            elif a.shape[:2] != size:
                assert first is not None  # set with size
                raise DataError(f"image {source.describe(name)} is {a.shape[1]}x{a.shape[0]} but "
                                f"{source.describe(first)} is {size[1]}x{size[0]}; all images must share "
                                f"one size, so resize them first.")
            arrays.append(a)
            labels.append(label)
    c = channels or (1 if all_grey else 3)
    assert size is not None  # _layout found at least one image of the split
    n, (h, w) = len(arrays), size
    images = np.empty((n, c, h, w), np.uint8)
    for i, a in enumerate(arrays):
        images[i] = a if a.ndim == 2 else a.transpose(2, 0, 1)  # a grey [H, W] broadcasts to every channel
    return images, np.asarray(labels, np.int64)


def _cache_path(source: _Source, names: list[str], split: str, channels: int | None) -> Path:
    key = {"version": _CACHE_VERSION, "path": str(source.root.resolve()), "split": split,
           "channels": channels, **source.fingerprint(names)}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return cache_dir() / "folder" / f"{source.root.name}-{split}-{digest}.npz"


def _load_cache(path: Path, n: int, classes: tuple[str, ...]):
    try:
        with np.load(path, allow_pickle=False) as z:
            images, labels, names = z["images"], z["labels"], tuple(str(c) for c in z["class_names"])
    except FileNotFoundError:
        return None
    except Exception as e:  # noqa: BLE001 (a damaged cache file is rebuilt, never trusted)
        log.warning("ignoring unreadable cache file %s (%s)", path, e)
        return None
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[0] != n or labels.shape != (n,) \
            or names != classes:
        log.warning("ignoring stale cache file %s", path)
        return None
    return images, labels.astype(np.int64)


def _save_cache(path: Path, images: np.ndarray, labels: np.ndarray, classes: tuple[str, ...]) -> None:
    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, images=images, labels=labels, class_names=np.array(classes, dtype=str))

    try:
        atomic_write(path, write)
    except OSError as e:  # a read-only cache only costs speed
        log.warning("could not write the image cache %s (%s)", path, e)


def load_folder(split: str, root=None, *, channels: int | None = None, cache: bool = True,
                name: str = "folder") -> ImageDataset:
    """Images from a folder or .zip ``root`` laid out ``<split>/<class>/<image>`` (see the module docstring)."""
    if root is None:
        raise DataError("the folder dataset needs a folder or .zip of <split>/<class>/<image> files; pass "
                        "{{data.root}} (root=) to it.")
    if channels not in (None, 1, 3):
        raise DataError(f"channels must be 1 or 3 (or left unset to detect it), not {channels!r}.")
    source = _Source(Path(root).expanduser())
    try:
        by_class, classes = _layout(source, split)
        names = [n for c in classes for n in by_class.get(c, [])]
        result = None
        if cache:
            path = _cache_path(source, names, split, channels)
            result = _load_cache(path, len(names), classes)
        if result is None:
            result = _decode_all(source, by_class, classes, channels)
            if cache:
                _save_cache(path, *result, classes)
    finally:
        source.close()
    images, labels = result
    _, c, h, w = images.shape
    info = DatasetInfo(name=name, channels=c, height=h, width=w, levels=256,
                       num_classes=len(classes), class_names=classes)
    return ImageDataset(images=torch.from_numpy(images), labels=torch.from_numpy(labels), info=info, split=split)


def load_cifar10_jpeg(split: str, root=None, *, channels: int | None = None, cache: bool = True) -> ImageDataset:
    """The CIFAR-10 JPEG re-encoding ``cifar10-jpeg-q75.zip`` (lossy, quality 75) via the folder loader.

    Looked for as ``root`` itself or ``cifar10-jpeg-q75.zip`` in ``root`` or
    ``root/cifar10-jpeg/``; without ``root``, in ``$GENLAB_DATA[/cifar10-jpeg]``, then the cache.
    """
    candidates = []
    for d in search_dirs("cifar10-jpeg", root):
        candidates += [d] if d.suffix == ".zip" else [d / CIFAR10_JPEG_ZIP]
    archive = next((p for p in candidates if p.is_file()), None)
    if archive is None:
        raise DataError(f"{CIFAR10_JPEG_ZIP} was not found (looked for {', '.join(map(str, candidates))}); "
                        f"pass {{data.root}} to the folder that holds it.")
    return load_folder(split, archive, channels=channels, cache=cache, name="cifar10-jpeg")
