"""The sampler contract: every sampler, with the exact denoiser of Gaussian data, reproduces its moments.

Also: the ODE solvers and DDIM return x0 exactly when the denoiser knows x0; stochastic
samplers give the same samples for the same seed whatever the batch size; the Karras
grid is what it says; the registry (genlab.diffusion.sampling.SAMPLERS) states each
sampler's network evaluations and settings truly, and a callback sees every step.
"""

import math

import pytest
import torch

from genlab.diffusion import SAMPLERS, GaussianDiffusion, per_sample_generators, sample
from genlab.diffusion.grids import ddim_timesteps, full_grid, geometric_grid, karras_grid, karras_timesteps, sigmas, spaced_grid
from genlab.diffusion.process import Denoiser
from genlab.diffusion.sampling import check_sampler_options, default_steps, sampler_help
from genlab.diffusion.solvers import score
from test_oracle import MU, S, gaussian_oracle


@pytest.fixture(scope="module")
def diff():
    return GaussianDiffusion.from_schedule("linear", 1000)


def moments_error(x):
    return abs(x.mean().item() - MU), abs(x.var().item() / S**2 - 1)


# The contract: at its recommended steps (SAMPLERS[name].default_steps) each sampler reproduces Gaussian data
# N(MU, S^2) in 64 dimensions within these relative errors of the variance (the mean within 0.01
# plus sampling error). They are the samplers' own discretisation errors with the exact denoiser,
# measured, not slack: DDIM and Euler are first order (10% at 50 steps on this schedule), Heun and
# DPM-Solver++(2M) second order but at only 20 steps, annealed Langevin is biased at a finite step.
TOLERANCE = {"ancestral": 0.03, "ddim": 0.12, "dpmpp-2m": 0.12, "euler": 0.13, "heun": 0.12, "langevin": 0.12,
             "pc": 0.04}


@pytest.mark.parametrize("name", SAMPLERS)
def test_every_sampler_reproduces_gaussian_data(diff, name):
    gen = torch.Generator().manual_seed(0)
    x_T = torch.randn(1000, 64, dtype=torch.float64, generator=gen)
    x = sample(gaussian_oracle(diff), diff, x_T, sampler=name, generator=gen, clip_denoised=False)
    mean_err, var_err = moments_error(x)
    assert mean_err < 4 * S / math.sqrt(x.numel()) + 0.01, (name, mean_err)
    assert var_err < TOLERANCE[name], (name, var_err, SAMPLERS[name].default_steps)


def deterministic_variance_error(diff, name, steps):
    """Relative error of the output variance of a deterministic sampler on Gaussian data, exactly.

    With the exact denoiser the sampler is an affine map x0 = a x_T + b; the exact flow has
    a = S / sqrt(ab_T S^2 + 1 - ab_T). No sampling noise: two inputs give a.
    """
    x = sample(gaussian_oracle(diff), diff, torch.tensor([[0.0], [1.0]], dtype=torch.float64), sampler=name,
               steps=steps, clip_denoised=False)
    ab = float(diff.alpha_bar[-1])
    a_true = S / math.sqrt(ab * S**2 + 1 - ab)
    return abs(((x[1] - x[0]).item() / a_true) ** 2 - 1)


@pytest.mark.parametrize("name,order", [("ddim", 1), ("euler", 1), ("heun", 2), ("dpmpp-2m", 2)])
def test_the_ode_solvers_converge_at_their_order(diff, name, order):
    """Doubling the steps (100 -> 200) divides the error by about 2 (first order) or at least 2^2 * 0.8
    (second order; more where rounding the grid to trained timesteps helps)."""
    e100, e200 = (deterministic_variance_error(diff, name, n) for n in (100, 200))
    ratio = e100 / e200
    assert (1.6 < ratio < 2.5) if order == 1 else ratio > 3.2, (name, e100, e200)


def test_the_second_order_solvers_beat_the_first_order_ones(diff):
    err = {n: deterministic_variance_error(diff, n, 50) for n in ("ddim", "euler", "heun", "dpmpp-2m")}
    assert max(err["heun"], err["dpmpp-2m"]) * 5 < min(err["ddim"], err["euler"]), err


def test_quadratic_spacing_helps_ddim_on_a_linear_schedule(diff):
    x_T = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    out = {sp: sample(gaussian_oracle(diff), diff, x_T, sampler="ddim", steps=20, spacing=sp, clip_denoised=False)
           for sp in ("uniform", "quadratic")}
    gain = {sp: (x[1] - x[0]).item() for sp, x in out.items()}
    assert abs(gain["quadratic"] - S) < abs(gain["uniform"] - S)
    assert ddim_timesteps(1000, 5, "quadratic") == [0, 62, 250, 562, 999]
    with pytest.raises(Exception, match="spacing"):
        sample(gaussian_oracle(diff), diff, x_T, sampler="euler", steps=5, spacing="quadratic")


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


# ----- the registry drives everything ------------------------------------------------------------

def counting_oracle(diff):
    """The Gaussian oracle and a one-item list counting the rows it has been asked about."""
    oracle, rows = gaussian_oracle(diff), [0]

    def net(xt, t):
        rows[0] += xt.shape[0]
        return oracle.net(xt, t)

    return Denoiser(net, "eps"), rows


@pytest.mark.parametrize("name", SAMPLERS)
def test_nfe_counts_the_network_evaluations(diff, name):
    spec = SAMPLERS[name]
    x_T = torch.randn(3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for steps in (1, 4, 10, 100):
        den, rows = counting_oracle(diff)
        sample(den, diff, x_T, sampler=name, steps=steps, generator=per_sample_generators(0, 0, 3))
        walked = len(spec.grid(diff, steps, "uniform"))  # 94 of langevin's 100 levels are distinct timesteps
        assert walked == steps or steps == 100
        assert rows[0] == spec.nfe(walked) * len(x_T), (name, steps, rows[0] // len(x_T), spec.nfe(walked))


def test_the_registry_states_its_facts(diff):
    assert list(SAMPLERS) == ["ancestral", "ddim", "dpmpp-2m", "euler", "heun", "langevin", "pc"]
    assert all(spec.name == name and spec.help for name, spec in SAMPLERS.items())
    assert {n for n, s in SAMPLERS.items() if "eta" in s.options} == {"ddim"}
    assert {n for n, s in SAMPLERS.items() if "spacing" in s.options} == {"ancestral", "ddim", "pc"}
    assert {n for n, s in SAMPLERS.items() if s.stochastic} == {"ancestral", "langevin", "pc"}
    assert default_steps("ancestral", 1000) == 1000 and default_steps("heun", 1000) == 20
    assert default_steps("langevin", 50) == 50  # never more than the timesteps there are
    line = sampler_help()
    assert "\n" not in line and all(name in line for name in SAMPLERS) and "NFE up to 39" in line  # heun, 20 steps


def test_grids_run_from_the_most_noise_down(diff):
    T = diff.num_timesteps
    for steps in (1, 2, 10, 50):
        grids = [spaced_grid(diff, steps), spaced_grid(diff, steps, "quadratic"), karras_grid(diff, steps),
                 geometric_grid(diff, steps)]
        for grid in grids:
            ts = list(grid.timesteps)
            assert ts == sorted(set(ts), reverse=True) and ts[0] == T - 1, (steps, ts)
            assert grid.parent is diff
        for grid in grids[2:]:  # the sigma view
            assert len(grid.sigmas) == len(grid) + 1 and grid.sigmas[-1] == 0.0
            assert list(grid.sigmas[:-1]) == sorted(grid.sigmas[:-1], reverse=True)
            assert grid.sigmas[0] == pytest.approx(float(sigmas(diff)[-1]))
        for grid in grids[:2]:  # the respaced process steps exactly these timesteps
            assert grid.diffusion.timestep_map.tolist() == list(grid.timesteps)[::-1]
    full = full_grid(diff)
    assert full.diffusion is diff and full.timesteps == tuple(range(T - 1, -1, -1)) and full.sigmas is None


@pytest.mark.parametrize("kwargs,match", [
    ({"name": "rk45"}, "unknown sampler 'rk45'; choose one of ancestral, ddim"),
    ({"name": "ddim", "steps": 0}, "at least 1"),
    ({"name": "euler", "eta": 0.5}, "eta applies to the ddim sampler only, not to euler"),
    ({"name": "ddim", "eta": -0.1}, "eta must be at least 0"),
    ({"name": "ddim", "spacing": "cubic"}, "unknown timestep spacing 'cubic'"),
    ({"name": "heun", "spacing": "quadratic"}, "spacing applies to the ancestral, ddim, pc samplers; heun"),
])
def test_check_sampler_options_refuses_what_a_sampler_does_not_take(diff, kwargs, match):
    with pytest.raises(ValueError, match=match):
        check_sampler_options(**kwargs)
    name = kwargs.pop("name")
    with pytest.raises(ValueError, match=match):  # and sample checks with it
        sample(gaussian_oracle(diff), diff, torch.zeros(2, 1, dtype=torch.float64), sampler=name, **kwargs)


def test_check_sampler_options_accepts_what_a_sampler_takes():
    for name, spec in SAMPLERS.items():
        check_sampler_options(name, steps=5, eta=0.5 if "eta" in spec.options else 0.0,
                              spacing="quadratic" if "spacing" in spec.options else "uniform")


@pytest.mark.parametrize("name", SAMPLERS)
def test_a_callback_sees_every_step_and_changes_nothing(diff, name):
    spec = SAMPLERS[name]
    x_T = torch.randn(4, 1, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    grid = spec.grid(diff, 8, "uniform")
    seen = []
    runs = [spec.fn(gaussian_oracle(diff), x_T, grid, generator=per_sample_generators(1, 0, 4), callback=cb)
            for cb in (None, seen.append)]
    assert torch.equal(runs[0], runs[1])
    assert [info["i"] for info in seen] == list(range(len(grid)))
    assert [info["t"] for info in seen] == list(grid.timesteps)
    assert all(info["x"].shape == x_T.shape for info in seen)
    assert all((info["pred_x0"] is None) == (name == "langevin") for info in seen)
