"""A likelihood bound for latent diffusion: the latent bound + the decoder, never pixel bits/dim.

A latent diffusion model p(x) = integral p_dec(x | z) p_theta(z) dz has no closed-form
likelihood. With the encoder q(z | x) as the proposal, Jensen gives (Rombach et al. 2022 do not
report one; this is the VAE bound with the diffusion model as the prior):

    -log p(x) <= E_q[-log p_dec(x | z)]  +  E_q[-log p_theta(z)]  -  H[q(z | x)]
                 (decoder)                  (latent bound)           (encoder entropy)

- **decoder**: the frozen autoencoder's decoder as a Gaussian of one scale sigma around D(z),
  discretised into the data's grey levels (DDPM's decoder, so it is a probability mass); sigma is
  fitted by maximum likelihood (the RMS residual) on training images, never on the measured ones.
- **latent bound**: the diffusion model's variational bound on the scaled latent s z (the
  continuous-data bound, a density: its L_0 is the Gaussian density), unconditional (the empty
  caption), minus d log s for the change of variable back to z.
- **entropy**: of the diagonal Gaussian q(z | x), in closed form.

All three are estimated with one z ~ q(z | x) per image (and the diffusion bound's own noise).
The sum is an upper bound on the negative log-likelihood of the data; it is reported in bits per
pixel with its parts, under its own names (``latent_*``), so it is never read as the pixel-space
bound of a DDPM: the decoder term, not the diffusion model, dominates it.
"""

from __future__ import annotations

import math

import torch

from genlab.data.transforms import to_model
from genlab.diffusion.process import Denoiser
from genlab.distributions import discretized_gaussian_log_likelihood
from genlab.progress import progress_bar


@torch.no_grad()
def decoder_sigma(ldm, images: torch.Tensor, seed: int = 0, batch_size: int = 256) -> float:
    """The maximum-likelihood scale of a Gaussian decoder: the RMS of x - D(z), z ~ q(z | x), over uint8 ``images``."""
    device = ldm.latent_scale.device
    gen = torch.Generator().manual_seed(seed)
    total, count = 0.0, 0
    for start in range(0, len(images), batch_size):
        x = to_model(images[start:start + batch_size], ldm.levels).to(device)
        mean, logvar = ldm.ae.encode(x)
        z = ldm.ae.sample_latent(mean, logvar, torch.randn(mean.shape, generator=gen).to(device))
        total += (ldm.ae.decode(z).double() - x.double()).pow(2).sum().item()
        count += x.numel()
    return math.sqrt(total / max(1, count))


@torch.no_grad()
def latent_bound(ldm, images: torch.Tensor, sigma: float, seed: int = 0, batch_size: int = 64, max_batch: int = 512,
                 t_samples: int | None = None, progress: bool = False) -> dict:
    """The bound of the module docstring on uint8 ``images``, in bits per pixel, with its parts.

    Returns ``latent_bpd_bound`` (the sum, an upper bound on -log2 p(x) per pixel), its parts per
    pixel ``latent_decoder_bpd``, ``latent_prior_bpd`` (the latent bound, change of variable
    included) and ``latent_entropy_bpd`` (subtracted), the latent bound per *latent* dimension
    ``latent_bits_per_latent_dim``, ``latent_bpd_se`` (standard error over images), ``latent_decoder_sigma``,
    ``n`` and ``t_samples``.
    """
    if float(ldm.latent_scale) == 0:
        raise ValueError("this checkpoint is from the autoencoder stage: there is no latent diffusion model to bound yet")
    if not sigma > 0:
        raise ValueError(f"the decoder scale must be positive, not {sigma}")
    device = ldm.latent_scale.device
    gen = torch.Generator().manual_seed(seed)
    D, d = math.prod(ldm.shape), math.prod(ldm.ae.latent_shape)
    scale = float(ldm.latent_scale)
    log_sigma = math.log(sigma)
    denoiser = Denoiser(ldm.unet, "eps")
    per_image = ldm.diffusion.bound_evaluations(t_samples)
    bar = progress_bar(total=len(images) * per_image, desc="latent bound", unit="eval", unit_scale=True,
                       disable=not progress)
    parts: dict[str, list[torch.Tensor]] = {"decoder": [], "prior": [], "entropy": []}
    for start in range(0, len(images), batch_size):
        x = to_model(images[start:start + batch_size], ldm.levels).to(device)
        B = len(x)
        mean, logvar = ldm.ae.encode(x)
        z = ldm.ae.sample_latent(mean, logvar, torch.randn(mean.shape, generator=gen).to(device))
        x_hat = ldm.ae.decode(z)
        decoder = -discretized_gaussian_log_likelihood(x, x_hat, torch.full_like(x_hat, log_sigma), ldm.levels)
        entropy = 0.5 * (math.log(2 * math.pi * math.e) + logvar.double())
        cond = ldm.encode_text(ldm.empty_tokens(B))
        out = ldm.diffusion.variational_bound(denoiser, z * scale, 0, generator=gen, max_batch=max_batch,
                                              clip_denoised=False, t_samples=t_samples, progress=bar.update, **cond)
        parts["decoder"].append(decoder.flatten(1).sum(1).cpu())
        parts["prior"].append(out["total"] - d * math.log(scale))
        parts["entropy"].append(entropy.flatten(1).sum(1).cpu())
    bar.close()
    per = {k: torch.cat(v) / (D * math.log(2)) for k, v in parts.items()}  # bits per pixel
    total = per["decoder"] + per["prior"] - per["entropy"]
    n = len(images)
    return {"latent_bpd_bound": total.mean().item(), "latent_decoder_bpd": per["decoder"].mean().item(),
            "latent_prior_bpd": per["prior"].mean().item(), "latent_entropy_bpd": per["entropy"].mean().item(),
            "latent_bits_per_latent_dim": (per["prior"].mean() * D / d).item(),
            "latent_bpd_se": total.std().item() / math.sqrt(n) if n > 1 else float("nan"),
            "latent_decoder_sigma": sigma, "n": n, "t_samples": t_samples}
