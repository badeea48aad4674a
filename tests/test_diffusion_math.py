"""The diffusion core against closed forms: schedules, q, the posterior, KL, the decoder, L_T."""

import math

import numpy as np
import pytest
import torch

from genlab.diffusion import (
    SCHEDULES,
    Denoiser,
    GaussianDiffusion,
    discretized_gaussian_log_likelihood,
    make_betas,
    normal_kl,
)
from genlab.errors import ConfigError


@pytest.fixture(scope="module")
def diff():
    return GaussianDiffusion.from_schedule("linear", 1000)


def test_linear_schedule_is_ddpm():
    b = make_betas("linear", 1000)
    assert b.dtype == np.float64 and b.shape == (1000,)
    assert b[0] == pytest.approx(1e-4) and b[-1] == pytest.approx(0.02)
    assert np.all(np.diff(b) > 0)


def test_cosine_schedule_follows_its_alpha_bar():
    T, s = 1000, 0.008
    ab = np.cumprod(1 - make_betas("cosine", T))
    f = lambda t: math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    expected = np.array([f(t + 1) / f(0) for t in range(T)])
    # identical until the 0.999 clip bites at the very end
    np.testing.assert_allclose(ab[:-5], expected[:-5], rtol=1e-10)


@pytest.mark.parametrize("name", SCHEDULES)
def test_every_schedule_is_valid_and_its_prior_term_is_about_zero(name):
    d = GaussianDiffusion.from_schedule(name, 1000)
    assert torch.all((d.betas > 0) & (d.betas < 1))
    x0 = torch.linspace(-1, 1, 64).reshape(1, 64)
    prior_bits_per_dim = d.prior_kl(x0).item() / (64 * math.log(2))
    assert 0 <= prior_bits_per_dim < 1e-3


def test_unknown_schedule_is_a_clear_error():
    with pytest.raises(ConfigError, match="unknown schedule 'foo'; choose one of linear"):
        make_betas("foo", 100)


def test_q_sample_has_the_closed_form_mean_and_variance(diff):
    x0 = torch.tensor([[0.7, -0.3]], dtype=torch.float64).repeat(200_000, 1)
    for t_val in (0, 10, 500, 999):
        t = torch.full((x0.shape[0],), t_val)
        ab = diff.alpha_bar[t_val].item()
        gen = torch.Generator().manual_seed(t_val)
        xt = diff.q_sample(x0, t, torch.randn(x0.shape, generator=gen, dtype=torch.float64))
        se = math.sqrt((1 - ab) / x0.shape[0])
        np.testing.assert_allclose(xt.mean(0).numpy(), math.sqrt(ab) * x0[0].numpy(), atol=5 * se)
        np.testing.assert_allclose(xt.var(0).numpy(), 1 - ab, rtol=0.02)
        # and it is exactly affine in the noise
        zero = diff.q_sample(x0[:1], t[:1], torch.zeros_like(x0[:1]))
        torch.testing.assert_close(zero, math.sqrt(ab) * x0[:1])


def test_posterior_matches_bayes_rule_by_gaussian_conditioning(diff):
    """q(x_{t-1} | x_t, x0) from conditioning the joint Gaussian of (x_{t-1}, x_t) given x0."""
    x0, xt_val = 0.4, -0.2
    for t_val in (1, 2, 50, 500, 999):
        a_t = 1 - diff.betas[t_val].item()
        ab_prev = diff.alpha_bar[t_val - 1].item()
        # x_{t-1} = sqrt(ab_prev) x0 + sqrt(1-ab_prev) e1 ; x_t = sqrt(a_t) x_{t-1} + sqrt(1-a_t) e2
        m1 = math.sqrt(ab_prev) * x0
        v11 = 1 - ab_prev
        m2 = math.sqrt(a_t) * m1
        v12 = math.sqrt(a_t) * v11
        v22 = a_t * v11 + (1 - a_t)
        mean_bayes = m1 + v12 / v22 * (xt_val - m2)
        var_bayes = v11 - v12**2 / v22
        t = torch.tensor([t_val])
        mean, var, log_var = diff.q_posterior_mean_variance(
            torch.tensor([[x0]], dtype=torch.float64), torch.tensor([[xt_val]], dtype=torch.float64), t
        )
        assert mean.item() == pytest.approx(mean_bayes, rel=1e-9, abs=1e-12)
        assert var.item() == pytest.approx(var_bayes, rel=1e-9)
        assert log_var.item() == pytest.approx(math.log(var_bayes), rel=1e-9)
        # DDPM eq. (7) written out
        beta, ab = diff.betas[t_val].item(), diff.alpha_bar[t_val].item()
        assert var.item() == pytest.approx((1 - ab_prev) / (1 - ab) * beta, rel=1e-12)


def test_posterior_at_t0_returns_x0(diff):
    x0 = torch.randn(4, 3, dtype=torch.float64)
    xt = torch.randn(4, 3, dtype=torch.float64)
    mean, var, _ = diff.q_posterior_mean_variance(x0, xt, torch.zeros(4, dtype=torch.long))
    torch.testing.assert_close(mean, x0)
    assert torch.all(var == 0)


def test_gaussian_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    m1, m2 = torch.randn(100, generator=g, dtype=torch.float64), torch.randn(100, generator=g, dtype=torch.float64)
    lv1, lv2 = torch.randn(100, generator=g, dtype=torch.float64), torch.randn(100, generator=g, dtype=torch.float64)
    ref = torch.distributions.kl_divergence(
        torch.distributions.Normal(m1, (0.5 * lv1).exp()), torch.distributions.Normal(m2, (0.5 * lv2).exp())
    )
    torch.testing.assert_close(normal_kl(m1, lv1, m2, lv2), ref)
    assert torch.all(normal_kl(m1, lv1, m1, lv1).abs() < 1e-12)


@pytest.mark.parametrize("levels", [2, 17, 256])
@pytest.mark.parametrize("mean,log_scale", [(0.0, -3.0), (0.93, -5.0), (-1.4, 0.5), (0.2, -9.0), (3.0, -2.0)])
def test_discretised_decoder_sums_to_one_over_all_bins(levels, mean, log_scale):
    x = -1 + 2 * torch.arange(levels, dtype=torch.float64) / (levels - 1)
    logp = discretized_gaussian_log_likelihood(x, torch.full_like(x, mean), torch.full_like(x, log_scale), levels)
    assert torch.all(logp <= 0)
    assert logp.exp().sum().item() == pytest.approx(1.0, abs=1e-9)


def test_parameterisation_conversions_invert_each_other(diff):
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(8, 5, generator=g, dtype=torch.float64)
    eps = torch.randn(8, 5, generator=g, dtype=torch.float64)
    t = torch.randint(0, 1000, (8,), generator=g)
    xt = diff.q_sample(x0, t, eps)
    torch.testing.assert_close(diff.predict_x0_from_eps(xt, t, eps), x0)
    torch.testing.assert_close(diff.predict_eps_from_x0(xt, t, x0), eps)
    torch.testing.assert_close(diff.predict_x0_from_v(xt, t, diff.target("v", x0, t, eps)), x0)


def test_eps_model_mean_is_ddpm_eq_11(diff):
    g = torch.Generator().manual_seed(2)
    xt = torch.randn(6, 4, generator=g, dtype=torch.float64)
    eps = torch.randn(6, 4, generator=g, dtype=torch.float64)
    t = torch.tensor([1, 5, 100, 400, 800, 999])
    out = diff.p_mean_variance(Denoiser(lambda x, tt: eps), xt, t, clip_denoised=False)
    beta = diff.betas[t][:, None]
    ab = diff.alpha_bar[t][:, None]
    expected = (xt - beta / (1 - ab).sqrt() * eps) / (1 - beta).sqrt()
    torch.testing.assert_close(out["mean"], expected)
    torch.testing.assert_close(out["variance"], diff.posterior_variance[t][:, None])


def test_respacing_keeps_the_marginals(diff):
    keep = [0, 10, 250, 600, 999]
    r = diff.respaced(keep)
    torch.testing.assert_close(r.alpha_bar, diff.alpha_bar[keep])
    assert r.timestep_map.tolist() == keep


def test_eps_x0_and_v_networks_define_the_same_reverse_step(diff):
    """Networks that predict eps, x0 or v consistently (from the same x0, eps) give one p(x_{t-1} | x_t)."""
    g = torch.Generator().manual_seed(4)
    x0 = torch.rand(5, 6, generator=g, dtype=torch.float64) * 2 - 1
    eps = torch.randn(5, 6, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 3, 250, 700, 999])
    xt = diff.q_sample(x0, t, eps)
    outs = {p: diff.p_mean_variance(Denoiser(lambda x, tt, p=p: diff.target(p, x0, t, eps), p), xt, t, clip_denoised=False)
            for p in ("eps", "x0", "v")}
    for p in ("x0", "v"):
        torch.testing.assert_close(outs[p]["mean"], outs["eps"]["mean"])
        torch.testing.assert_close(outs[p]["pred_x0"], x0)
        torch.testing.assert_close(outs[p]["eps"], eps)


def test_the_vlb_loss_is_T_times_the_bound_term_per_dimension(diff):
    g = torch.Generator().manual_seed(5)
    x0 = (torch.randint(0, 17, (4, 1, 2, 2), generator=g).double() / 8 - 1)
    noise = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 1, 500, 999])
    net = Denoiser(lambda x, tt: 0.3 * x, "eps")
    out = diff.training_losses(net, x0, t, noise, loss="vlb", levels=17)
    terms, _ = diff.vb_terms(net, x0, diff.q_sample(x0, t, noise), t, 17, clip_denoised=False)
    torch.testing.assert_close(out["vb"], (terms / 4).float())
    torch.testing.assert_close(out["loss"], 1000 * out["vb"])
