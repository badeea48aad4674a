"""The Hopfield network (Hopfield 1982): Hebbian storage, recall, energy, capacity.

States are vectors of +-1 over N neurons. Storing K patterns P^k sets
w_ij = (1/N) sum_k P^k_i P^k_j, the Hebbian rule of the lecture notes (the diagonal
w_ii = K/N included, as in the notes' worked example; ``zero_diagonal=True`` gives the
classical network without self-connections, whose capacity is the 0.138 N of Amit,
Gutfreund & Sompolinsky 1985). An update sets s_i = sign(sum_j w_ij s_j), with sign(0)
keeping s_i. Asynchronous updates change one neuron at a time (a random order per sweep),
and never raise the energy E(s) = -1/2 s^T W s (W symmetric with w_ii >= 0);
synchronous updates change all neurons at once and may oscillate between two states.

Shapes: ``patterns`` [K, N]; states [B, N] (a batch of independent states) or [N].
"""

from __future__ import annotations

import numpy as np


class Hopfield:
    """A Hopfield network on ``n`` neurons storing patterns with the Hebbian rule."""

    def __init__(self, n: int, zero_diagonal: bool = False):
        self.n = n
        self.zero_diagonal = zero_diagonal
        self.weights = np.zeros((n, n))
        self.patterns = np.zeros((0, n))

    def store(self, patterns) -> Hopfield:
        """Add ``patterns`` [K, N] of +-1 to the memory: W += (1/N) sum_k P^k P^k^T."""
        p = _spins(patterns, self.n)
        self.weights = self.weights + p.T @ p / self.n
        if self.zero_diagonal:
            np.fill_diagonal(self.weights, 0.0)
        self.patterns = np.concatenate([self.patterns, p])
        return self

    def energy(self, states) -> np.ndarray:
        """E(s) = -1/2 s^T W s for each state ([B] for [B, N], a scalar array for [N])."""
        s = np.asarray(states, dtype=float)
        return -0.5 * np.einsum("...i,ij,...j->...", s, self.weights, s)

    def step_sync(self, states) -> np.ndarray:
        """One synchronous update: every neuron at once from the same old state."""
        s = np.asarray(states, dtype=float)
        h = s @ self.weights  # W is symmetric
        return np.where(h > 0, 1.0, np.where(h < 0, -1.0, s))

    def sweep_async(self, states, rng: np.random.Generator) -> np.ndarray:
        """One asynchronous sweep: each neuron once, in a random order, each seeing the latest state."""
        s = np.array(states, dtype=float, copy=True)
        for i in rng.permutation(self.n):
            h = s @ self.weights[:, i]
            s[..., i] = np.where(h > 0, 1.0, np.where(h < 0, -1.0, s[..., i]))
        return s

    def recall(self, states, mode: str = "async", max_sweeps: int = 100, seed: int = 0) -> tuple[np.ndarray, int]:
        """Update until nothing changes (a fixed point) or ``max_sweeps``; returns (states, sweeps made).

        ``mode`` "async" (one neuron at a time, converges) or "sync" (all at once; a 2-cycle
        also stops it after ``max_sweeps``).
        """
        if mode not in ("async", "sync"):
            raise ValueError(f"unknown update mode {mode!r}; use async or sync")
        rng = np.random.default_rng(seed)
        s = _spins(states, self.n)
        s = s if np.ndim(states) > 1 else s[0]
        for sweep in range(1, max_sweeps + 1):
            new = self.sweep_async(s, rng) if mode == "async" else self.step_sync(s)
            if np.array_equal(new, s):
                return s, sweep
            s = new
        return s, max_sweeps

    def overlap(self, states) -> np.ndarray:
        """m^k = (1/N) s . P^k of each state with each stored pattern: [B, K]."""
        return np.atleast_2d(np.asarray(states, dtype=float)) @ self.patterns.T / self.n


def corrupt(patterns, fraction: float, seed: int = 0) -> np.ndarray:
    """Flip a ``fraction`` of the neurons of each pattern (exactly round(fraction N), chosen at random)."""
    p = np.array(patterns, dtype=float, copy=True)
    rng = np.random.default_rng(seed)
    flips = int(round(fraction * p.shape[-1]))
    for row in np.atleast_2d(p):
        idx = rng.choice(p.shape[-1], size=flips, replace=False)
        row[idx] *= -1
    return p


def capacity_curve(n: int, loads, trials: int = 3, corrupt_fraction: float = 0.0, seed: int = 0,
                   zero_diagonal: bool = True, threshold: float = 0.95) -> list[dict]:
    """Recall of K = alpha N random patterns against the load alpha = K / N.

    For each load, ``trials`` networks each store K random +-1 patterns; every stored
    pattern (flipped by ``corrupt_fraction``) is run by asynchronous updates to a fixed
    point. Returns per load: the mean final overlap with the pattern it started from, and
    the recall rate, the fraction of patterns ending with overlap >= ``threshold``.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for alpha in loads:
        k = max(1, int(round(alpha * n)))
        overlaps = []
        for _ in range(trials):
            p = rng.choice([-1.0, 1.0], size=(k, n))
            net = Hopfield(n, zero_diagonal=zero_diagonal).store(p)
            start = corrupt(p, corrupt_fraction, seed=int(rng.integers(2 ** 31))) if corrupt_fraction else p
            final, _ = net.recall(start, seed=int(rng.integers(2 ** 31)))
            overlaps.append(np.einsum("kn,kn->k", final, p) / n)
        m = np.concatenate(overlaps)
        rows.append({"alpha": k / n, "patterns": k, "neurons": n, "trials": trials, "mean_overlap": float(m.mean()),
                     "recall_rate": float((m >= threshold).mean())})
    return rows


def binarize(images, threshold: int = 128) -> np.ndarray:
    """uint8 images [K, ...] -> +-1 patterns [K, N]: +1 where the pixel is >= ``threshold``."""
    x = np.asarray(images).reshape(len(images), -1)
    return np.where(x >= threshold, 1.0, -1.0)


def _spins(x, n: int) -> np.ndarray:
    a = np.atleast_2d(np.asarray(x, dtype=float))
    if a.shape[-1] != n:
        raise ValueError(f"states have {a.shape[-1]} neurons but the network has {n}")
    if not np.all(np.abs(a) == 1):
        raise ValueError("Hopfield states must be +-1 in every neuron; binarize images first (binarize())")
    return a
