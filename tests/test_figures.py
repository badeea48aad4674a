"""The notes' figures (genlab figures): each one's numbers against its closed form, then the command."""

import json
import math
import shutil

import numpy as np
import pytest
import torch

from genlab.cli import main
from genlab.diffusion.process import GaussianDiffusion
from genlab.diffusion.schedules import make_betas
from genlab.gan import mode_coverage
from genlab.viz.figures import FIGURES
from genlab.viz.figures.diffusion1d import (
    DATA,
    Mixture1D,
    fit_gaussian,
    forward_paths,
    gaussian_pdf,
    gaussian_posterior,
    reverse_conditional,
)
from genlab.viz.figures.families import eight_gaussians, recall_steps
from genlab.viz.figures.noising import radial_power

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def alpha_bar_paper(schedule="linear", T=1000):
    """alpha_bar over the paper's steps 0..T, straight from the betas (not through GaussianDiffusion)."""
    return np.concatenate([[1.0], np.cumprod(1.0 - make_betas(schedule, T))])


@pytest.fixture(scope="module")
def drawn(tmp_path_factory):
    """Every figure but trilemma, drawn once by the command (mode-collapse kept short)."""
    out = tmp_path_factory.mktemp("figures")
    torch.set_num_threads(1)
    assert main(["figures", "all", "--steps", "20", "--out", str(out)]) == 0
    return out


def numbers(drawn, name):
    return json.loads((drawn / f"{name}.json").read_text())


# ----- the 1-D process in closed form ---------------------------------------------------------
def _mixture_cdf(m: Mixture1D, z):
    return sum(w * 0.5 * (1 + math.erf((z - mu) / (s * math.sqrt(2)))) for w, mu, s in zip(m.weights, m.means, m.stds, strict=True))


def test_mixture_marginal_matches_a_monte_carlo_of_the_forward_chain():
    rng = np.random.default_rng(0)
    betas = make_betas("linear", 1000)
    chains = forward_paths(DATA.sample(40000, rng), betas, rng)  # one Markov step at a time
    ab = alpha_bar_paper()
    for t in (1, 30, 100, 300, 1000):
        closed = DATA.noised(ab[t])
        z = np.sort(chains[:, t])
        cdf = np.array([_mixture_cdf(closed, v) for v in z[::20]])
        ks = np.max(np.abs(cdf - np.arange(0, len(z), 20) / len(z)))
        assert ks < 0.012, (t, ks)  # the 99.9% Kolmogorov-Smirnov bound for 40000 draws is ~0.0098
        assert abs(z.mean() - math.sqrt(ab[t]) * np.dot(DATA.weights, DATA.means)) < 0.02


def test_bayes_reverse_conditional_normalises_and_is_the_gaussian_posterior_for_a_point_mass():
    diff = GaussianDiffusion.from_schedule("linear", 1000)
    point = Mixture1D(weights=(1.0,), means=(0.4,), stds=(0.0,))
    for s, t, zt in ((99, 100, -0.3), (1, 300, 0.5), (10, 500, 0.0), (999, 1000, 1.2)):
        z, p = reverse_conditional(point, diff, s, t, zt)
        dz = z[1] - z[0]
        assert abs(p.sum() * dz - 1) < 1e-9
        (mean,), (var,) = gaussian_posterior(diff, s, t, [0.4], zt)
        fit = fit_gaussian(z, p)
        assert fit["mean"] == pytest.approx(mean, abs=1e-6 * math.sqrt(var) + 1e-9)
        assert fit["var"] == pytest.approx(var, rel=1e-4)
        assert np.max(np.abs(p - gaussian_pdf(z, mean, var))) < 1e-4 * p.max()
        assert fit["kl_nats"] < 1e-6 and fit["modes"] == 1
    # one step of the original process: genlab's tilde(beta)_t and tilde(mu)_t (DDPM eq. 7), paper step t = code t - 1
    ab = alpha_bar_paper()
    beta = 1 - ab[100] / ab[99]
    (mean,), (var,) = gaussian_posterior(diff, 99, 100, [0.4], -0.3)
    assert var == pytest.approx(beta * (1 - ab[99]) / (1 - ab[100]), rel=1e-9)
    assert mean == pytest.approx(math.sqrt(ab[99]) * beta / (1 - ab[100]) * 0.4
                                 + math.sqrt(1 - beta) * (1 - ab[99]) / (1 - ab[100]) * -0.3, rel=1e-9)


def test_forward_and_kernel_figures_follow_their_closed_forms(drawn):
    fwd = numbers(drawn, "marginals")
    ab = alpha_bar_paper()
    z, dens, cols = np.array(fwd["z"]), np.array(fwd["density"]), fwd["t"]
    assert cols[0] == 0 and cols[-1] == 1000 and np.allclose(fwd["alpha_bar"], ab[cols], rtol=1e-5)
    mass = dens.sum(0) * (z[1] - z[0])
    inside = [_mixture_cdf(DATA.noised(ab[t]), 3.0) - _mixture_cdf(DATA.noised(ab[t]), -3.0) for t in cols]
    assert np.allclose(mass, inside, atol=1e-3)  # each column is q(z_t) on [-3, 3]
    modes = {r["t"]: r["modes"] for r in fwd["summary"]}
    assert modes[0] == 3 and modes[1000] == 1
    kl = [r["kl_to_prior_nats"] for r in fwd["summary"]]
    assert all(a >= b for a, b in zip(kl, kl[1:], strict=False)) and kl[-1] < 1e-4  # q(z_t) -> N(0, 1)
    assert len(fwd["paths"]) == 6 and len(fwd["paths"][0]) == 1001

    ker = numbers(drawn, "kernel")
    zk = np.array(ker["z"])
    dz = zk[1] - zk[0]
    for r in ker["kernels"]:
        a = ab[r["t"]]
        assert r["alpha_bar"] == pytest.approx(a, rel=1e-5)
        assert np.allclose(r["mean"], np.sqrt(a) * np.array(ker["x"]), rtol=1e-5, atol=1e-9)
        assert np.allclose(r["var"], 1 - a, rtol=1e-5)
        curves = np.array(r["curves"])
        assert np.allclose(curves.sum(1) * dz, 1, atol=1e-3)
        assert np.allclose((curves * zk).sum(1) * dz, r["mean"], atol=1e-3)
        assert r["tv_extremes"] == pytest.approx(r["tv_extremes_closed_form"], abs=1e-3)


def test_posterior_figure_is_normal_for_one_step_and_multimodal_for_a_large_one(drawn):
    post = numbers(drawn, "posterior")
    small = [c for c in post["cases"] if c["t"] - c["s"] == 1]
    large = [c for c in post["cases"] if c["t"] - c["s"] > 1]
    assert small and large
    assert all(c["kl_nats"] < 1e-4 and c["modes"] == 1 for c in small)
    assert all(c["kl_nats"] > 0.1 and c["modes"] >= 2 and c["tv"] > 0.2 for c in large)


# ----- images and weights ----------------------------------------------------------------------
def test_radial_power_of_white_noise_is_flat_at_its_variance():
    noise = np.random.default_rng(0).standard_normal((2000, 1, 8, 8)) * 0.5
    freq, power = radial_power(noise)
    assert freq[0] == 0 and np.all(np.diff(freq) > 0)
    assert np.allclose(power, 0.25, rtol=0.12)


def test_spectrum_of_noised_images_matches_its_closed_form(drawn):
    spec = numbers(drawn, "frequency")
    assert spec["data"] == "digits" and spec["shape"] == [1, 8, 8]
    clean = np.array(spec["clean"])
    for schedule in ("linear", "cosine"):
        r = spec["schedules"][schedule]
        ab = alpha_bar_paper(schedule)
        for step in r["steps"]:
            a = ab[step["t"]]
            assert step["noise_floor"] == pytest.approx(1 - a, rel=1e-5)
            assert np.allclose(step["closed_form"], a * clean + (1 - a), rtol=1e-5)
            assert np.allclose(step["measured"], step["closed_form"], rtol=0.1)  # 512 images, one noise draw each
        drowned = r["drowned_at"][1:]  # without DC: higher frequencies drown earlier
        assert all(a >= b for a, b in zip(drowned, drowned[1:], strict=False)) and drowned[0] > drowned[-1]
    assert all(c >= li for c, li in zip(spec["schedules"]["cosine"]["drowned_at"], spec["schedules"]["linear"]["drowned_at"],
                                        strict=True))  # the cosine schedule destroys information more slowly


def test_weighting_figure_uses_the_formulas(drawn):
    w = numbers(drawn, "weighting")
    for schedule in ("linear", "cosine"):
        r = w["schedules"][schedule]
        ab = alpha_bar_paper(schedule)[1:]
        snr = ab / (1 - ab)
        assert np.allclose(r["log_snr"], np.log(snr), rtol=1e-5, atol=1e-5)
        assert np.allclose(r["weights"]["none"], 1.0)
        assert np.allclose(r["weights"]["p2"], 1 / (1 + snr), rtol=1e-5)  # Choi et al., k = 1, gamma = 1
        assert np.allclose(r["weights"]["min-snr"], np.minimum(snr, 5) / snr, rtol=1e-5)  # Hang et al., gamma = 5
        for shares in r["stage_share"].values():
            assert sum(shares.values()) == pytest.approx(1, abs=1e-5)
        clean_up = {k: v["clean-up (SNR > 1)"] for k, v in r["stage_share"].items()}
        assert clean_up["p2"] < clean_up["min-snr"] < clean_up["none"]


# ----- the other families ----------------------------------------------------------------------
def test_mode_coverage_counts_hand_made_point_sets():
    _, _, centres, radius = eight_gaussians()
    at = lambda idx, n=100: centres[torch.tensor(idx).repeat_interleave(n)]  # noqa: E731
    assert mode_coverage(at([0, 3, 5]), centres, radius)["modes_covered"] == 3
    assert mode_coverage(at(list(range(8))), centres, radius)["modes_covered"] == 8
    assert mode_coverage(torch.zeros(50, 2), centres, radius)["modes_covered"] == 0  # the centre of the ring is no mode
    # 1 point in 800 is under 10% of a mode's uniform share: not covered
    pts = torch.cat([at([1], 799), centres[2:3]])
    assert mode_coverage(pts, centres, radius)["modes_covered"] == 1


def test_mode_collapse_figure_records_integer_coverage(drawn):
    mc = numbers(drawn, "mode-collapse")
    assert mc["steps"] == 20 and set(mc["losses"]) == {"minimax", "ns", "wgan-gp"}
    for r in mc["losses"].values():
        assert r["steps"][0] == 0 and r["steps"][-1] == 20 and len(r["steps"]) == len(r["modes_covered"])
        assert all(isinstance(m, int) and 0 <= m <= 8 for m in r["modes_covered"])
        assert np.array(r["points"]).shape == (1000, 2)
    assert mc["losses"]["wgan-gp"]["d_steps"] == 5 and mc["losses"]["ns"]["d_steps"] == 1


def test_hopfield_energy_never_rises_and_light_corruption_is_recalled(drawn):
    from genlab.energy import Hopfield, corrupt

    hop = numbers(drawn, "hopfield")
    assert len(hop["patterns"]) == 3 and hop["neurons"] == 64
    for r in hop["patterns"]:
        e = np.array(r["energy"])
        assert np.all(np.diff(e) <= 1e-9) and r["max_energy_increase"] <= 0
        assert r["recalled"] and e[-1] == pytest.approx(r["energy_stored"])
        assert r["overlap"][-1] == 1.0
    # the step-by-step recall is Hopfield's own asynchronous sweep, recorded after every neuron
    rng = np.random.default_rng(3)
    p = rng.choice([-1.0, 1.0], size=(5, 100))
    net = Hopfield(100).store(p)
    start = corrupt(p[:1], 0.1, seed=1)[0]
    states, energies = recall_steps(net, start, np.random.default_rng(7))
    assert np.array_equal(states[100], net.sweep_async(start, np.random.default_rng(7)))
    assert np.all(np.diff(energies) <= 1e-9) and np.array_equal(states[-1], p[0])


def test_trilemma_figure_reads_the_runs_evaluations(run_dir, tmp_path, capsys):
    from genlab.metrics.features import load_feature_network

    run = tmp_path / "r"
    shutil.copytree(run_dir, run)
    base = {"event": "eval", "feature_network": load_feature_network("digits").version, "data": "digits", "n": 10,
            "weights": "ema", "ref_split": "train", "step": 4, "sampler": "ddim", "eta": 0.0, "spacing": "uniform"}
    recs = [{**base, "steps": 10, "nfe": 10, "fid": 3.0, "recall": 0.4, "precision": 0.7, "seconds_per_sample": 0.02},
            {**base, "steps": 50, "nfe": 50, "fid": 2.0, "recall": 0.6, "precision": 0.8, "seconds_per_sample": 0.1}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    out = tmp_path / "out"
    assert main(["figures", "trilemma", "--runs", str(run), "--out", str(out)]) == 0
    assert (out / "trilemma.png").read_bytes()[:8] == PNG_MAGIC
    rows = json.loads((out / "trilemma.json").read_text())["runs"]
    assert len(rows) == 1 and rows[0]["fid"] == 2.0 and rows[0]["recall"] == 0.6  # the best (lowest FID) setting
    assert rows[0]["seconds_per_sample"] == 0.1 and rows[0]["family"] == "ddpm"
    assert "FID 2" in capsys.readouterr().out


# ----- the command -------------------------------------------------------------------------------
def test_command_lists_every_figure():
    from genlab.cli.figures import NAMES

    assert NAMES == tuple(FIGURES)


@pytest.mark.parametrize("name", [n for n in FIGURES if n != "trilemma"])
def test_command_writes_png_and_json(drawn, name):
    assert (drawn / f"{name}.png").read_bytes()[:8] == PNG_MAGIC
    js = numbers(drawn, name)
    assert js["figure"] == name and js["png"].endswith(f"{name}.png")
    assert not list(drawn.glob(".*.tmp"))  # nothing half-written


@pytest.mark.parametrize("argv,says", [(["nope"], "no figure named 'nope'"), (["trilemma"], "--runs"),
                                       (["trilemma", "--runs", "{tmp}"], "--runs"), (["kernel", "--steps", "5"], "--steps"),
                                       (["mode-collapse", "--steps", "0"], "--steps"),
                                       (["kernel", "--schedule", "cubic"], "--schedule"),
                                       (["marginals", "--timesteps", "10"], "--timesteps")])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, argv, says):
    out = tmp_path / "out"
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(["figures", *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("genlab: error: ") and len(err.splitlines()) == 1 and says in err, err
    assert not out.exists()
