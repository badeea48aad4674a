"""The sampler contract: every sampler, with the exact denoiser of Gaussian data, reproduces its moments.

Also: the ODE solvers and DDIM return x0 exactly when the denoiser knows x0; stochastic
samplers give the same samples for the same seed whatever the batch size; the Karras
grid is what it says.
"""

import math

import pytest
import torch

from genlab.diffusion import GaussianDiffusion, SAMPLERS, per_sample_generators, sample
from genlab.diffusion.process import Denoiser
from genlab.diffusion.samplers import DEFAULT_STEPS
from genlab.diffusion.solvers import karras_timesteps, score, sigmas

from test_oracle import MU, S, gaussian_oracle


@pytest.fixture(scope="module")
def diff():
    return GaussianDiffusion.from_schedule("linear", 1000)


def moments_error(x):
    return abs(x.mean().item() - MU), abs(x.var().item() / S**2 - 1)


# the stated tolerance on the variance at the recommended number of steps
TOLERANCE = {"ancestral": 0.03, "ddim": 0.05, "dpmpp-2m": 0.03, "euler": 0.08, "heun": 0.03, "langevin": 0.1, "pc": 0.05}


@pytest.mark.parametrize("name", SAMPLERS)
def test_every_sampler_reproduces_gaussian_data(diff, name):
    gen = torch.Generator().manual_seed(0)
    x_T = torch.randn(20000, 1, dtype=torch.float64, generator=gen)
    x = sample(gaussian_oracle(diff), diff, x_T, sampler=name, generator=gen, clip_denoised=False)
    mean_err, var_err = moments_error(x)
    assert mean_err < 4 * S / math.sqrt(len(x)) + 0.01, (name, mean_err)
    assert var_err < TOLERANCE[name], (name, var_err, DEFAULT_STEPS[name])


def x0_oracle(diff, x0):
    """A denoiser that knows the answer: eps = (x_t - sqrt(ab) x0) / sqrt(1 - ab)."""
    ab_table = diff.alpha_bar

    def net(xt, t):
        ab = ab_table[t].to(xt.dtype).reshape(-1, *([1] * (xt.dim() - 1)))
        return (xt - ab.sqrt() * x0) / (1 - ab).sqrt()

    return Denoiser(net, "eps")


@pytest.mark.parametrize("name,steps", [("ddim", 10), ("euler", 10), ("heun", 7), ("dpmpp-2m", 10), ("ddim", 1)])
def test_deterministic_samplers_return_x0_when_the_denoiser_knows_it(diff, name, steps):
    x0 = torch.rand(8, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    x_T = torch.randn(8, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    x = sample(x0_oracle(diff, x0), diff, x_T, sampler=name, steps=steps, clip_denoised=False)
    torch.testing.assert_close(x, x0, rtol=0, atol=1e-9)


def test_the_second_order_solvers_beat_euler_at_few_steps(diff):
    x_T = torch.randn(20000, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    err = {}
    for name in ("euler", "heun", "dpmpp-2m"):
        x = sample(gaussian_oracle(diff), diff, x_T, sampler=name, steps=10, clip_denoised=False)
        err[name] = moments_error(x)[1]
    assert err["dpmpp-2m"] < err["euler"] and err["heun"] < err["euler"], err


@pytest.mark.parametrize("name", ["langevin", "pc", "ancestral"])
def test_stochastic_samplers_depend_only_on_the_seed(diff, name):
    x_T = torch.randn(6, 1, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    a = sample(gaussian_oracle(diff), diff, x_T, sampler=name, steps=10, generator=per_sample_generators(5, 0, 6))
    b = torch.cat([sample(gaussian_oracle(diff), diff, x_T[i:i + 3], sampler=name, steps=10,
                          generator=per_sample_generators(5, i, 3)) for i in (0, 3)])
    c = sample(gaussian_oracle(diff), diff, x_T, sampler=name, steps=10, generator=per_sample_generators(6, 0, 6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_karras_timesteps_span_the_schedule(diff):
    for steps in (1, 2, 10, 20, 50, 100):
        ts = karras_timesteps(diff, steps)
        assert ts == sorted(set(ts), reverse=True) and ts[0] == 999 and len(ts) <= steps
        if steps > 1:
            assert ts[-1] == 0
    assert float(sigmas(diff)[0]) == pytest.approx(math.sqrt(1e-4 / (1 - 1e-4)))
    with pytest.raises(Exception, match="1..1000"):
        karras_timesteps(diff, 0)


def test_score_is_the_gradient_of_the_noisy_log_density(diff):
    """For Gaussian data q(x_t) = N(sqrt(ab) mu, ab s^2 + 1 - ab): score = -(x - sqrt(ab) mu) / var."""
    x = torch.linspace(-2, 2, 9, dtype=torch.float64).view(-1, 1)
    for t in (0, 300, 999):
        tt = torch.full((9,), t)
        ab = diff.alpha_bar[t]
        expected = -(x - ab.sqrt() * MU) / (ab * S**2 + 1 - ab)
        torch.testing.assert_close(score(gaussian_oracle(diff), diff, x, tt), expected)


def test_eta_is_only_for_ddim(diff):
    with pytest.raises(Exception, match="eta"):
        sample(gaussian_oracle(diff), diff, torch.zeros(2, 1, dtype=torch.float64), sampler="euler", steps=5, eta=0.5)
