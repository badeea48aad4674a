"""Sample grids as PNG (Pillow) and 2-D point clouds as scatter plots (matplotlib)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from genlab.data.transforms import levels_to_pixels


def image_grid(images: torch.Tensor, levels: int, nrow: int | None = None, pad: int = 1, scale: int | None = None) -> np.ndarray:
    """uint8 ``[N, C, H, W]`` images with values 0..levels-1 -> one uint8 ``[H', W', C]`` grid.

    Small images (8x8 digits) are enlarged by an integer ``scale`` (nearest) so they can be seen.
    """
    pixels = levels_to_pixels(images, levels).cpu().numpy()
    N, C, H, W = pixels.shape
    nrow = nrow or math.ceil(math.sqrt(N))
    ncol = math.ceil(N / nrow)
    scale = scale or max(1, 48 // H)
    grid = np.full((ncol * (H + pad) + pad, nrow * (W + pad) + pad, C), 255 // 2, dtype=np.uint8)
    for i in range(N):
        r, c = divmod(i, nrow)
        grid[pad + r * (H + pad): pad + r * (H + pad) + H, pad + c * (W + pad): pad + c * (W + pad) + W] = pixels[i].transpose(1, 2, 0)
    return grid.repeat(scale, 0).repeat(scale, 1)


def save_grid(images: torch.Tensor, path: str | Path, levels: int, nrow: int | None = None) -> Path:
    """Write a PNG grid of uint8 images (atomically)."""
    from PIL import Image

    from genlab.io import atomic_write

    grid = image_grid(images, levels, nrow)
    img = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
    atomic_write(Path(path), lambda tmp: img.save(tmp, format="PNG"))
    return Path(path)


def save_points(points: torch.Tensor, path: str | Path, reference: torch.Tensor | None = None, title: str = "") -> Path:
    """Scatter plot of 2-D samples (and, faded, the reference data) as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from genlab.io import atomic_write

    fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
    if reference is not None:
        rx, ry = reference[:, :2].T.cpu().numpy()
        ax.scatter(rx, ry, s=1, c="0.8", label="data")
    px, py = points[:, :2].T.cpu().numpy()
    ax.scatter(px, py, s=1, c="C0", label="samples")
    ax.set_aspect("equal")
    ax.set_title(title)
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, format="png", bbox_inches="tight"))
    plt.close(fig)
    return Path(path)


def save_samples(samples: torch.Tensor, path: str | Path, levels: int, reference: torch.Tensor | None = None) -> Path:
    """Images -> grid; 2-D points (levels = 0) -> scatter plot over the ``reference`` data."""
    if levels == 0:
        return save_points(samples, path, reference)
    return save_grid(samples, path, levels)
