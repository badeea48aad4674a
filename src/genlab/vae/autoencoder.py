"""The autoencoder and the denoising autoencoder (Vincent et al. 2008).

An encoder maps x (model space, [-1, 1]) to a code z = f(x) in R^L and a decoder maps it back,
x_hat = g(z); training minimises the reconstruction error ||g(f(x)) - x||, squared (MSE) or
not (MAE), averaged over the D = C H W dimensions. The denoising autoencoder encodes a
corrupted x~ = x + sigma eps, eps ~ N(0, I), and still reconstructs the clean x.

Neither is a generative model: nothing ties the codes f(x) to any distribution, so there is
no density to sample latents from. :meth:`Autoencoder.sample` decodes z ~ N(0, I) anyway, the
lecture notes' demonstration: these images are typically blurred blends or noise, not digits,
which is the gap the VAE closes by making p(z) = N(0, I) part of the objective.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from genlab.config import RunConfig
from genlab.family import register_family
from genlab.vae.latent import LatentFamily, at_least_float32

RECON_LOSSES = ("mse", "mae")


@register_family("ae")
class Autoencoder(LatentFamily):
    """A (denoising) autoencoder over images of ``shape`` (C, H, W) with ``levels`` grey levels.

    ``encoder``: image -> z [B, L]; ``decoder`` (``net``): z -> image [B, C, H, W] in model
    space. ``recon`` is "mse" or "mae"; ``noise`` = sigma > 0 makes it a denoising
    autoencoder (sigma in [-1, 1] units: 0.5 is a quarter of the data range).
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, shape: tuple[int, int, int], levels: int,
                 latent_dim: int, recon: str = "mse", noise: float = 0.0):
        super().__init__(encoder, decoder, shape, levels, latent_dim)
        if recon not in RECON_LOSSES:
            raise ValueError(f"unknown reconstruction loss {recon!r}; choose one of {', '.join(RECON_LOSSES)}")
        if noise < 0:
            raise ValueError(f"the noise level must be at least 0, not {noise}")
        self.recon = recon
        self.noise = noise

    @classmethod
    def describe(cls, cfg: RunConfig) -> str:
        """'ae', or 'ae denoising SIGMA' for a denoising autoencoder."""
        return f"ae denoising {cfg.vae.noise:g}" if cfg.vae.noise else "ae"

    @classmethod
    def from_config(cls, cfg: RunConfig) -> Autoencoder:
        """Build from a resolved config whose ``data.shape`` and ``data.levels`` are filled in."""
        L, C = cfg.model.latent_dim, cfg.data.shape[0]
        encoder, decoder = cls.build_nets(cfg, L, C)
        shape = cast("tuple[int, int, int]", tuple(cfg.data.shape))  # build_nets raised unless (C, H, W)
        return cls(encoder, decoder, shape, cfg.data.levels, L, recon=cfg.vae.recon,
                   noise=cfg.vae.noise)

    def code(self, x: torch.Tensor) -> torch.Tensor:
        """z = f(x), [B, L] float32 (float64 for a float64 model)."""
        return at_least_float32(self.encoder(x))

    def decode_image(self, z: torch.Tensor, generators: list[torch.Generator] | None = None) -> torch.Tensor:
        """x_hat = g(z) in model space, float32 (the decoder is deterministic: ``generators`` are unused)."""
        return at_least_float32(self.net(z))

    def forward(self, batch: torch.Tensor, generator: torch.Generator, labels: torch.Tensor | None = None,
                shard: tuple[slice, int] | None = None) -> dict[str, torch.Tensor]:
        """Per-example terms [B]: ``loss`` (the ``recon`` error), ``mse`` and ``mae``, means over the D dimensions in [-1, 1].

        A denoising autoencoder encodes x + noise * eps, eps ~ N(0, I) drawn on the CPU from
        ``generator`` (for all B rows of a ``shard`` = (rows, B), as in :class:`genlab.vae.VAE`);
        with ``noise`` = 0 nothing is drawn. ``labels`` are ignored.
        """
        x = self.to_model(batch)
        x_in = x
        if self.noise > 0:
            rows, B = shard or (slice(None), x.shape[0])
            eps = torch.randn((B, *self.shape), generator=generator)[rows].to(x.device, x.dtype)
            x_in = x + self.noise * eps
        err = (self.decode_image(self.code(x_in)) - x).flatten(1)
        mse, mae = err.pow(2).mean(1), err.abs().mean(1)
        return {"loss": mse if self.recon == "mse" else mae, "mse": mse, "mae": mae}

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0, batch_size: int = 256, progress: bool = False,
               labels: torch.Tensor | None = None) -> torch.Tensor:
        """``n`` images, uint8 [n, C, H, W]: the decoder at z ~ N(0, I), rounded to the nearest level.

        An autoencoder has no prior, so this is not sampling from a model: it shows what the
        decoder does away from the codes it was trained on (see the module docstring). Sample i
        depends only on (seed, i), not on ``batch_size``.
        """
        return self._sample(n, seed, batch_size, progress, labels)
