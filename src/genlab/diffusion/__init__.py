"""Gaussian diffusion: schedules, the forward/reverse process and its bound, samplers."""

from genlab.diffusion.grids import Grid, ddim_timesteps
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
from genlab.diffusion.samplers import ancestral_sample, ddim_sample
from genlab.diffusion.sampling import SAMPLERS, SamplerSpec, check_sampler_options, sample
from genlab.diffusion.schedules import SCHEDULES, make_betas
from genlab.rng import per_sample_generators  # re-exported for existing users; its home is genlab.rng

__all__ = [
    "PARAMETERIZATIONS",
    "SAMPLERS",
    "SCHEDULES",
    "VARIANCES",
    "Denoiser",
    "GaussianDiffusion",
    "Grid",
    "SamplerSpec",
    "ancestral_sample",
    "check_sampler_options",
    "ddim_sample",
    "ddim_timesteps",
    "discretized_gaussian_log_likelihood",
    "inpaint",
    "make_betas",
    "nats_to_bpd",
    "normal_kl",
    "per_sample_generators",
    "sample",
]
