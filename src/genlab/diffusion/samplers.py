"""DDPM ancestral sampling and DDIM: plain functions of a denoiser, a start x and a :class:`Grid`.

Every sampler of genlab has the signature (k-diffusion's ``sample_heun(model, x, sigmas,
extra_args=None, callback=None)``, with the grid in place of the sigmas)::

    sampler(denoiser, x, grid, *, generator=None, callback=None, cond=None,
            clip_denoised=True, progress=False, **its_own_options)

``grid`` comes from a builder of :mod:`genlab.diffusion.grids`; ``cond`` is the dict of
conditioning tensors passed on to the denoiser (``p_mean_variance(..., **cond)``);
``generator`` is one ``torch.Generator`` or a list with one per sample
(:mod:`genlab.rng`); ``callback``, if given, is called after each step with
``{"i": step index (0 first), "x": the state after the step, "t": the step's timestep,
"pred_x0": the step's x0-prediction}`` and must not modify them. The dispatcher by name
is :func:`genlab.diffusion.sampling.sample`.
"""

from __future__ import annotations

import torch

from genlab.diffusion.grids import Grid, full_grid, spaced_grid, steps_iter
from genlab.diffusion.process import Denoiser, GaussianDiffusion, _extract
from genlab.errors import ConfigError
from genlab.rng import GeneratorLike, randn


@torch.no_grad()
def ancestral(
    denoiser: Denoiser, x: torch.Tensor, grid: Grid, *, generator: GeneratorLike = None, callback=None,
    cond: dict | None = None, clip_denoised: bool = True, progress: bool = False,
) -> torch.Tensor:
    """Algorithm 2 (sampling) of Ho et al. 2020, over every step of ``grid.diffusion``.

    x_{t-1} = mu_theta(x_t, t) + sigma_t z, with no noise added at the last step.
    A :func:`~genlab.diffusion.grids.spaced_grid` samples with fewer steps.
    """
    proc, cond = grid.diffusion, cond or {}
    n, B = proc.num_timesteps, x.shape[0]
    for k in steps_iter(n, progress, "ancestral"):
        i = n - 1 - k  # the respaced process's own index
        t = torch.full((B,), i, dtype=torch.long, device=x.device)
        out = proc.p_mean_variance(denoiser, x, t, clip_denoised=clip_denoised, **cond)
        x = out["mean"]
        if i > 0:
            x = x + torch.exp(0.5 * out["log_variance"]) * randn(x.shape, generator, x.device, x.dtype)
        if callback is not None:
            callback({"i": k, "x": x, "t": grid.timesteps[k], "pred_x0": out["pred_x0"]})
    return x


@torch.no_grad()
def ddim(
    denoiser: Denoiser, x: torch.Tensor, grid: Grid, *, generator: GeneratorLike = None, callback=None,
    cond: dict | None = None, clip_denoised: bool = True, progress: bool = False, eta: float = 0.0,
) -> torch.Tensor:
    """DDIM (Song et al. 2021, eq. (12)) on the respaced process of ``grid`` (a spaced grid).

    x_prev = sqrt(alpha_bar_prev) x0_hat + sqrt(1 - alpha_bar_prev - sigma^2) eps_hat + sigma z,
    sigma = eta sqrt((1 - alpha_bar_prev) / (1 - alpha_bar) (1 - alpha_bar / alpha_bar_prev)).
    eta = 0 is the deterministic DDIM; eta = 1 matches DDPM's ancestral variance.
    """
    if eta < 0:
        raise ConfigError(f"DDIM's eta must be >= 0, not {eta}.")
    proc, cond = grid.diffusion, cond or {}
    n, B = proc.num_timesteps, x.shape[0]
    for k in steps_iter(n, progress, "ddim"):
        i = n - 1 - k
        t = torch.full((B,), i, dtype=torch.long, device=x.device)
        out = proc.p_mean_variance(denoiser, x, t, clip_denoised=clip_denoised, **cond)
        ab = _extract(proc.alpha_bar, t, x)
        ab_prev = _extract(proc.alpha_bar_prev, t, x)
        sigma = eta * torch.sqrt((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev))
        x = ab_prev.sqrt() * out["pred_x0"] + torch.sqrt((1 - ab_prev - sigma**2).clamp_min(0)) * out["eps"]
        if i > 0 and eta > 0:
            x = x + sigma * randn(x.shape, generator, x.device, x.dtype)
        if callback is not None:
            callback({"i": k, "x": x, "t": grid.timesteps[k], "pred_x0": out["pred_x0"]})
    return x


# The diffusion-level forms, as before grids: a process in, the grid built here.


def ancestral_sample(
    denoiser: Denoiser, diffusion: GaussianDiffusion, x_T: torch.Tensor, generator: GeneratorLike = None,
    clip_denoised: bool = True, progress: bool = False, **cond,
) -> torch.Tensor:
    """:func:`ancestral` over every step of ``diffusion``; pass ``diffusion.respaced(...)`` for fewer."""
    return ancestral(denoiser, x_T, full_grid(diffusion), generator=generator, cond=cond,
                     clip_denoised=clip_denoised, progress=progress)


def ddim_sample(
    denoiser: Denoiser, diffusion: GaussianDiffusion, x_T: torch.Tensor, steps: int, eta: float = 0.0,
    generator: GeneratorLike = None, clip_denoised: bool = True, progress: bool = False, spacing: str = "uniform",
    **cond,
) -> torch.Tensor:
    """:func:`ddim` on ``steps`` timesteps of ``diffusion`` (:func:`~genlab.diffusion.grids.spaced_grid`)."""
    return ddim(denoiser, x_T, spaced_grid(diffusion, steps, spacing), generator=generator, cond=cond,
                clip_denoised=clip_denoised, progress=progress, eta=eta)
