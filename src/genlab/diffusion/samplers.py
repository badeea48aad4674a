"""Samplers: plain functions of a denoiser, a process and a source of randomness.

Randomness is always passed in. ``generator`` is either one ``torch.Generator`` for
the whole batch or a list with one generator per sample; with a list, each image
depends only on its own generator, so the same seeds give the same images whatever
the batch size (:func:`per_sample_generators` makes such a list from one seed).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from genlab.diffusion.process import Denoiser, GaussianDiffusion, _extract
from genlab.errors import ConfigError
from genlab.progress import progress_bar

GeneratorLike = torch.Generator | Sequence[torch.Generator] | None


def per_sample_generators(seed: int, start: int, count: int) -> list[torch.Generator]:
    """One CPU generator per sample index ``start .. start+count-1`` for ``seed``.

    Sample i's stream depends only on (seed, i) (EDM gives each image its own seed).
    """
    gens = []
    for i in range(start, start + count):
        state = np.random.SeedSequence([seed, i]).generate_state(1, dtype=np.uint64)[0]
        gens.append(torch.Generator().manual_seed(int(state) & ((1 << 63) - 1)))
    return gens


def randn(shape, generator: GeneratorLike, device="cpu", dtype=torch.float32) -> torch.Tensor:
    """Standard normal noise of ``shape`` ([B, ...]); with a list, row b comes from generator b."""
    if isinstance(generator, (list, tuple)):
        if len(generator) != shape[0]:
            raise ValueError(f"{len(generator)} generators for a batch of {shape[0]}")
        rows = [torch.randn(tuple(shape[1:]), generator=g, dtype=dtype) for g in generator]
        return torch.stack(rows).to(device)
    return torch.randn(tuple(shape), generator=generator, dtype=dtype).to(device)


def _steps_iter(n, progress, desc):
    it = range(n - 1, -1, -1)
    return progress_bar(it, desc=desc, leave=False) if progress else it


@torch.no_grad()
def ancestral_sample(
    denoiser: Denoiser, diffusion: GaussianDiffusion, x_T: torch.Tensor, generator: GeneratorLike = None,
    clip_denoised: bool = True, progress: bool = False, **cond,
) -> torch.Tensor:
    """Algorithm 2 (sampling) of Ho et al. 2020, over every step of ``diffusion``.

    x_{t-1} = mu_theta(x_t, t) + sigma_t z, with no noise added at the last step.
    Pass ``diffusion.respaced(...)`` to sample with fewer steps.
    """
    x = x_T
    B = x.shape[0]
    for i in _steps_iter(diffusion.num_timesteps, progress, "ancestral"):
        t = torch.full((B,), i, dtype=torch.long, device=x.device)
        out = diffusion.p_mean_variance(denoiser, x, t, clip_denoised=clip_denoised, **cond)
        x = out["mean"]
        if i > 0:
            x = x + torch.exp(0.5 * out["log_variance"]) * randn(x.shape, generator, x.device, x.dtype)
    return x


SPACINGS = ("uniform", "quadratic")


def ddim_timesteps(num_timesteps: int, steps: int, spacing: str = "uniform") -> list[int]:
    """``steps`` timesteps (ascending) of 0..T-1 to sample on, always including T-1 (and 0 if steps > 1).

    ``uniform``: evenly spread; ``quadratic``: t_i proportional to (i / (steps - 1))^2, denser at
    low noise (DDIM, Song et al. 2021, Sec. D.2, without their 0.8 T cut-off). Two indices that round
    alike are kept once, so fewer than ``steps`` can come back for quadratic spacing.
    """
    if not 1 <= steps <= num_timesteps:
        raise ConfigError(f"the number of sampling steps must lie in 1..{num_timesteps}, not {steps}.")
    if spacing not in SPACINGS:
        raise ConfigError(f"unknown timestep spacing {spacing!r}; choose one of {', '.join(SPACINGS)}.")
    if steps == 1:
        return [num_timesteps - 1]
    u = np.linspace(0, 1, steps)
    return sorted({int(round(v)) for v in (u if spacing == "uniform" else u**2) * (num_timesteps - 1)})


@torch.no_grad()
def ddim_sample(
    denoiser: Denoiser, diffusion: GaussianDiffusion, x_T: torch.Tensor, steps: int, eta: float = 0.0,
    generator: GeneratorLike = None, clip_denoised: bool = True, progress: bool = False, spacing: str = "uniform",
    **cond,
) -> torch.Tensor:
    """DDIM (Song et al. 2021, eq. (12)) on ``steps`` respaced timesteps (:func:`ddim_timesteps` ``spacing``).

    x_prev = sqrt(alpha_bar_prev) x0_hat + sqrt(1 - alpha_bar_prev - sigma^2) eps_hat + sigma z,
    sigma = eta sqrt((1 - alpha_bar_prev) / (1 - alpha_bar) (1 - alpha_bar / alpha_bar_prev)).
    eta = 0 is the deterministic DDIM; eta = 1 matches DDPM's ancestral variance.
    """
    if eta < 0:
        raise ConfigError(f"DDIM's eta must be >= 0, not {eta}.")
    proc = diffusion.respaced(ddim_timesteps(diffusion.num_timesteps, steps, spacing))
    x = x_T
    B = x.shape[0]
    for i in _steps_iter(proc.num_timesteps, progress, "ddim"):
        t = torch.full((B,), i, dtype=torch.long, device=x.device)
        out = proc.p_mean_variance(denoiser, x, t, clip_denoised=clip_denoised, **cond)
        ab = _extract(proc.alpha_bar, t, x)
        ab_prev = _extract(proc.alpha_bar_prev, t, x)
        sigma = eta * torch.sqrt((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev))
        x = ab_prev.sqrt() * out["pred_x0"] + torch.sqrt((1 - ab_prev - sigma**2).clamp_min(0)) * out["eps"]
        if i > 0 and eta > 0:
            x = x + sigma * randn(x.shape, generator, x.device, x.dtype)
    return x


SAMPLERS = ("ancestral", "ddim", "dpmpp-2m", "euler", "heun", "langevin", "pc")
# the recommended steps, used when none are given (None: every timestep). For Langevin, noise levels
# (LANGEVIN_STEPS evaluations each); for Heun, steps of 2 evaluations. tests/test_solvers.py states how
# close each comes to Gaussian data's moments at these settings.
DEFAULT_STEPS = {"ancestral": None, "ddim": 50, "dpmpp-2m": 20, "euler": 50, "heun": 20, "langevin": 100, "pc": 100}
LANGEVIN_STEPS = 5  # Langevin updates per noise level of the langevin sampler
PC_CORRECTOR_STEPS = 1  # corrector updates per step of the pc sampler
SPACED = ("ancestral", "ddim", "pc")  # samplers on respaced timesteps (``spacing`` applies); the rest use sigma grids


def sample(
    denoiser: Denoiser, diffusion: GaussianDiffusion, x_T: torch.Tensor, sampler: str = "ancestral",
    steps: int | None = None, eta: float = 0.0, generator: GeneratorLike = None, clip_denoised: bool = True,
    progress: bool = False, spacing: str = "uniform", **cond,
) -> torch.Tensor:
    """Dispatch to a named sampler (:data:`SAMPLERS`). ``steps=None``: the sampler's default
    (:data:`DEFAULT_STEPS`; every timestep for ancestral). ``eta`` is DDIM's; ``spacing``
    (:func:`ddim_timesteps`) applies to the samplers in :data:`SPACED`."""
    from genlab.diffusion import solvers

    T = diffusion.num_timesteps
    if sampler not in SAMPLERS:
        raise ConfigError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}.")
    if eta != 0 and sampler != "ddim":
        raise ConfigError(f"--eta applies to the ddim sampler only, not to {sampler}.")
    if spacing != "uniform" and sampler not in SPACED:
        raise ConfigError(f"--spacing applies to the {', '.join(SPACED)} samplers; {sampler} uses its own noise levels.")
    n = steps if steps is not None else min(DEFAULT_STEPS[sampler] or T, T)
    if sampler == "ancestral":
        proc = diffusion if (n == T and spacing == "uniform") else diffusion.respaced(ddim_timesteps(T, n, spacing))
        return ancestral_sample(denoiser, proc, x_T, generator, clip_denoised, progress, **cond)
    if sampler == "ddim":
        return ddim_sample(denoiser, diffusion, x_T, n, eta, generator, clip_denoised, progress, spacing, **cond)
    ode = {"euler": solvers.euler_sample, "heun": solvers.heun_sample, "dpmpp-2m": solvers.dpmpp_2m_sample}
    if sampler in ode:
        return ode[sampler](denoiser, diffusion, x_T, n, clip_denoised, progress, **cond)
    if sampler == "langevin":
        return solvers.langevin_sample(denoiser, diffusion, x_T, n, generator, LANGEVIN_STEPS,
                                       clip_denoised=clip_denoised, progress=progress, **cond)
    return solvers.pc_sample(denoiser, diffusion, x_T, n, generator, PC_CORRECTOR_STEPS,
                             clip_denoised=clip_denoised, progress=progress, spacing=spacing, **cond)
