"""Peak signal-to-noise ratio, the usual super-resolution yardstick."""

from __future__ import annotations

import torch


def psnr(a: torch.Tensor, b: torch.Tensor, levels: int) -> torch.Tensor:
    """PSNR in dB of each image pair, on the [0, 1] scale: 10 log10(1 / MSE).

    ``a``, ``b``: ``[N, ...]`` images with grey levels 0..levels-1 (uint8 or integer-valued),
    compared after dividing by ``levels - 1``. Returns float64 ``[N]``; identical images give inf.
    """
    if a.shape != b.shape:
        raise ValueError(f"cannot compare images of shapes {list(a.shape)} and {list(b.shape)}")
    k = levels - 1
    mse = ((a.to(torch.float64) - b.to(torch.float64)) / k).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse)
