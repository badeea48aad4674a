"""``genlab hopfield``: store binarised images in a Hopfield network and recall them; the capacity curve."""

from __future__ import annotations

import time
from pathlib import Path

from genlab.errors import ConfigError


def add_parser(sub) -> None:
    h = sub.add_parser("hopfield", help="store binarised images in a Hopfield network and recall them from corrupted copies",
                       description="Store --patterns binarised training images (the first of each class first) with "
                                   "the Hebbian rule, flip --corrupt of their pixels, and update to a fixed point. "
                                   "Writes a grid: stored, corrupted, recalled (one row each). With --capacity, "
                                   "plots recall against the load K/N for random patterns instead.")
    h.add_argument("--data", default="mnist", help="dataset of images to store (default mnist)")
    h.add_argument("--data-dir", default=None, help="folder holding the dataset's files")
    h.add_argument("--patterns", type=int, default=10, help="number of images to store (default 10)")
    h.add_argument("--corrupt", type=float, default=0.2, help="fraction of pixels flipped before recall (default 0.2)")
    h.add_argument("--mode", choices=("async", "sync"), default="async", help="asynchronous (default) or synchronous updates")
    h.add_argument("--seed", type=int, default=0)
    h.add_argument("--capacity", action="store_true", help="run the capacity experiment (random patterns) instead")
    h.add_argument("--neurons", type=int, default=500, help="neurons of the capacity experiment (default 500)")
    h.add_argument("--trials", type=int, default=3, help="networks per load in the capacity experiment (default 3)")
    h.add_argument("--out", type=Path, default=None, help="PNG to write (default hopfield.png, or hopfield-capacity.png)")


def run(args) -> int:
    import itertools

    import numpy as np
    import torch

    from genlab.energy import Hopfield, binarize, capacity_curve, corrupt

    if not 0 <= args.corrupt <= 1:
        raise ConfigError(f"--corrupt {args.corrupt} is not a fraction; pass a number between 0 and 1.")
    if args.capacity:
        if args.neurons < 10 or args.trials < 1:
            raise ConfigError("--neurons must be at least 10 and --trials at least 1.")
        loads = np.round(np.arange(0.02, 0.305, 0.02), 3)
        t0 = time.perf_counter()
        rows = capacity_curve(args.neurons, loads, trials=args.trials, corrupt_fraction=args.corrupt, seed=args.seed)
        print(f"genlab: Hopfield capacity, {args.neurons} neurons, no self-connections, {args.trials} networks per load, "
              f"patterns flipped by {args.corrupt:g}, asynchronous updates ({time.perf_counter() - t0:.1f}s)")
        print("  K/N    patterns  mean overlap  recall rate (overlap >= 0.95)")
        for r in rows:
            print(f"  {r['alpha']:.3f}  {r['patterns']:8d}  {r['mean_overlap']:12.3f}  {r['recall_rate']:.3f}")
        out = args.out or Path("hopfield-capacity.png")
        _plot_capacity(rows, out, args)
        print(f"genlab: wrote {out}")
        return 0
    from genlab.data import ImageDataset, load_dataset

    ds = load_dataset(args.data, "train", root=args.data_dir)
    if not isinstance(ds, ImageDataset):
        raise ConfigError(f"{args.data} holds points, not images; store images, e.g. --data mnist or --data digits.")
    if args.patterns < 1 or args.patterns > len(ds.images):
        raise ConfigError(f"--patterns {args.patterns} is out of range; pass 1 to {len(ds.images)}.")
    labels = ds.labels.numpy()
    first = [int(np.flatnonzero(labels == c)[0]) for c in np.unique(labels)]  # one image per class first
    chosen = set(first)
    rest = (i for i in range(len(ds.images)) if i not in chosen)
    order = first[: args.patterns] + list(itertools.islice(rest, max(0, args.patterns - len(first))))
    images = ds.images[order]
    threshold = max(1, ds.info.levels // 2)
    p = binarize(images.numpy(), threshold=threshold)
    net = Hopfield(p.shape[1]).store(p)
    noisy = corrupt(p, args.corrupt, seed=args.seed)
    final, sweeps = net.recall(noisy, mode=args.mode, seed=args.seed)
    m = net.overlap(final)
    exact = int(sum(np.array_equal(f, q) for f, q in zip(final, p, strict=True)))
    shape = tuple(images.shape[1:])
    strips = [torch.from_numpy(((x + 1) / 2).astype(np.uint8)).reshape(-1, *shape) for x in (p, noisy, final)]
    out = args.out or Path("hopfield.png")
    from genlab.viz.grid import save_grid

    save_grid(torch.cat(strips), out, levels=2, nrow=len(p))
    print(f"genlab: Hopfield network of {p.shape[1]} neurons storing {len(p)} binarised {args.data} images "
          f"(load {len(p) / p.shape[1]:.3f}); {args.corrupt:g} of the pixels flipped; {args.mode} updates, "
          f"{sweeps} sweeps to a fixed point")
    print(f"genlab: recalled exactly {exact} of {len(p)}; overlap with its own pattern "
          + " ".join(f"{v:.2f}" for v in np.diag(m)) + "; energy of the recalled states "
          + " ".join(f"{e:.1f}" for e in net.energy(final)))
    print(f"genlab: wrote {out} (rows: stored, corrupted, recalled)")
    return 0


def _plot_capacity(rows: list[dict], out: Path, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from genlab.io import atomic_write

    fig, ax = plt.subplots(figsize=(6.4, 4), dpi=120)
    a = [r["alpha"] for r in rows]
    ax.plot(a, [r["recall_rate"] for r in rows], "o-", label="recall rate (overlap >= 0.95)")
    ax.plot(a, [r["mean_overlap"] for r in rows], "s--", label="mean final overlap")
    ax.axvline(0.138, color="grey", linestyle=":", label="0.138 (Amit et al. 1985)")
    ax.set_xlabel("load K / N (patterns per neuron)")
    ax.set_ylabel("fraction")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"Hopfield capacity: {args.neurons} neurons, {args.trials} networks per load, {args.corrupt:g} flipped")
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(out, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
