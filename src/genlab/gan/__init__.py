"""Generative adversarial networks: the GAN family (ns, minimax, wgan-gp) and its mode-collapse monitor."""

from genlab.gan.model import (
    GAN,
    LOSSES,
    build_nets,
    critic_loss,
    discriminator_loss,
    generator_loss,
    gradient_penalty,
)
from genlab.gan.monitor import coverage_monitor, mode_coverage

__all__ = [
    "GAN",
    "LOSSES",
    "build_nets",
    "coverage_monitor",
    "critic_loss",
    "discriminator_loss",
    "generator_loss",
    "gradient_penalty",
    "mode_coverage",
]
