"""What the autoencoder and the VAE share: an encoder, a decoder (``net``), a latent space.

:class:`LatentFamily` builds the networks of :mod:`genlab.nets.autoencoder` from a config and
implements, once for both families, drawing images from latents z ~ N(0, I) (sample i depends
only on (seed, i)), reconstructions and interpolations between the codes of two images. A
subclass says what its codes are (:meth:`LatentFamily.code`: the AE's z, the VAE's posterior
mean) and how a latent becomes an image in model space (:meth:`LatentFamily.decode_image`).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from genlab.config import RunConfig
from genlab.data.transforms import from_model, to_model
from genlab.errors import ConfigError
from genlab.family import batched_draw
from genlab.nets.autoencoder import ConvDecoder, ConvEncoder
from genlab.rng import per_sample_generators, randn

INTERPOLATIONS = ("linear", "slerp")


def soft_clamp(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """A smooth clamp to (lo, hi): about x in the middle, bounded, with a gradient that fades out
    past a bound (as e^-distance) instead of stopping there.

    lo + softplus(x - lo) - softplus(x - hi). The bounds keep exp() of a log-variance or
    log-scale finite in bf16 training; a hard clamp's zero gradient at the bound would keep a
    value that just overshot from coming back.
    """
    return lo + F.softplus(x - lo) - F.softplus(x - hi)


def at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """A network output for likelihood arithmetic: bf16 (autocast) becomes float32; float64 stays."""
    return x if x.dtype == torch.float64 else x.float()


def lerp(za: torch.Tensor, zb: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """(1 - t) za + t zb for each t: ``[L]``, ``[L]``, ``[S]`` -> ``[S, L]``."""
    t = t[:, None]
    return (1 - t) * za + t * zb


def slerp(za: torch.Tensor, zb: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation (Shoemake 1985; White 2016 for latents of a Gaussian prior): ``[S, L]``.

    sin((1-t) w)/sin w za + sin(t w)/sin w zb with w the angle between za and zb. A draw from a
    high-dimensional N(0, I) lies near the sphere of radius sqrt(L), and the straight line
    between two such points passes well inside it, where the prior has little mass; the arc
    does not. Falls back to :func:`lerp` when the two are (anti)parallel.
    """
    cos = torch.dot(za, zb) / (za.norm() * zb.norm()).clamp_min(1e-12)
    omega = torch.arccos(cos.clamp(-1, 1))
    if torch.sin(omega).abs() < 1e-6:
        return lerp(za, zb, t)
    t = t[:, None]
    return (torch.sin((1 - t) * omega) * za + torch.sin(t * omega) * zb) / torch.sin(omega)


class LatentFamily(nn.Module):
    """Images of ``shape`` (C, H, W) with ``levels`` grey levels through a ``latent_dim``-dimensional code.

    ``encoder``: image [B, C, H, W] in [-1, 1] -> [B, enc_dim]; ``net``: the decoder, latent
    [B, latent_dim] -> [B, out_channels, H, W] (the network one sample evaluates once).
    """

    # the capabilities both families declare (genlab.family); each registers itself
    config_section = "vae"  # VAEConfig holds the autoencoder's settings (--recon, --ae-noise) as well
    sampler_names = ("decoder",)
    shardable = True  # forward(..., shard=): the noise is drawn for the whole global batch
    latent = True
    quality_after_training = True
    presets: ClassVar[dict] = {"*": {"train": {"warmup": 0}}, "mnist": {"train": {"batch_size": 128}}}
    preview_count = 64  # samples in a progress grid

    def __init__(self, encoder: nn.Module, decoder: nn.Module, shape: tuple[int, int, int], levels: int,
                 latent_dim: int):
        super().__init__()
        if len(shape) != 3 or not 2 <= levels <= 256:
            raise ValueError(f"{type(self).__name__} models images (C, H, W) with 2..256 levels, "
                             f"not shape {tuple(shape)} with {levels} levels")
        self.encoder = encoder
        self.net = decoder
        self.shape = tuple(shape)
        self.levels = levels
        self.latent_dim = latent_dim

    @property
    def uses_labels(self) -> bool:
        """Whether the Trainer should pass labels: never, these families are unconditional."""
        return False

    @staticmethod
    def build_nets(cfg: RunConfig, encoder_dim: int, decoder_channels: int) -> tuple[ConvEncoder, ConvDecoder]:
        """Encoder to ``encoder_dim`` numbers and decoder to ``decoder_channels`` maps, from ``cfg``."""
        shape, levels = tuple(cfg.data.shape), cfg.data.levels
        if len(shape) != 3 or not levels:
            raise ConfigError(f"the {cfg.family} family models images with discrete levels, and {cfg.data.name} "
                              f"has examples of shape {shape} with {levels} levels; use an image dataset.")
        m = cfg.model
        return (ConvEncoder(shape, m.channels, encoder_dim),
                ConvDecoder(shape, m.channels, m.latent_dim, decoder_channels))

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The parameters' dtype: float32 (also under bf16 autocast), or float64 for exact checks."""
        return next(self.net.parameters()).dtype

    def to_model(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 images -> floats in [-1, 1] (the parameters' dtype), on this model's device."""
        return to_model(batch, self.levels).to(self.device, self.dtype)

    # ----- what a subclass provides -----------------------------------------------------
    def code(self, x: torch.Tensor) -> torch.Tensor:
        """The deterministic code ``[B, latent_dim]`` (float32) of images ``x`` in model space."""
        raise NotImplementedError

    def decode_image(self, z: torch.Tensor, generators: list[torch.Generator] | None = None) -> torch.Tensor:
        """Latents ``[B, latent_dim]`` -> images in model space ``[B, C, H, W]`` (float32).

        ``generators`` (one per row) are for families whose decoder can draw pixel noise.
        """
        raise NotImplementedError

    # ----- shared ----------------------------------------------------------------------------
    def _sample(self, n: int, seed: int, batch_size: int, progress: bool, labels, **decode) -> torch.Tensor:
        """uint8 [n, C, H, W]: decode z ~ N(0, I), z of sample i drawn from the generator of (seed, i)."""
        if labels is not None:
            raise ConfigError(f"the {type(self).__name__} is unconditional: it cannot sample a class; drop the class.")

        def draw(start: int, b: int) -> torch.Tensor:
            gens = per_sample_generators(seed, start, b)
            z = randn((b, self.latent_dim), gens, self.device, self.dtype)
            return from_model(self.decode_image(z, gens, **decode).cpu(), self.levels)

        return batched_draw(n, batch_size, draw, progress=progress, shape=self.shape, dtype=torch.uint8)

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """The codes ``[N, latent_dim]`` (float32, on CPU) of uint8 images ``[N, C, H, W]`` (see :meth:`code`)."""
        return torch.cat([self.code(self.to_model(images[s : s + batch_size])).cpu()
                          for s in range(0, images.shape[0], batch_size)])

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """uint8 images [N, C, H, W] -> their reconstructions, uint8: the decoder's output at each code."""
        out = []
        for s in range(0, images.shape[0], batch_size):
            z = self.code(self.to_model(images[s : s + batch_size]))
            out.append(from_model(self.decode_image(z).cpu(), self.levels))
        return torch.cat(out)

    @torch.no_grad()
    def interpolate(self, a: torch.Tensor, b: torch.Tensor, steps: int = 8, method: str = "linear") -> torch.Tensor:
        """uint8 [steps, C, H, W]: decodes along the path between the codes of images ``a`` and ``b`` ([C, H, W]).

        ``method``: "linear" (a straight line) or "slerp" (:func:`slerp`, the arc, suited to a
        Gaussian prior). The first and last frames are the reconstructions of ``a`` and ``b``.
        """
        if method not in INTERPOLATIONS:
            raise ValueError(f"unknown interpolation {method!r}; choose one of {', '.join(INTERPOLATIONS)}")
        if steps < 2:
            raise ValueError(f"an interpolation needs at least 2 steps, not {steps}")
        for name, img in (("a", a), ("b", b)):
            if tuple(img.shape) != self.shape:
                raise ValueError(f"image {name} has shape {tuple(img.shape)}, not {self.shape}")
        za, zb = self.code(self.to_model(torch.stack([a, b]))).double()
        t = torch.linspace(0, 1, steps, dtype=torch.float64, device=za.device)
        z = (slerp if method == "slerp" else lerp)(za, zb, t).to(self.dtype)
        return from_model(self.decode_image(z).cpu(), self.levels)

