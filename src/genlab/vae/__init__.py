"""Autoencoders and variational autoencoders: ``genlab train ae`` and ``genlab train vae``.

:class:`Autoencoder` (plain, or denoising with ``--ae-noise``) and :class:`VAE` (a beta-VAE
with ``--beta``), with their decoder likelihoods in :mod:`genlab.vae.likelihood`; the
networks are :mod:`genlab.nets.autoencoder`'s.
"""

from genlab.vae.autoencoder import Autoencoder
from genlab.vae.latent import LatentFamily, lerp, slerp
from genlab.vae.likelihood import discretized_logistic_log_likelihood, gaussian_kl
from genlab.vae.model import VAE

__all__ = ["VAE", "Autoencoder", "LatentFamily", "discretized_logistic_log_likelihood", "gaussian_kl", "lerp", "slerp"]
