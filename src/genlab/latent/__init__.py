"""Latent diffusion (Rombach et al. 2022): the autoencoder stage, :mod:`genlab.latent.autoencoder`."""

from genlab.latent.autoencoder import DEFAULT_KL_WEIGHT, KLAutoencoder, encode_means, latent_scale, reconstruct

__all__ = ["KLAutoencoder", "encode_means", "latent_scale", "reconstruct", "DEFAULT_KL_WEIGHT"]
