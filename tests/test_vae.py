"""Autoencoders and VAEs: the densities against closed forms, the IWAE bound against brute force, then the family."""

import dataclasses
import math

import pytest
import torch
from torch import nn

from genlab.config import resolve
from genlab.data import load_dataset
from genlab.data.transforms import from_model, to_model
from genlab.errors import ConfigError
from genlab.nets.autoencoder import ConvDecoder, ConvEncoder
from genlab.rng import per_sample_generators
from genlab.run import load_run
from genlab.training.trainer import Trainer
from genlab.vae import VAE, Autoencoder, lerp, slerp
from genlab.vae.latent import soft_clamp
from genlab.vae.likelihood import decoder_log_likelihood, discretized_logistic_log_likelihood, gaussian_kl, log_normal


def tiny_cfg(family="vae", vae=None, **train):
    cfg = resolve(None, {}, {
        "data": {"name": "digits"},
        "model": {"channels": (16, 32), "latent_dim": 8},
        "vae": vae or {},
        "train": {"batch_size": 64, "steps": 10, "lr": 2e-3, "log_every": 20, "sample_every": 0, "checkpoint_every": 0,
                  "mixed_precision": "no", **train},
    }, family=family)
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, shape=(1, 8, 8), levels=17, num_classes=10))


def build(cfg, seed=0):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return (VAE if cfg.family == "vae" else Autoencoder).from_config(cfg)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train").images


@pytest.fixture(scope="module")
def trained(tmp_path_factory, digits):
    """A tiny VAE trained for 60 steps through the Trainer: (trainer, run_dir, fixed-batch loss before, after)."""
    run_dir = tmp_path_factory.mktemp("vae") / "run"
    cfg = tiny_cfg(steps=60)
    trainer = Trainer(build(cfg), cfg, run_dir, digits, progress=False)
    before = fixed_batch_elbo(trainer.unwrapped, digits)
    trainer.fit()
    return trainer, run_dir, before, fixed_batch_elbo(trainer.unwrapped, digits)


def fixed_batch_elbo(family, digits):
    with torch.no_grad():
        return family(digits[:256], torch.Generator().manual_seed(123))["elbo_bpd"].mean().item()


# ----- closed forms -------------------------------------------------------------------------------

def test_kl_matches_the_analytic_gaussian_kl():
    gen = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(500, 6, generator=gen, dtype=torch.float64), 2 * torch.randn(500, 6, generator=gen, dtype=torch.float64)
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    torch.testing.assert_close(gaussian_kl(mu, logvar), torch.distributions.kl_divergence(q, p))
    # and E_q[log q - log p] by Monte Carlo for one posterior
    z = mu[0] + torch.exp(0.5 * logvar[0]) * torch.randn(50_000, 6, generator=gen, dtype=torch.float64)
    mc = (log_normal(z, mu[0], logvar[0]) - log_normal(z)).mean(0)
    assert torch.allclose(mc, gaussian_kl(mu[0], logvar[0]), atol=0.05, rtol=0.03)
    q0 = torch.distributions.Normal(mu[0], torch.exp(0.5 * logvar[0]))
    torch.testing.assert_close(log_normal(z[:10], mu[0], logvar[0]), q0.log_prob(z[:10]))


@pytest.mark.parametrize("decoder", ["logistic", "gaussian"])
@pytest.mark.parametrize("levels", [2, 17, 256])
def test_discretised_decoders_sum_to_one_over_the_levels(decoder, levels):
    gen = torch.Generator().manual_seed(levels)
    mean = 1.5 * torch.randn(64, 1, dtype=torch.float64, generator=gen)  # some outside [-1, 1]
    log_scale = torch.empty(64, 1, dtype=torch.float64).uniform_(-7, 2, generator=gen)
    x = (-1 + 2 * torch.arange(levels, dtype=torch.float64) / (levels - 1))[None, :]  # every level, exactly: [1, K]
    logp = decoder_log_likelihood(decoder, x.expand(64, -1), mean.expand(-1, levels), log_scale.expand(-1, levels), levels)
    assert torch.isfinite(logp).all() and (logp <= 0).all()
    torch.testing.assert_close(torch.logsumexp(logp, 1), torch.zeros(64, dtype=torch.float64), atol=1e-9, rtol=0)


def test_discretised_logistic_is_the_cdf_difference():
    """Bin probabilities equal sigmoid differences of the logistic CDF, including in float32 far in the tails."""
    levels, h = 256, 1 / 255
    x = to_model(torch.tensor([0, 1, 100, 200, 254, 255]), levels).double()
    mean, log_scale = torch.tensor(0.3, dtype=torch.float64), torch.tensor(-2.0, dtype=torch.float64)
    s = math.exp(-2.0)
    cdf = lambda v: torch.sigmoid((v - mean) / s)  # noqa: E731
    expected = torch.log(cdf(x + h) - cdf(x - h))
    expected[0], expected[-1] = torch.log(cdf(x[0] + h)), torch.log(1 - cdf(x[-1] - h))
    got = discretized_logistic_log_likelihood(x, mean.expand(6), log_scale.expand(6), levels)
    torch.testing.assert_close(got, expected)
    # float32, a thousand scales above the mean: both CDFs round to 1, yet the bin's mass is
    # e^-b (1 - e^-(a-b)) up to a factor 1 + O(e^-b), with b = (x - h - mean)/s and a - b = 2h/s
    far = discretized_logistic_log_likelihood(torch.tensor([0.0]), torch.tensor([-0.99]), torch.tensor([-7.0]), levels)
    b, a_minus_b = (0.99 - h) * math.exp(7), 2 * h * math.exp(7)
    assert far.item() == pytest.approx(-b + math.log1p(-math.exp(-a_minus_b)), rel=1e-6)


@pytest.mark.parametrize("decoder", ["logistic", "gaussian"])
def test_pixel_noise_samples_follow_the_discretised_decoder(decoder):
    """Drawing x ~ p(x|z) (mean + scale * noise, rounded) hits each level with the decoder's probability."""
    levels, n = 5, 6000
    vae = VAE(nn.Flatten(), Const(torch.tensor([[-0.8, 0.1]]), torch.tensor([[-1.0, -0.5]])), (1, 1, 2), levels, 1,
              decoder_likelihood=decoder)
    x = from_model(vae.decode_image(torch.zeros(n, 1), per_sample_generators(0, 0, n), pixel_noise=True), levels)
    freq = torch.stack([(x.flatten(1) == k).double().mean(0) for k in range(levels)])  # [K, 2]
    mean, log_scale = vae.decode(torch.zeros(1, 1))
    values = to_model(torch.arange(levels), levels)[:, None].expand(-1, 2)
    prob = decoder_log_likelihood(decoder, values, mean.flatten().expand(levels, -1), log_scale.flatten().expand(levels, -1), levels).exp()
    assert (freq - prob).abs().max() < 4 * math.sqrt(0.25 / n)


class Const(nn.Module):
    """A decoder whose (mean, log-scale) for a [B, 1] latent is fixed per pixel (shape [1, P] each)."""

    def __init__(self, mean, log_scale):
        super().__init__()
        self.mean, self.log_scale = nn.Parameter(mean), nn.Parameter(log_scale)

    def forward(self, z):
        B = z.shape[0]
        return torch.cat([self.mean.expand(B, -1), self.log_scale.expand(B, -1)], 1).view(B, 2, 1, -1)


def test_slerp_keeps_the_norm_and_ends_at_the_endpoints():
    gen = torch.Generator().manual_seed(0)
    za, zb = torch.randn(16, generator=gen, dtype=torch.float64), torch.randn(16, generator=gen, dtype=torch.float64)
    zb = zb / zb.norm() * za.norm()
    t = torch.linspace(0, 1, 7, dtype=torch.float64)
    path = slerp(za, zb, t)
    torch.testing.assert_close(path[0], za)
    torch.testing.assert_close(path[-1], zb)
    torch.testing.assert_close(path.norm(dim=1), za.norm().expand(7))
    assert lerp(za, zb, t)[3].norm() < za.norm()  # the straight line cuts inside the sphere


def test_soft_clamp_bounds_and_keeps_a_gradient():
    x = torch.tensor([-1e4, -13.0, -3.0, 0.0, 1.0, 5.0, 1e4], requires_grad=True)
    y = soft_clamp(x, -12.0, 4.0)
    assert (y >= -12).all() and (y <= 4).all()
    assert abs(y[3].item()) < 0.02 and abs(y[4].item() - 1) < 0.05  # about the identity inside the range
    y.sum().backward()
    assert (x.grad[1:-1] > 0.2).all()  # just past a bound, where a hard clamp's gradient is 0


# ----- the IWAE bound against brute force -----------------------------------------------------------

class TinyDecoder(nn.Module):
    """z [B, 1] -> mean and log-scale of a 2x2 one-channel image: [B, 2, 2, 2]."""

    def __init__(self):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(1, 16), nn.Tanh(), nn.Linear(16, 8))

    def forward(self, z):
        return self.mlp(z).view(-1, 2, 2, 2)


@pytest.mark.parametrize("decoder", ["logistic", "gaussian"])
def test_iwae_approaches_the_exact_log_likelihood(decoder):
    """A VAE with a 1-D latent over 2x2 images with 3 levels: log p(x) = log int p(x|z) N(z) dz by quadrature."""
    levels = 3
    torch.manual_seed(0)
    vae = VAE(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), TinyDecoder(), (1, 2, 2), levels, 1,
              decoder_likelihood=decoder).double().eval()
    with torch.no_grad():
        vae.net.mlp[2].weight.mul_(3)  # a decoder that depends strongly on z
        vae.encoder[1].weight.mul_(0.3)
    # every image: 3^4 = 81
    grid = torch.cartesian_prod(*[torch.arange(levels)] * 4).view(-1, 1, 2, 2).to(torch.uint8)
    z = torch.linspace(-9, 9, 1801, dtype=torch.float64)[:, None]  # the integrand is smooth: a Riemann sum converges fast
    with torch.no_grad():
        mean, log_scale = vae.decode(z)
        x = to_model(grid, levels).double()
        log_joint = torch.stack([vae.log_px_given_z(xi.expand(len(z), -1, -1, -1), mean, log_scale) for xi in x]) + log_normal(z[:, 0])
    log_px = torch.logsumexp(log_joint, 1) + math.log(z[1, 0] - z[0, 0])  # [81] nats, Riemann sum
    torch.testing.assert_close(torch.logsumexp(log_px, 0), torch.zeros((), dtype=torch.float64), atol=1e-6, rtol=0)
    some = torch.arange(0, 81, 7)  # 12 of the images
    exact_bpd = (-log_px[some] / (4 * math.log(2))).mean().item()
    results = {k: vae.bits_per_dim(grid[some], k=k, seed=1) for k in (1, 10, 4000)}
    assert results[1]["bpd"] == pytest.approx(results[1]["elbo_bpd"], abs=1e-12)  # IWAE_1 is the ELBO estimate
    assert results[1]["bpd"] > results[10]["bpd"] > results[4000]["bpd"]
    assert results[4000]["elbo_bpd"] - exact_bpd > 0.02  # the ELBO is visibly loose here ...
    assert results[4000]["bpd"] == pytest.approx(exact_bpd, abs=2e-3)  # ... and IWAE at large k is tight


# ----- the family ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,channels", [((1, 8, 8), (16, 32)), ((1, 28, 28), (8, 16, 16)), ((3, 32, 32), (8, 16, 16)),
                                            ((1, 7, 5), (8, 8))])
def test_encoder_and_decoder_shapes(shape, channels):
    enc, dec = ConvEncoder(shape, channels, 10), ConvDecoder(shape, channels, 5, 2 * shape[0])
    assert enc(torch.zeros(3, *shape)).shape == (3, 10)
    assert dec(torch.zeros(3, 5)).shape == (3, 2 * shape[0], *shape[1:])


def test_forward_terms_and_beta_scales_the_kl(digits):
    vae = build(tiny_cfg())
    batch = digits[:32]
    terms = vae(batch, torch.Generator().manual_seed(5))
    assert set(terms) == {"loss", "elbo_bpd", "recon_bpd", "kl_bpd"} and all(v.shape == (32,) for v in terms.values())
    torch.testing.assert_close(terms["loss"], terms["recon_bpd"] + terms["kl_bpd"])
    vae.beta = 4.0
    beta4 = vae(batch, torch.Generator().manual_seed(5))
    torch.testing.assert_close(beta4["loss"], terms["loss"] + 3 * terms["kl_bpd"])
    torch.testing.assert_close(beta4["elbo_bpd"], terms["elbo_bpd"])
    # beta from the config
    assert build(tiny_cfg(vae={"beta": 2.5})).beta == 2.5


def test_shards_see_the_noise_of_the_whole_batch(digits):
    for family in ("vae", "ae"):
        model = build(tiny_cfg(family, vae={"noise": 0.3}))
        full = model(digits[:8], torch.Generator().manual_seed(2))["loss"]
        half = model(digits[4:8], torch.Generator().manual_seed(2), shard=(slice(4, 8), 8))["loss"]
        torch.testing.assert_close(half, full[4:8])


def test_bf16_autocast_matches_fp32(digits):
    vae = build(tiny_cfg())
    fp32 = vae(digits[:64], torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = vae(digits[:64], torch.Generator().manual_seed(0))
        bound = vae.bits_per_dim(digits[:8], k=4)
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in bf16.values())
    assert bf16["loss"].mean().item() == pytest.approx(fp32["loss"].mean().item(), rel=0.02)
    assert math.isfinite(bound["bpd"]) and bound["bpd"] <= bound["elbo_bpd"]


def test_training_lowers_the_loss_and_iwae_tightens_with_k(trained, digits):
    trainer, _, before, after = trained
    assert after < before - 0.2, (before, after)
    vae = trainer.ema.model
    images = digits[:100]
    r = {k: vae.bits_per_dim(images, k=k, seed=0) for k in (1, 10, 100)}
    assert r[1]["bpd"] == pytest.approx(r[1]["elbo_bpd"], abs=1e-9)  # IWAE with one sample is the ELBO estimate
    assert r[1]["bpd"] >= r[10]["bpd"] >= r[100]["bpd"]
    for k in (10, 100):
        assert r[k]["bpd"] < r[k]["elbo_bpd"]  # the same k draws: the bound is above the ELBO, image by image
        assert r[k]["elbo_bpd"] == pytest.approx(r[k]["recon_bpd"] + r[k]["kl_bpd"])
    assert r[100]["n"] == 100 and r[100]["iwae_k"] == 100 and r[100]["bpd_se"] > 0
    assert vae.bits_per_dim(images, k=10, seed=0, batch_size=7) == pytest.approx(r[10])  # per-image draws
    assert vae.bits_per_dim(images[:4], seed=0)["iwae_k"] == vae.iwae_k == 100  # the config's default


def test_samples_do_not_depend_on_batch_size_and_survive_a_checkpoint(trained):
    trainer, run_dir, _, _ = trained
    vae = trainer.ema.model
    for noise in (False, True):
        a = vae.sample(10, seed=3, batch_size=10, pixel_noise=noise)
        assert a.dtype == torch.uint8 and a.shape == (10, 1, 8, 8) and int(a.max()) <= 16
        assert torch.equal(a, vae.sample(10, seed=3, batch_size=3, pixel_noise=noise))
    assert not torch.equal(a, vae.sample(10, seed=4))
    _, loaded, _, step = load_run(run_dir)
    assert step == 60 and isinstance(loaded, VAE)
    assert torch.equal(loaded.sample(16, seed=1), vae.sample(16, seed=1))
    with pytest.raises(ConfigError):
        vae.sample(2, labels=torch.tensor([0, 1]))


def test_reconstruct_and_interpolate(trained, digits):
    vae = trained[0].ema.model
    recon = vae.reconstruct(digits[:2])
    assert recon.shape == (2, 1, 8, 8) and recon.dtype == torch.uint8
    for method in ("linear", "slerp"):
        path = vae.interpolate(digits[0], digits[1], 6, method=method)
        assert path.shape == (6, 1, 8, 8) and path.dtype == torch.uint8
        assert (path[[0, -1]].int() - recon.int()).abs().max() <= 1  # the ends are the reconstructions
    with pytest.raises(ValueError):
        vae.interpolate(digits[0], digits[1], 6, method="cubic")


def test_denoising_autoencoder_adds_noise_and_autoencoders_decode_random_latents(tmp_path, digits):
    ae = build(tiny_cfg("ae"))
    batch = digits[:32]
    gen = torch.Generator().manual_seed(7)
    plain = ae(batch, gen)
    assert torch.equal(gen.get_state(), torch.Generator().manual_seed(7).get_state())  # a plain AE draws nothing
    assert set(plain) == {"loss", "mse", "mae"} and torch.equal(plain["loss"], plain["mse"])
    ae.noise = 0.5
    noisy = ae(batch, torch.Generator().manual_seed(7))
    assert not torch.allclose(noisy["loss"], plain["loss"])
    torch.testing.assert_close(noisy["loss"], ae(batch, torch.Generator().manual_seed(7))["loss"])
    assert build(tiny_cfg("ae", vae={"recon": "mae", "noise": 0.2})).recon == "mae"
    # a short denoising run through the Trainer (bf16 autocast), then decode z ~ N(0, I)
    cfg = tiny_cfg("ae", vae={"noise": 0.3}, steps=15, batch_size=32, mixed_precision="bf16")  # the Trainer's default
    trainer = Trainer(build(cfg), cfg, tmp_path / "ae", digits, progress=False)
    before = trainer.unwrapped(digits[:256], torch.Generator().manual_seed(1))["mse"].mean().item()
    trainer.fit()
    after = trainer.unwrapped(digits[:256], torch.Generator().manual_seed(1))["mse"].mean().item()
    assert after < before
    samples = trainer.ema.model.sample(12, seed=0, batch_size=5)
    assert samples.dtype == torch.uint8 and samples.shape == (12, 1, 8, 8) and int(samples.max()) <= 16
    assert torch.equal(samples, trainer.ema.model.sample(12, seed=0))
    assert trainer.ema.model.reconstruct(digits[:3]).shape == (3, 1, 8, 8)
