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

from genlab.gan.cyclegan.domains import model_floats, to_common


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


def _labelled(family, domain: str, split: str):
    """(uint8 images, int64 labels, class names) of ``split`` of ``domain`` from the run's sources."""
    from genlab.data import load_dataset

    name, root, options = family.sources[domain]
    ds = load_dataset(name, split, root=root, **options)
    images = ds.points if hasattr(ds, "points") else ds.images
    return images, ds.labels, ds.info.class_names


def _network(name: str):
    """genlab's shipped feature network of dataset ``name``, or None when it has none."""
    from genlab.errors import GenlabError
    from genlab.metrics.features import load_feature_network

    try:
        return load_feature_network(name)
    except GenlabError:
        return None


def to_native(images: torch.Tensor, levels: int, shape: tuple[int, ...], out_levels: int) -> torch.Tensor:
    """uint8 images at ``levels`` -> uint8 images of ``shape`` (channels, size) at ``out_levels``.

    How a translation into A's domain, made at the common size, is brought back to A's own
    size for A's classifier (the 28x28 F(y) shrunk to the 8x8 digits, antialiased), and how the
    identity map of one domain is shown to the other's networks.
    """
    from genlab.data.transforms import from_model

    return from_model(to_common(model_floats(images, levels), shape).clamp(-1, 1), out_levels)


def measure_translation(family, n: int | None = None, ref_split: str = "train", batch_size: int = 256,
                        seed: int = 0, progress: bool = False) -> dict:
    """Both directions of a CycleGAN against the identity map, on the test split of each domain.

    For ``d`` in a2b, b2a (input domain X, output domain Y): ``{d}_cycle_error`` (mean |F(G(x)) - x|
    on [0, 1] pixels); ``{d}_fid`` of the translations against Y's ``ref_split`` under Y's shipped
    feature network, and ``{d}_fid_identity`` of X's images themselves (resized to Y's size and
    levels); when X and Y hold the same classes (digits <-> MNIST), ``{d}_class_kept`` (Y's
    network classifies the translation as x's label) and ``{d}_class_kept_identity``; when they
    hold disjoint classes of one list (CIFAR-10's horses <-> deer), ``{d}_class_reached`` (the
    translation is classified as one of Y's classes) and ``{d}_class_reached_identity``. F(y) is
    measured at A's own size (shrunk from the common size). ``n``: the first n test images of
    each domain (default all). A domain without a shipped network gets the cycle error alone.
    """
    from genlab.metrics.evaluate import compare, reference_features

    record: dict = {"translation_ref_split": ref_split}
    domains = {"a2b": ("a", "b"), "b2a": ("b", "a")}
    for direction, (src, dst) in domains.items():
        x, labels, names_x = _labelled(family, src, "test")
        x, labels = x[:n], labels[:n]
        out = family.round_trip(x, direction, batch_size=batch_size)
        in_levels = int(family.input_domain(direction)["levels"])
        out_levels = int(family.input_domain("b2a" if direction == "a2b" else "a2b")["levels"])
        err = ((out["reconstructions"].float() - out["inputs"].float()) / max(in_levels - 1, 1)).abs().mean().item()
        record.update({f"{direction}_cycle_error": err, f"{direction}_n": len(x)})
        name_y = family.sources[dst][0]
        fnet = _network(name_y)
        if fnet is None:
            continue
        y_ref, y_labels, names_y = _labelled(family, dst, ref_split)
        y_shape = tuple(y_ref.shape[1:])
        translations = out["translations"]
        if tuple(translations.shape[1:]) != y_shape:  # F(y) at the common size -> A's own
            translations = to_native(translations, out_levels, y_shape, out_levels)
        identity = to_native(x, in_levels, y_shape, out_levels)
        real, _ = reference_features(fnet, y_ref, y_labels, name_y, ref_split, progress=progress)
        one_list = tuple(names_x) == tuple(names_y)
        classes_x, classes_y = set(labels.tolist()), set(y_labels.tolist())
        for suffix, images in (("", translations), ("_identity", identity)):
            feats, logits = fnet.extract(images, progress=progress, desc=f"features {direction}{suffix}")
            record[f"{direction}_fid{suffix}"] = compare(real, feats, ("fid",), seed=seed)["fid"]
            predicted = logits.argmax(1).cpu()
            if one_list and classes_x == classes_y:  # digits <-> MNIST: the digit must stay
                record[f"{direction}_class_kept{suffix}"] = (predicted == labels.long()).float().mean().item()
            elif one_list and not classes_x & classes_y:  # horse <-> deer: the class must change to Y's
                reached = torch.isin(predicted, torch.tensor(sorted(classes_y)))
                record[f"{direction}_class_reached{suffix}"] = reached.float().mean().item()
        record[f"{direction}_feature_network"] = fnet.version
    return record
