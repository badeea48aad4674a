"""Convolutional encoder and decoder of the autoencoder and VAE families.

The encoder maps an image ``[B, C, H, W]`` (model space, [-1, 1]) to a vector ``[B, out_dim]``
(the AE's code z, or the mean and log-variance halves of the VAE's q(z|x)); the decoder
maps a latent ``[B, latent_dim]`` back to ``[B, out_channels, H, W]`` (the AE's
reconstruction, or the VAE's per-pixel mean and log-scale halves). Neither bounds its
outputs: the families do, where the meaning of each number is known.

Shapes: level i of ``channels`` works at ``sizes[i+1]``, where ``sizes[0] = (H, W)`` and each
level halves the size, rounding up (a 3x3 stride-2 conv with padding 1), so any size works:
8 -> 4 -> 2 (digits, 2 levels), 28 -> 14 -> 7 -> 4 (MNIST, 3 levels), 32 -> 16 -> 8 -> 4
(CIFAR-10, 3 levels). The decoder mirrors it and upsamples (sub-pixel convolutions, then cropped) to exactly
the sizes the encoder went through, so odd sizes (7 -> 14 is exact, 4 -> 7 is not a
doubling) come back right.

Blocks are pre-activation ResBlocks (GroupNorm, SiLU, 3x3 conv, twice, plus the skip), as
in the diffusion U-Net but without a time embedding.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from genlab.nets.unet import group_norm


def level_sizes(height: int, width: int, levels: int) -> list[tuple[int, int]]:
    """``levels + 1`` feature-map sizes: the image's, then each halved rounding up."""
    sizes = [(height, width)]
    for _ in range(levels):
        h, w = sizes[-1]
        sizes.append(((h + 1) // 2, (w + 1) // 2))
    return sizes


class Upsample(nn.Module):
    """Double the size with a sub-pixel convolution (Shi et al. 2016), cropped to ``size``.

    A 3x3 conv to 4 ``out_channels`` at the low resolution, then ``pixel_shuffle``: low-res pixel
    i fills high-res pixels 2i and 2i+1, the inverse of the encoder's stride-2 halving, so cropping
    the last row and column gives back an odd size (4 -> 8 -> 7). It costs the same multiply-adds
    as a nearest upsampling followed by a 3x3 conv, without writing out the upsampled input, which
    is what dominated that version on a CPU (and a conv with few outputs at full resolution is slow).
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 4 * out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return F.pixel_shuffle(self.conv(x), 2)[:, :, : size[0], : size[1]]


class ResBlock(nn.Module):
    """x + conv(SiLU(GN(conv(SiLU(GN(x)))))), with a 1x1 skip when the width changes."""

    def __init__(self, in_channels: int, out_channels: int, norm_groups: int = 8):
        super().__init__()
        self.norm1 = group_norm(in_channels, norm_groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = group_norm(out_channels, norm_groups)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class ConvEncoder(nn.Module):
    """Image ``[B, C, H, W]`` -> vector ``[B, out_dim]``.

    Per level i, a stride-2 3x3 conv to ``channels[i]`` (``sizes[i]`` -> ``sizes[i+1]``) and a
    ResBlock; then GroupNorm, SiLU and a linear head on the flattened last feature map. Nothing
    runs at full resolution but the first (strided) conv, which keeps a step cheap on a CPU.
    """

    def __init__(self, shape: tuple[int, int, int], channels: tuple[int, ...], out_dim: int, norm_groups: int = 8):
        super().__init__()
        C, H, W = shape
        channels = tuple(channels)
        self.sizes = level_sizes(H, W, len(channels))
        blocks = []
        ch = C
        for width in channels:
            blocks += [nn.Conv2d(ch, width, 3, stride=2, padding=1), ResBlock(width, width, norm_groups)]
            ch = width
        self.blocks = nn.Sequential(*blocks)
        h, w = self.sizes[-1]
        self.norm = group_norm(ch, norm_groups)
        self.head = nn.Linear(ch * h * w, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.silu(self.norm(self.blocks(x))).flatten(1))


class ConvDecoder(nn.Module):
    """Latent ``[B, latent_dim]`` -> ``[B, out_channels, H, W]``, the mirror of :class:`ConvEncoder`.

    A linear layer to the encoder's last feature map (``channels[-1]`` at ``sizes[-1]``), then
    per level, last first, a ResBlock and an :class:`Upsample` to the encoder's size one level up
    and that level's width (GroupNorm and SiLU before the last one, which gives ``out_channels``
    at full resolution).
    """

    def __init__(self, shape: tuple[int, int, int], channels: tuple[int, ...], latent_dim: int, out_channels: int,
                 norm_groups: int = 8):
        super().__init__()
        C, H, W = shape
        channels = tuple(channels)
        self.sizes = level_sizes(H, W, len(channels))
        self.latent_dim = latent_dim
        h, w = self.sizes[-1]
        self.input = nn.Linear(latent_dim, channels[-1] * h * w)
        self.blocks = nn.ModuleList(ResBlock(width, width, norm_groups) for width in reversed(channels))
        targets = list(reversed(channels[:-1]))  # the width after each upsampling but the last
        self.ups = nn.ModuleList(Upsample(cin, cout) for cin, cout in zip(reversed(channels), targets, strict=False))
        self.norm = group_norm(channels[0], norm_groups)
        self.out = Upsample(channels[0], out_channels)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h, w = self.sizes[-1]
        x = self.input(z).view(z.shape[0], -1, h, w)
        sizes = list(reversed(self.sizes[:-1]))  # the size after each level's upsampling
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i < len(self.ups):
                x = self.ups[i](x, sizes[i])
        return self.out(F.silu(self.norm(x)), sizes[-1])
