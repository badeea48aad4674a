"""uint8 pixels <-> model floats in [-1, 1], for data with K = ``levels`` values per channel.

A pixel value ``u`` in ``0..K-1`` maps to ``x = u / (K-1) * 2 - 1``: bin centres of
the discretised decoder (DDPM's L_0 with 255 generalised to K-1) sit exactly at these
points, which is why the digits keep their 17 levels instead of being stretched to 256.
"""

from __future__ import annotations

import numbers

import torch


def _check_levels(levels: int) -> int:
    if isinstance(levels, bool) or not isinstance(levels, numbers.Integral) or not 2 <= levels <= 256:
        raise ValueError(f"levels must be an integer in 2..256, not {levels!r}")
    return int(levels)


def to_model(x: torch.Tensor, levels: int) -> torch.Tensor:
    """uint8 ``0..levels-1`` -> float32 in [-1, 1]: ``x / (levels-1) * 2 - 1``. Same shape."""
    k = _check_levels(levels) - 1
    return x.to(torch.float32) / k * 2 - 1


def from_model(x: torch.Tensor, levels: int) -> torch.Tensor:
    """float in [-1, 1] (clamped) -> uint8 ``0..levels-1``: ``round((x+1)/2 * (levels-1))``."""
    k = _check_levels(levels) - 1
    return torch.round((x.to(torch.float32).clamp(-1, 1) + 1) / 2 * k).to(torch.uint8)


def levels_to_pixels(u: torch.Tensor, levels: int) -> torch.Tensor:
    """uint8 ``0..levels-1`` -> uint8 ``0..255`` for writing images: ``round(u * 255 / (levels-1))``.

    Halves round up (exact integer arithmetic); the identity for ``levels=256``.
    """
    k = _check_levels(levels) - 1
    if k == 255:
        return u.to(torch.uint8)
    v = u.to(torch.int32)
    return ((v * 510 + k) // (2 * k)).clamp(0, 255).to(torch.uint8)
