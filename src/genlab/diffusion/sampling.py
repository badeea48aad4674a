"""The samplers by name: one registry of their facts, its checks, and the dispatcher :func:`sample`.

:data:`SAMPLERS` maps each name to a :class:`SamplerSpec`: the sampler function (signature in
:mod:`genlab.diffusion.samplers`), the grid it walks, its default steps, its network
evaluations per sample, the settings it takes. Everything that needs to know about the
samplers (the dispatcher, the option checks, the help line, the CLI) reads it from here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from genlab.diffusion import samplers, solvers
from genlab.diffusion.grids import SPACINGS, Grid, full_grid, geometric_grid, karras_grid, spaced_grid
from genlab.diffusion.process import Denoiser, GaussianDiffusion
from genlab.rng import GeneratorLike


@dataclass(frozen=True)
class SamplerSpec:
    """The facts of one sampler.

    fn: ``fn(denoiser, x, grid, *, generator, callback, cond, clip_denoised, progress, **options)``.
    grid: ``grid(diffusion, steps, spacing) -> Grid``, the grid ``fn`` walks.
    default_steps: the recommended steps (None: every timestep); tests/test_solvers.py states
        how close each comes to Gaussian data's moments at them.
    nfe: network evaluations per sample for ``steps``. Exact for ``len(grid)``, the steps a grid
        really has: rounding to trained timesteps can merge points (langevin's 100 geometric levels
        are 94 timesteps of the linear schedule with T = 1000; quadratic spacing merges some too).
    options: the settings it takes, among "eta" and "spacing".
    stochastic: whether it draws noise (uses ``generator``).
    """

    name: str
    fn: Callable[..., torch.Tensor]
    grid: Callable[[GaussianDiffusion, int, str], Grid]
    default_steps: int | None
    nfe: Callable[[int], int]
    options: frozenset[str]
    stochastic: bool
    help: str


def _ancestral_grid(diffusion: GaussianDiffusion, steps: int, spacing: str) -> Grid:
    # all T uniform steps walk the trained process itself, not one respaced to all its steps
    if steps == diffusion.num_timesteps and spacing == "uniform":
        return full_grid(diffusion)
    return spaced_grid(diffusion, steps, spacing)


def _karras_grid(diffusion: GaussianDiffusion, steps: int, spacing: str) -> Grid:
    return karras_grid(diffusion, steps)  # spacing is "uniform" (check_sampler_options)


def _geometric_grid(diffusion: GaussianDiffusion, steps: int, spacing: str) -> Grid:
    return geometric_grid(diffusion, steps)  # spacing is "uniform" (check_sampler_options)


SAMPLERS: dict[str, SamplerSpec] = {spec.name: spec for spec in (
    SamplerSpec("ancestral", samplers.ancestral, _ancestral_grid, None, lambda n: n, frozenset({"spacing"}), True,
                "DDPM ancestral sampling (Ho et al. 2020, Alg. 2)"),
    SamplerSpec("ddim", samplers.ddim, spaced_grid, 50, lambda n: n, frozenset({"eta", "spacing"}), False,
                "DDIM (Song et al. 2021, eq. (12)); stochastic with eta > 0"),
    SamplerSpec("dpmpp-2m", solvers.dpmpp_2m, _karras_grid, 20, lambda n: n, frozenset(), False,
                "DPM-Solver++(2M) on the Karras grid (Lu et al. 2022)"),
    SamplerSpec("euler", solvers.euler, _karras_grid, 50, lambda n: n, frozenset(), False,
                "Euler's method on the probability-flow ODE, Karras grid (Karras et al. 2022)"),
    SamplerSpec("heun", solvers.heun, _karras_grid, 20, lambda n: 2 * n - 1, frozenset(), False,
                "Heun's 2nd-order method, Karras grid (Karras et al. 2022, Alg. 1)"),
    SamplerSpec("langevin", solvers.langevin, _geometric_grid, 100, lambda n: n * solvers.LANGEVIN_STEPS + 1,
                frozenset(), True,
                f"annealed Langevin dynamics, {solvers.LANGEVIN_STEPS} updates per noise level (Song & Ermon 2019)"),
    SamplerSpec("pc", solvers.pc, spaced_grid, 100, lambda n: n * (1 + solvers.PC_CORRECTOR_STEPS) - solvers.PC_CORRECTOR_STEPS,
                frozenset({"spacing"}), True, "predictor-corrector, reverse diffusion + Langevin (Song et al. 2021)"),
)}


def _names(predicate) -> list[str]:
    return [name for name, spec in SAMPLERS.items() if predicate(spec)]


def check_sampler_options(name: str, steps: int | None = None, eta: float = 0.0, spacing: str = "uniform") -> None:
    """Raise ``ValueError`` if ``name`` is no sampler or does not take these settings.

    Steps above T are refused where the grid is built (T is not known here).
    """
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}.")
    spec = SAMPLERS[name]
    if steps is not None and steps < 1:
        raise ValueError(f"the number of sampling steps must be at least 1, not {steps}.")
    if eta != 0 and "eta" not in spec.options:
        with_eta = _names(lambda s: "eta" in s.options)
        raise ValueError(f"eta applies to the {', '.join(with_eta)} sampler{'s' if len(with_eta) > 1 else ''} only, "
                         f"not to {name}.")
    if eta < 0:
        raise ValueError(f"eta must be at least 0, not {eta}.")
    if spacing not in SPACINGS:
        raise ValueError(f"unknown timestep spacing {spacing!r}; choose one of {', '.join(SPACINGS)}.")
    if spacing != "uniform" and "spacing" not in spec.options:
        spaced = _names(lambda s: "spacing" in s.options)
        raise ValueError(f"spacing applies to the {', '.join(spaced)} samplers; {name} uses its own noise levels.")


def default_steps(name: str, T: int) -> int:
    """The steps ``name`` samples with when none are given: its default, at most T (every timestep if None)."""
    return min(SAMPLERS[name].default_steps or T, T)


def sampler_help() -> str:
    """One line: each sampler with its default steps and its network evaluations (NFE) at them.

    The NFE is an upper bound for the samplers whose grid is rounded to trained timesteps (two grid
    points can round to the same one); genlab sample and eval print the count they measured.
    """
    parts = []
    for name, spec in SAMPLERS.items():
        if spec.default_steps is None:
            parts.append(f"{name} (every timestep, NFE = T)")
        else:
            parts.append(f"{name} ({spec.default_steps} steps, NFE up to {spec.nfe(spec.default_steps)})")
    return "; ".join(parts)


def sample(
    denoiser: Denoiser, diffusion: GaussianDiffusion, x_T: torch.Tensor, sampler: str = "ancestral",
    steps: int | None = None, eta: float = 0.0, generator: GeneratorLike = None, clip_denoised: bool = True,
    progress: bool = False, spacing: str = "uniform", callback=None, **cond,
) -> torch.Tensor:
    """Sample with the sampler named ``sampler`` (:data:`SAMPLERS`) from ``x_T`` ``[B, ...]``.

    ``steps=None``: the sampler's default (:func:`default_steps`). ``eta`` is DDIM's; ``spacing``
    (:data:`~genlab.diffusion.grids.SPACINGS`) applies to the samplers with "spacing" in their
    options. ``cond`` goes to the denoiser; ``callback`` to the sampler (called after each step with
    ``{"i", "t", "x", "pred_x0"}``). Settings are checked by :func:`check_sampler_options`.
    """
    check_sampler_options(sampler, steps, eta, spacing)
    spec = SAMPLERS[sampler]
    n = steps if steps is not None else default_steps(sampler, diffusion.num_timesteps)
    options = {"eta": eta} if "eta" in spec.options else {}
    return spec.fn(denoiser, x_T, spec.grid(diffusion, n, spacing), generator=generator, cond=cond,
                   clip_denoised=clip_denoised, progress=progress, callback=callback, **options)
