"""What noising does to images and what each weighting of the loss asks for: the spectrum and weighting figures.

Time is the paper's step (t = 0 the data, alpha_bar_0 = 1; genlab's index is t - 1, see
:mod:`genlab.viz.figures.diffusion1d`). Images are in model space [-1, 1]
(:func:`genlab.data.transforms.to_model`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from genlab.diffusion.process import DEFAULT_WEIGHTING_GAMMA, GaussianDiffusion
from genlab.viz.figures.common import pyplot, save

SCHEDULES = ("linear", "cosine")


# ----- spectrum ------------------------------------------------------------------------------
def radial_power(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged power spectrum of images ``x`` [B, C, H, W]: (frequency [R], power [R]).

    Power is |FFT(x)|^2 with numpy's ``norm="ortho"`` 2-D FFT, averaged over images,
    channels and the frequencies of a ring; with this normalisation white noise of variance
    v has power v at every frequency (the unnormalised FFT multiplies everything by H W).
    Ring r holds the frequencies whose radius sqrt(f_y^2 + f_x^2) rounds to r / max(H, W)
    cycles per pixel; ring 0 is the mean (DC) alone. Frequencies in cycles per pixel.
    """
    B, C, H, W = x.shape
    power = (np.abs(np.fft.fft2(x, norm="ortho")) ** 2).mean(axis=(0, 1))  # [H, W]
    n = max(H, W)
    radius = np.hypot(*np.meshgrid(np.fft.fftfreq(H), np.fft.fftfreq(W), indexing="ij"))
    ring = np.round(radius * n).astype(int)
    counts = np.bincount(ring.ravel())
    sums = np.bincount(ring.ravel(), weights=power.ravel())
    keep = counts > 0
    return np.arange(len(counts))[keep] / n, sums[keep] / counts[keep]


def load_images(data_dir: str | Path | None, n: int, seed: int) -> tuple[str, np.ndarray]:
    """(dataset name, ``n`` training images in [-1, 1] [n, C, H, W]): MNIST from ``data_dir``, else the 8x8 digits."""
    from genlab.data import ImageDataset, load_dataset, to_model

    name = "mnist" if data_dir is not None else "digits"
    ds = load_dataset(name, "train", root=data_dir)
    assert isinstance(ds, ImageDataset)
    idx = np.random.default_rng(seed).choice(len(ds.images), size=min(n, len(ds.images)), replace=False)
    return name, to_model(ds.images[np.sort(idx)], ds.info.levels).double().numpy()


def spectrum(out_dir: str | Path, *, data_dir: str | Path | None = None, timesteps: int = 1000, images: int = 512,
             seed: int = 0, ts: tuple[int, ...] | None = None) -> dict:
    """Power spectrum of x_t over t, measured against its closed form, linear and cosine schedules; frequency.png/.json.

    x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps (genlab's ``q_sample``, one noise
    draw per image). The noise is white and independent of x_0, so the cross term averages
    out and E|FFT(x_t)|^2 = alpha_bar_t |FFT(x_0)|^2 + (1 - alpha_bar_t) (ortho FFT; the
    unnormalised FFT's noise term is (1 - alpha_bar_t) H W). Image spectra fall with
    frequency and the noise floor is flat, so a frequency is drowned (its signal power
    alpha_bar_t S_0(f) below the noise's 1 - alpha_bar_t) at a step that falls as f grows:
    noising erases fine detail first and the coarse layout last.

    Numbers: ``freq`` (cycles per pixel, ring 0 = DC), ``clean`` S_0, and per schedule and
    step ``measured``, ``closed_form``, ``noise_floor``; per schedule ``drowned_at`` (for each
    ring, the first step whose signal power is below the noise) and ``max_rel_error`` (the
    largest |measured / closed form - 1| over rings and steps).
    """
    name, x0 = load_images(data_dir, images, seed)
    freq, clean = radial_power(x0)
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    x0_t = torch.from_numpy(x0)
    result: dict = {"data": name, "images": len(x0), "shape": list(x0.shape[1:]), "timesteps": timesteps, "freq": freq,
                    "clean": clean, "schedules": {}}
    for schedule in SCHEDULES:
        diff = GaussianDiffusion.from_schedule(schedule, timesteps)
        T = diff.num_timesteps
        steps = list(ts) if ts else sorted({max(1, int(round(f * T))) for f in (0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0)})
        ab_all = diff.alpha_bar.numpy()
        rows: list[dict] = []
        for t in steps:
            xt = diff.q_sample(x0_t, torch.full((len(x0),), t - 1), noise).numpy()
            ab = float(ab_all[t - 1])
            closed = ab * clean + (1 - ab)
            measured = radial_power(xt)[1]
            rows.append({"t": t, "alpha_bar": ab, "measured": measured, "closed_form": closed, "noise_floor": 1 - ab})
        # drowned at: the first paper step t with alpha_bar_t S_0(f) < 1 - alpha_bar_t (alpha_bar falls with t)
        drowned = [int(np.argmax(ab_all * s0 < 1 - ab_all)) + 1 if np.any(ab_all * s0 < 1 - ab_all) else None
                   for s0 in clean]
        err = max(float(np.max(np.abs(r["measured"] / r["closed_form"] - 1))) for r in rows)
        result["schedules"][schedule] = {"steps": rows, "drowned_at": drowned, "max_rel_error": err}

    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2), dpi=120)
    cmap = plt.get_cmap("viridis")
    f1 = freq[1:]  # without DC, for the log axis
    for ax, schedule in zip(axes[:2], SCHEDULES, strict=True):
        rows = result["schedules"][schedule]["steps"]
        ax.plot(f1, clean[1:], color="black", linewidth=2, label="x_0 (clean)")
        for i, r in enumerate(rows):
            c = cmap(i / max(1, len(rows) - 1))
            ax.plot(f1, r["closed_form"][1:], color=c, linewidth=1)
            ax.plot(f1, r["measured"][1:], "o", color=c, markersize=3, label=f"t = {r['t']}")
            ax.axhline(r["noise_floor"], color=c, linestyle=":", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("spatial frequency (cycles per pixel)")
        ax.set_ylabel("radially averaged power |FFT(x_t)|^2")
        _plain_ticks(ax)
        ax.set_title(f"{schedule}: measured (dots), ab S_0 + (1 - ab) (lines), noise (dotted)", fontsize=8)
        ax.legend(fontsize=6, ncol=2)
    ax = axes[2]
    for schedule, style in zip(SCHEDULES, ("o-", "s--"), strict=True):
        d = result["schedules"][schedule]["drowned_at"][1:]
        ax.plot(f1, [np.nan if v is None else v for v in d], style, label=schedule, markersize=4)
    ax.set_xscale("log")
    _plain_ticks(ax)
    ax.set_xlabel("spatial frequency (cycles per pixel)")
    ax.set_ylabel("first t where noise power > signal power")
    ax.set_title("High frequencies are drowned first", fontsize=8)
    ax.legend(fontsize=8)
    fig.suptitle(f"Power spectrum of x_t, {len(x0)} {name} training images {x0.shape[2]}x{x0.shape[3]}, T = {timesteps}",
                 fontsize=9)
    fig.tight_layout()
    return save(fig, result, out_dir, "frequency")


def _plain_ticks(ax) -> None:
    """Frequencies as 0.25, not 2.5 x 10^-1, on a log axis."""
    from matplotlib.ticker import FormatStrFormatter

    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(FormatStrFormatter("%g"))
    ax.tick_params(axis="x", which="minor", labelsize=6)


# ----- weighting -----------------------------------------------------------------------------
# Choi et al. 2022 (Sec. 3): the stages of the reverse process by SNR, from noise to data
STAGES = {"coarse (SNR < 0.01)": (0.0, 1e-2), "content (0.01 < SNR < 1)": (1e-2, 1.0), "clean-up (SNR > 1)": (1.0, np.inf)}


def weighting(out_dir: str | Path, *, timesteps: int = 1000, prediction: str = "eps", p2_gamma: float | None = None,
              min_snr_gamma: float | None = None) -> dict:
    """The weight lambda_t that L_simple, P2 and min-SNR put on each step, against log SNR_t; weighting.png/.json.

    The weights are genlab's own (:meth:`GaussianDiffusion.loss_weight`, what ``genlab train
    --weighting`` trains with) for a ``prediction`` network: for eps, 1 (L_simple),
    1 / (1 + SNR_t)^gamma (P2, Choi et al. 2022, k = 1, default gamma 1) and
    min(SNR_t, gamma) / SNR_t (min-SNR, Hang et al. 2023, default gamma 5), with
    SNR_t = alpha_bar_t / (1 - alpha_bar_t). t is drawn uniformly in training, so the share of
    the objective a range of steps carries is its share of sum_t lambda_t; ``stage_share``
    gives it for Choi et al.'s three stages (coarse, content, clean-up) and both schedules:
    P2 and min-SNR take weight away from the clean-up steps (imperceptible detail).

    Numbers per schedule: ``log_snr`` [T] (natural log, genlab's t = 0..T-1), ``weights``
    {name: [T]}, ``stage_share`` {name: {stage: share}}.
    """
    gammas = {"none": None, "p2": DEFAULT_WEIGHTING_GAMMA["p2"] if p2_gamma is None else p2_gamma,
              "min-snr": DEFAULT_WEIGHTING_GAMMA["min-snr"] if min_snr_gamma is None else min_snr_gamma}
    labels = {"none": "L_simple", "p2": f"P2 (k = 1, gamma = {gammas['p2']:g})",
              "min-snr": f"min-SNR (gamma = {gammas['min-snr']:g})"}
    result: dict = {"prediction": prediction, "timesteps": timesteps, "gamma": gammas, "schedules": {}}
    for schedule in SCHEDULES:
        diff = GaussianDiffusion.from_schedule(schedule, timesteps)
        t = torch.arange(diff.num_timesteps)
        snr = diff.snr(t).numpy()
        weights = {w: diff.loss_weight(t, prediction, w, g).numpy() for w, g in gammas.items()}
        shares = {}
        for w, lam in weights.items():
            total = lam.sum()
            shares[w] = {stage: float(lam[(snr >= lo) & (snr < hi)].sum() / total) for stage, (lo, hi) in STAGES.items()}
        result["schedules"][schedule] = {"log_snr": np.log(snr), "weights": weights, "stage_share": shares}

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), dpi=120)
    colors = {"none": "black", "p2": "tab:blue", "min-snr": "tab:orange"}
    ax = axes[0]
    for schedule, style in zip(SCHEDULES, ("-", "--"), strict=True):
        r = result["schedules"][schedule]
        for w, lam in r["weights"].items():
            ax.plot(r["log_snr"], lam, style, color=colors[w], label=f"{labels[w]}, {schedule}")
    for x in (np.log(1e-2), 0.0):
        ax.axvline(x, color="grey", linestyle=":", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("log SNR_t  (left: noise, right: data)")
    ax.set_ylabel(f"lambda_t ({prediction}-prediction loss)")
    ax.set_title("Weight per step; dotted: SNR = 0.01 and 1 (coarse | content | clean-up)", fontsize=8)
    ax.legend(fontsize=6)
    ax = axes[1]
    stages = list(STAGES)
    width = 0.13
    for i, (schedule, w) in enumerate((s, w) for s in SCHEDULES for w in gammas):
        share = result["schedules"][schedule]["stage_share"][w]
        ax.bar(np.arange(len(stages)) + (i - 2.5) * width, [share[s] for s in stages], width, color=colors[w],
               alpha=1.0 if schedule == "linear" else 0.5, hatch="" if schedule == "linear" else "//",
               label=f"{labels[w]}, {schedule}")
    ax.set_xticks(np.arange(len(stages)), stages, fontsize=7)
    ax.set_ylabel("share of the objective (t uniform)")
    ax.set_title("Where each weighting puts the training signal", fontsize=8)
    ax.legend(fontsize=6)
    fig.suptitle(f"Loss weightings genlab trains with (T = {timesteps}, {prediction}-prediction)", fontsize=9)
    fig.tight_layout()
    return save(fig, result, out_dir, "weighting")
