"""The CycleGAN networks (Zhu et al. 2017, appendix 7.2), scaled to genlab's small images.

Generator (Johnson et al. 2016, as CycleGAN's): c7s1-w0, one stride-2 3x3 convolution per further
width (d_w), ``res_blocks`` residual blocks at the bottom (R_w), mirrored stride-2 transposed
convolutions (u_w), c7s1-C and Tanh; instance norm and ReLU, reflection padding. The paper's
widths are (64, 128, 256) with 6 or 9 blocks for 128x128 or 256x256 images; genlab takes the
widths from ``--channels`` (28x28 MNIST with (32, 64, 64): 28 -> 14 -> 7).

Discriminator (PatchGAN, Isola et al. 2017): 4x4 stride-2 convolutions with LeakyReLU(0.2),
instance norm on all but the first, then a 3x3 convolution to one logit per patch. The paper's
70x70 PatchGAN has 3 stride-2 and 2 stride-1 layers on 256x256 images; on 8x8 or 28x28 images
two stride-1 4x4 layers would leave nothing, so here the map is H / 2^len(widths) patches.

Instance norm has no running statistics and normalises each image alone, so a sample never
depends on its batch. Weights start from N(0, 0.02) (the paper's code).

For 2-D points (the toy test) the maps are residual MLPs x + MLP(x) whose last layer starts at
zero, so each starts as the identity map, and the discriminators are genlab's point MLPs.
"""

from __future__ import annotations

from torch import nn

from genlab.errors import ConfigError
from genlab.nets.dcgan import MLPDiscriminator


class ResidualBlock(nn.Module):
    """x + IN(conv3(ReLU(IN(conv3(x))))), reflection-padded (the paper's R_k)."""

    def __init__(self, width: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(width, width, 3), nn.InstanceNorm2d(width), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(width, width, 3), nn.InstanceNorm2d(width))

    def forward(self, x):
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """images [B, C_in, H, W] in [-1, 1] -> images [B, C_out, H, W] in [-1, 1]."""

    def __init__(self, c_in: int, c_out: int, widths: tuple[int, ...], res_blocks: int):
        super().__init__()
        w0 = widths[0]
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(c_in, w0, 7), nn.InstanceNorm2d(w0), nn.ReLU(True)]
        for a, b in zip(widths, widths[1:], strict=False):
            layers += [nn.Conv2d(a, b, 3, stride=2, padding=1), nn.InstanceNorm2d(b), nn.ReLU(True)]
        layers += [ResidualBlock(widths[-1]) for _ in range(res_blocks)]
        for a, b in zip(widths[::-1], widths[::-1][1:], strict=False):
            layers += [nn.ConvTranspose2d(a, b, 3, stride=2, padding=1, output_padding=1), nn.InstanceNorm2d(b), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(w0, c_out, 7), nn.Tanh()]
        self.body = nn.Sequential(*layers)
        init_normal(self)

    def forward(self, x):
        return self.body(x)


class PatchDiscriminator(nn.Module):
    """images [B, C, H, W] -> logits [B, 1, H / 2^L, W / 2^L], one per overlapping patch (L = len(widths))."""

    def __init__(self, c_in: int, widths: tuple[int, ...]):
        super().__init__()
        layers: list[nn.Module] = []
        width = c_in
        for i, w in enumerate(widths):
            layers += [nn.Conv2d(width, w, 4, stride=2, padding=1)]
            layers += [nn.InstanceNorm2d(w)] if i else []
            layers += [nn.LeakyReLU(0.2, True)]
            width = w
        self.body = nn.Sequential(*layers, nn.Conv2d(width, 1, 3, padding=1))
        init_normal(self)

    def forward(self, x):
        return self.body(x)


class PointTranslator(nn.Module):
    """points [B, D] -> x + MLP(x): the identity map at initialisation (the last layer starts at zero)."""

    def __init__(self, dim: int, hidden: int, depth: int):
        super().__init__()
        layers: list[nn.Module] = []
        width = dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.LeakyReLU(0.2)]
            width = hidden
        last = nn.Linear(width, dim)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.body = nn.Sequential(*layers, last)

    def forward(self, x):
        return x + self.body(x)


def init_normal(module: nn.Module, std: float = 0.02) -> None:
    """Convolution weights from N(0, std), biases 0 (CycleGAN's ``init_type='normal'``)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def check_size(shape: tuple[int, ...], widths: tuple[int, ...]) -> None:
    """Raise a ConfigError unless images of ``shape`` fit generators and discriminators of ``widths``.

    The generator halves the size len(widths) - 1 times and must come back to it exactly, with at
    least 2x2 pixels at the bottom (reflection padding, instance norm); the discriminator halves
    it once more and normalises maps of at least 2x2.
    """
    _, H, W = shape
    down = 2 ** (len(widths) - 1)
    small = min(H, W)
    if H % down or W % down or small // down < 2 or (len(widths) > 1 and small // (2 * down) < 2):
        raise ConfigError(f"{W}x{H} images do not fit {len(widths)} levels of {{model.channels}} (each halves the size, which "
                          f"must divide it and stay at least 2x2); pass fewer widths.")


def build_nets(shape: tuple[int, ...], widths: tuple[int, ...], res_blocks: int, hidden: int = 128,
               depth: int = 3) -> tuple[nn.Module, nn.Module, nn.Module, nn.Module]:
    """(G: A -> B, F: B -> A, D_A, D_B) for both domains in the common space ``shape``.

    Images (C, H, W): ResNet generators and PatchGAN discriminators; points (D,): residual MLPs
    and MLP discriminators.
    """
    if len(shape) == 1:
        dim = shape[0]
        return (PointTranslator(dim, hidden, depth), PointTranslator(dim, hidden, depth),
                MLPDiscriminator(dim, hidden, depth), MLPDiscriminator(dim, hidden, depth))
    check_size(shape, widths)
    c = shape[0]
    return (ResnetGenerator(c, c, widths, res_blocks), ResnetGenerator(c, c, widths, res_blocks),
            PatchDiscriminator(c, widths), PatchDiscriminator(c, widths))
