"""Sampling grids: which timesteps (and, in the sigma view, which noise levels) a sampler walks.

A builder returns a :class:`Grid`; a sampler only walks it (k-diffusion hands its samplers
``sigmas`` the same way). Index convention as in :mod:`genlab.diffusion.process`: timesteps
run 0..T-1, T-1 the most noise, and a grid lists them in the order walked, descending.

- :func:`spaced_grid`: ``steps`` timesteps of the trained schedule (:func:`ddim_timesteps`)
  and the process respaced to them (improved-diffusion's respacing), for ancestral
  sampling, DDIM and the predictor-corrector sampler; :func:`full_grid` is every timestep
  of the process itself.
- :func:`karras_grid`: the sigma view's grid of Karras et al. 2022, eq. (5), rounded to
  trained timesteps, then sigma = 0; :func:`geometric_grid` is its rho -> infinity limit,
  NCSN's geometric noise levels (annealed Langevin dynamics).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from genlab.diffusion.process import GaussianDiffusion
from genlab.errors import ConfigError
from genlab.progress import progress_bar

SPACINGS = ("uniform", "quadratic")


@dataclass(frozen=True)
class Grid:
    """What a sampler walks.

    diffusion: the process it steps: respaced to the grid for :func:`spaced_grid`, else the
        process the grid was built on.
    timesteps: indices into the schedule of the process the grid was built on (the trained
        schedule, whenever that process is not itself respaced), in the order walked:
        ``timesteps[0] = T - 1``, the most noise.
    sigmas: sigma-view grids only: sigma_t at each of ``timesteps``, then 0.0.
    parent: the process the grid was built on (``timesteps`` index it; the predictor-corrector
        sampler's Langevin corrector runs on it). None: ``diffusion`` itself.
    """

    diffusion: GaussianDiffusion
    timesteps: tuple[int, ...]
    sigmas: tuple[float, ...] | None = None
    parent: GaussianDiffusion | None = None

    def __post_init__(self):
        if self.parent is None:
            object.__setattr__(self, "parent", self.diffusion)

    def __len__(self) -> int:
        """The number of steps walked."""
        return len(self.timesteps)


def steps_iter(n: int, progress: bool, desc: str):
    """Step indices 0..n-1 in the order walked, behind a progress bar if ``progress``."""
    it = range(n)
    return progress_bar(it, desc=desc, leave=False) if progress else it


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
    # int(): an int whatever round() of a numpy float returns in the NumPy installed
    return sorted({int(round(v)) for v in (u if spacing == "uniform" else u**2) * (num_timesteps - 1)})


def full_grid(diffusion: GaussianDiffusion) -> Grid:
    """Every timestep of ``diffusion`` itself, not respaced (its own betas, which respacing to all
    T steps would recompute from alpha_bar, equal only up to rounding)."""
    return Grid(diffusion, tuple(range(diffusion.num_timesteps - 1, -1, -1)))


def spaced_grid(diffusion: GaussianDiffusion, steps: int, spacing: str = "uniform") -> Grid:
    """``steps`` timesteps of :func:`ddim_timesteps` ``spacing`` and ``diffusion`` respaced to them.

    Respaced even when ``steps`` is T (DDIM and the pc sampler always were); ancestral
    sampling on all T uniform steps walks :func:`full_grid` instead.
    """
    keep = ddim_timesteps(diffusion.num_timesteps, steps, spacing)
    return Grid(diffusion.respaced(keep), tuple(reversed(keep)), parent=diffusion)


def sigmas(diffusion: GaussianDiffusion) -> torch.Tensor:
    """sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t) for t = 0..T-1 (float64, increasing)."""
    ab = diffusion.alpha_bar
    return ((1 - ab) / ab).sqrt()


def karras_timesteps(diffusion: GaussianDiffusion, steps: int, rho: float | None = 7.0) -> list[int]:
    """``steps`` timesteps (descending) nearest in log-sigma to the Karras grid; fewer if two round alike.

    sigma_i = (sigma_max^(1/rho) + i/(n-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho (Karras et al.
    2022, eq. (5)); ``rho=None`` is the limit rho -> infinity, a geometric grid (NCSN's noise levels).
    """
    T = diffusion.num_timesteps
    if not 1 <= steps <= T:
        raise ConfigError(f"the number of sampling steps must lie in 1..{T}, not {steps}.")
    s = sigmas(diffusion).numpy()
    if steps == 1:
        return [T - 1]
    u = np.linspace(0, 1, steps)
    if rho is None:
        grid = np.exp(np.log(s[-1]) + u * (np.log(s[0]) - np.log(s[-1])))
    else:
        lo, hi = s[0] ** (1 / rho), s[-1] ** (1 / rho)
        grid = (hi + u * (lo - hi)) ** rho
    idx = np.abs(np.log(s)[None, :] - np.log(grid)[:, None]).argmin(1)
    return sorted({int(i) for i in idx}, reverse=True)


def karras_grid(diffusion: GaussianDiffusion, steps: int, rho: float | None = 7.0) -> Grid:
    """The sigma view's grid: :func:`karras_timesteps` and their sigmas, then sigma = 0.

    Each level is rounded to the nearest trained timestep, so the network is only asked
    about the t it was trained on.
    """
    ts = karras_timesteps(diffusion, steps, rho)
    sig = sigmas(diffusion)
    return Grid(diffusion, tuple(ts), tuple(float(sig[t]) for t in ts) + (0.0,))


def geometric_grid(diffusion: GaussianDiffusion, steps: int) -> Grid:
    """``steps`` noise levels geometric in sigma from sigma_max to sigma_min (NCSN's, Song & Ermon
    2019), rounded to trained timesteps: :func:`karras_grid` with rho -> infinity."""
    return karras_grid(diffusion, steps, rho=None)
