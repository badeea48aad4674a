"""GAN networks: DCGAN generator and discriminator for images, MLPs for 2-D points.

The convolutional pair follows the guidelines of Radford et al. 2016 (DCGAN, section 3):
strided convolutions instead of pooling (fractionally strided in G), batch norm in G (all
layers but the output) and in D (all but the input), ReLU in G with a Tanh output,
LeakyReLU(0.2) in D, no fully connected hidden layers (z is projected linearly into the
first feature map, and D's last feature map is read out by one linear layer, as in
DCGAN), weights drawn from N(0, 0.02).

Widths come from ``channels`` as in the U-Net: ``channels[i]`` features at resolution
H / 2^i, so (32, 64) on 8x8 digits runs 4x4 -> 8x8, and (32, 64, 64) on 28x28 MNIST runs
7x7 -> 14x14 -> 28x28. A WGAN-GP critic must not use batch norm (the penalty is per
example, and batch norm couples the examples of a batch; Gulrajani et al. 2017, section
4): ``norm="layer"`` (their choice) or ``"none"``.

Conditioning (Mirza & Osindero 2014): G reads the one-hot label concatenated to z (its
linear projection makes that a learned per-class embedding); D reads one-hot label maps
concatenated to the image channels. Shapes: z ``[B, latent_dim]``, y ``[B]`` int64,
images ``[B, C, H, W]`` in [-1, 1], D's output ``[B]`` logits (scores for a WGAN critic).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

NORMS = ("batch", "layer", "none")


def dcgan_init(module: nn.Module) -> None:
    """DCGAN's initialisation: conv and linear weights ~ N(0, 0.02), norm scales ~ N(1, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def _base_resolution(shape: tuple[int, int, int], levels: int) -> int:
    C, H, W = shape
    r = H // 2 ** (levels - 1)
    if H != W or r < 1 or r * 2 ** (levels - 1) != H:
        raise ValueError(f"the DCGAN networks need square images whose side halves {levels - 1} times "
                         f"(one per extra width in {{model.channels}}), not {H}x{W}")
    return r


def _one_hot(y: torch.Tensor | None, num_classes: int, like: torch.Tensor) -> torch.Tensor:
    if y is None:
        raise ValueError("this network is class-conditional: pass labels y")
    return F.one_hot(y.long(), num_classes).to(like.dtype)


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":  # layer norm over (C, H, W) of each example, with per-channel scale and shift
        return nn.GroupNorm(1, channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; choose one of {', '.join(NORMS)}")


class DCGANGenerator(nn.Module):
    """z [B, latent_dim] (and y [B]) -> images [B, C, H, W] in (-1, 1)."""

    def __init__(self, latent_dim: int, shape: tuple[int, int, int], channels: tuple[int, ...], num_classes: int = 0):
        super().__init__()
        C = shape[0]
        self.latent_dim, self.num_classes = latent_dim, num_classes
        self.r = r = _base_resolution(shape, len(channels))
        self.project = nn.Linear(latent_dim + num_classes, channels[-1] * r * r, bias=False)
        self.project_norm = nn.BatchNorm2d(channels[-1])
        layers: list[nn.Module] = []
        for i in range(len(channels) - 1, 0, -1):  # fractionally strided: H/2^i -> H/2^(i-1)
            layers += [nn.ConvTranspose2d(channels[i], channels[i - 1], 4, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(channels[i - 1]), nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*layers)
        self.out = nn.Conv2d(channels[0], C, 3, padding=1)  # no batch norm on the output layer
        dcgan_init(self)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_classes:
            z = torch.cat([z, _one_hot(y, self.num_classes, z)], 1)
        h = self.project(z).view(z.shape[0], -1, self.r, self.r)
        h = F.relu(self.project_norm(h))
        return torch.tanh(self.out(self.body(h)))


class DCGANDiscriminator(nn.Module):
    """images [B, C, H, W] (and y [B]) -> logits [B]; ``norm`` is batch (DCGAN), layer or none (WGAN-GP critic)."""

    def __init__(self, shape: tuple[int, int, int], channels: tuple[int, ...], num_classes: int = 0, norm: str = "batch"):
        super().__init__()
        C = shape[0]
        self.num_classes = num_classes
        r = _base_resolution(shape, len(channels))
        layers: list[nn.Module] = [nn.Conv2d(C + num_classes, channels[0], 3, padding=1),  # no norm on the input layer
                                   nn.LeakyReLU(0.2, inplace=True)]
        for i in range(1, len(channels)):  # strided: H/2^(i-1) -> H/2^i
            layers += [nn.Conv2d(channels[i - 1], channels[i], 4, stride=2, padding=1, bias=norm == "none"),
                       _norm(norm, channels[i]), nn.LeakyReLU(0.2, inplace=True)]
        self.body = nn.Sequential(*layers)
        self.out = nn.Linear(channels[-1] * r * r, 1)
        dcgan_init(self)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_classes:
            maps = _one_hot(y, self.num_classes, x)[:, :, None, None].expand(-1, -1, *x.shape[2:])
            x = torch.cat([x, maps], 1)
        return self.out(self.body(x).flatten(1)).squeeze(1)


class MLPGenerator(nn.Module):
    """z [B, latent_dim] (and y [B]) -> points [B, dim]: ``depth`` ReLU hidden layers, linear output."""

    def __init__(self, latent_dim: int, dim: int = 2, hidden: int = 128, depth: int = 3, num_classes: int = 0):
        super().__init__()
        self.latent_dim, self.num_classes = latent_dim, num_classes
        layers: list[nn.Module] = []
        width = latent_dim + num_classes
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.ReLU(inplace=True)]
            width = hidden
        self.body = nn.Sequential(*layers, nn.Linear(width, dim))

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_classes:
            z = torch.cat([z, _one_hot(y, self.num_classes, z)], 1)
        return self.body(z)


class MLPDiscriminator(nn.Module):
    """points [B, dim] (and y [B]) -> logits [B]: ``depth`` LeakyReLU(0.2) hidden layers, no normalisation."""

    def __init__(self, dim: int = 2, hidden: int = 128, depth: int = 3, num_classes: int = 0):
        super().__init__()
        self.num_classes = num_classes
        layers: list[nn.Module] = []
        width = dim + num_classes
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.LeakyReLU(0.2, inplace=True)]
            width = hidden
        self.body = nn.Sequential(*layers, nn.Linear(width, 1))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_classes:
            x = torch.cat([x, _one_hot(y, self.num_classes, x)], 1)
        return self.body(x).squeeze(1)
