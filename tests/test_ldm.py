"""Latent diffusion with text: the two stages, the latent scale, prompts, guidance, and the CLI."""

import math

import numpy as np
import pytest
import torch

from genlab.cli import main
from genlab.config import resolve
from genlab.data import load_dataset
from genlab.data.transforms import to_model
from genlab.errors import ConfigError
from genlab.latent.model import LDM, text_guidance
from genlab.run import RunDir
from genlab.training.trainer import batch_indices

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

AE_STEPS, STEPS = 20, 40


def tiny(steps=STEPS, **train):
    return resolve("digits-captions", {
        "model": {"channels": (16, 32), "norm_groups": 8, "attn_resolutions": (3, 2)},
        "latent": {"ae_channels": (16, 32), "ae_steps": AE_STEPS},
        "text": {"width": 16, "layers": 1, "heads": 2},
        "diffusion": {"timesteps": 50},
        # fp32 on every CPU: the tests check the latent scale and the bound by hand, in fp32 (auto would pick bf16
        # where the CPU has AVX512-BF16)
        "train": {"steps": steps, "batch_size": 64, "lr": 2e-3, "warmup": 5, "log_every": 5, "sample_every": 0,
                  "grid_steps": 5, "checkpoint_every": steps, "mixed_precision": "no", **train}}, family="ldm")


@pytest.fixture(scope="module")
def ldm_run(tmp_path_factory):
    from genlab.train import train

    run = tmp_path_factory.mktemp("ldm") / "run"
    train(tiny(), run, progress=False, say=lambda text: None)
    return run


def test_the_autoencoder_stage_comes_first_then_the_diffusion_stage(ldm_run):
    records = [r for r in RunDir(ldm_run).records() if "event" not in r and "loss" in r]
    stage1 = [r for r in records if r["step"] <= AE_STEPS]
    stage2 = [r for r in records if r["step"] > AE_STEPS + 5]  # windows wholly in the diffusion stage
    assert all("recon" in r and "kl" in r for r in stage1) and stage1[-1]["recon"] < stage1[0]["recon"]
    assert all("mse" in r and "recon" not in r for r in stage2)


def test_the_frozen_autoencoder_is_its_own_average(ldm_run):
    _, model, _, _ = RunDir(ldm_run).load(weights="model")
    _, ema, _, _ = RunDir(ldm_run).load(weights="ema")
    for (name, a), b in zip(model.ae.state_dict().items(), ema.ae.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert not all(torch.equal(a, b) for a, b in zip(model.unet.parameters(), ema.unet.parameters(), strict=True))


def test_the_latent_scale_gives_unit_variance_on_the_batch_it_was_measured_on(ldm_run):
    cfg, family, _, _ = RunDir(ldm_run).load(weights="model")
    ds = load_dataset("digits-captions", "train")
    batch = ds.images[batch_indices(len(ds.images), cfg.train.batch_size, cfg.train.seed, AE_STEPS)]
    with torch.no_grad():
        mean, _ = family.ae.encode(to_model(batch, cfg.data.levels))
    # the autoencoder is frozen from the first diffusion step on, so its weights then are its final ones
    assert float(family.latent_scale) > 0
    assert (mean * family.latent_scale).std().item() == pytest.approx(1.0, abs=1e-4)


def test_a_prompt_changes_the_samples_and_the_empty_prompt_is_the_unconditional_branch(ldm_run):
    _, family, _, _ = RunDir(ldm_run).load()
    with torch.no_grad():  # make the text's effect large, so a wrong wiring could not hide in rounding
        for p in family.unet.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    a = family.sample(3, seed=0, sampler="ddim", steps=5, prompts=["a thick 3 on the left"])
    b = family.sample(3, seed=0, sampler="ddim", steps=5, prompts=["a small 8"])
    assert a.dtype == torch.uint8 and a.shape == (3, 1, 12, 12) and not torch.equal(a, b)
    assert torch.equal(family.sample(3, seed=0, sampler="ddim", steps=5, prompts=["a small 8"], batch_size=1), b)
    # guidance: (1 + w) eps(z, empty) - w eps(z, empty) is eps(z, empty)
    null = family.encode_text(family.empty_tokens(1))
    z, t = torch.randn(4, *family.ae.latent_shape), torch.tensor([3, 10, 20, 40])
    cond = {k: v.expand(4, *v.shape[1:]) for k, v in null.items()}
    with torch.no_grad():
        plain = family.unet(z, t, **cond)
        guided = text_guidance(family.unet, 3.0, null)(z, t, **cond)
    assert torch.allclose(guided, plain, atol=1e-5)
    with pytest.raises(ConfigError, match="unknown word 'purple'"):
        family.sample(1, prompts=["a purple 3"])


def test_the_cli_samples_from_a_prompt_and_says_what_is_wrong(ldm_run, tmp_path, capsys):
    out = []
    for prompt in ("a thick 3 on the left", "a small 8"):
        npz = tmp_path / f"{len(out)}.npz"
        assert main(["sample", str(ldm_run), "--n", "4", "--prompt", prompt, "--guidance", "3", "--sampler", "ddim",
                     "--steps", "5", "--npz", str(npz), "--out", str(tmp_path / "g.png"), "--no-progress"]) == 0
        with np.load(npz) as z:
            out.append((z["samples"], str(z["protocol"])))
    assert "guidance" in out[0][1] and "a thick 3 on the left" in out[0][1]
    # NFE counted: two network rows per step under guidance (conditional and unconditional)
    assert '"nfe": 10' in out[0][1]
    capsys.readouterr()
    for argv, words in ((["--prompt", "a purple 3"], "unknown word 'purple'"), (["--class", "3"], "--prompt"),
                        (["--guidance", "-1"], "at least 0")):
        assert main(["sample", str(ldm_run), "--out", str(tmp_path / "x.png"), *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and words in err, err
    assert not (tmp_path / "x.png").exists()


def test_ldm_needs_captions_and_other_runs_refuse_a_prompt(tmp_path, capsys):
    assert main(["train", "ldm", "--data", "digits", "--out", str(tmp_path / "r")]) == 2
    assert "has no captions" in capsys.readouterr().err and not (tmp_path / "r").exists()
    assert isinstance(LDM.sampler_names, tuple) and "ddim" in LDM.sampler_names


def test_eval_prompts_is_for_text_runs_with_a_feature_network(ldm_run, tmp_path, capsys):
    assert main(["eval", str(ldm_run), "--metrics", "prompts", "--prompts-per-group", "2", "--steps", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "feature network" in err  # none is shipped for the 12x12 captioned digits
    assert main(["eval", str(ldm_run), "--metrics", "prompts", "--prompts-per-group", "0"]) == 2
    assert "--prompts-per-group must be at least 1" in capsys.readouterr().err
    assert main(["eval", str(ldm_run), "--metrics", "prompts", "--clip", str(ldm_run)]) == 2
    assert "is a ldm run on digits-captions; the CLIP score needs a run of genlab train clip" in capsys.readouterr().err
    assert main(["eval", str(ldm_run), "--metrics", "prompts", "--clip", str(tmp_path)]) == 2
    assert "is not a run directory" in capsys.readouterr().err


def test_a_frozen_clip_text_tower_conditions_the_model_unchanged(ldm_run, tmp_path, capsys):
    from genlab.train import train

    clip = tmp_path / "clip"
    clip_cfg = resolve("digits-captions", {"model": {"channels": (8, 16), "norm_groups": 8},
                                           "text": {"embed_dim": 8, "width": 8, "layers": 1, "heads": 2},
                                           "train": {"steps": 5, "batch_size": 32, "warmup": 1}}, family="clip")
    train(clip_cfg, clip, progress=False, say=lambda text: None)
    run = tmp_path / "ldm"
    cfg = resolve("digits-captions", {**{k: v for k, v in tiny(steps=8).to_dict().items() if k != "family"},
                                      "latent": {"ae_channels": (16, 32), "ae_steps": 4, "text_encoder": "clip",
                                                 "clip_run": str(clip)}}, family="ldm")
    train(cfg, run, progress=False, say=lambda text: None)
    saved = RunDir(run).read_config()
    assert saved.text == clip_cfg.text  # the tower's settings come from the CLIP run, not the flags
    _, clip_family, _, _ = RunDir(clip).load()
    for weights in ("model", "ema"):
        _, family, _, _ = RunDir(run).load(weights=weights)
        for (name, a), b in zip(clip_family.text_encoder.state_dict().items(), family.text.state_dict().values(), strict=True):
            assert torch.equal(a, b), (weights, name)
    assert main(["train", "ldm", "--data", "digits-captions", "--text-encoder", "clip", "--out", str(tmp_path / "x")]) == 2
    assert "add --clip RUN" in capsys.readouterr().err
    assert main(["train", "ldm", "--data", "digits-captions", "--text-encoder", "clip", "--clip", str(ldm_run),
                 "--out", str(tmp_path / "y")]) == 2
    assert "not a CLIP run" in capsys.readouterr().err and not (tmp_path / "y").exists()


def test_repeated_prompts_make_a_grid_of_rows(ldm_run, tmp_path, capsys):
    npz = tmp_path / "grid.npz"
    assert main(["sample", str(ldm_run), "--n", "3", "--prompt", "a 3", "--prompt", "a thin 7 on the right",
                 "--sampler", "ddim", "--steps", "3", "--npz", str(npz), "--out", str(tmp_path / "grid.png")]) == 0
    assert "6 samples" in capsys.readouterr().out
    with np.load(npz) as z:
        assert z["samples"].shape == (6, 1, 12, 12) and "a thin 7 on the right" in str(z["protocol"])
    from PIL import Image

    with Image.open(tmp_path / "grid.png") as im:  # 3 per row, 2 rows
        assert im.size[0] > im.size[1]


def test_the_continuous_decoder_term_is_the_gaussian_density():
    from genlab.diffusion.process import Denoiser, GaussianDiffusion
    from genlab.distributions import gaussian_log_density

    x, mean, log_scale = torch.randn(5, 3), torch.randn(5, 3), torch.randn(5, 3) * 0.3
    expected = torch.distributions.Normal(mean.double(), log_scale.double().exp()).log_prob(x.double())
    assert torch.allclose(gaussian_log_density(x, mean, log_scale), expected)
    diffusion = GaussianDiffusion.from_schedule("linear", 50)
    net = lambda xt, t: 0.1 * xt  # noqa: E731 - any eps-predictor
    x0 = torch.randn(4, 2, 3, 3)
    t = torch.zeros(4, dtype=torch.long)
    xt = diffusion.q_sample(x0, t, torch.randn_like(x0))
    terms, _ = diffusion.vb_terms(Denoiser(net), x0, xt, t, 0, clip_denoised=False)
    p = diffusion.p_mean_variance(Denoiser(net), xt, t, clip_denoised=False)
    by_hand = -torch.distributions.Normal(p["mean"].double(), (0.5 * p["log_variance"]).double().exp()).log_prob(x0.double())
    assert torch.allclose(terms.double(), by_hand.flatten(1).sum(1), rtol=1e-5)


def test_the_latent_bound_is_decoder_plus_latent_bound_minus_entropy(ldm_run):
    from genlab.evaluate import measure_latent_bpd

    cfg, family, _, _ = RunDir(ldm_run).load()
    train, test = load_dataset("digits-captions", "train"), load_dataset("digits-captions", "test")
    sigma = family.decoder_sigma(train.images[:64], seed=3)
    gen = torch.Generator().manual_seed(3)  # the same z draws by hand
    x = to_model(train.images[:64], cfg.data.levels)
    mean, logvar = family.ae.encode(x)
    z = family.ae.sample_latent(mean, logvar, torch.randn(mean.shape, generator=gen))
    assert sigma == pytest.approx((family.ae.decode(z) - x).pow(2).mean().sqrt().item(), rel=1e-5)
    r = measure_latent_bpd(family, cfg, test.images[:6], train.images[:64], seed=3)  # all 50 terms: exact in t
    assert r["n"] == 6 and r["t_samples"] is None and r["latent_decoder_sigma"] == pytest.approx(sigma, rel=1e-6)
    parts = r["latent_decoder_bpd"] + r["latent_prior_bpd"] - r["latent_entropy_bpd"]
    assert r["latent_bpd_bound"] == pytest.approx(parts, rel=1e-9)
    assert r["latent_decoder_bpd"] > 0 and math.isfinite(r["latent_bpd_bound"]) and r["latent_bpd_se"] > 0
    D, d = 144, math.prod(family.ae.latent_shape)
    assert r["latent_bits_per_latent_dim"] == pytest.approx(r["latent_prior_bpd"] * D / d)
    fresh = LDM.from_config(cfg)  # an autoencoder-stage model: no latent scale yet
    with pytest.raises(ValueError, match="autoencoder stage"):
        fresh.latent_bound(test.images[:2], sigma)


def test_genlab_eval_measures_the_latent_bound_under_its_own_name(ldm_run, capsys):
    import json

    assert main(["eval", str(ldm_run), "--metrics", "latent-bpd", "--limit", "4", "--t-samples", "5", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["latent_n"] == 4 and r["latent_t_samples"] == 5 and r["decoder_fit_n"] == 1000 and "bpd" not in r
    assert RunDir(ldm_run).evaluations()[-1]["latent_bpd_bound"] == r["latent_bpd_bound"]
    assert main(["eval", str(ldm_run), "--metrics", "latent-bpd", "--limit", "2", "--t-samples", "2"]) == 0
    out = capsys.readouterr().out
    assert "not comparable with a pixel model's bits/dim" in out and "total (upper bound)" in out
    assert main(["eval", str(ldm_run)]) == 2  # the default metric, bpd, is a pixel-space bound
    assert "--metrics latent-bpd" in capsys.readouterr().err
    assert main(["eval", str(ldm_run), "--metrics", "fid", "--clip", str(ldm_run)]) == 2
    assert "add prompts to --metrics" in capsys.readouterr().err
