"""The probability-flow ODE likelihood against the exact density of Gaussian data."""

import math

import pytest
import torch

from genlab.diffusion import GaussianDiffusion
from genlab.diffusion.likelihood import SigmaCurve, ode_bits_per_dim, ode_log_likelihood
from genlab.diffusion.process import Denoiser

MU, S = 0.3, 0.5


@pytest.fixture(scope="module")
def diff():
    return GaussianDiffusion.from_schedule("linear", 1000)


def continuous_oracle(diff, parameterization="eps", mu=MU, s=S):
    """The exact denoiser of N(mu, s^2) data at fractional timesteps, on the ODE's own sigma curve."""
    curve = SigmaCurve(diff)

    def net(xt, t):
        ab = curve.alpha_bar_at(t).to(xt.dtype).reshape(-1, *([1] * (xt.dim() - 1)))
        eps = (1 - ab).sqrt() * (xt - ab.sqrt() * mu) / (ab * s**2 + 1 - ab)
        if parameterization == "eps":
            return eps
        x0 = (xt - (1 - ab).sqrt() * eps) / ab.sqrt()
        return x0 if parameterization == "x0" else ab.sqrt() * eps - (1 - ab).sqrt() * x0

    return Denoiser(net, parameterization)


def exact_log_density(diff, x):
    """log p(x_{t=0}) of the flow of Gaussian data with the prior N(0, I), in closed form.

    The flow is affine: y(sigma) - mu = c (y(sigma_0) - mu), c = sqrt((s^2 + sigma^2) / (s^2 + sigma_0^2)),
    y = x / sqrt(ab). So log p = log N(sqrt(ab_T) y_T; 0, I) + D/2 log ab_T + D log c - D/2 log ab_0.
    (The true q(x_{t=0}) differs only by the prior's mismatch, KL(q(x_T) || N(0, I)), which is tiny.)
    """
    ab0, ab1 = float(diff.alpha_bar[0]), float(diff.alpha_bar[-1])
    s0, s1 = (1 - ab0) / ab0, (1 - ab1) / ab1  # sigma^2
    c = math.sqrt((S**2 + s1) / (S**2 + s0))
    x = x.double().flatten(1)
    D = x.shape[1]
    x1 = math.sqrt(ab1) * (MU + c * (x / math.sqrt(ab0) - MU))
    log_prior = (-0.5 * x1**2 - 0.5 * math.log(2 * math.pi)).sum(1) + 0.5 * D * math.log(ab1)
    return log_prior + D * math.log(c) - 0.5 * D * math.log(ab0)


def true_log_density(diff, x):
    """log q(x_{t=0}) of the data itself: N(sqrt(ab_0) mu, ab_0 s^2 + 1 - ab_0) per dimension."""
    ab = float(diff.alpha_bar[0])
    var = ab * S**2 + 1 - ab
    return (-0.5 * (x.double() - math.sqrt(ab) * MU) ** 2 / var - 0.5 * math.log(2 * math.pi * var)).flatten(1).sum(1)


def test_the_curve_passes_through_the_trained_timesteps(diff):
    curve = SigmaCurve(diff)
    t = torch.tensor([0.0, 1.0, 500.0, 999.0])
    torch.testing.assert_close(curve.alpha_bar_at(t), diff.alpha_bar[[0, 1, 500, 999]])
    fine = torch.linspace(0, 999, 20000)
    assert (curve.slope(fine.numpy()) > 0).all()  # the spline is monotone: one timestep per noise level


@pytest.mark.parametrize("parameterization", ["eps", "x0", "v"])
def test_exact_trace_gives_the_exact_log_density(diff, parameterization):
    x = torch.tensor([[[-0.8, 0.1, 0.9]], [[0.3, 0.35, -0.2]]], dtype=torch.float64)  # [2, 1, 3]
    out = ode_log_likelihood(continuous_oracle(diff, parameterization), diff, x, exact_trace=True)
    torch.testing.assert_close(out["log_p"], exact_log_density(diff, x), rtol=0, atol=2e-4)
    torch.testing.assert_close(out["log_p"], true_log_density(diff, x), rtol=0, atol=5e-3)
    assert out["nfe"] > 10


def test_hutchinson_is_unbiased(diff):
    """Over many points the probe noise averages out: the mean log density matches the exact mean."""
    gen = torch.Generator().manual_seed(0)
    x = MU + S * torch.randn(256, 16, dtype=torch.float64, generator=gen)
    out = ode_log_likelihood(continuous_oracle(diff), diff, x, generator=gen)
    exact = exact_log_density(diff, x)
    err = out["log_p"] - exact
    assert abs(err.mean().item()) < 4 * err.std().item() / math.sqrt(len(x)) + 2e-3
    assert err.std().item() > 0  # the probes do add noise per point


def test_bits_per_dim_adds_the_bin_volume(diff):
    """Dequantised bits/dim = -log p / (D ln 2) + log2((K - 1) / 2); the noise is seeded."""
    x = torch.full((4, 1, 2, 2), 0.2, dtype=torch.float64)
    a = ode_bits_per_dim(continuous_oracle(diff), diff, x, 256, torch.Generator().manual_seed(1))
    b = ode_bits_per_dim(continuous_oracle(diff), diff, x, 256, torch.Generator().manual_seed(1))
    assert torch.equal(a["bpd"], b["bpd"])
    expected = -exact_log_density(diff, x) / (4 * math.log(2)) + math.log2(255 / 2)
    torch.testing.assert_close(a["bpd"], expected, rtol=0, atol=0.05)  # dequantisation moves x by < 1/255
