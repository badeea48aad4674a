"""The VAE's densities: decoders over K grey levels, the Gaussian prior and posterior, the KL.

All results are in nats, elementwise (sum over the dimensions yourself). Data with K levels
takes the values ``-1 + 2k/(K-1)``, k = 0..K-1; bin k is ``[x - 1/(K-1), x + 1/(K-1)]``
and the two edge bins extend to -inf and +inf, so a decoder's K probabilities sum to one
(DDPM's L_0, eq. (13), with 255 generalised to K-1).
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from genlab.distributions import discretized_gaussian_log_likelihood, normal_kl

DECODERS = ("logistic", "gaussian")
LOG_2PI = math.log(2 * math.pi)


def _float(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The tensors in float64 if any is float64, else float32 (never bf16: likelihoods need the bits)."""
    dtype = torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32
    return tuple(t.to(dtype) for t in tensors)


def discretized_logistic_log_likelihood(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor,
                                        levels: int) -> torch.Tensor:
    """log P(x) per element of a logistic(mean, e^log_scale) discretised into ``levels`` bins on [-1, 1].

    The single-component discretised logistic of PixelCNN++ (Salimans et al. 2017, eq. 2) and
    IAF (Kingma et al. 2016), with 1/255 generalised to 1/(K-1). With a = (x + h - mean)/s and
    b = (x - h - mean)/s (h the half bin width), a middle bin has probability
    sigma(a) - sigma(b) = sigma(a) sigma(-b) (1 - e^{b - a}), so

        log P = logsigmoid(a) + logsigmoid(-b) + log(-expm1(b - a)),

    which is exact in float32 for any mean and scale (no cancellation of two CDFs close to 1,
    and a - b = 2h/s > 0 always). The first bin is logsigmoid(a) (mass down to -inf), the last
    logsigmoid(-b) (up to +inf). Computed in float32, or float64 if an input is float64.
    """
    x, mean, log_scale = _float(x, mean, log_scale)
    half_bin = 1.0 / (levels - 1)
    inv_s = torch.exp(-log_scale)
    a = (x - mean + half_bin) * inv_s
    b = (x - mean - half_bin) * inv_s
    log_cdf_upper = F.logsigmoid(a)  # log P(X <= x + h)
    log_sf_lower = F.logsigmoid(-b)  # log P(X >= x - h)
    log_mid = log_cdf_upper + log_sf_lower + torch.log(-torch.expm1(-2 * half_bin * inv_s))
    first = x < -1 + half_bin / 2
    last = x > 1 - half_bin / 2
    return torch.where(first, log_cdf_upper, torch.where(last, log_sf_lower, log_mid))


def decoder_log_likelihood(decoder: str, x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor,
                           levels: int) -> torch.Tensor:
    """log p(x | z) per element for the decoder named ``decoder`` ("logistic" or "gaussian"), in nats.

    "gaussian" is :func:`genlab.distributions.discretized_gaussian_log_likelihood` (float64),
    returned in float32 unless an input is float64.
    """
    if decoder == "logistic":
        return discretized_logistic_log_likelihood(x, mean, log_scale, levels)
    if decoder == "gaussian":
        out = discretized_gaussian_log_likelihood(x, mean, log_scale, levels)
        return out.to(_float(x, mean, log_scale)[0].dtype)
    raise ValueError(f"unknown decoder {decoder!r}; choose one of {', '.join(DECODERS)}")


def gaussian_kl(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, e^logvar) || N(0, 1)) per element, in nats (Kingma & Welling 2014, Appendix B)."""
    mean, logvar = _float(mean, logvar)
    zero = torch.zeros((), dtype=mean.dtype, device=mean.device)
    return normal_kl(mean, logvar, zero, zero)  # the shared Gaussian KL with the prior's mean 0, log-variance 0


def log_normal(z: torch.Tensor, mean: torch.Tensor | float = 0.0, logvar: torch.Tensor | float = 0.0) -> torch.Tensor:
    """log N(z; mean, e^logvar) per element, in nats (mean 0 and logvar 0: the standard normal prior)."""
    mean = torch.as_tensor(mean, dtype=z.dtype, device=z.device)
    logvar = torch.as_tensor(logvar, dtype=z.dtype, device=z.device)
    return -0.5 * (LOG_2PI + logvar + (z - mean) ** 2 * torch.exp(-logvar))
