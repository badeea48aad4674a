"""Unpaired image-to-image translation: the CycleGAN family, its losses, history buffer and measures."""

from genlab.gan.cyclegan.domains import to_common
from genlab.gan.cyclegan.losses import (
    ADVERSARIAL_LOSSES,
    ImagePool,
    cycle_loss,
    discriminator_loss,
    generator_loss,
    identity_loss,
)
from genlab.gan.cyclegan.metrics import class_kept, cycle_error, translation_metrics
from genlab.gan.cyclegan.model import CycleGAN

__all__ = [
    "ADVERSARIAL_LOSSES",
    "CycleGAN",
    "ImagePool",
    "class_kept",
    "cycle_error",
    "cycle_loss",
    "discriminator_loss",
    "generator_loss",
    "identity_loss",
    "to_common",
    "translation_metrics",
]
