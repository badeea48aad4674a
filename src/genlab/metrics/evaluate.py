"""The measuring protocol: reference features (cached), then FID/KID/precision/recall of samples.

Reference features are computed once per (feature network version, dataset, split,
content of the split) and cached under ``$XDG_CACHE_HOME/genlab/features/``; a cached
file made by another network version is never read (the version is part of its path
and is checked inside it).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from genlab.data.core import cache_dir
from genlab.io import atomic_write
from genlab.metrics.features import FeatureNetwork
from genlab.metrics.quality import class_accuracy, fid, kid, precision_recall

QUALITY_METRICS = ("fid", "kid", "pr")
PR_K = 3


def features_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/genlab/features`` (beside the data cache)."""
    return cache_dir().parent / "features"


def _fingerprint(images: torch.Tensor) -> str:
    h = hashlib.sha256(json.dumps(list(images.shape)).encode())
    h.update(images.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def reference_features(fnet: FeatureNetwork, images: torch.Tensor, labels: torch.Tensor, data_name: str, split: str,
                       progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (float64) and labels of a real split, from the cache when this network has seen it."""
    key = _fingerprint(images)
    path = features_cache_dir() / fnet.version / f"{data_name}-{split}-{key}.safetensors"
    if path.is_file():
        try:
            with safe_open(str(path), framework="pt") as f:
                if (f.metadata() or {}).get("feature_network") == fnet.version:
                    return f.get_tensor("features"), f.get_tensor("labels")
        except Exception:  # noqa: BLE001 - a damaged cache entry is recomputed
            pass
    feats, _ = fnet.extract(images, progress=progress, desc=f"features {data_name} {split}")
    tensors = {"features": feats.contiguous(), "labels": labels.to(torch.int64).contiguous()}
    meta = {"feature_network": fnet.version, "data": data_name, "split": split, "n": str(len(images))}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))
    return tensors["features"], tensors["labels"]


def subset(features: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """A fixed random subset of ``n`` rows (all rows when there are no more than ``n``)."""
    if len(features) <= n:
        return features
    idx = torch.randperm(len(features), generator=torch.Generator().manual_seed(seed))[:n]
    return features[idx.sort().values]


def compare(real: torch.Tensor, fake: torch.Tensor, metrics: tuple[str, ...] = QUALITY_METRICS,
            k: int = PR_K, seed: int = 0) -> dict:
    """FID / KID / precision-recall between real and generated features; what was used is recorded.

    Precision and recall compare equal-sized sets (Kynkaanniemi et al.): the reference is a
    fixed random subset of the real features as large as the generated set.
    """
    out: dict = {}
    if "fid" in metrics:
        out["fid"] = fid(real, fake)
    if "kid" in metrics:
        out["kid"], out["kid_std"] = kid(real, fake, seed=seed)
    if "pr" in metrics:
        ref = subset(real, len(fake), seed)
        out["precision"], out["recall"] = precision_recall(ref, fake, k=k)
        out["pr_k"], out["pr_reference_n"] = k, len(ref)
    return out


def evaluate_images(fnet: FeatureNetwork, images: torch.Tensor, reference: torch.Tensor,
                    metrics: tuple[str, ...] = QUALITY_METRICS, labels: torch.Tensor | None = None,
                    progress: bool = False, seed: int = 0) -> dict:
    """Measure uint8 images (e.g. samples) against reference features with network ``fnet``.

    ``labels`` are the classes the images were asked to show (class-conditional samples):
    then the classifier's accuracy on them is reported too.
    """
    feats, logits = fnet.extract(images, progress=progress, desc="features samples")
    out = compare(reference, feats, metrics, seed=seed)
    if labels is not None:
        out.update(class_accuracy(logits, labels, fnet.net.head.out_features))
    out["feature_network"] = fnet.version
    return out
