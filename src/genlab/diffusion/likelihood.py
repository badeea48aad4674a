"""Exact likelihood of a diffusion model through its probability-flow ODE.

Song et al. (2021), "Score-based generative modeling through SDEs", Sec. 4.3 and App. D.2: the
deterministic flow that shares the model's marginals maps data to the prior, and the
instantaneous change of variables (Chen et al. 2018) gives log p(x) along the way:

    log p_0(x(0)) = log p_T(x(T)) + int_0^T div f(x(t), t) dt.

The trace in the divergence is estimated with Hutchinson's estimator z^T (df/dx) z (one
Rademacher probe z per image, fixed along the path, as in FFJORD), or computed exactly for small
dimension. The integral is solved with SciPy's adaptive Runge-Kutta 4(5) (``solve_ivp``,
``RK45``) at ``rtol = atol = 1e-5`` by default, the setting of Song et al.

The discrete-time model is read in the variance-exploding view of :mod:`genlab.diffusion.solvers`:
y = x_t / sqrt(alpha_bar_t), sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t), and the flow is
dy/dsigma = eps_theta(x_t, t). The ODE runs in t from the first trained timestep (t = 0, the
paper's t = epsilon) to T - 1; between trained timesteps, log sigma follows the cubic spline
through the trained values and the network is given the fractional timestep (as score_sde does
for DDPM checkpoints). The density found is that of the first noisy latent x_{t=0}, whose
noise (std sqrt(beta_0) = 0.01 for the linear schedule) is close to the data's quantisation.

Units: nats per example inside; :func:`ode_bits_per_dim` converts, with uniform dequantisation:
-log P(k) <= E_u[-log p(x_k + u)] - D log(bin width), bin width 2 / (K - 1) in model space.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from genlab.diffusion.process import Denoiser, GaussianDiffusion
from genlab.errors import ConfigError


class SigmaCurve:
    """log sigma as a smooth function of a fractional timestep t in [0, T-1]: the cubic spline
    through the trained timesteps' values (twice differentiable, so the adaptive solver meets no
    kinks between timesteps)."""

    def __init__(self, diffusion: GaussianDiffusion):
        from scipy.interpolate import CubicSpline

        ab = diffusion.alpha_bar.numpy()
        self.log_sigma = 0.5 * np.log((1 - ab) / ab)  # [T], increasing in t
        self.T = len(ab)
        if np.any(np.diff(self.log_sigma) <= 0):
            raise ConfigError("the probability-flow ODE needs a noise level that grows with t; this schedule's does not.")
        self.spline = CubicSpline(np.arange(self.T, dtype=np.float64), self.log_sigma)
        self.slope = self.spline.derivative()

    def s_of(self, t: float) -> float:
        """log sigma at fractional timestep ``t``."""
        return float(self.spline(t))

    def alpha_bar_at(self, t: torch.Tensor) -> torch.Tensor:
        """alpha_bar = 1 / (1 + sigma^2) at fractional timesteps ``t``, float64."""
        s = self.spline(t.detach().double().cpu().numpy())
        return torch.from_numpy(1.0 / (1.0 + np.exp(2 * s)))


def _eps(denoiser: Denoiser, x: torch.Tensor, t: float, ab: float, **cond) -> torch.Tensor:
    """eps_theta(x, t) at a fractional timestep, whatever the network predicts (eps, x0 or v)."""
    tt = torch.full((x.shape[0],), t, dtype=torch.float32, device=x.device)
    out = denoiser(x, tt, **cond).to(x.dtype)
    if out.shape[1] == 2 * x.shape[1]:  # a learned variance rides along: the ODE needs the mean only
        out = out[:, : x.shape[1]]
    a, b = math.sqrt(ab), math.sqrt(1 - ab)
    if denoiser.parameterization == "eps":
        return out
    if denoiser.parameterization == "x0":
        return (x - a * out) / b
    return a * out + b * x  # v = a eps - b x0  =>  eps = a v + b x_t


def ode_log_likelihood(
    denoiser: Denoiser, diffusion: GaussianDiffusion, x: torch.Tensor, generator: torch.Generator | None = None,
    rtol: float = 1e-5, atol: float = 1e-5, exact_trace: bool = False, **cond,
) -> dict:
    """log p(x) of points ``x`` [B, *D] at the first timestep under the probability-flow ODE, in nats.

    All B points are solved as one system (one adaptive step size). Returns a dict of [B] float64
    tensors ``log_p`` (the total), ``prior`` (log p_T of the end point) and ``delta`` (the integral
    of the divergence, with the Jacobians of the y <-> x changes of variable), and ``nfe``, the
    number of evaluations of the ODE's right-hand side (each a forward and a backward pass).
    """
    if rtol <= 0 or atol <= 0:
        raise ConfigError(f"the ODE tolerances must be positive, not rtol={rtol}, atol={atol}.")
    curve = SigmaCurve(diffusion)
    B, shape = x.shape[0], x.shape[1:]
    D = math.prod(shape)
    device = x.device
    t0, t1 = 0.0, float(curve.T - 1)
    ab0, ab1 = float(diffusion.alpha_bar[0]), float(diffusion.alpha_bar[-1])
    y0 = (x.double() / math.sqrt(ab0)).reshape(B, D)
    if exact_trace:
        probes = None
    else:
        # Rademacher probes, one per point, fixed along the path (FFJORD)
        probes = (torch.randint(0, 2, (B, D), generator=generator, dtype=torch.float64) * 2 - 1).to(device)
    nfe = 0

    def rhs(t: float, state: np.ndarray) -> np.ndarray:
        nonlocal nfe
        nfe += 1
        s = curve.s_of(t)
        sigma, ab = math.exp(s), 1.0 / (1.0 + math.exp(2 * s))
        scale = sigma * float(curve.slope(t))  # dy/dt = dy/dsigma * dsigma/dt, dsigma/dt = sigma ds/dt
        y = torch.from_numpy(state[: B * D]).to(device).view(B, D).float().requires_grad_(True)
        with torch.enable_grad(), torch.autocast(device.type, enabled=False):
            eps = _eps(denoiser, (y * math.sqrt(ab)).view(B, *shape), t, ab, **cond).reshape(B, D)
            dy = scale * eps
            if probes is None:  # exact trace: one backward pass per dimension
                div = torch.zeros(B, dtype=torch.float64, device=device)
                for i in range(D):
                    (g,) = torch.autograd.grad(dy[:, i].sum(), y, retain_graph=i < D - 1)
                    div += g[:, i].double()
            else:
                (g,) = torch.autograd.grad((dy * probes.float()).sum(), y)
                div = (g.double() * probes).sum(1)
        return np.concatenate([dy.detach().double().cpu().numpy().ravel(), div.cpu().numpy()])

    from scipy.integrate import solve_ivp

    state0 = np.concatenate([y0.cpu().numpy().ravel(), np.zeros(B)])
    sol = solve_ivp(rhs, (t0, t1), state0, method="RK45", rtol=rtol, atol=atol)
    if not sol.success:
        raise RuntimeError(f"the probability-flow ODE solver failed: {sol.message}")
    end = torch.from_numpy(sol.y[:, -1])
    y1, delta = end[: B * D].view(B, D), end[B * D :]
    # the prior: x_T = sqrt(ab_T) y ~ N(0, I), so log p_y(y) = log N(sqrt(ab_T) y; 0, I) + D/2 log ab_T
    x1 = y1 * math.sqrt(ab1)
    prior = -0.5 * (x1**2).sum(1) - 0.5 * D * math.log(2 * math.pi) + 0.5 * D * math.log(ab1)
    # log p_y(y(0)) = log p_y(y(T-1)) + int div; and p_x(x) = p_y(x / sqrt(ab_0)) ab_0^(-D/2)
    jac = -0.5 * D * math.log(ab0)
    return {"log_p": prior + delta + jac, "prior": prior, "delta": delta + jac, "nfe": nfe}


def ode_bits_per_dim(
    denoiser: Denoiser, diffusion: GaussianDiffusion, x0: torch.Tensor, levels: int,
    generator: torch.Generator | None = None, rtol: float = 1e-5, atol: float = 1e-5, **cond,
) -> dict:
    """Bits/dim of images ``x0`` (model space, K = ``levels`` grey levels) by the ODE, uniform dequantisation.

    Returns [B] float64 ``bpd`` and ``nfe``. The dequantisation noise u ~ U(-h, h), h = 1 / (K - 1),
    and the Hutchinson probes are drawn from ``generator``.
    """
    D = x0[0].numel()
    half_bin = 1.0 / (levels - 1)
    u = (torch.rand(x0.shape, generator=generator, dtype=torch.float64) * 2 - 1) * half_bin
    out = ode_log_likelihood(denoiser, diffusion, x0.double() + u.to(x0.device), generator, rtol, atol, **cond)
    bpd = -out["log_p"] / (D * math.log(2)) - math.log2(2 * half_bin)
    return {"bpd": bpd, "nfe": out["nfe"]}
