"""scikit-learn's bundled 8x8 handwritten digits (no download): 1797 images, 17 grey levels.

Values 0..16 are kept as they are (``levels=17``). Fixed split: image ``i`` (in
scikit-learn's order) is a test image when ``i % 5 == 0``, else a training image,
giving 1437 train / 360 test.
"""

from __future__ import annotations

import numpy as np
import torch

from genlab.data.core import DatasetInfo, ImageDataset

INFO = DatasetInfo(name="digits", channels=1, height=8, width=8, levels=17, num_classes=10,
                   class_names=tuple(str(i) for i in range(10)))


def load_digits(split: str, root=None) -> ImageDataset:
    """The digits ``split`` (train: i % 5 != 0, 1437 images; test: i % 5 == 0, 360). ``root`` is unused."""
    from sklearn.datasets import load_digits as sk_load_digits  # imported here: sklearn is slow to import

    d = sk_load_digits()
    test = np.arange(len(d.target)) % 5 == 0
    keep = test if split == "test" else ~test
    images = d.images[keep].astype(np.uint8)[:, None]  # float 0..16 -> uint8 [N, 1, 8, 8]
    labels = d.target[keep].astype(np.int64)
    return ImageDataset(images=torch.from_numpy(images), labels=torch.from_numpy(labels), info=INFO, split=split)
