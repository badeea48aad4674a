"""Beta schedules, computed once in float64.

Every schedule returns a numpy float64 array ``betas`` of length ``T`` where
``betas[t]`` is the variance added by the forward step from x_t to x_{t+1} in
genlab's 0-based convention (see :mod:`genlab.diffusion.process`).
"""

from __future__ import annotations

import math

import numpy as np

from genlab.errors import ConfigError

SCHEDULES = ("linear", "cosine", "quadratic", "sigmoid")


def linear_betas(T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
    """DDPM's linear schedule (Ho et al. 2020, Sec. 4): 1e-4 to 0.02 for T = 1000.

    For other T the end points are scaled by 1000 / T (as improved-diffusion does), so
    that alpha_bar_T stays about the same and the prior term L_T stays near zero.
    """
    scale = 1000.0 / T
    return np.linspace(scale * beta_start, scale * beta_end, T, dtype=np.float64)


def quadratic_betas(T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
    """DDPM's "quad" schedule: linear in sqrt(beta), same end points as :func:`linear_betas`."""
    scale = 1000.0 / T
    return np.linspace(math.sqrt(scale * beta_start), math.sqrt(scale * beta_end), T, dtype=np.float64) ** 2


def sigmoid_betas(T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
    """Betas following a sigmoid over [-6, 6] between the linear schedule's end points."""
    scale = 1000.0 / T
    s = 1.0 / (1.0 + np.exp(-np.linspace(-6.0, 6.0, T, dtype=np.float64)))
    return scale * beta_start + s * (scale * (beta_end - beta_start))


def cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """Nichol & Dhariwal 2021, eq. (17): alpha_bar(t) = f(t) / f(0), f(t) = cos^2((t/T + s)/(1 + s) * pi/2).

    beta_t = 1 - alpha_bar(t+1) / alpha_bar(t), clipped to ``max_beta`` to avoid the
    singularity at t = T.
    """
    def f(t):
        return math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2

    return np.array([min(1 - f(t + 1) / f(t), max_beta) for t in range(T)], dtype=np.float64)


def make_betas(name: str, T: int) -> np.ndarray:
    """The named schedule with ``T`` steps, as float64 betas."""
    if not isinstance(T, int) or T < 1:
        raise ConfigError(f"the number of timesteps must be a positive integer, not {T!r}; pass e.g. {{diffusion.timesteps}} 1000.")
    builders = {"linear": linear_betas, "cosine": cosine_betas, "quadratic": quadratic_betas, "sigmoid": sigmoid_betas}
    if name not in builders:
        raise ConfigError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)}.")
    betas = builders[name](T)
    if not np.all(betas < 1):
        raise ConfigError(f"the {name} schedule scaled to {T} timesteps reaches beta >= 1 (its end points grow as 1000/T); "
                          f"use {{diffusion.timesteps}} 21 or more, or {{diffusion.schedule}} cosine.")
    assert betas.shape == (T,) and np.all(betas > 0) and np.all(betas < 1)
    return betas
