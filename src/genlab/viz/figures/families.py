"""The other families on the notes' pages: GAN mode collapse, Hopfield recall, and the trilemma of every family.

Each figure runs genlab's own models (the GAN family's objectives and networks, the
Hopfield network) or reads genlab's own run records (:mod:`genlab.viz.report`).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import torch

from genlab.errors import ConfigError
from genlab.viz.figures.common import pyplot, save

GAN_LOSSES = ("minimax", "ns", "wgan-gp")
GAN_LABELS = {"minimax": "saturating minimax", "ns": "non-saturating", "wgan-gp": "WGAN-GP"}


# ----- mode-collapse -------------------------------------------------------------------------
def eight_gaussians() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """(train points [10000, 2], their mode labels, the 8 centres [8, 2], the coverage radius).

    toy2d's ``8gaussians`` (:mod:`genlab.data.toy`): centres at radius 2 sqrt(2), angles
    k 45 deg, standard deviation 0.5 / sqrt(2); a point belongs to a mode within 3 of them.
    """
    from genlab.data import PointDataset, load_dataset

    ds = load_dataset("toy2d", "train", variant="8gaussians")
    assert isinstance(ds, PointDataset)
    angle = torch.arange(8, dtype=torch.float64) * (math.pi / 4)
    centres = torch.stack([angle.cos(), angle.sin()], 1) * (4 / math.sqrt(2))
    return ds.points, ds.labels, centres.float(), 3 * 0.5 / math.sqrt(2)


def train_gan(loss: str, points: torch.Tensor, centres: torch.Tensor, radius: float, steps: int, seed: int = 0,
              monitor_every: int = 50, monitor_n: int = 1000, batch_size: int | None = None) -> dict:
    """Train genlab's toy2d GAN (the settings ``genlab train --family gan --data toy2d --loss LOSS`` uses) for ``steps``.

    One step is one D update (Algorithm 1 of Goodfellow et al.; G every ``d_steps``-th, 5 for
    WGAN-GP) on a minibatch drawn with replacement. Every ``monitor_every`` steps G draws
    ``monitor_n`` points from a fixed z and :func:`genlab.gan.mode_coverage` counts the modes
    covered (a mode needs 10% of its uniform share). Returns ``steps`` and ``modes_covered``
    (the curve), ``near_mode`` (share of points within the radius of a mode), the final
    ``points`` and ``d_steps``.
    """
    from genlab.config import resolve
    from genlab.gan import GAN, mode_coverage

    train = {} if batch_size is None else {"batch_size": batch_size}
    cfg = resolve(None, {}, {"data": {"name": "toy2d"}, "gan": {"loss": loss}, "train": train}, family="gan")
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, shape=(2,), levels=0, num_classes=8))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        gan = GAN.from_config(cfg)
    optimizers = {name: torch.optim.Adam(**group) for name, group in gan.optimizer_groups().items()}

    def update(name: str, value: torch.Tensor) -> None:
        for opt in optimizers.values():  # clear both players: G's backward runs through D
            opt.zero_grad(set_to_none=True)
        value.backward()
        optimizers[name].step()

    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(monitor_n, gan.latent_dim, generator=torch.Generator().manual_seed(seed + 1))

    def monitor() -> tuple[dict, torch.Tensor]:
        gan.net.eval()
        with torch.no_grad():
            x = gan.net(z)
        gan.net.train()
        return mode_coverage(x, centres, radius), x

    curve: dict[str, list] = {"steps": [], "modes_covered": [], "near_mode": []}
    for step in range(steps + 1):
        if step % monitor_every == 0 or step == steps:
            cover, x = monitor()
            curve["steps"].append(step)
            curve["modes_covered"].append(cover["modes_covered"])
            curve["near_mode"].append(cover["near_mode"])
        if step == steps:
            break
        batch = points[torch.randint(len(points), (cfg.train.batch_size,), generator=gen)]
        gan.train_step(batch, gen, None, step, update)
    return {**curve, "points": x.numpy(), "d_steps": gan.d_steps, "mode_histogram": cover["mode_histogram"],
            "batch_size": cfg.train.batch_size, "lr": cfg.train.lr}


def mode_collapse(out_dir: str | Path, *, steps: int = 1000, seed: int = 0, batch_size: int = 128) -> dict:
    """Modes of the 8 Gaussians covered over training by the minimax, non-saturating and WGAN-GP losses.

    The same generator and discriminator MLPs (genlab's toy2d GAN) and the same seed for
    each loss, with minibatches of ``batch_size`` (genlab train's toy2d default is 256; 128
    keeps the default figure within seconds); see :func:`train_gan`. Numbers per loss: the
    coverage curve (``steps``, ``modes_covered`` 0..8, ``near_mode``), the final
    ``mode_histogram`` and the final ``points`` (1000 draws of G from a fixed z). The
    saturating loss's gradient vanishes where D rejects the fakes (log(1 - D(G(z))) is flat
    as D(G(z)) -> 0), so early in training, while D wins, it moves G least; WGAN-GP updates
    G once per 5 critic steps, so at equal steps it has made a fifth of the G updates.
    """
    if steps < 1:
        raise ConfigError(f"mode-collapse needs at least one training step, not {steps}; pass e.g. steps=1500.")
    points, _, centres, radius = eight_gaussians()
    every = max(1, steps // 30)
    runs = {loss: train_gan(loss, points, centres, radius, steps, seed, monitor_every=every, batch_size=batch_size)
            for loss in GAN_LOSSES}

    plt = pyplot()
    fig = plt.figure(figsize=(12, 7.2), dpi=120)
    grid = fig.add_gridspec(2, 3, height_ratios=(1, 1.2))
    ax = fig.add_subplot(grid[0, :])
    for loss, r in runs.items():
        ax.plot(r["steps"], r["modes_covered"], "o-", markersize=3, label=f"{GAN_LABELS[loss]} (D steps per G step: "
                                                                           f"{r['d_steps']})")
    ax.set_ylim(-0.3, 8.3)
    ax.set_xlabel("training step (discriminator updates)")
    ax.set_ylabel("modes covered (of 8)")
    ax.legend(fontsize=8)
    ax.set_title("Mode coverage during training: a mode counts when it holds >= 10% of its uniform share", fontsize=9)
    data = points[:1000].numpy()
    for i, (loss, r) in enumerate(runs.items()):
        a = fig.add_subplot(grid[1, i])
        a.scatter(data[:, 0], data[:, 1], s=2, color="lightgrey", label="data")
        a.scatter(r["points"][:, 0], r["points"][:, 1], s=2, color=f"C{i}", label="G(z)")
        for c in centres.numpy():
            a.add_patch(plt.Circle(c, radius, fill=False, color="black", linewidth=0.5, linestyle=":"))
        a.set_xlim(-4.5, 4.5)
        a.set_ylim(-4.5, 4.5)
        a.set_aspect("equal")
        a.set_title(f"{GAN_LABELS[loss]}: {r['modes_covered'][-1]} modes after {steps} steps", fontsize=8)
    fig.tight_layout()
    return save(fig, {"steps": steps, "seed": seed, "batch_size": batch_size, "radius": radius, "centres": centres, "losses": runs}, out_dir,
                "mode-collapse")


# ----- hopfield ------------------------------------------------------------------------------
def least_overlapping(patterns: np.ndarray, k: int) -> list[int]:
    """Indices of ``k`` rows of ``patterns`` [M, N] chosen greedily (from row 0) to keep |overlaps| small.

    Binarised digits overlap strongly (they share the background), and correlated patterns
    merge into spurious states far below the 0.138 N capacity of random ones.
    """
    m = np.abs(patterns @ patterns.T) / patterns.shape[1]
    chosen = [0]
    while len(chosen) < min(k, len(patterns)):
        rest = [i for i in range(len(patterns)) if i not in chosen]
        chosen.append(min(rest, key=lambda i: m[i, chosen].max()))
    return chosen


def recall_steps(net, state: np.ndarray, rng: np.random.Generator, max_sweeps: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Asynchronous recall one neuron at a time: (states [U + 1, N], energies [U + 1]) after each update.

    The same rule and order as :meth:`Hopfield.sweep_async` (a fresh random permutation of
    the neurons per sweep; s_i = sign(sum_j w_ij s_j), sign(0) keeps s_i), recorded after
    every single update; it stops after a sweep that changed nothing (a fixed point).
    """
    s = np.array(state, dtype=float, copy=True)
    states, energies = [s.copy()], [float(net.energy(s))]
    for _ in range(max_sweeps):
        changed = False
        for i in rng.permutation(net.n):
            h = s @ net.weights[:, i]
            new = 1.0 if h > 0 else (-1.0 if h < 0 else s[i])
            changed |= new != s[i]
            s[i] = new
            states.append(s.copy())
            energies.append(float(net.energy(s)))
        if not changed:
            break
    return np.stack(states), np.asarray(energies)


def hopfield(out_dir: str | Path, *, patterns: int = 3, corrupt_fraction: float = 0.15, seed: int = 0,
             snapshots: int = 10) -> dict:
    """Hopfield recall of corrupted digits, step by step, with the energy after each update; hopfield.png/.json.

    Stores ``patterns`` binarised 8x8 digits (the first training image of each class,
    chosen by :func:`least_overlapping`; pixel >= 8 of 16 is +1) with the Hebbian rule in
    genlab's :class:`~genlab.energy.Hopfield` (64 neurons, self-connections kept), flips
    ``corrupt_fraction`` of each one's pixels, and runs asynchronous updates to a fixed
    point (:func:`recall_steps`). E(s) = -1/2 s^T W s never increases under them.

    Numbers per pattern: ``class``, ``energy`` and ``overlap`` (m = s . P / N with its stored
    pattern) after each neuron update, ``updates`` (to the fixed point, its last sweep
    included), ``recalled`` (the final state equals the pattern), ``snapshot_updates`` and
    the snapshot ``states`` drawn.
    """
    from genlab.data import ImageDataset, load_dataset
    from genlab.energy import Hopfield, binarize, corrupt

    if not 0 <= corrupt_fraction <= 1:
        raise ConfigError(f"the corrupted fraction {corrupt_fraction} is not a fraction; pass a number in 0..1.")
    ds = load_dataset("digits", "train")
    assert isinstance(ds, ImageDataset)
    labels = ds.labels.numpy()
    first = [int(np.flatnonzero(labels == c)[0]) for c in range(ds.info.num_classes)]
    candidates = binarize(ds.images[first].numpy(), threshold=ds.info.levels // 2)
    if not 1 <= patterns <= len(candidates):
        raise ConfigError(f"the Hopfield figure stores 1 to {len(candidates)} patterns, not {patterns}.")
    chosen = least_overlapping(candidates, patterns)
    p = candidates[chosen]
    net = Hopfield(p.shape[1]).store(p)
    noisy = corrupt(p, corrupt_fraction, seed=seed)
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(len(p)):
        states, energies = recall_steps(net, noisy[k], rng)
        at = np.unique(np.linspace(0, len(states) - 1, snapshots).round().astype(int))
        rows.append({"class": int(labels[first[chosen[k]]]), "energy": energies, "overlap": states @ p[k] / p.shape[1],
                     "updates": len(states) - 1, "recalled": bool(np.array_equal(states[-1], p[k])),
                     "energy_stored": float(net.energy(p[k])), "snapshot_updates": at, "states": states[at],
                     "max_energy_increase": float(np.max(np.diff(energies), initial=0.0))})

    plt = pyplot()
    shape = tuple(ds.images.shape[2:])
    cols = snapshots + 1
    fig = plt.figure(figsize=(1.1 * cols, 1.15 * len(p) + 2.8), dpi=120)
    grid = fig.add_gridspec(len(p) + 1, cols, height_ratios=[1] * len(p) + [2.2])
    for k, r in enumerate(rows):
        imgs = [p[k], *r["states"]]
        titles = ["stored", *(f"u = {u}" for u in r["snapshot_updates"])]
        for j, (img, title) in enumerate(zip(imgs[:cols], titles[:cols], strict=True)):
            a = fig.add_subplot(grid[k, j])
            a.imshow(img.reshape(shape), cmap="gray", vmin=-1, vmax=1)
            a.set_xticks([])
            a.set_yticks([])
            a.set_title(title, fontsize=6)
    ax = fig.add_subplot(grid[len(p), :])
    for k, r in enumerate(rows):
        ax.plot(r["energy"], color=f"C{k}", label=f"digit {r['class']} ({'recalled' if r['recalled'] else 'not recalled'})")
        ax.axhline(r["energy_stored"], color=f"C{k}", linestyle=":", linewidth=0.8)
    ax.set_xlabel("neuron updates (asynchronous; u = 0 is the corrupted state)")
    ax.set_ylabel("energy E(s) = -1/2 s^T W s")
    ax.legend(fontsize=7)
    fig.suptitle(f"Hopfield recall: {len(p)} digits stored in {p.shape[1]} neurons, {corrupt_fraction:g} of the pixels "
                 f"flipped; dotted: the stored pattern's energy", fontsize=8)
    fig.tight_layout()
    return save(fig, {"neurons": p.shape[1], "corrupt_fraction": corrupt_fraction, "seed": seed, "patterns": rows},
                out_dir, "hopfield")


# ----- trilemma ------------------------------------------------------------------------------
TRILEMMA = (("fid", "quality: FID (lower is better)", False),
            ("recall", "coverage: recall (higher is better)", False),
            ("seconds_per_sample", "speed: seconds per sample (lower is better)", True))


def trilemma(out_dir: str | Path, *, runs: list[str | Path]) -> dict:
    """Quality, coverage and speed of each run's best evaluation, one bar per run; trilemma.png/.json.

    Reads the runs' records with :func:`genlab.viz.report.collect_rows` and keeps each run's
    best sampler setting (:func:`~genlab.viz.report.best_per_run`: lowest FID). The three
    panels are FID on genlab's feature network (quality), k-NN recall (coverage) and the
    measured seconds per sample (speed, log scale); a run that did not measure one has no
    bar there (n/a). Numbers: one row per run with ``run``, ``family``, ``label`` (sampler
    and steps), ``fid``, ``recall``, ``precision``, ``seconds_per_sample``, ``nfe``, ``n``.
    """
    from genlab.viz.report import best_per_run, collect_rows

    if not runs:
        raise ConfigError("the trilemma figure needs at least one run directory; pass runs written by genlab train.")
    rows = best_per_run(collect_rows([Path(r) for r in runs]))
    keep = ("run", "family", "label", "fid", "recall", "precision", "seconds_per_sample", "nfe", "n", "bpd")
    rows = [{k: r.get(k) for k in keep} for r in rows]

    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2 + 0.25 * len(rows)), dpi=120)
    names = [f"{Path(r['run']).name}\n{r['family']}" for r in rows]
    y = np.arange(len(rows))
    for ax, (key, title, log) in zip(axes, TRILEMMA, strict=True):
        values = [r[key] for r in rows]
        for i, v in enumerate(values):  # a dot per run; a run that did not measure it says n/a
            if v is None:
                ax.text(0.02, i, "n/a", transform=ax.get_yaxis_transform(), va="center", fontsize=7, color="grey")
                continue
            ax.scatter([v], [i], s=60, color=f"C{i}", edgecolors="black", linewidths=0.5, zorder=3)
            ax.annotate(f"{v:.3g}", (v, i), xytext=(6, 4), textcoords="offset points", fontsize=7)
        ax.set_yticks(y, names if ax is axes[0] else [""] * len(rows), fontsize=7)
        ax.set_ylim(len(rows) - 0.5, -0.5)
        ax.grid(True, axis="x", alpha=0.3)
        if log and any(v for v in values):
            ax.set_xscale("log")
        if key == "recall":
            ax.set_xlim(-0.02, 1.02)
        ax.margins(x=0.2)
        ax.set_title(title, fontsize=9)
    fig.suptitle("The generative learning trilemma: each run's best evaluation (genlab eval RUN --metrics fid,kid,pr)",
                 fontsize=9)
    fig.tight_layout()
    return save(fig, {"runs": rows}, out_dir, "trilemma")
