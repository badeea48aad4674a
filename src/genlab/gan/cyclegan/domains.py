"""The two domains of an unpaired translation in one common space: B's size and channels.

Domain A (``--data``) is what the Trainer batches; domain B (``--data-b``) is loaded by the
family itself (:meth:`genlab.gan.cyclegan.CycleGAN.domain_batch`), so a run needs no second data
path through the Trainer and resumes exactly: the B batch of step s is rows
``batch_indices(len(B), batch, seed + 1, s)`` of B's training split, a function of (seed, s).

Resizing: A's uint8 images go to model floats in [-1, 1] at their own levels, then to B's
channels (grey -> RGB repeats the channel; RGB -> grey takes the ITU-R 601 luma 0.299 R + 0.587 G
+ 0.114 B), then to B's size by ``torch.nn.functional.interpolate`` (bilinear, corners not
aligned, antialiased when shrinking). They stay floats: the network sees no second quantisation
(the 8x8 digits upsampled to 28x28 keep their smooth edges). A translation into A's domain is
quantised to A's levels at the common size.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from genlab.data.transforms import to_model
from genlab.errors import ConfigError

LUMA = (0.299, 0.587, 0.114)


def model_floats(examples: torch.Tensor, levels: int) -> torch.Tensor:
    """uint8 images at ``levels`` -> float32 in [-1, 1]; float points (levels 0) unchanged."""
    return examples.float() if levels == 0 else to_model(examples, levels)


def to_common(x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Model-space images [N, C, h, w] -> [N, *shape] (B's channels, then B's size); points unchanged."""
    if len(shape) == 1:
        return x
    c, H, W = shape
    if x.shape[1] != c:
        if x.shape[1] == 1:
            x = x.expand(-1, c, -1, -1)
        elif c == 1 and x.shape[1] == 3:
            x = (x * torch.tensor(LUMA, device=x.device).view(1, 3, 1, 1)).sum(1, keepdim=True)
        else:
            raise ConfigError(f"images with {x.shape[1]} channels cannot be turned into {c}; pass grey or RGB images.")
    if tuple(x.shape[2:]) != (H, W):
        shrink = H < x.shape[2] or W < x.shape[3]
        x = F.interpolate(x, size=(H, W), mode="bilinear", align_corners=False, antialias=shrink)
    return x.contiguous()


def check_domain_b(name: str, ds, batch_size: int):
    """B's training examples uint8 [N, C, H, W], checked: images, and at least one batch of them."""
    if not hasattr(ds, "images"):
        raise ConfigError(f"{{cyclegan.data_b}} {name} holds points, not images; choose an image dataset.")
    if len(ds.images) < batch_size:
        raise ConfigError(f"{{train.batch_size}} {batch_size} is larger than domain B ({name}, {len(ds.images)} images); "
                          f"pass a smaller {{train.batch_size}}.")
    return ds.images
