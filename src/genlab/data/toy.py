"""2-D toy densities, following the conventions of FFJORD's ``toy_data.py`` (Grathwohl et al. 2019).

| variant        | definition                                                           | range       | label |
|----------------|----------------------------------------------------------------------|-------------|-------|
| ``moons``      | two half circles, Gaussian noise std 0.1, then ``2 x + (-1, -0.2)``  | ~[-3.5, 3.5] x [-2, 2.5] | moon 0/1 |
| ``8gaussians`` | 8 Gaussians centred at radius ``2*sqrt(2)`` (angles k*45 deg), std ``0.5/sqrt(2)`` | ~[-4, 4] | component 0..7 |
| ``swissroll``  | ``t = 1.5 pi (1 + 2u)``, ``(t cos t, t sin t) + N(0, 1)``, divided by 5 | ~[-3, 3] | 0 |
| ``checkerboard`` | uniform on the 8 dark squares of a 4x4 board of side 2 on [-4, 4]^2 | [-4, 4]     | 0 |

Deterministic: each (variant, split) draws from its own fixed ``numpy`` Generator
seed (train and test differ); ``seed=`` overrides it. Default sizes: 10000 train,
2000 test.
"""

from __future__ import annotations

import numpy as np
import torch

from genlab.data.core import DatasetInfo, PointDataset
from genlab.errors import DataError

VARIANTS = ("moons", "8gaussians", "swissroll", "checkerboard")
DEFAULT_N = {"train": 10000, "test": 2000}
_SPLIT_SEED = {"train": 0, "test": 1}


def _moons(rng: np.random.Generator, n: int):
    labels = rng.integers(0, 2, n)
    angle = rng.uniform(0.0, np.pi, n)
    # sklearn's make_moons: the upper moon (label 0) and the lower one shifted by (1, 0.5).
    x = np.where(labels == 0, np.cos(angle), 1.0 - np.cos(angle))
    y = np.where(labels == 0, np.sin(angle), 0.5 - np.sin(angle))
    points = np.stack([x, y], 1) + rng.normal(0.0, 0.1, (n, 2))
    return points * 2.0 + np.array([-1.0, -0.2]), labels


def _eight_gaussians(rng: np.random.Generator, n: int):
    labels = rng.integers(0, 8, n)
    angle = labels * (np.pi / 4)
    centres = 4.0 * np.stack([np.cos(angle), np.sin(angle)], 1)
    return (centres + rng.normal(0.0, 0.5, (n, 2))) / np.sqrt(2.0), labels


def _swissroll(rng: np.random.Generator, n: int):
    t = 1.5 * np.pi * (1.0 + 2.0 * rng.uniform(0.0, 1.0, n))
    points = np.stack([t * np.cos(t), t * np.sin(t)], 1) + rng.normal(0.0, 1.0, (n, 2))
    return points / 5.0, np.zeros(n, np.int64)


def _checkerboard(rng: np.random.Generator, n: int):
    x1 = rng.uniform(-2.0, 2.0, n)
    x2 = rng.uniform(0.0, 1.0, n) - 2.0 * rng.integers(0, 2, n) + np.floor(x1) % 2
    return np.stack([x1, x2], 1) * 2.0, np.zeros(n, np.int64)


_SAMPLERS = {"moons": _moons, "8gaussians": _eight_gaussians, "swissroll": _swissroll,
             "checkerboard": _checkerboard}
_CLASSES = {"moons": ("upper", "lower"), "8gaussians": tuple(f"{45 * k} deg" for k in range(8)),
            "swissroll": ("all",), "checkerboard": ("all",)}


def load_toy2d(split: str, root=None, *, variant: str = "8gaussians", n: int | None = None,
               seed: int | None = None) -> PointDataset:
    """``n`` points of a 2-D toy density (see the module docstring). ``root`` is unused."""
    if variant not in _SAMPLERS:
        raise DataError(f"unknown toy2d variant {variant!r}; choose one of: {', '.join(VARIANTS)}.")
    n = DEFAULT_N[split] if n is None else n
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise DataError(f"toy2d needs a positive whole number of points, not n={n!r}.")
    seed = _SPLIT_SEED[split] if seed is None else seed
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise DataError(f"toy2d needs a non-negative whole number as seed, not seed={seed!r}.")
    rng = np.random.default_rng([seed, VARIANTS.index(variant)])
    points, labels = _SAMPLERS[variant](rng, int(n))
    classes = _CLASSES[variant]
    info = DatasetInfo(name="toy2d", channels=2, height=1, width=1, levels=0,
                       num_classes=len(classes), class_names=classes)
    return PointDataset(points=torch.from_numpy(points.astype(np.float32)),
                        labels=torch.from_numpy(labels.astype(np.int64)), info=info, split=split,
                        variant=variant)
