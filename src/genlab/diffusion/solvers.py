"""Fast ODE solvers and score-based samplers over a trained discrete-time model.

All are plain functions of a denoiser, a start x and a :class:`~genlab.diffusion.grids.Grid`,
with the signature of :mod:`genlab.diffusion.samplers`. Two views of the same model are used:

- **The sigma view** (Karras et al. 2022): with sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t)
  and y = x_t / sqrt(alpha_bar_t), the forward process is y = x_0 + sigma_t eps and the
  probability-flow ODE is dy/dsigma = (y - D(y, sigma)) / sigma, D the x0-prediction.
  Euler, Heun (Karras Alg. 1 without churn) and DPM-Solver++(2M) (Lu et al. 2022) step it
  on the Karras grid (:func:`~genlab.diffusion.grids.karras_grid`: sigma_i = (sigma_max^(1/rho)
  + i/(n-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho, rho = 7, each point rounded to the
  nearest trained timestep, then sigma = 0). Their state, and the callback's ``"x"``, is y.
- **The score view** of the notes: score(x_t) = grad log q(x_t) = -eps / sqrt(1 - alpha_bar_t).
  Annealed Langevin dynamics (Song & Ermon 2019) and the predictor-corrector sampler
  (Song et al. 2021: a reverse-diffusion predictor and a Langevin corrector) use it.
"""

from __future__ import annotations

import math

import torch

from genlab.diffusion.grids import Grid, steps_iter
from genlab.diffusion.process import Denoiser, GaussianDiffusion, _extract
from genlab.rng import GeneratorLike, randn

LANGEVIN_STEPS = 5  # Langevin updates per noise level of the langevin sampler
PC_CORRECTOR_STEPS = 1  # corrector updates per step of the pc sampler
SNR = 0.16  # the Langevin step's signal-to-noise ratio (Song et al. 2021's value for the VP SDE)


class _SigmaDenoiser:
    """D(y, t): the x0-prediction of the model at timestep ``t`` for y = x_t / sqrt(alpha_bar_t)."""

    def __init__(self, denoiser: Denoiser, diffusion: GaussianDiffusion, clip: bool, cond: dict):
        self.denoiser, self.diffusion, self.clip, self.cond = denoiser, diffusion, clip, cond

    def __call__(self, y: torch.Tensor, t: int) -> torch.Tensor:
        B = y.shape[0]
        tt = torch.full((B,), t, dtype=torch.long, device=y.device)
        x_t = y * _extract(self.diffusion.sqrt_alpha_bar, tt, y)
        return self.diffusion.p_mean_variance(self.denoiser, x_t, tt, clip_denoised=self.clip, **self.cond)["pred_x0"]


def _sigma_setup(denoiser, x_T, grid: Grid, clip_denoised, cond):
    diffusion, ts = grid.diffusion, grid.timesteps
    # x_T ~ N(0, I) is the VP prior; in the sigma view y_T = x_T / sqrt(alpha_bar_T) ~ N(0, 1 + sigma_max^2)
    y = x_T / math.sqrt(float(diffusion.alpha_bar[ts[0]]))
    return ts, grid.sigmas, y, _SigmaDenoiser(denoiser, diffusion, clip_denoised, cond or {})


@torch.no_grad()
def euler(denoiser: Denoiser, x: torch.Tensor, grid: Grid, *, generator: GeneratorLike = None, callback=None,
          cond: dict | None = None, clip_denoised: bool = True, progress: bool = False) -> torch.Tensor:
    """Euler's method on the probability-flow ODE (Karras Alg. 1 with S_churn = 0); one evaluation a step.

    ``generator`` is unused (the ODE is deterministic).
    """
    ts, s, y, D = _sigma_setup(denoiser, x, grid, clip_denoised, cond)
    for i in steps_iter(len(ts), progress, "euler"):
        x0 = D(y, ts[i])
        d = (y - x0) / s[i]
        y = y + (s[i + 1] - s[i]) * d
        if callback is not None:
            callback({"i": i, "x": y, "t": ts[i], "pred_x0": x0})
    return y


@torch.no_grad()
def heun(denoiser: Denoiser, x: torch.Tensor, grid: Grid, *, generator: GeneratorLike = None, callback=None,
         cond: dict | None = None, clip_denoised: bool = True, progress: bool = False) -> torch.Tensor:
    """Heun's 2nd-order method (Karras Alg. 1, S_churn = 0): 2 evaluations per step, 1 on the last."""
    ts, s, y, D = _sigma_setup(denoiser, x, grid, clip_denoised, cond)
    for i in steps_iter(len(ts), progress, "heun"):
        x0 = D(y, ts[i])
        d = (y - x0) / s[i]
        y_next = y + (s[i + 1] - s[i]) * d
        if s[i + 1] > 0:  # the corrector; the last step to sigma = 0 stays Euler
            d_next = (y_next - D(y_next, ts[i + 1])) / s[i + 1]
            y_next = y + (s[i + 1] - s[i]) * (d + d_next) / 2
        y = y_next
        if callback is not None:
            callback({"i": i, "x": y, "t": ts[i], "pred_x0": x0})
    return y


@torch.no_grad()
def dpmpp_2m(denoiser: Denoiser, x: torch.Tensor, grid: Grid, *, generator: GeneratorLike = None, callback=None,
             cond: dict | None = None, clip_denoised: bool = True, progress: bool = False) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Alg. 2): a multistep 2nd-order solver in lambda = -log sigma.

    One evaluation per step: the previous x0-prediction gives the second-order term.
    """
    ts, s, y, D = _sigma_setup(denoiser, x, grid, clip_denoised, cond)
    old = None
    for i in steps_iter(len(ts), progress, "dpm++2m"):
        x0 = D(y, ts[i])
        if s[i + 1] == 0:
            y = x0
        else:
            h = math.log(s[i]) - math.log(s[i + 1])  # lambda_{i+1} - lambda_i > 0
            if old is not None:
                h_last = math.log(s[i - 1]) - math.log(s[i])
                r = h_last / h
                x0_d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * old
            else:
                x0_d = x0
            y = (s[i + 1] / s[i]) * y - math.expm1(-h) * x0_d
            old = x0
        if callback is not None:
            callback({"i": i, "x": y, "t": ts[i], "pred_x0": x0})
    return y


def score(denoiser: Denoiser, diffusion: GaussianDiffusion, x_t: torch.Tensor, t: torch.Tensor,
          **cond) -> torch.Tensor:
    """grad_x log q(x_t) = -eps_theta(x_t, t) / sqrt(1 - alpha_bar_t) (the notes' score view)."""
    eps = diffusion.p_mean_variance(denoiser, x_t, t, clip_denoised=False, **cond)["eps"]
    return -eps / _extract(diffusion.sqrt_one_minus_alpha_bar, t, x_t)


def _langevin_step(denoiser, diffusion, x, t, generator, snr, cond):
    """One Langevin step x <- x + e score + sqrt(2 e) z at timestep t (``t`` a [B] tensor).

    Step size e = 2 alpha_t (snr ||z|| / ||score||)^2, Song et al. (2021), Alg. 5, with the norms
    taken per sample (over its dimensions) rather than averaged over the batch, so a sample does not
    depend on the others in its batch. Since ||score|| ~ sqrt(D / Var[x_t]), e ~ 2 snr^2 Var[x_t]:
    the step adapts to the current noise level (Song & Ermon's e_i proportional to sigma_i^2).
    """
    grad = score(denoiser, diffusion, x, t, **cond)
    z = randn(x.shape, generator, x.device, x.dtype)
    ratio = z.flatten(1).norm(dim=1) / grad.flatten(1).norm(dim=1).clamp_min(1e-12)
    step = 2 * _extract(diffusion.alphas, t, x) * (snr * ratio).pow(2).view(-1, *([1] * (x.dim() - 1)))
    return x + step * grad + (2 * step).sqrt() * z


@torch.no_grad()
def langevin(denoiser: Denoiser, x: torch.Tensor, grid: Grid, *, generator: GeneratorLike = None, callback=None,
             cond: dict | None = None, clip_denoised: bool = True, progress: bool = False,
             corrector_steps: int = LANGEVIN_STEPS, snr: float = SNR) -> torch.Tensor:
    """Annealed Langevin dynamics (Song & Ermon 2019) with the model's score at the grid's noise levels.

    The levels are geometric in sigma (NCSN's, :func:`~genlab.diffusion.grids.geometric_grid`), from
    sigma_max to sigma_min, rounded to trained timesteps. At each level t, ``corrector_steps`` updates
    x <- x + e score(x, t) + sqrt(2 e) z (step size from ``snr``, see :func:`_langevin_step`); x is
    carried unchanged from one level to the next (at high noise all the VP marginals are close to
    N(0, I)). The last sample is denoised once with the x0-prediction at the lowest level (Tweedie's
    formula). ``len(grid) * corrector_steps + 1`` evaluations. Unadjusted Langevin is biased at a
    finite step (its stationary variance is about 1 + snr^2 times the target's): the reason the pc
    sampler pairs it with a predictor. The callback's ``"pred_x0"`` is None (no x0 is predicted
    until the end).
    """
    diffusion, ts, cond = grid.diffusion, grid.timesteps, cond or {}  # ts[0] = T-1, the most noise
    B = x.shape[0]
    for i in steps_iter(len(ts), progress, "langevin"):
        t = torch.full((B,), ts[i], dtype=torch.long, device=x.device)
        for _ in range(corrector_steps):
            x = _langevin_step(denoiser, diffusion, x, t, generator, snr, cond)
        if callback is not None:
            callback({"i": i, "x": x, "t": ts[i], "pred_x0": None})
    t = torch.full((B,), ts[-1], dtype=torch.long, device=x.device)
    return diffusion.p_mean_variance(denoiser, x, t, clip_denoised=clip_denoised, **cond)["pred_x0"]


@torch.no_grad()
def pc(denoiser: Denoiser, x: torch.Tensor, grid: Grid, *, generator: GeneratorLike = None, callback=None,
       cond: dict | None = None, clip_denoised: bool = True, progress: bool = False,
       corrector_steps: int = PC_CORRECTOR_STEPS, snr: float = SNR) -> torch.Tensor:
    """Predictor-corrector (Song et al. 2021, Alg. 3 for the VP SDE) on a spaced grid.

    Predictor: one reverse-diffusion (ancestral) step of the respaced process ``grid.diffusion``.
    Corrector: ``corrector_steps`` Langevin steps at the new timestep, on the process the grid
    was built on (``grid.parent``). ``len(grid) * (1 + corrector_steps)`` evaluations, less the
    correctors after the last step.
    """
    proc, parent, ts, cond = grid.diffusion, grid.parent, grid.timesteps, cond or {}
    n, B = proc.num_timesteps, x.shape[0]
    for k in steps_iter(n, progress, "pc"):
        i = n - 1 - k  # the respaced process's own index
        t = torch.full((B,), i, dtype=torch.long, device=x.device)
        out = proc.p_mean_variance(denoiser, x, t, clip_denoised=clip_denoised, **cond)
        x = out["mean"]
        if i > 0:
            x = x + torch.exp(0.5 * out["log_variance"]) * randn(x.shape, generator, x.device, x.dtype)
            t_next = torch.full((B,), ts[k + 1], dtype=torch.long, device=x.device)
            for _ in range(corrector_steps):
                x = _langevin_step(denoiser, parent, x, t_next, generator, snr, cond)
        if callback is not None:
            callback({"i": k, "x": x, "t": ts[k], "pred_x0": out["pred_x0"]})
    return x
