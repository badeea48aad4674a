"""The first stage of latent diffusion: a KL-regularised autoencoder (Rombach et al. 2022, Sec. 3.1, App. G).

The encoder maps an image ``x`` ``[B, C, H, W]`` (model space, [-1, 1]) to a diagonal Gaussian
q(z|x) over a *spatial* latent ``z`` ``[B, z_channels, h, w]``, downsampled by f = 2 ** (len(channels) - 1);
the decoder maps ``z`` back to ``[B, C, H, W]``. The diffusion model of the second stage then works on
``scale * mean``, where :func:`latent_scale` gives ``scale`` (Stable Diffusion's 0.18215) so those latents
have unit variance.

Notation (LDM's ``DiagonalGaussianDistribution``): ``mean``, ``logvar`` = log sigma^2 of q(z|x), both
``[B, z_channels, h, w]``; ``noise`` ~ N(0, I) of the same shape; ``z = mean + sigma * noise``.

Sizes: level i of ``channels`` works at ``sizes[i]``, ``sizes[0] = (H, W)`` and each level after the first
halves the size rounding up (a 3x3 stride-2 conv with padding 1), so odd sizes work: 28 -> 14 -> 7, 12 -> 6 -> 3.
The decoder upsamples (nearest, then a 3x3 conv, as LDM's ``Upsample``) to exactly the encoder's sizes in
reverse, so 7 -> 14 -> 28 and 4 -> 7 come back right.

The loss, per example ``[B]`` (what :meth:`KLAutoencoder.loss` returns):

    recon = mean over pixels of |x - x_hat| + (x - x_hat)^2,  x_hat = decode(mean + sigma * noise)
    kl    = mean over latent dimensions of KL(q(z|x) || N(0, I))   (nats per latent dimension)
    loss  = recon + kl_weight * kl

LDM uses L1 plus a perceptual (LPIPS) and a patch-GAN loss, with kl_weight 1e-6; without those, the L2 term
is what the PSNR of the reconstructions measures, and L1 keeps edges from blurring as much as L2 alone does.
The default kl_weight 1e-3 is larger than LDM's because the KL here is a mean over dimensions, not a sum,
and only has to keep the latent from drifting to a huge scale or collapsing sigma to zero.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from genlab.data.transforms import from_model, to_model
from genlab.distributions import normal_kl
from genlab.nets.autoencoder import ResBlock, level_sizes
from genlab.nets.unet import group_norm

LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0  # LDM's DiagonalGaussianDistribution clamps log sigma^2 to this range
DEFAULT_KL_WEIGHT = 1e-3


class Upsample(nn.Module):
    """Nearest upsampling to ``size`` (the encoder's size one level up), then a 3x3 conv (LDM's ``Upsample``).

    ``size`` rather than a factor of 2, so a level the encoder rounded up (7 -> 4) comes back to 7, not 8.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return self.conv(F.interpolate(x, size=size, mode="nearest"))


class KLAutoencoder(nn.Module):
    """Image ``[B, C, H, W]`` <-> diagonal Gaussian over a latent ``[B, z_channels, H/f, W/f]``, f = 2 ** (levels - 1).

    Encoder: a 3x3 conv to ``channels[0]``, a ResBlock (GroupNorm, SiLU, conv, twice, plus the skip) at full
    resolution, then per further level a stride-2 3x3 conv to ``channels[i]`` and a ResBlock; GroupNorm, SiLU
    and a 3x3 conv to ``2 * z_channels`` (the mean and log-variance halves). Decoder: its mirror, a 3x3 conv
    from ``z_channels``, a ResBlock, then per level an :class:`Upsample` to the previous width and a ResBlock;
    GroupNorm, SiLU and a 3x3 conv to ``in_channels``. The decoder's output is left unbounded (no tanh): the
    loss pulls it into [-1, 1], and :func:`reconstruct` clamps when it goes back to pixels.

    Args:
        in_channels: image channels C (1 or 3).
        image_size: H = W, or ``(H, W)``; any size (odd ones round up on the way down).
        channels: width of each level; ``len(channels) - 1`` halvings. (32, 64, 64): 28 -> 14 -> 7, about 0.45M
            parameters.
        z_channels: channels of the latent.
        norm_groups: GroupNorm groups (the gcd with each width is used, as in the U-Net).
    """

    def __init__(self, in_channels: int, image_size: int | tuple[int, int], channels: tuple[int, ...] = (32, 64, 64),
                 z_channels: int = 4, norm_groups: int = 32):
        super().__init__()
        channels = tuple(channels)
        if not channels or any(c < 1 for c in channels):
            raise ValueError(f"channels must be one or more positive widths, not {channels!r}")
        if in_channels < 1 or z_channels < 1:
            raise ValueError(f"in_channels and z_channels must be positive, not {in_channels} and {z_channels}")
        H, W = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        self.in_channels, self.z_channels = in_channels, z_channels
        self.sizes = level_sizes(H, W, len(channels) - 1)  # sizes[i]: where level i works

        # encoder
        self.enc_in = nn.Conv2d(in_channels, channels[0], 3, padding=1)
        self.enc_blocks = nn.ModuleList([ResBlock(channels[0], channels[0], norm_groups)])
        self.downs = nn.ModuleList()
        for cin, cout in zip(channels[:-1], channels[1:], strict=True):
            self.downs.append(nn.Conv2d(cin, cout, 3, stride=2, padding=1))
            self.enc_blocks.append(ResBlock(cout, cout, norm_groups))
        self.enc_norm = group_norm(channels[-1], norm_groups)
        self.enc_out = nn.Conv2d(channels[-1], 2 * z_channels, 3, padding=1)

        # decoder, last level first
        self.dec_in = nn.Conv2d(z_channels, channels[-1], 3, padding=1)
        self.dec_blocks = nn.ModuleList([ResBlock(channels[-1], channels[-1], norm_groups)])
        self.ups = nn.ModuleList()
        for cin, cout in zip(reversed(channels[1:]), reversed(channels[:-1]), strict=True):
            self.ups.append(Upsample(cin, cout))
            self.dec_blocks.append(ResBlock(cout, cout, norm_groups))
        self.dec_norm = group_norm(channels[0], norm_groups)
        self.dec_out = nn.Conv2d(channels[0], in_channels, 3, padding=1)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """``(z_channels, h, w)``: the shape of one latent."""
        h, w = self.sizes[-1]
        return (self.z_channels, h, w)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` ``[B, C, H, W]`` in [-1, 1] -> ``(mean, logvar)`` of q(z|x), each ``[B, *latent_shape]``.

        ``logvar`` is clamped to [-30, 20], as LDM does, so exp(logvar) neither underflows nor overflows.
        """
        expected = (self.in_channels, *self.sizes[0])
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"expected images [B, {expected[0]}, {expected[1]}, {expected[2]}], got {list(x.shape)}")
        h = self.enc_blocks[0](self.enc_in(x))
        for down, block in zip(self.downs, self.enc_blocks[1:], strict=True):
            h = block(down(h))
        mean, logvar = self.enc_out(F.silu(self.enc_norm(h))).chunk(2, dim=1)
        return mean, logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)

    @staticmethod
    def sample_latent(mean: torch.Tensor, logvar: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The reparameterisation z = mean + exp(logvar / 2) * noise; ``noise`` ~ N(0, I) is the caller's."""
        return mean + torch.exp(0.5 * logvar) * noise

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``z`` ``[B, *latent_shape]`` -> ``x_hat`` ``[B, C, H, W]``, unbounded (the loss keeps it near [-1, 1])."""
        if z.ndim != 4 or tuple(z.shape[1:]) != self.latent_shape:
            raise ValueError(f"expected latents [B, {', '.join(map(str, self.latent_shape))}], got {list(z.shape)}")
        h = self.dec_blocks[0](self.dec_in(z))
        sizes = list(reversed(self.sizes[:-1]))  # the size after each upsampling
        for up, block, size in zip(self.ups, self.dec_blocks[1:], sizes, strict=True):
            h = block(up(h, size))
        return self.dec_out(F.silu(self.dec_norm(h)))

    @staticmethod
    def kl(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """KL(q(z|x) || N(0, I)) per example ``[B]``, in nats per latent dimension (the mean over dimensions)."""
        zeros = torch.zeros_like(mean)
        return normal_kl(mean, logvar, zeros, zeros).flatten(1).mean(1)

    def loss(self, x: torch.Tensor, noise: torch.Tensor, kl_weight: float = DEFAULT_KL_WEIGHT) -> dict[str, torch.Tensor]:
        """Per-example ``[B]`` terms ``recon``, ``kl`` and ``loss = recon + kl_weight * kl`` (module docstring).

        ``x``: ``[B, C, H, W]`` in [-1, 1]; ``noise``: ``[B, *latent_shape]`` standard normal, for the
        reparameterised sample the reconstruction is decoded from.
        """
        mean, logvar = self.encode(x)
        x_hat = self.decode(self.sample_latent(mean, logvar, noise))
        err = x_hat - x
        recon = (err.abs() + err.pow(2)).flatten(1).mean(1)  # L1 + L2, mean per pixel
        kl = self.kl(mean, logvar)
        return {"loss": recon + kl_weight * kl, "recon": recon, "kl": kl}


def _device(ae: nn.Module) -> torch.device:
    return next(ae.parameters()).device


@torch.no_grad()
def encode_means(ae: KLAutoencoder, images_uint8: torch.Tensor, levels: int, batch_size: int = 256) -> torch.Tensor:
    """The encoder means of uint8 images ``[N, C, H, W]`` (values 0..levels-1), ``[N, *latent_shape]``, in batches."""
    device = _device(ae)
    means = [ae.encode(to_model(images_uint8[i:i + batch_size].to(device), levels))[0]
             for i in range(0, images_uint8.shape[0], batch_size)]
    return torch.cat(means)


@torch.no_grad()
def latent_scale(ae: KLAutoencoder, images_uint8: torch.Tensor, levels: int, batch_size: int = 256) -> float:
    """1 / std of the encoder means over ``images_uint8``, all latent elements pooled (LDM's ``scale_factor``).

    The std is torch's (unbiased, computed in float64, about the pooled mean), so ``scale * means`` has unit std
    on these images; that is what the latent diffusion model is trained on. Stable Diffusion's 0.18215 is this
    number for its autoencoder, measured on one batch.
    """
    std = encode_means(ae, images_uint8, levels, batch_size).double().flatten().std()
    if not torch.isfinite(std) or std <= 0:
        raise ValueError(f"the encoder means have std {std.item()}; need at least two images and a non-constant encoder")
    return float(1.0 / std)


@torch.no_grad()
def reconstruct(ae: KLAutoencoder, images_uint8: torch.Tensor, levels: int, batch_size: int = 256) -> torch.Tensor:
    """decode(mean of q(z|x)) of uint8 images ``[N, C, H, W]``, back to uint8 0..levels-1 (clamped), on their device."""
    means = encode_means(ae, images_uint8, levels, batch_size)
    out = [from_model(ae.decode(means[i:i + batch_size]), levels) for i in range(0, means.shape[0], batch_size)]
    return torch.cat(out).to(images_uint8.device)


__all__ = ["KLAutoencoder", "Upsample", "encode_means", "latent_scale", "reconstruct", "DEFAULT_KL_WEIGHT"]
