"""The variational autoencoder (Kingma & Welling 2014) and the beta-VAE (Higgins et al. 2017).

Notation: x an image in model space [-1, 1] with D = C H W dimensions and K grey levels;
z in R^L the latent, prior p(z) = N(0, I); the encoder gives q(z|x) = N(mu, diag(e^logvar));
the decoder gives p(x|z), a discretised logistic or Gaussian per pixel with mean ``mean`` and
scale e^log_scale over the K bins (:mod:`genlab.vae.likelihood`).

    ELBO(x)        = E_q[log p(x|z)] - KL(q(z|x) || p(z))                      (K&W eq. 3)
    beta objective = E_q[log p(x|z)] - beta KL                                 (Higgins eq. 4)
    IWAE_k(x)      = E[log (1/k) sum_i p(x, z_i) / q(z_i|x)],  z_i ~ q(z|x)    (Burda et al. 2016, eq. 8)

IWAE_1 is the ELBO, IWAE_k <= IWAE_{k+1} <= log p(x), and IWAE_k -> log p(x) as k -> inf
(Burda et al., Theorem 1). Losses and bounds are reported in bits/dim: nats / (D ln 2),
negated, so lower is better.
"""

from __future__ import annotations

import math
from typing import cast

import torch
from torch import nn

from genlab.config import RunConfig
from genlab.distributions import nats_to_bpd
from genlab.family import batched_draw, register_family
from genlab.rng import per_sample_generators
from genlab.vae.latent import LatentFamily, at_least_float32, soft_clamp
from genlab.vae.likelihood import DECODERS, decoder_log_likelihood, gaussian_kl, log_normal

# soft bounds (see soft_clamp) that keep bf16 training finite: q's standard deviation in
# (e^-6, e^2); the decoder's scale in (e^-7, e^2) (PixelCNN++ bounds log_scale below by -7,
# about a quarter of an 8-bit bin)
LOGVAR_RANGE = (-12.0, 4.0)
LOG_SCALE_RANGE = (-7.0, 2.0)


@register_family("vae")
class VAE(LatentFamily):
    """A VAE over images of ``shape`` (C, H, W) with ``levels`` grey levels.

    ``encoder``: image -> [B, 2L] (the mean and log-variance halves of q(z|x)); ``decoder``
    (``net``): z [B, L] -> [B, 2C, H, W] (the mean and log-scale halves of p(x|z)).
    ``beta`` weighs the KL term of the training loss (1: the ELBO; > 1: a beta-VAE);
    ``decoder_likelihood`` is "logistic" or "gaussian"; ``iwae_k`` is the default number of
    importance samples of :meth:`bits_per_dim`.
    """

    has_likelihood = True  # bits_per_dim: the IWAE bound
    sample_options = frozenset({"pixel_noise"})

    def __init__(self, encoder: nn.Module, decoder: nn.Module, shape: tuple[int, int, int], levels: int,
                 latent_dim: int, beta: float = 1.0, decoder_likelihood: str = "logistic", iwae_k: int = 100):
        super().__init__(encoder, decoder, shape, levels, latent_dim)
        if decoder_likelihood not in DECODERS:
            raise ValueError(f"unknown decoder {decoder_likelihood!r}; choose one of {', '.join(DECODERS)}")
        if beta <= 0 or iwae_k < 1:
            raise ValueError(f"beta must be positive and iwae_k at least 1, not {beta} and {iwae_k}")
        self.beta = beta
        self.decoder_likelihood = decoder_likelihood
        self.iwae_k = iwae_k

    @classmethod
    def from_config(cls, cfg: RunConfig) -> VAE:
        """Build from a resolved config whose ``data.shape`` and ``data.levels`` are filled in."""
        L, C = cfg.model.latent_dim, cfg.data.shape[0]
        encoder, decoder = cls.build_nets(cfg, 2 * L, 2 * C)
        v = cfg.vae
        shape = cast("tuple[int, int, int]", tuple(cfg.data.shape))  # build_nets raised unless (C, H, W)
        return cls(encoder, decoder, shape, cfg.data.levels, L, beta=v.beta,
                   decoder_likelihood=v.decoder, iwae_k=v.iwae_k)

    @classmethod
    def describe(cls, cfg: RunConfig) -> str:
        """'vae', or 'vae beta=B' for a beta-VAE."""
        return f"vae beta={cfg.vae.beta:g}" if cfg.vae.beta != 1 else "vae"

    # ----- the two conditionals ----------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z|x): (mu, logvar), each [B, L] float32 (float64 for a float64 model)."""
        mu, logvar = at_least_float32(self.encoder(x)).chunk(2, dim=1)
        return mu, soft_clamp(logvar, *LOGVAR_RANGE)

    def decode(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """p(x|z): (mean, log_scale), each [B, C, H, W] float32 (float64 for a float64 model)."""
        mean, log_scale = at_least_float32(self.net(z)).chunk(2, dim=1)
        return mean, soft_clamp(log_scale, *LOG_SCALE_RANGE)

    def log_px_given_z(self, x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
        """log p(x|z) per example [B], in nats (float32; float64 if ``x`` is)."""
        return decoder_log_likelihood(self.decoder_likelihood, x, mean, log_scale, self.levels).flatten(1).sum(1)

    def code(self, x: torch.Tensor) -> torch.Tensor:
        """The posterior mean mu(x)."""
        return self.encode(x)[0]

    def decode_image(self, z: torch.Tensor, generators: list[torch.Generator] | None = None,
                     pixel_noise: bool = False) -> torch.Tensor:
        """The decoder's mean at z (model space), or with ``pixel_noise`` a draw from p(x|z).

        A draw is mean + scale * noise (logistic noise log(u) - log(1-u), or Gaussian), which
        :func:`genlab.data.transforms.from_model` then rounds to the nearest level and clamps to
        [-1, 1]: that is exactly a draw from the discretised decoder, whose edge bins reach
        to -inf and +inf. Row i's noise comes from ``generators[i]``.
        """
        mean, log_scale = self.decode(z)
        if not pixel_noise:
            return mean
        if generators is None:
            raise ValueError("pixel noise needs one generator per latent")
        if self.decoder_likelihood == "logistic":
            u = torch.stack([torch.rand(mean.shape[1:], generator=g) for g in generators])
            u = u.clamp(1e-6, 1 - 1e-6)
            noise = torch.log(u) - torch.log1p(-u)
        else:
            noise = torch.stack([torch.randn(mean.shape[1:], generator=g) for g in generators])
        noise = noise.to(mean.device, mean.dtype)
        return mean + torch.exp(log_scale) * noise

    # ----- training --------------------------------------------------------------------------
    def forward(self, batch: torch.Tensor, generator: torch.Generator, labels: torch.Tensor | None = None,
                shard: tuple[slice, int] | None = None) -> dict[str, torch.Tensor]:
        """Per-example terms [B] of one draw z = mu + sigma eps (the reparameterisation, K&W Sec. 2.4).

        ``loss`` is the negative beta objective, -(log p(x|z) - beta KL), in bits/dim (the KL in
        closed form); ``elbo_bpd`` is the same with beta = 1 (an unbiased estimate of the
        negative ELBO), ``recon_bpd`` = -log p(x|z) and ``kl_bpd`` = KL, all in bits/dim. eps is
        drawn on the CPU from ``generator``. ``shard`` = (rows, B): ``batch`` is the slice
        ``rows`` of a global batch of B; eps is drawn for all B rows and these rows kept, so
        several processes see the noise one would (see :mod:`genlab.training.trainer`).
        ``labels`` are ignored (the VAE is unconditional).
        """
        x = self.to_model(batch)
        rows, B = shard or (slice(None), x.shape[0])
        mu, logvar = self.encode(x)
        eps = torch.randn((B, self.latent_dim), generator=generator)[rows].to(x.device, x.dtype)
        z = mu + torch.exp(0.5 * logvar) * eps
        recon_nats = -self.log_px_given_z(x, *self.decode(z))  # [B]
        kl_nats = gaussian_kl(mu, logvar).sum(1)  # [B]
        D = math.prod(self.shape)
        recon_bpd, kl_bpd = nats_to_bpd(recon_nats, D), nats_to_bpd(kl_nats, D)
        return {"loss": recon_bpd + self.beta * kl_bpd, "elbo_bpd": recon_bpd + kl_bpd,
                "recon_bpd": recon_bpd, "kl_bpd": kl_bpd}

    # ----- sampling --------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, seed: int = 0, batch_size: int = 256, progress: bool = False,
               labels: torch.Tensor | None = None, pixel_noise: bool = False) -> torch.Tensor:
        """``n`` images, uint8 [n, C, H, W] in 0..levels-1: z ~ N(0, I) through the decoder.

        By default each image is the decoder's mean at z rounded to the nearest level (the
        mode of the continuous logistic or Gaussian; the usual way VAE samples are shown),
        since the per-pixel noise of a factorised decoder is independent salt-and-pepper that
        carries no structure. ``pixel_noise=True`` draws x ~ p(x|z) instead: an exact sample of
        the model whose likelihood :meth:`bits_per_dim` measures. Sample i depends only on
        (seed, i) (its z, then its pixel noise, come from one generator), not on ``batch_size``.
        """
        return self._sample(n, seed, batch_size, progress, labels, pixel_noise=pixel_noise)

    # ----- likelihood ------------------------------------------------------------------------
    def log_weights(self, x: torch.Tensor, eps: torch.Tensor, max_batch: int = 1024) -> dict[str, torch.Tensor]:
        """log importance weights of z_i = mu + sigma eps_i, for images ``x`` [B, C, H, W] and ``eps`` [k, B, L].

        Returns float64 ``[k, B]`` tensors in nats: ``log_px_z`` = log p(x|z_i) and ``log_ratio``
        = log p(z_i) - log q(z_i|x); log w_i = log p(x|z_i) + log_ratio. The decoder runs on at
        most ``max_batch`` latents at a time.
        """
        k, B, L = eps.shape
        mu, logvar = (t.double() for t in self.encode(x))
        z = mu + torch.exp(0.5 * logvar) * eps.double()  # [k, B, L]
        log_ratio = (log_normal(z) - log_normal(z, mu, logvar)).sum(-1)  # [k, B]
        z_flat = z.reshape(k * B, L)
        log_px_z = []
        for s in range(0, k * B, max_batch):
            idx = torch.arange(s, min(s + max_batch, k * B), device=x.device)
            mean, log_scale = self.decode(z_flat[idx].to(self.dtype))
            log_px_z.append(self.log_px_given_z(x[idx % B], mean, log_scale).double())
        return {"log_px_z": torch.cat(log_px_z).view(k, B), "log_ratio": log_ratio}

    @torch.no_grad()
    def bits_per_dim(self, images: torch.Tensor, seed: int = 0, batch_size: int | None = None,
                     progress: bool = False, k: int | None = None, max_batch: int = 1024) -> dict:
        """The negative IWAE bound (Burda et al. 2016) on ``images`` (uint8) in bits/dim, with the ELBO.

        For each image, k draws z_i ~ q(z|x) (``k`` defaults to ``iwae_k``) give
        log p(x) >= log (1/k) sum_i w_i, w_i = p(x|z_i) p(z_i) / q(z_i|x). The same k draws
        estimate the ELBO as the mean of log w_i, so ``bpd`` <= ``elbo_bpd`` holds image by
        image, and with k = 1 the two are equal. Image i's draws come from the generator of
        (seed, i): the result does not depend on ``batch_size`` (default: ``max_batch // k``
        images, so each batch is about one decoder pass of ``max_batch`` latents).

        Returns ``bpd`` (the bound, averaged over images), ``bpd_se`` (its standard error over
        images), ``n``, ``iwae_k``, ``elbo_bpd`` = ``recon_bpd`` + ``kl_bpd`` (the negative ELBO;
        recon = -E log p(x|z), kl = E[log q(z|x) - log p(z)], both averaged over the k draws).
        """
        k = self.iwae_k if k is None else k
        if k < 1:
            raise ValueError(f"k must be at least 1, not {k}")
        n = images.shape[0]
        if n < 1:
            raise ValueError("bits/dim needs at least one image")
        batch_size = batch_size or max(1, max_batch // k)
        D = math.prod(self.shape)

        def draw(start: int, b: int) -> torch.Tensor:
            """[b, 3] float64 nats: the negative IWAE bound, -E log p(x|z) and E[log q - log p(z)] of each image."""
            x = self.to_model(images[start : start + b])
            gens = per_sample_generators(seed, start, b)
            eps = torch.stack([torch.randn((k, self.latent_dim), generator=g) for g in gens], dim=1)  # [k, b, L]
            out = self.log_weights(x, eps.to(x.device), max_batch)
            log_w = out["log_px_z"] + out["log_ratio"]  # [k, b]
            return torch.stack([-(torch.logsumexp(log_w, 0) - math.log(k)), -out["log_px_z"].mean(0),
                                -out["log_ratio"].mean(0)], dim=1)

        nats = batched_draw(n, batch_size, draw, progress=progress, desc=f"bits/dim (IWAE, k={k})")
        # [n] bits/dim each (contiguous, so the means reduce exactly as over the concatenated parts)
        per = {name: nats_to_bpd(nats[:, i].contiguous(), D) for i, name in enumerate(("iwae", "recon", "kl"))}
        se = per["iwae"].std().item() / math.sqrt(n) if n > 1 else float("nan")
        recon, kl = per["recon"].mean().item(), per["kl"].mean().item()
        return {"bpd": per["iwae"].mean().item(), "bpd_se": se, "n": n, "iwae_k": k,
                "elbo_bpd": recon + kl, "recon_bpd": recon, "kl_bpd": kl}
