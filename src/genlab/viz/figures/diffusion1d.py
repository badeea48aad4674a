"""The forward process on 1-D data, in closed form: marginals, the diffusion kernel, the reverse conditional.

Time here is the **paper's** step: t = 0 is the data x, t = 1..T the latents z_t, so
alpha_bar_0 = 1 and alpha_bar_t is genlab's ``alpha_bar[t - 1]`` (genlab's 0-based index
t - 1, :mod:`genlab.diffusion.process`). Densities are per unit of z.

The data is a mixture of Gaussians q(x) = sum_k w_k N(mu_k, s_k^2). Because q(z_t | x) =
N(sqrt(alpha_bar_t) x, 1 - alpha_bar_t) is Gaussian, every marginal is again a mixture:

    q(z_t) = sum_k w_k N(sqrt(alpha_bar_t) mu_k, alpha_bar_t s_k^2 + 1 - alpha_bar_t)

and the true reverse conditional follows from Bayes' rule on a grid,
q(z_s | z_t) ∝ q(z_t | z_s) q(z_s) with q(z_t | z_s) = N(sqrt(alpha_bar_t / alpha_bar_s) z_s,
1 - alpha_bar_t / alpha_bar_s) for s < t.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from genlab.diffusion.process import GaussianDiffusion
from genlab.errors import ConfigError
from genlab.viz.figures.common import pyplot, save


@dataclass(frozen=True)
class Mixture1D:
    """A 1-D Gaussian mixture: weights w_k (summing to 1), means mu_k, standard deviations s_k >= 0.

    s_k = 0 is a point mass (its noised marginals are still Gaussian for alpha_bar < 1).
    """

    weights: tuple[float, ...]
    means: tuple[float, ...]
    stds: tuple[float, ...]

    def __post_init__(self):
        w = np.asarray(self.weights, dtype=float)
        if not (len(self.weights) == len(self.means) == len(self.stds) >= 1):
            raise ValueError("a mixture needs as many weights, means and standard deviations, at least one each")
        if np.any(w < 0) or abs(w.sum() - 1) > 1e-9 or np.any(np.asarray(self.stds) < 0):
            raise ValueError("mixture weights must be non-negative and sum to 1, standard deviations non-negative")

    def noised(self, alpha_bar: float) -> Mixture1D:
        """The marginal q(z_t) for alpha_bar_t = ``alpha_bar``: means sqrt(ab) mu_k, variances ab s_k^2 + 1 - ab."""
        ab = float(alpha_bar)
        means = tuple(math.sqrt(ab) * m for m in self.means)
        stds = tuple(math.sqrt(ab * s * s + (1.0 - ab)) for s in self.stds)
        return Mixture1D(self.weights, means, stds)

    def pdf(self, z) -> np.ndarray:
        """The density at ``z`` (any shape); every component needs a positive standard deviation."""
        z = np.asarray(z, dtype=float)[..., None]
        m, s, w = (np.asarray(a, dtype=float) for a in (self.means, self.stds, self.weights))
        if np.any(s <= 0):
            raise ValueError("a point mass has no density; noise the mixture first (noised(alpha_bar < 1))")
        return (w * np.exp(-0.5 * ((z - m) / s) ** 2) / (s * math.sqrt(2 * math.pi))).sum(-1)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` draws [n]: a component k ~ w, then mu_k + s_k eps."""
        k = rng.choice(len(self.weights), size=n, p=np.asarray(self.weights))
        return np.asarray(self.means)[k] + np.asarray(self.stds)[k] * rng.standard_normal(n)

    def support(self, width: float = 8.0) -> tuple[float, float]:
        """An interval holding all but a negligible mass: the components' mu_k +- ``width`` s_k."""
        m, s = np.asarray(self.means), np.asarray(self.stds)
        return float((m - width * s).min()), float((m + width * s).max())


# the notes' 1-D data: three modes in [-1, 1], like pixel values, of different widths and weights
DATA = Mixture1D(weights=(0.3, 0.45, 0.25), means=(-0.7, 0.05, 0.7), stds=(0.08, 0.12, 0.05))


def alpha_bars(diffusion: GaussianDiffusion) -> np.ndarray:
    """alpha_bar over the paper's steps 0..T: [T + 1], alpha_bar_0 = 1 (the data)."""
    return np.concatenate([[1.0], diffusion.alpha_bar.numpy()])


def forward_paths(x0: np.ndarray, betas: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Run the forward chain z_t = sqrt(1 - beta_t) z_{t-1} + sqrt(beta_t) eps from ``x0`` [n]: [n, T + 1].

    One Markov step at a time (DDPM eq. (2)), not the closed form q(z_t | x): what the
    closed-form marginals are checked against.
    """
    z = np.empty((len(x0), len(betas) + 1))
    z[:, 0] = x0
    for t, b in enumerate(betas, start=1):
        z[:, t] = math.sqrt(1.0 - b) * z[:, t - 1] + math.sqrt(b) * rng.standard_normal(len(x0))
    return z


def count_modes(density: np.ndarray, floor: float = 1e-3) -> int:
    """Local maxima of a density on a grid, ignoring those below ``floor`` times its peak."""
    d = np.asarray(density)
    inner = (d[1:-1] > d[:-2]) & (d[1:-1] >= d[2:]) & (d[1:-1] > floor * d.max())
    return int(inner.sum())


def kl_on_grid(p: np.ndarray, q: np.ndarray, dz: float) -> float:
    """KL(p || q) = int p log(p / q) dz in nats, for densities on a uniform grid of spacing ``dz``."""
    keep = p > 0
    return float(np.sum(p[keep] * (np.log(p[keep]) - np.log(np.maximum(q[keep], 1e-300)))) * dz)


def gaussian_pdf(z, mean: float, var: float) -> np.ndarray:
    return np.exp(-0.5 * (np.asarray(z) - mean) ** 2 / var) / math.sqrt(2 * math.pi * var)


def _diffusion(schedule: str, timesteps: int) -> GaussianDiffusion:
    return GaussianDiffusion.from_schedule(schedule, timesteps)


def _check_steps(ts, T: int, what: str) -> list[int]:
    ts = [int(t) for t in ts]
    if any(t < 1 or t > T for t in ts):
        raise ConfigError(f"the {what} steps {ts} must lie in 1..{T} (the paper's t; 0 is the data).")
    return ts


# ----- marginals -----------------------------------------------------------------------------
def forward_1d(out_dir: str | Path, *, schedule: str = "linear", timesteps: int = 1000, paths: int = 6, seed: int = 0,
               data: Mixture1D = DATA) -> dict:
    """Heat map of the marginals q(z_t) over t with forward sample paths on top; writes marginals.png/.json.

    Numbers: ``t`` (paper steps of the columns), ``z`` (grid), ``density`` [len(z)][len(t)]
    (q(z_t) per unit z, closed form), ``paths`` [paths][T + 1] (forward chains from data
    draws), and per summary step ``modes`` (local maxima of q(z_t)) and ``kl_to_prior_nats``
    (KL(q(z_t) || N(0, 1)) on the grid: what L_T would be for the whole density).
    """
    diff = _diffusion(schedule, timesteps)
    T = diff.num_timesteps
    ab = alpha_bars(diff)
    cols = np.unique(np.linspace(0, T, min(T, 200) + 1).round().astype(int))
    z = np.linspace(-3.0, 3.0, 481)
    dz = float(z[1] - z[0])
    density = np.stack([data.noised(ab[t]).pdf(z) for t in cols], 1)  # [Z, len(cols)]
    rng = np.random.default_rng(seed)
    chains = forward_paths(data.sample(paths, rng), diff.betas.numpy(), rng)
    prior = gaussian_pdf(z, 0.0, 1.0)
    summary_t = sorted({0, *(int(round(f * T)) for f in (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0))})
    summary = [{"t": t, "alpha_bar": ab[t], "modes": count_modes(data.noised(ab[t]).pdf(z)),
                "kl_to_prior_nats": kl_on_grid(data.noised(ab[t]).pdf(z), prior, dz)} for t in summary_t]

    plt = pyplot()
    from matplotlib.colors import PowerNorm

    fig, ax = plt.subplots(figsize=(8, 4.2), dpi=120)
    mesh = ax.pcolormesh(cols, z, density, shading="auto", cmap="magma", norm=PowerNorm(0.4, vmin=0.0))
    fig.colorbar(mesh, ax=ax, label="q(z_t)  (power-scaled colour)")
    steps = np.arange(T + 1)
    for path in chains:
        ax.plot(steps, path, color="white", linewidth=0.6, alpha=0.8)
    ax.set_xlabel(f"t (paper's step; 0 = data, {T} = last)")
    ax.set_ylabel("z_t")
    ax.set_ylim(z[0], z[-1])
    ax.set_title(f"Forward process on a 3-mode mixture: marginals q(z_t), {schedule} schedule, with {paths} sample paths",
                 fontsize=9)
    fig.tight_layout()
    numbers = {"schedule": schedule, "timesteps": T, "data": dataclasses.asdict(data), "t": cols, "alpha_bar": ab[cols], "z": z,
               "density": density, "paths": chains, "summary": summary}
    return save(fig, numbers, out_dir, "marginals")


# ----- kernel ---------------------------------------------------------------------------------
def kernel(out_dir: str | Path, *, schedule: str = "linear", timesteps: int = 1000,
           xs: tuple[float, ...] = (-1.0, -0.5, 0.0, 0.5, 1.0), ts: tuple[int, ...] | None = None) -> dict:
    """The diffusion kernel q(z_t | x) = N(sqrt(alpha_bar_t) x, 1 - alpha_bar_t) for several x and t; kernel.png/.json.

    Means and variances come from genlab's :meth:`GaussianDiffusion.q_mean_variance`. Numbers
    per t: ``alpha_bar``, per x ``mean``/``var`` and the curve on ``z``, and ``tv_extremes``: the
    total variation between the kernels of the smallest and largest x, on the grid and in
    closed form (for x = +-a, TV = erf(sqrt(alpha_bar) a / sqrt(2 (1 - alpha_bar)))): how far
    apart two data points still are after t steps.
    """
    diff = _diffusion(schedule, timesteps)
    T = diff.num_timesteps
    steps = _check_steps(ts or [max(1, int(round(f * T))) for f in (0.01, 0.1, 0.25, 0.5, 1.0)], T, "kernel")
    z = np.linspace(-5.0, 5.0, 4001)  # wide enough that the tails of the broadest kernel (var ~1) are in
    dz = float(z[1] - z[0])
    x = torch.tensor(xs, dtype=torch.float64)
    rows = []
    for t in steps:
        mean, var = diff.q_mean_variance(x, torch.full((len(xs),), t - 1))
        mean, var = mean.numpy(), var.numpy()
        curves = np.stack([gaussian_pdf(z, m, v) for m, v in zip(mean, var, strict=True)])
        lo, hi = int(np.argmin(xs)), int(np.argmax(xs))
        ab = float(diff.alpha_bar[t - 1])
        half = (max(xs) - min(xs)) / 2
        rows.append({"t": t, "alpha_bar": ab, "mean": mean, "var": var, "curves": curves,
                     "tv_extremes": 0.5 * float(np.abs(curves[lo] - curves[hi]).sum() * dz),
                     "tv_extremes_closed_form": math.erf(math.sqrt(ab) * half / math.sqrt(2 * (1 - ab)))})

    plt = pyplot()
    fig, axes = plt.subplots(1, len(steps), figsize=(2.6 * len(steps), 3.2), dpi=120, sharey=False)
    axes = np.atleast_1d(axes)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, r in zip(axes, rows, strict=True):
        for i, xv in enumerate(xs):
            ax.plot(z, r["curves"][i], color=colors[i % len(colors)], label=f"x = {xv:g}")
        ax.set_title(f"t = {r['t']}, alpha_bar = {r['alpha_bar']:.3g}\nTV(x={min(xs):g}, x={max(xs):g}) = "
                     f"{r['tv_extremes']:.3f}", fontsize=8)
        ax.set_xlabel("z_t")
        ax.set_xlim(-3.5, 3.5)
        ax.set_yscale("log")
        ax.set_ylim(1e-3, None)
    axes[0].set_ylabel("q(z_t | x)  (log scale)")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"Diffusion kernel q(z_t | x) = N(sqrt(alpha_bar_t) x, 1 - alpha_bar_t), {schedule} schedule", fontsize=9)
    fig.tight_layout()
    numbers = {"schedule": schedule, "timesteps": T, "x": xs, "z": z[::8],
               "kernels": [{**r, "curves": r["curves"][:, ::8]} for r in rows]}
    return save(fig, numbers, out_dir, "kernel")


# ----- posterior -----------------------------------------------------------------------------
def reverse_conditional(data: Mixture1D, diff: GaussianDiffusion, s: int, t: int, zt: float,
                        n: int = 4001) -> tuple[np.ndarray, np.ndarray]:
    """The true q(z_s | z_t = ``zt``) of ``data`` by Bayes' rule on a grid: (grid [n], density [n]).

    q(z_s | z_t) ∝ N(z_t; sqrt(ab_t / ab_s) z_s, 1 - ab_t / ab_s) q(z_s), q(z_s) the mixture
    marginal, normalised on the grid. The grid covers both where q(z_s) lives and where the
    likelihood does (10 of its standard deviations around z_t / sqrt(ab_t / ab_s)), so a
    narrow posterior of a small step is resolved as well as a wide one.
    """
    ab = alpha_bars(diff)
    ratio = ab[t] / ab[s]
    prior = data.noised(ab[s])
    lo, hi = prior.support()
    c, w = zt / math.sqrt(ratio), 10 * math.sqrt((1 - ratio) / ratio)
    lo, hi = max(lo, c - w), min(hi, c + w)
    if lo >= hi:
        raise ValueError(f"z_t = {zt} lies where q(z_t) has no mass")
    z = np.linspace(lo, hi, n)
    log_post = np.log(np.maximum(prior.pdf(z), 1e-300)) - 0.5 * (zt - math.sqrt(ratio) * z) ** 2 / (1 - ratio)
    p = np.exp(log_post - log_post.max())
    return z, p / (p.sum() * (z[1] - z[0]))


def gaussian_posterior(diff: GaussianDiffusion, s: int, t: int, x0, zt: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of q(z_s | z_t, x) for each x in ``x0``, from genlab's ``q_posterior_mean_variance``.

    The process respaced to the steps (s, t) makes s -> t one step, so its posterior at
    index 1 is q(z_s | z_t, x) (for s = t - 1 the original process's). Needs s >= 1.
    """
    step = diff.respaced([s - 1, t - 1])
    x = torch.as_tensor(np.atleast_1d(np.asarray(x0, dtype=float)))
    mean, var, _ = step.q_posterior_mean_variance(x, torch.full_like(x, zt), torch.ones(len(x), dtype=torch.long))
    return mean.numpy(), var.numpy()


def fit_gaussian(z: np.ndarray, p: np.ndarray) -> dict:
    """The Gaussian nearest to a grid density in KL(p || N): moment matching; with that KL and the TV."""
    dz = float(z[1] - z[0])
    mean = float((z * p).sum() * dz)
    var = float(((z - mean) ** 2 * p).sum() * dz)
    q = gaussian_pdf(z, mean, var)
    return {"mean": mean, "var": var, "kl_nats": kl_on_grid(p, q, dz), "tv": 0.5 * float(np.abs(p - q).sum() * dz),
            "modes": count_modes(p)}


def posterior(out_dir: str | Path, *, schedule: str = "linear", timesteps: int = 1000,
              pairs: tuple[tuple[int, int], ...] | None = None, zts: tuple[float, ...] = (-0.3, 0.35),
              data: Mixture1D = DATA) -> dict:
    """True reverse conditionals q(z_s | z_t) next to the Gaussian posteriors q(z_s | z_t, x); posterior.png/.json.

    ``pairs``: pairs (s, t) of paper steps, 1 <= s < t; the default is one DDPM step
    (t - 1, t) at t = T/10, and one large step from s = 1 to t = 3T/10 (a sampler with few
    steps). One DDPM step is nearly Gaussian; the large step is not, which is why a Gaussian
    p(z_s | z_t) needs many small steps. For each (s, t) and each z_t in ``zts`` the numbers
    give the true conditional on its grid, its moment-matched Gaussian's ``kl_nats`` (KL(true
    || fit), the smallest KL any Gaussian reaches) and ``tv``, its ``modes``, and the
    Gaussian posteriors given x = each component mean (they are what the true conditional
    mixes: q(z_s | z_t) = E_{x ~ q(x | z_t)} q(z_s | z_t, x)).
    """
    diff = _diffusion(schedule, timesteps)
    T = diff.num_timesteps
    if pairs is None:
        small = max(2, T // 10)
        pairs = ((small - 1, small), (1, max(2, int(round(0.3 * T)))))
    for s, t in pairs:
        if not 1 <= s < t <= T:
            raise ConfigError(f"posterior steps (s, t) = ({s}, {t}) need 1 <= s < t <= {T} (paper steps).")
    ab = alpha_bars(diff)
    cases = []
    for s, t in pairs:
        for zt in zts:
            z, p = reverse_conditional(data, diff, s, t, zt)
            mean, var = gaussian_posterior(diff, s, t, data.means, zt)
            cases.append({"s": s, "t": t, "z_t": zt, "step_variance": 1 - ab[t] / ab[s], **fit_gaussian(z, p),
                          "z": z[::8], "density": p[::8], "_z": z, "_p": p,
                          "given_x": {"x": data.means, "mean": mean, "var": var}})

    plt = pyplot()
    fig, axes = plt.subplots(len(pairs), len(zts), figsize=(3.6 * len(zts), 2.9 * len(pairs)), dpi=120, squeeze=False)
    for ax, c in zip(axes.flat, cases, strict=True):
        z, p = c.pop("_z"), c.pop("_p")
        ax.plot(z, p, color="black", linewidth=1.6, label="q(z_s | z_t) (Bayes)")
        ax.plot(z, gaussian_pdf(z, c["mean"], c["var"]), color="tab:red", linestyle="--", label="best Gaussian")
        g = c["given_x"]
        for k, (m, v) in enumerate(zip(g["mean"], g["var"], strict=True)):
            ax.plot(z, gaussian_pdf(z, m, v), color="tab:blue",
                    linewidth=0.7, alpha=0.6, label="q(z_s | z_t, x = mu_k)" if k == 0 else None)
        ax.set_ylim(0, 1.25 * p.max())
        ax.set_title(f"s = {c['s']}, t = {c['t']}, z_t = {c['z_t']:g}\nKL(true || Gaussian) = {c['kl_nats']:.3g} nats, "
                     f"{c['modes']} mode(s)", fontsize=8)
        ax.set_xlabel("z_s")
    axes[0, 0].legend(fontsize=6)
    fig.suptitle(f"Reverse conditionals of 3-mode data, {schedule} schedule (T = {T}): one step vs one large step",
                 fontsize=9)
    fig.tight_layout()
    numbers = {"schedule": schedule, "timesteps": T, "data": dataclasses.asdict(data), "cases": cases}
    return save(fig, numbers, out_dir, "posterior")
