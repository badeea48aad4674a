"""Mode-collapse monitors: does a generator cover every class (every mode) of its data?

A collapsed GAN draws a few kinds of images well (high precision) and the rest never
(low recall, few classes). :func:`coverage_monitor` measures a family's samples with
genlab's shipped feature network; :func:`mode_coverage` counts 2-D points around known
mode centres (toy2d's 8 Gaussians). Both use one rule for "covered":

    a class (mode) is covered when it receives at least ``min_share`` (10%) of the share
    it would get if the samples were spread uniformly: with 10 classes and 1000 samples,
    at least 10 samples.

10% of uniform is low enough that an unbalanced but healthy generator (or the feature
network's 1% of misread digits) passes, and high enough that the stray samples a
collapsed generator puts into other classes through misclassification (a few per class)
do not count as coverage.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from genlab.metrics.evaluate import PR_K, subset
from genlab.metrics.quality import precision_recall

if TYPE_CHECKING:
    from genlab.family import Family

MIN_SHARE = 0.1  # of the uniform share 1/K


def histogram_summary(counts: torch.Tensor, min_share: float = MIN_SHARE) -> dict:
    """Shares, covered count and entropy (bits) of a histogram ``counts`` [K] (see the module's rule)."""
    K = counts.numel()
    total = max(1, int(counts.sum()))
    p = counts.double() / total
    nz = p[p > 0]
    return {"class_histogram": p.tolist(),
            "classes_covered": int((p >= min_share / K).sum()),
            "class_entropy_bits": max(0.0, float(-(nz * nz.log2()).sum())) if nz.numel() else 0.0,
            "max_entropy_bits": math.log2(K)}


def coverage_monitor(family: Family, fnet, real_features: torch.Tensor, n: int = 1000, seed: int = 0) -> dict:
    """Recall, precision and class coverage of ``n`` samples of ``family`` under feature network ``fnet``.

    ``fnet`` is a :class:`genlab.metrics.features.FeatureNetwork` for the family's dataset
    (``load_feature_network(data_name)``), ``real_features`` [N, D] its features of real
    images (e.g. :func:`genlab.metrics.evaluate.reference_features` of the training split).
    Precision and recall (Kynkaanniemi et al. 2019, k = 3) compare the samples with a fixed
    random subset of ``n`` real features, as ``genlab eval`` does. Each sample's class is the
    feature network's prediction; a class-conditional family draws its default labels
    (i % num_classes), so its histogram measures the classes it really draws.

    Returns ``recall``, ``precision``, ``classes_covered`` (the module's rule),
    ``class_histogram`` (share of samples per predicted class, a list), ``class_entropy_bits``
    (entropy of that histogram; ``max_entropy_bits`` = log2 K is a uniform spread), ``n`` and
    ``feature_network`` (the version the figures were measured with). Features are extracted
    in float32 even under the Trainer's autocast, so they compare with the reference.
    """
    samples = family.sample(n, seed=seed)
    device_type = next(fnet.net.parameters()).device.type
    with torch.autocast(device_type, enabled=False):
        feats, logits = fnet.extract(samples)
    ref = subset(real_features, n, seed)
    precision, recall = precision_recall(ref, feats, k=PR_K)
    K = logits.shape[1]
    counts = torch.bincount(logits.argmax(1), minlength=K)
    return {"recall": recall, "precision": precision, **histogram_summary(counts), "n": n,
            "feature_network": fnet.version}


def mode_coverage(points: torch.Tensor, centres: torch.Tensor, radius: float, min_share: float = MIN_SHARE) -> dict:
    """How 2-D samples [N, 2] spread over known modes ``centres`` [K, 2].

    A point belongs to the nearest centre if it lies within ``radius`` of it (e.g. 3 standard
    deviations of the mode), else to none. Returns ``mode_histogram`` (share of all points per
    mode), ``near_mode`` (share of points within ``radius`` of some centre), ``modes_covered``
    (the module's rule, over all N points) and ``mode_entropy_bits`` (of the shares among points near a mode).
    """
    d = torch.cdist(points.double(), centres.double())  # [N, K]
    dist, nearest = d.min(1)
    near = dist <= radius
    K = centres.shape[0]
    counts = torch.bincount(nearest[near], minlength=K)
    N = max(1, points.shape[0])
    p = counts.double() / N
    summary = histogram_summary(counts)
    return {"mode_histogram": p.tolist(), "near_mode": float(near.double().mean()) if points.shape[0] else 0.0,
            "modes_covered": int((p >= min_share / K).sum()), "mode_entropy_bits": summary["class_entropy_bits"]}
