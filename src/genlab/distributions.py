"""Densities several families share: the Gaussian KL, the discretised Gaussian, nats -> bits/dim.

The diffusion's bound (:mod:`genlab.diffusion.process`) and the VAE (:mod:`genlab.vae.likelihood`)
both use them, so they live here, at the package root, and neither family imports the other.

Units: every result is in nats, elementwise (sum over the dimensions yourself), except
:func:`nats_to_bpd`, which converts nats per example to bits per dimension. Data with K
levels takes the values ``-1 + 2k/(K-1)``, k = 0..K-1.
"""

from __future__ import annotations

import math

import torch


def nats_to_bpd(nats: torch.Tensor, num_dims: int) -> torch.Tensor:
    """Nats per example -> bits per dimension."""
    return nats / (num_dims * math.log(2.0))


def normal_kl(mean1, logvar1, mean2, logvar2):
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)), elementwise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def gaussian_log_density(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, e^(2 log_scale)) per element, in nats, in float64 (continuous data: a density, not a mass)."""
    x, mean, log_scale = (a.double() for a in (x, mean, log_scale))
    return -0.5 * math.log(2 * math.pi) - log_scale - 0.5 * ((x - mean) * torch.exp(-log_scale)) ** 2


def discretized_gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor, levels: int):
    """log p(x) per element of a Gaussian discretised into ``levels`` bins on [-1, 1].

    DDPM eq. (13) with 1/255 generalised to 1/(K-1) for K grey levels: the data values
    are ``-1 + 2k/(K-1)``, bin ``k`` covers ``[x - 1/(K-1), x + 1/(K-1)]``, and the
    edge bins extend to -inf and +inf so the K probabilities sum to one. Computed in
    float64 with exact normal CDFs. Returns nats, same shape as ``x``.
    """
    x, mean, log_scale = (a.double() for a in (x, mean, log_scale))
    half_bin = 1.0 / (levels - 1)
    inv_std = torch.exp(-log_scale)
    upper = (x - mean + half_bin) * inv_std
    lower = (x - mean - half_bin) * inv_std
    log_cdf_upper = torch.special.log_ndtr(upper)  # log P(X <= x + h), first bin
    log_sf_lower = torch.special.log_ndtr(-lower)  # log P(X >= x - h), last bin
    # middle bins: P(lower < Z < upper); use the tail where it is more accurate
    mid = torch.where(
        lower > 0,
        torch.special.ndtr(-lower) - torch.special.ndtr(-upper),
        torch.special.ndtr(upper) - torch.special.ndtr(lower),
    )
    log_mid = torch.log(mid.clamp_min(1e-300))
    first = x < -1 + half_bin / 2
    last = x > 1 - half_bin / 2
    return torch.where(first, log_cdf_upper, torch.where(last, log_sf_lower, log_mid))
