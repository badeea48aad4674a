"""Training objectives: learned variances, the hybrid and vlb losses, importance sampling of t,
loss weightings (P2, min-SNR) and the three prediction targets. Closed forms first, then runs."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from genlab.config import from_dict, resolve
from genlab.data import load_dataset
from genlab.diffusion import Denoiser, GaussianDiffusion, ancestral_sample, ddim_sample
from genlab.diffusion.model import DDPM
from genlab.diffusion.sampling import sample
from genlab.diffusion.timesteps import LossSecondMomentSampler, UniformSampler, make_timestep_sampler
from genlab.errors import ConfigError
from genlab.run import RunDir, build_family, load_run
from genlab.training.checkpoint import load_checkpoint
from genlab.training.trainer import Trainer
from test_cli import assert_one_sentence_error, run_cli
from test_oracle import check_moments, gaussian_oracle

T = 1000


@pytest.fixture(scope="module")
def diff():
    return GaussianDiffusion.from_schedule("linear", T)


@pytest.fixture(scope="module")
def learned():
    return GaussianDiffusion.from_schedule("linear", T, variance="learned_range")


def hand_tables(T=T):
    """beta_t, tilde(beta)_t (clipped at t = 0 to t = 1) and SNR_t of DDPM's linear schedule, by hand."""
    betas = np.linspace(1e-4 * 1000 / T, 0.02 * 1000 / T, T, dtype=np.float64)
    ab = np.cumprod(1 - betas)
    ab_prev = np.concatenate([[1.0], ab[:-1]])
    tilde = betas * (1 - ab_prev) / (1 - ab)
    tilde[0] = tilde[1]
    return betas, tilde, ab / (1 - ab)


def with_variance(denoiser: Denoiser, v) -> Denoiser:
    """The denoiser's output with a variance half v (a number, or a function of (x_t, t)) appended."""
    def net(xt, t):
        vv = v(xt, t) if callable(v) else torch.full_like(xt, v)
        return torch.cat([denoiser(xt, t), vv], dim=1)
    return Denoiser(net, denoiser.parameterization)


# ----- learned variance -----------------------------------------------------------------------
def test_learned_range_spans_beta_tilde_to_beta(learned):
    betas, tilde, _ = hand_tables()
    t = torch.tensor([0, 1, 2, 100, 500, 999])
    xt = torch.randn(6, 3, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    oracle = gaussian_oracle(learned)
    for v, expected in ((1.0, np.log(betas)), (-1.0, np.log(tilde)), (0.0, 0.5 * (np.log(betas) + np.log(tilde)))):
        out = learned.p_mean_variance(with_variance(oracle, v), xt, t, clip_denoised=False)
        want = torch.as_tensor(expected[t.numpy()]).reshape(-1, 1, 1, 1).expand_as(xt)
        torch.testing.assert_close(out["log_variance"], want, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(out["variance"], want.exp(), rtol=1e-10, atol=0)
    # the mean half is what a fixed-variance process sees
    fixed = GaussianDiffusion.from_schedule("linear", T).p_mean_variance(oracle, xt, t, clip_denoised=False)
    out = learned.p_mean_variance(with_variance(oracle, 0.3), xt, t, clip_denoised=False)
    for k in ("mean", "pred_x0", "eps"):
        torch.testing.assert_close(out[k], fixed[k])


def test_a_respaced_learned_variance_uses_the_respaced_betas(learned):
    keep = list(range(0, T, 100)) + [T - 1]
    proc = learned.respaced(keep)
    ab = torch.as_tensor(np.cumprod(1 - hand_tables()[0]))[keep]
    ab_prev = torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]])
    betas = 1 - ab / ab_prev
    tilde = betas * (1 - ab_prev) / (1 - ab)
    tilde[0] = tilde[1]
    t = torch.arange(len(keep))
    xt = torch.randn(len(keep), 1, dtype=torch.float64)
    oracle = gaussian_oracle(learned)
    hi = proc.p_mean_variance(with_variance(oracle, 1.0), xt, t, clip_denoised=False)["log_variance"]
    lo = proc.p_mean_variance(with_variance(oracle, -1.0), xt, t, clip_denoised=False)["log_variance"]
    torch.testing.assert_close(hi[:, 0], betas.log())
    torch.testing.assert_close(lo[:, 0], tilde.log())


def test_a_network_without_the_variance_half_is_a_clear_error(learned):
    with pytest.raises(ValueError, match="must output 2 channels"):
        learned.p_mean_variance(gaussian_oracle(learned), torch.zeros(3, 1, dtype=torch.float64), torch.tensor([1, 2, 3]))


def test_ancestral_sampling_uses_the_learned_variance():
    """v = -1 everywhere is fixed_small and v = +1 is fixed_large (which differ only at t = 0, where
    no noise is added): same noise, same samples. Any other v changes them."""
    n = 200
    diff, large, learned = (GaussianDiffusion.from_schedule("linear", n, variance=v)
                            for v in ("fixed_small", "fixed_large", "learned_range"))
    x_T = torch.randn(100, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    oracle = gaussian_oracle(diff)
    for v, fixed in ((-1.0, diff), (1.0, large)):
        for proc_l, proc_f in ((learned, fixed), (learned.respaced(range(0, n, 10)), fixed.respaced(range(0, n, 10)))):
            a = ancestral_sample(with_variance(oracle, v), proc_l, x_T, torch.Generator().manual_seed(2), clip_denoised=False)
            b = ancestral_sample(oracle, proc_f, x_T, torch.Generator().manual_seed(2), clip_denoised=False)
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
    c = ancestral_sample(with_variance(oracle, 0.0), learned, x_T, torch.Generator().manual_seed(2), clip_denoised=False)
    assert not torch.allclose(c, b)


def test_ancestral_sampling_with_a_learned_variance_reproduces_gaussian_data(learned):
    gen = torch.Generator().manual_seed(3)
    x_T = torch.randn(20000, 1, dtype=torch.float64, generator=gen)
    x = ancestral_sample(with_variance(gaussian_oracle(learned), 0.0), learned.respaced(range(0, T, 4)), x_T, gen,
                         clip_denoised=False)
    check_moments(x)


@pytest.mark.parametrize("name,steps", [("ddim", 20), ("euler", 10), ("heun", 10), ("dpmpp-2m", 10)])
def test_deterministic_samplers_ignore_the_variance_output(diff, learned, name, steps):
    """DDIM and the ODE solvers use only x0/eps: any variance output leaves their samples unchanged."""
    x_T = torch.randn(64, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    oracle = gaussian_oracle(diff)
    wild = with_variance(oracle, lambda xt, t: torch.sin(7 * xt) + t.reshape(-1, 1) / T)
    a = sample(wild, learned, x_T, sampler=name, steps=steps, clip_denoised=False)
    b = sample(oracle, diff, x_T, sampler=name, steps=steps, clip_denoised=False)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


# ----- the three prediction targets -------------------------------------------------------------
def as_parameterization(diff: GaussianDiffusion, eps_denoiser: Denoiser, p: str) -> Denoiser:
    """The same model predicting eps, x0 or v: x0 and v computed from the eps prediction."""
    def net(xt, t):
        eps = eps_denoiser(xt, t)
        x0 = diff.predict_x0_from_eps(xt, t, eps)
        return {"eps": eps, "x0": x0, "v": diff.target("v", x0, t, eps)}[p]
    return Denoiser(net, p)


@pytest.mark.parametrize("p", ["x0", "v"])
def test_every_parameterization_of_the_oracle_gives_the_same_reverse_process_and_samples(diff, p):
    oracle = gaussian_oracle(diff)
    other = as_parameterization(diff, oracle, p)
    g = torch.Generator().manual_seed(5)
    xt = torch.randn(8, 1, dtype=torch.float64, generator=g)
    t = torch.tensor([0, 1, 10, 100, 400, 700, 900, 999])
    for clip in (False, True):
        a = diff.p_mean_variance(oracle, xt, t, clip_denoised=clip)
        b = diff.p_mean_variance(other, xt, t, clip_denoised=clip)
        for k in ("mean", "variance", "log_variance", "pred_x0", "eps"):
            torch.testing.assert_close(b[k], a[k], rtol=1e-9, atol=1e-9)
    x_T = torch.randn(2000, 1, dtype=torch.float64, generator=g)
    for steps in (25, T):
        a = ddim_sample(oracle, diff, x_T, steps, clip_denoised=False)
        b = ddim_sample(other, diff, x_T, steps, clip_denoised=False)
        torch.testing.assert_close(b, a, rtol=1e-8, atol=1e-8)
    check_moments(b, var_rtol=0.1)  # with all T steps, the data's N(MU, S^2)
    a = ancestral_sample(oracle, diff.respaced(range(0, T, 20)), x_T[:200], torch.Generator().manual_seed(6), clip_denoised=False)
    b = ancestral_sample(other, diff.respaced(range(0, T, 20)), x_T[:200], torch.Generator().manual_seed(6), clip_denoised=False)
    torch.testing.assert_close(b, a, rtol=1e-8, atol=1e-8)


# ----- hybrid loss: the stop-gradient -----------------------------------------------------------
def leaf_net(shape, seed):
    g = torch.Generator().manual_seed(seed)
    mean_out = (0.5 * torch.randn(shape, generator=g, dtype=torch.float64)).requires_grad_()
    var_out = (0.5 * torch.randn(shape, generator=g, dtype=torch.float64)).requires_grad_()
    return mean_out, var_out, Denoiser(lambda xt, t: torch.cat([mean_out, var_out], 1), "eps")


def digits_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randint(0, 17, (6, 1, 4, 4), generator=g).double() / 8 - 1
    return x0, torch.randn(x0.shape, generator=g, dtype=torch.float64), torch.tensor([0, 1, 5, 300, 700, 999])


def test_hybrid_bound_term_trains_only_the_variance(learned):
    mean_out, var_out, net = leaf_net((6, 1, 4, 4), 7)
    x0, noise, t = digits_batch()
    terms = learned.training_losses(net, x0, t, noise, loss="hybrid", levels=17)
    g_mean, g_var = torch.autograd.grad(terms["vb"].sum(), [mean_out, var_out], allow_unused=True, retain_graph=True)
    assert g_mean is None or not g_mean.any()
    assert g_var is not None and (g_var.abs().flatten(1).sum(1) > 0).all()
    # the whole loss: the mean gets exactly L_simple's gradient
    g_mean_total, = torch.autograd.grad(terms["loss"].sum(), [mean_out], retain_graph=True)
    g_mse, = torch.autograd.grad(terms["mse"].sum(), [mean_out])
    torch.testing.assert_close(g_mean_total, g_mse)
    # lambda T L_t with L_t in bits per dimension (improved-diffusion: vb_bpd * T / 1000)
    torch.testing.assert_close(terms["loss"], terms["mse"] + 0.001 * T * terms["vb"] / math.log(2))
    # and vb is the bound's term at t for the model's (mean, variance)
    terms_exact, _ = learned.vb_terms(net, x0, learned.q_sample(x0, t, noise), t, 17, clip_denoised=False)
    torch.testing.assert_close(terms["vb"], (terms_exact / 16).float())
    # the pure bound has no stop-gradient
    vlb = learned.training_losses(net, x0, t, noise, loss="vlb", levels=17)
    g_mean, g_var = torch.autograd.grad(vlb["loss"].sum(), [mean_out, var_out])
    assert g_mean.any() and g_var.any()


def test_the_hybrid_weight_scales_the_bound_term(learned):
    _, _, net = leaf_net((6, 1, 4, 4), 8)
    x0, noise, t = digits_batch(1)
    a = learned.training_losses(net, x0, t, noise, loss="hybrid", levels=17, vlb_weight=0.001)
    b = learned.training_losses(net, x0, t, noise, loss="hybrid", levels=17, vlb_weight=0.01)
    torch.testing.assert_close(b["loss"] - b["mse"], 10 * (a["loss"] - a["mse"]))


def test_hybrid_needs_a_learned_variance(diff):
    x0, noise, t = digits_batch()
    with pytest.raises(ConfigError, match="diffusion.variance learned_range"):
        diff.training_losses(gaussian_oracle(diff), x0, t, noise, loss="hybrid", levels=17)


# ----- importance sampling of t -----------------------------------------------------------------
def feed(sampler, values):
    """values[t] is the list of losses to record at t, fed one batch per position."""
    for k in range(max(len(v) for v in values.values())):
        ts = [t for t, v in values.items() if k < len(v)]
        sampler.update(torch.tensor(ts), torch.tensor([values[t][k] for t in ts], dtype=torch.float32))


def test_importance_sampler_is_uniform_until_every_t_has_ten_losses():
    s = LossSecondMomentSampler(6)
    feed(s, {t: [1.0 + t] * (10 if t < 5 else 9) for t in range(6)})
    assert not s.warmed_up()
    torch.testing.assert_close(s.probabilities(), torch.full((6,), 1 / 6, dtype=torch.float64))
    t, w = s.sample(500, torch.Generator().manual_seed(0))
    assert torch.equal(w, torch.ones(500)) and set(t.tolist()) == set(range(6))
    feed(s, {5: [6.0]})
    assert s.warmed_up()


def test_importance_sampler_follows_the_root_mean_square_of_the_last_ten_losses():
    Tn = 5
    s = LossSecondMomentSampler(Tn)
    rng = np.random.default_rng(0)
    values = {t: list(rng.uniform(0.5, 3.0, 12) * (t + 1)) for t in range(Tn)}
    feed(s, values)
    # the first two of each t dropped; the losses were fed as float32
    rms = np.array([np.sqrt(np.mean(np.square(np.float32(values[t][-10:]).astype(np.float64)))) for t in range(Tn)])
    p = 0.999 * rms / rms.sum() + 0.001 / Tn
    torch.testing.assert_close(s.probabilities(), torch.as_tensor(p), rtol=1e-6, atol=0)
    assert s.loss_counts.tolist() == [10] * Tn
    # draws follow p, and weights are 1 / (T p_t)
    t, w = s.sample(200_000, torch.Generator().manual_seed(1))
    freq = torch.bincount(t, minlength=Tn).double() / t.numel()
    assert (freq - torch.as_tensor(p)).abs().max() < 4 * math.sqrt(0.25 / t.numel())
    torch.testing.assert_close(w.double(), 1 / (Tn * torch.as_tensor(p)[t]), rtol=1e-6, atol=0)
    # unbiased, exactly: E_{t~p}[w_t L_t] = sum_t p_t w_t L_t = mean_t L_t for any per-t loss
    w_t = torch.zeros(Tn, dtype=torch.float64).index_put_((t,), w.double())
    L = torch.tensor([3.0, -1.0, 0.25, 7.0, 2.0], dtype=torch.float64)
    torch.testing.assert_close((torch.as_tensor(p) * w_t * L).sum(), L.mean(), rtol=1e-6, atol=0)


def test_importance_sampler_state_round_trips():
    s = LossSecondMomentSampler(4)
    feed(s, {t: [float(t + k) for k in range(11)] for t in range(4)})
    r = make_timestep_sampler("loss-second-moment", 4)
    r.load_state_dict(s.state_dict())
    torch.testing.assert_close(r.probabilities(), s.probabilities())
    assert UniformSampler(4).state_dict() == {}
    with pytest.raises(ConfigError, match="unknown timestep sampler"):
        make_timestep_sampler("stratified", 4)


# ----- loss weightings --------------------------------------------------------------------------
@pytest.mark.parametrize("t", [0, 10, 250, 600, 999])
def test_p2_and_min_snr_weights_follow_their_formulas(diff, t):
    snr = hand_tables()[2][t]
    tt = torch.tensor([t])
    w = lambda p, kind, gamma=None: diff.loss_weight(tt, p, kind, gamma).item()  # noqa: E731
    for gamma in (0.5, 1.0):
        p2 = 1 / (1 + snr) ** gamma  # Choi et al. eq. (8), k = 1, for eps
        assert w("eps", "p2", gamma) == pytest.approx(p2, rel=1e-9)
        assert w("x0", "p2", gamma) == pytest.approx(p2 * snr, rel=1e-9)
        assert w("v", "p2", gamma) == pytest.approx(p2 * snr / (snr + 1), rel=1e-9)
    assert w("eps", "p2") == pytest.approx(1 / (1 + snr), rel=1e-9)  # default gamma 1
    for gamma in (5.0, 1.0):  # Hang et al.: eps, x0 and v
        assert w("eps", "min-snr", gamma) == pytest.approx(min(snr, gamma) / snr, rel=1e-9)
        assert w("x0", "min-snr", gamma) == pytest.approx(min(snr, gamma), rel=1e-9)
        assert w("v", "min-snr", gamma) == pytest.approx(min(snr, gamma) / (snr + 1), rel=1e-9)
    assert w("eps", "min-snr") == pytest.approx(min(snr, 5.0) / snr, rel=1e-9)  # default gamma 5
    for p in ("eps", "x0", "v"):
        assert w(p, "none") == 1.0


def test_p2_with_gamma_0_is_uniform_for_eps(diff):
    t = torch.arange(T)
    assert torch.equal(diff.loss_weight(t, "eps", "p2", 0.0), torch.ones(T, dtype=torch.float64))


@pytest.mark.parametrize("weighting", ["p2", "min-snr"])
def test_a_weighting_is_one_objective_whatever_the_target(diff, weighting):
    """The same (wrong) model written as eps, x0 or v networks gets the same weighted loss."""
    x0, noise, t = digits_batch(2)
    model = Denoiser(lambda xt, tt: 0.7 * xt + 0.1, "eps")
    losses = {p: diff.training_losses(as_parameterization(diff, model, p), x0, t, noise, weighting=weighting)["loss"]
              for p in ("eps", "x0", "v")}
    torch.testing.assert_close(losses["x0"], losses["eps"], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(losses["v"], losses["eps"], rtol=1e-5, atol=1e-7)
    plain = diff.training_losses(model, x0, t, noise)
    torch.testing.assert_close(losses["eps"], plain["mse"] * diff.loss_weight(t, "eps", weighting).float())


# ----- configuration ----------------------------------------------------------------------------
def test_old_configs_get_the_old_objective():
    cfg = from_dict({"diffusion": {"timesteps": 100, "schedule": "linear", "parameterization": "eps",
                                   "variance": "fixed_small", "loss": "simple"}})
    d = cfg.diffusion
    assert (d.vlb_weight, d.timestep_sampler, d.weighting, d.weighting_gamma) == (0.001, "uniform", "none", None)


@pytest.mark.parametrize("flags,words", [
    (["--loss", "hybrid"], ["--variance learned_range"]),
    (["--variance", "learned_range"], ["--loss hybrid"]),
    (["--variance", "learned_range", "--loss", "hybrid", "--data", "toy2d"], ["toy2d"]),
    (["--variance", "learned_range", "--data", "toy2d"], ["toy2d", "fixed_small"]),
    (["--variance", "learned"], ["unknown variance", "learned_range"]),
    (["--loss", "vlb", "--weighting", "p2"], ["--weighting p2", "--loss vlb"]),
    (["--weighting", "snr"], ["unknown weighting", "min-snr"]),
    (["--weighting", "min-snr", "--weighting-gamma", "0"], ["--weighting-gamma"]),
    (["--timestep-sampler", "stratified"], ["unknown timestep sampler", "loss-second-moment"]),
    (["--loss", "hybrid", "--variance", "learned_range", "--vlb-weight", "0"], ["--vlb-weight"]),
])
def test_bad_objective_options_give_one_sentence_and_status_2(flags, words, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, "train", *flags)
    assert_one_sentence_error(code, err, *words)


# ----- training runs ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train").images


# smaller than conftest's TINY (8 and 16 channels, no attention, batches of 16): these runs only
# need to show that an objective trains
SMALL = ["--channels", "8,16", "--res-blocks", "1", "--attn", "", "--norm-groups", "4", "--timesteps", "50",
         "--batch-size", "16", "--lr", "3e-3", "--warmup", "5", "--dropout", "0", "--log-every", "5",
         "--sample-every", "0", "--grid-steps", "5", "--mixed-precision", "no", "--no-progress"]


def small_cfg(**diffusion):
    cfg = resolve(None, {}, {
        "model": {"channels": (8, 16), "num_res_blocks": 1, "attn_resolutions": (), "norm_groups": 4, "dropout": 0.0},
        "diffusion": {"timesteps": 50, **diffusion},
        "train": {"batch_size": 16, "steps": 20, "log_every": 5, "sample_every": 0, "checkpoint_every": 0,
                  "warmup": 5, "mixed_precision": "no", "lr": 3e-3},
    })
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, shape=(1, 8, 8), levels=17, num_classes=10))


def fixed_batch_loss(family, digits):
    """The training loss on a fixed batch with fixed t and noise: a noiseless yardstick."""
    with torch.no_grad():
        return family.losses(digits[:256], torch.Generator().manual_seed(123))["loss"].mean().item()


@pytest.mark.parametrize("p", ["eps", "x0", "v"])
def test_a_tiny_run_lowers_the_loss_for_every_target(tmp_path, digits, p):
    cfg = small_cfg(parameterization=p, weighting="min-snr" if p == "v" else "none")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        family = DDPM.from_config(cfg)
    trainer = Trainer(family, cfg, tmp_path / "run", digits, progress=False)
    before = fixed_batch_loss(trainer.unwrapped, digits)
    trainer.fit()
    after = fixed_batch_loss(trainer.unwrapped, digits)
    assert after < 0.8 * before, (before, after)
    x = trainer.ema.model.sample(4, seed=0, sampler="ddim", steps=5)
    assert x.dtype == torch.uint8 and x.shape == (4, 1, 8, 8)


def test_a_tiny_hybrid_run_with_learned_variance_trains_samples_and_evaluates(tmp_path, capsys, digits):
    run = tmp_path / "run"
    code, out, err = run_cli(capsys, "train", *SMALL, "--variance", "learned_range", "--loss", "hybrid", "--steps", "20",
                             "--eval-bpd", "false", "--out", run)
    assert code == 0, err
    cfg, trained, _, _ = load_run(run, weights="model")
    with torch.random.fork_rng():  # the network as training began (cmd_train seeds it the same way)
        torch.manual_seed(cfg.train.seed)
        initial = build_family(cfg)
    before, after = fixed_batch_loss(initial.eval(), digits), fixed_batch_loss(trained.eval(), digits)
    assert after < 0.8 * before, (before, after)
    assert set(logged(run, "vb")) and trained.net.out[-1].out_channels == 2  # mean and variance halves
    code, _, err = run_cli(capsys, "sample", run, "--n", "4", "--sampler", "ancestral", "--out", tmp_path / "a.png", "--no-progress")
    assert code == 0 and (tmp_path / "a.png").stat().st_size > 0, err
    code, out, err = run_cli(capsys, "eval", run, "--metric", "bpd", "--limit", "8", "--json", "--no-progress")
    assert code == 0, err
    r = json.loads(out)
    assert r["n"] == 8 and 0 < r["bpd"] < 20
    assert r["bpd"] == pytest.approx(r["prior_bpd"] + r["diffusion_bpd"] + r["decoder_bpd"])


def logged(run, key="loss"):
    return [r[key] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if key in r]


def test_importance_weights_reach_the_training_loss(digits):
    """With a warmed-up sampler, DDPM.losses draws t from p and weights T L_t by 1 / (T p_t)."""
    cfg = small_cfg(loss="vlb", timestep_sampler="loss-second-moment", timesteps=21)
    family = DDPM.from_config(cfg).train()
    sampler = family.timestep_sampler
    feed(sampler, {t: [0.1 * (t + 1)] * 10 for t in range(21)})  # p_t grows with t
    state = {k: v.clone() for k, v in sampler.state_dict().items()}
    gen = torch.Generator().manual_seed(9)
    t, w = sampler.sample(32, torch.Generator().set_state(gen.get_state()))
    with torch.no_grad():
        terms = family.losses(digits[:32], gen)
    torch.testing.assert_close(terms["loss"], 21 * terms["vb"] * w)
    assert not torch.equal(w, torch.ones(32))
    # and the history took in the unweighted losses of the drawn t
    assert torch.equal(sampler.loss_counts, state["loss_counts"])
    for tv in set(t.tolist()):
        j = max(i for i in range(32) if t[i] == tv)  # the last example with this t is the newest entry
        assert sampler.loss_history[tv, -1].item() == pytest.approx(21 * terms["vb"][j].item(), rel=1e-6)


def test_importance_sampling_state_is_checkpointed_and_resumed(tmp_path, capsys):
    flags = [*SMALL, "--loss", "vlb", "--timestep-sampler", "loss-second-moment", "--timesteps", "21", "--eval-bpd", "false"]
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert run_cli(capsys, "train", *flags, "--steps", "4", "--out", whole)[0] == 0
    assert run_cli(capsys, "train", *flags, "--steps", "2", "--out", split)[0] == 0
    assert run_cli(capsys, "train", "--resume", "--out", split, "--steps", "4", "--no-progress")[0] == 0
    a, _ = load_checkpoint(RunDir(whole).latest_checkpoint(), prefix="model.timestep_sampler.")
    b, _ = load_checkpoint(RunDir(split).latest_checkpoint(), prefix="model.timestep_sampler.")
    assert set(a) == {"model.timestep_sampler.loss_history", "model.timestep_sampler.loss_counts"}
    assert a["model.timestep_sampler.loss_counts"].sum() == 4 * 16  # every loss recorded (none past 10 per t yet)
    assert torch.equal(a["model.timestep_sampler.loss_counts"], b["model.timestep_sampler.loss_counts"])
    torch.testing.assert_close(a["model.timestep_sampler.loss_history"], b["model.timestep_sampler.loss_history"])
