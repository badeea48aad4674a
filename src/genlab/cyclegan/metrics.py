"""How well a CycleGAN translates: the class a translation keeps, and the cycle error.

``class_kept``: the fraction of test images x of domain A whose translation G(x) a feature
network trained on domain B (genlab's MNIST network for digits -> MNIST) classifies as x's own
label: a translation that changes the digit scores 0 however realistic it looks (chance 0.1).
``cycle_error``: mean |F(G(x)) - x| over pixels on the [0, 1] scale (model-space L1 halved), in
the common space; 0 for a perfect round trip, and 0 for G = F = identity too, so read it beside
``class_kept`` and FID.
"""

from __future__ import annotations

import torch


def class_kept(family, images: torch.Tensor, labels: torch.Tensor, fnet, batch_size: int = 256) -> dict:
    """{"class_kept": accuracy of ``fnet`` on G(x) against x's ``labels``, "n"} for uint8 domain-A ``images``.

    ``fnet``: a :class:`genlab.metrics.features.FeatureNetwork` of domain B (its ``extract`` returns
    (features, logits)); the translations are at B's levels, which must be the network's.
    """
    translations = family.translate(images, "a2b", batch_size=batch_size)
    _, logits = fnet.extract(translations)
    predicted = logits.argmax(1).cpu()
    return {"class_kept": (predicted == labels.cpu().long()).float().mean().item(), "n": len(images)}


def cycle_error(family, images: torch.Tensor, direction: str = "a2b", levels: int | None = None,
                batch_size: int = 256) -> dict:
    """{"cycle_error": mean |F(G(x)) - x| on [0, 1] pixels (b2a: |G(F(y)) - y|), "n"} for uint8 ``images``."""
    out = family.round_trip(images, direction, levels, batch_size=batch_size, raw=True)
    err = (out["reconstructions"] - out["inputs"]).abs().mean().item() / 2
    return {"cycle_error": err, "direction": direction, "n": len(images)}


def translation_metrics(family, images: torch.Tensor, labels: torch.Tensor | None = None, fnet=None,
                        batch_size: int = 256) -> dict:
    """Both measures of the A test ``images`` (class_kept only with ``labels`` and ``fnet``)."""
    record = cycle_error(family, images, "a2b", batch_size=batch_size)
    if labels is not None and fnet is not None:
        record.update(class_kept(family, images, labels, fnet, batch_size=batch_size))
    return record
