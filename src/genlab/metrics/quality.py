"""Sample quality and mode coverage from features: FID, KID, precision/recall, class accuracy.

FID and KID are torchmetrics' (``FrechetInceptionDistance`` and
``KernelInceptionDistance`` with a custom feature module); genlab hands them features
it has already extracted (and cached for the reference set) through a pass-through
module, so the feature network runs once per image. Precision and recall (improved
precision/recall, Kynkaanniemi et al. 2019) are written here: torchmetrics has none.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn


class _Precomputed(nn.Module):
    """The 'feature extractor' torchmetrics calls: features in, the same features out (float64)."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features.double()


def _check(real: torch.Tensor, fake: torch.Tensor, need: int = 2) -> None:
    if real.dim() != 2 or fake.dim() != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature sets must be [N, D] with the same D, not {list(real.shape)} and {list(fake.shape)}")
    if len(real) < need or len(fake) < need:
        raise ValueError(f"need at least {need} real and {need} generated feature vectors, not {len(real)} and {len(fake)}")


def fid(real: torch.Tensor, fake: torch.Tensor) -> float:
    """Frechet distance between Gaussians fitted (float64) to two feature sets [N, D]."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    _check(real, fake)
    metric = FrechetInceptionDistance(feature=_Precomputed(real.shape[1]))
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    return max(0.0, float(metric.compute()))  # the eigenvalue route can land a hair below 0 for equal sets


def kid(real: torch.Tensor, fake: torch.Tensor, subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
    """Kernel inception distance (unbiased MMD^2, cubic polynomial kernel): mean and std over subsets.

    ``subset_size`` shrinks to the smaller set when needed; the subsets are drawn from ``seed``,
    so the same features always give the same score.
    """
    from torchmetrics.image.kid import KernelInceptionDistance

    _check(real, fake)
    size = min(subset_size, len(real), len(fake))
    with warnings.catch_warnings():  # "will save all extracted features": these are features already
        warnings.simplefilter("ignore", UserWarning)
        metric = KernelInceptionDistance(feature=_Precomputed(real.shape[1]), subsets=subsets, subset_size=size)
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


def _kth_neighbour_radii(x: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    """Distance from each row of ``x`` to its k-th nearest other row."""
    radii = []
    for start in range(0, len(x), chunk):
        d = torch.cdist(x[start : start + chunk], x)
        # the k+1 smallest include the point itself at distance 0
        radii.append(d.topk(k + 1, dim=1, largest=False).values[:, k])
    return torch.cat(radii)


def _covered(queries: torch.Tensor, points: torch.Tensor, radii: torch.Tensor, chunk: int) -> torch.Tensor:
    """For each query: does it fall inside some ball (points[j], radii[j])?"""
    out = []
    for start in range(0, len(queries), chunk):
        d = torch.cdist(queries[start : start + chunk], points)
        out.append((d <= radii[None]).any(dim=1))
    return torch.cat(out)


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3, chunk: int = 1000) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019) with k-NN manifolds.

    Precision: the fraction of generated points inside the real manifold (union of balls
    around each real point reaching its k-th nearest real neighbour). Recall: the fraction
    of real points inside the generated manifold. Computed in float64.
    """
    _check(real, fake, need=k + 1)
    real, fake = real.double(), fake.double()
    real_radii = _kth_neighbour_radii(real, k, chunk)
    fake_radii = _kth_neighbour_radii(fake, k, chunk)
    precision = _covered(fake, real, real_radii, chunk).double().mean().item()
    recall = _covered(real, fake, fake_radii, chunk).double().mean().item()
    return precision, recall


def class_accuracy(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict:
    """How often the feature network's classifier names the requested class: overall and per class."""
    pred = logits.argmax(1)
    per_class = {}
    for c in range(num_classes):
        mask = labels == c
        if mask.any():
            per_class[c] = (pred[mask] == c).double().mean().item()
    return {"class_accuracy": (pred == labels).double().mean().item(), "class_accuracy_per_class": per_class}
