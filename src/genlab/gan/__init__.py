"""Generative adversarial networks: the GAN family (ns, minimax, wgan-gp) and its mode-collapse monitor."""

from genlab.gan.model import (
    LOSSES,
    GAN,
    build_nets,
    critic_loss,
    discriminator_loss,
    generator_loss,
    gradient_penalty,
)
from genlab.gan.monitor import coverage_monitor, mode_coverage

__all__ = ["LOSSES", "GAN", "build_nets", "critic_loss", "discriminator_loss", "generator_loss", "gradient_penalty",
           "coverage_monitor", "mode_coverage"]
