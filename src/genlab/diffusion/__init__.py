"""Gaussian diffusion: schedules, the forward/reverse process and its bound, samplers."""

from genlab.diffusion.inpaint import inpaint  # the function (RePaint); the module is genlab.diffusion.inpaint
from genlab.diffusion.process import (
    PARAMETERIZATIONS,
    VARIANCES,
    Denoiser,
    GaussianDiffusion,
    discretized_gaussian_log_likelihood,
    nats_to_bpd,
    normal_kl,
)
from genlab.diffusion.samplers import (SAMPLERS, ancestral_sample, ddim_sample, ddim_timesteps, per_sample_generators, sample)
from genlab.diffusion.schedules import SCHEDULES, make_betas

__all__ = [
    "PARAMETERIZATIONS", "VARIANCES", "SAMPLERS", "SCHEDULES", "Denoiser", "GaussianDiffusion",
    "discretized_gaussian_log_likelihood", "nats_to_bpd", "normal_kl", "ancestral_sample", "ddim_sample",
    "ddim_timesteps", "per_sample_generators", "sample", "make_betas",
    "inpaint",
]
