"""Conditioning and guidance: classifier-free guidance, classifier guidance, label dropout, the CLI.

The oracle: two 1-D Gaussian classes, x0 | y=k ~ N(MU_k, S^2) with p(y=k) = 1/2. Then
x_t | y=k ~ N(sqrt(ab) MU_k, ab S^2 + 1 - ab), so the class-conditional eps-denoiser,
the unconditional one (the posterior-weighted mixture of the two) and the exact
noise-conditional classifier p(y | x_t) are all closed form, and
eps(x_t | y) = eps(x_t) - sqrt(1 - ab) grad log p(y | x_t) holds exactly.
"""

import json
import math

import numpy as np
import pytest
import torch

from conftest import TINY
from genlab.cli import build_parser, main
from genlab.diffusion import Denoiser, GaussianDiffusion, ddim_sample
from genlab.diffusion.guidance import NoisyClassifier, cfg, classifier_free_guidance, classifier_guidance
from genlab.diffusion.model import DDPM
from genlab.diffusion.process import _extract
from genlab.run import load_run

MUS = torch.tensor([-0.6, 0.5], dtype=torch.float64)
S = 0.3


def _ab(diff, t, x):
    return _extract(diff.alpha_bar, t, x)


def mixture_eps(diff):
    """(eps(x_t, t, y) of each class, eps(x_t, t) of the mixture, logits of p(y | x_t)) in closed form."""

    def per_class(xt, t):  # [B, 1] -> [B, 2]: the eps-oracle of each class (tests/test_oracle.py)
        ab = _ab(diff, t, xt)
        return (1 - ab).sqrt() * (xt - ab.sqrt() * MUS) / (ab * S**2 + 1 - ab)

    def logits(xt, t):  # log N(x_t; sqrt(ab) mu_k, ab s^2 + 1 - ab) + log 1/2, [B, 2]
        ab = _ab(diff, t, xt)
        var = ab * S**2 + 1 - ab
        return -0.5 * (xt - ab.sqrt() * MUS) ** 2 / var - 0.5 * torch.log(2 * math.pi * var) + math.log(0.5)

    def cond(xt, t, y=None):
        return per_class(xt, t).gather(1, y[:, None])

    def uncond(xt, t, y=None):  # E[eps | x_t] = sum_k p(k | x_t) E[eps | x_t, k]
        return (torch.softmax(logits(xt, t), -1) * per_class(xt, t)).sum(1, keepdim=True)

    return cond, uncond, logits


def in_parameterization(eps_net, diff, p):
    """The same predictor expressed as an x0 or v network (exact conversions at fixed x_t)."""

    def net(xt, t, **cond):
        eps = eps_net(xt, t, **cond)
        ab = _ab(diff, t, xt)
        x0 = (xt - (1 - ab).sqrt() * eps) / ab.sqrt()
        return {"eps": eps, "x0": x0, "v": ab.sqrt() * eps - (1 - ab).sqrt() * x0}[p]

    return Denoiser(net, p)


@pytest.fixture(scope="module")
def diff():
    return GaussianDiffusion.from_schedule("linear", 1000)


# ----- classifier-free guidance -------------------------------------------------------------

def label_net(x, t, y=None):
    """A stand-in conditional network whose output depends on x, t and the label (10 = null)."""
    return torch.sin(x * (y.to(x.dtype) + 1).view(-1, 1, 1, 1)) + 0.01 * t.to(x.dtype).view(-1, 1, 1, 1)


def test_cfg_w0_is_the_conditional_and_w_minus_1_the_unconditional_denoiser():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 2, 3, 3, generator=gen)
    t = torch.tensor([0, 5, 9, 17, 33, 49])
    y = torch.tensor([0, 1, 2, 3, 9, 4])
    base = Denoiser(label_net, "eps")
    assert torch.equal(cfg(base, 0.0, null_label=10)(x, t, y=y), label_net(x, t, y=y))
    assert torch.equal(cfg(base, -1.0, null_label=10)(x, t, y=y), label_net(x, t, y=torch.full_like(y, 10)))
    w = 2.0
    expected = (1 + w) * label_net(x, t, y=y) - w * label_net(x, t, y=torch.full_like(y, 10))
    assert torch.allclose(cfg(base, w, null_label=10)(x, t, y=y), expected, atol=1e-6)
    assert cfg is classifier_free_guidance


def test_cfg_guides_only_the_prediction_half_of_a_learned_variance_output():
    def net(x, t, y=None):  # 2C channels: prediction, then the variance output
        return torch.cat([label_net(x, t, y), 0.1 * label_net(x, t, y)], 1)

    gen = torch.Generator().manual_seed(1)
    x = torch.randn(4, 1, 3, 3, generator=gen)
    t, y = torch.tensor([1, 2, 3, 4]), torch.tensor([0, 3, 5, 7])
    out = cfg(Denoiser(net, "eps"), 3.0, null_label=10)(x, t, y=y)
    null = torch.full_like(y, 10)
    assert out.shape == (4, 2, 3, 3)
    assert torch.allclose(out[:, :1], 4 * label_net(x, t, y) - 3 * label_net(x, t, null), atol=1e-6)
    assert torch.equal(out[:, 1:], 0.1 * label_net(x, t, y))  # the conditional pass's variance


def test_cfg_makes_one_network_call_per_step_on_a_doubled_batch():
    calls = []

    def net(x, t, y=None):
        calls.append((x.shape[0], y.tolist()))
        return torch.zeros_like(x)

    diff = GaussianDiffusion.from_schedule("linear", 50)
    y = torch.tensor([3, 1, 4])
    ddim_sample(cfg(Denoiser(net, "eps"), 2.0, null_label=10), diff, torch.randn(3, 1, 4, 4), steps=5, y=y)
    assert len(calls) == 5
    assert all(b == 6 and labels == [3, 1, 4, 10, 10, 10] for b, labels in calls)


@pytest.mark.parametrize("p", ["x0", "v"])
def test_cfg_in_x0_or_v_space_is_cfg_in_eps_space(diff, p):
    """The guided x0 / v predictions convert to exactly the guided eps (the combination is affine)."""
    cond, uncond, _ = mixture_eps(diff)

    def eps_net(xt, t, y=None):
        return torch.where((y == 2)[:, None], uncond(xt, t), cond(xt, t, y=y.clamp(max=1)))

    gen = torch.Generator().manual_seed(2)
    xt = torch.randn(64, 1, generator=gen, dtype=torch.float64)
    t = torch.randint(0, 1000, (64,), generator=gen)
    y = torch.randint(0, 2, (64,), generator=gen)
    w = 3.0
    guided_eps = cfg(Denoiser(eps_net, "eps"), w, null_label=2)(xt, t, y=y)
    out = cfg(in_parameterization(eps_net, diff, p), w, null_label=2)(xt, t, y=y)
    x0 = out if p == "x0" else diff.predict_x0_from_v(xt, t, out)
    assert torch.allclose(diff.predict_eps_from_x0(xt, t, x0), guided_eps, atol=1e-9)


# ----- classifier guidance ------------------------------------------------------------------

@pytest.mark.parametrize("p", ["eps", "x0", "v"])
def test_classifier_guidance_with_the_exact_classifier_is_the_exact_conditional_denoiser(diff, p):
    """eps(x_t | y) = eps(x_t) - sqrt(1 - ab) grad log p(y | x_t) (Dhariwal & Nichol Alg. 2, s = 1), on a
    respaced process (the denoiser sees original-schedule indices), under no_grad as in the samplers."""
    cond, uncond, logits = mixture_eps(diff)
    guided = classifier_guidance(in_parameterization(uncond, diff, p), diff, logits, scale=1.0)
    exact = in_parameterization(cond, diff, p)
    proc = diff.respaced(range(0, 1000, 37))
    gen = torch.Generator().manual_seed(3)
    B = 200
    xt = 1.5 * torch.randn(B, 1, generator=gen, dtype=torch.float64)
    t = torch.randint(0, proc.num_timesteps, (B,), generator=gen)
    y = torch.randint(0, 2, (B,), generator=gen)
    with torch.no_grad():
        got = proc.p_mean_variance(guided, xt, t, clip_denoised=False, y=y)
        want = proc.p_mean_variance(exact, xt, t, clip_denoised=False, y=y)
        plain = proc.p_mean_variance(in_parameterization(uncond, diff, p), xt, t, clip_denoised=False)
    assert torch.allclose(got["eps"], want["eps"], atol=1e-9, rtol=1e-7)
    assert torch.allclose(got["mean"], want["mean"], atol=1e-9, rtol=1e-7)
    assert not torch.allclose(plain["eps"], want["eps"], atol=1e-3)  # the guidance did something


def test_classifier_guidance_scale_0_is_the_unguided_denoiser(diff):
    cond, uncond, logits = mixture_eps(diff)
    xt = torch.linspace(-2, 2, 9, dtype=torch.float64)[:, None]
    t, y = torch.full((9,), 500), torch.zeros(9, dtype=torch.long)
    assert torch.equal(classifier_guidance(Denoiser(uncond), diff, logits, 0.0)(xt, t, y=y), uncond(xt, t))
    # scale s multiplies the shift: s = 2 moves eps twice as far as s = 1
    one = classifier_guidance(Denoiser(uncond), diff, logits, 1.0)(xt, t, y=y) - uncond(xt, t)
    two = classifier_guidance(Denoiser(uncond), diff, logits, 2.0)(xt, t, y=y) - uncond(xt, t)
    assert torch.allclose(two, 2 * one, atol=1e-12)


# ----- label dropout ------------------------------------------------------------------------

class RecordingNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.seen = []

    def forward(self, x, t, y=None):
        self.seen.append(None if y is None else y.clone())
        return self.w * x


def test_label_dropout_rate_uses_the_given_generator_and_is_reproducible():
    net = RecordingNet()
    ddpm = DDPM(net, GaussianDiffusion.from_schedule("linear", 50), "eps", "simple", (1, 2, 2), 17,
                num_classes=10, cond_drop_prob=0.25)
    images = torch.zeros(8000, 1, 2, 2, dtype=torch.uint8)
    labels = torch.arange(8000) % 10
    ddpm.losses(images, torch.Generator().manual_seed(7), labels)
    torch.manual_seed(123)  # the global RNG must not matter
    ddpm.losses(images, torch.Generator().manual_seed(7), labels)
    a, b = net.seen
    assert torch.equal(a, b)
    dropped = a == 10
    assert abs(dropped.float().mean().item() - 0.25) < 4 * math.sqrt(0.25 * 0.75 / 8000)
    assert torch.equal(a[~dropped], labels[~dropped])  # kept labels are the data's
    ddpm.losses(images, torch.Generator().manual_seed(8), labels)
    assert not torch.equal(net.seen[-1], a)


def test_an_unconditional_model_draws_the_same_noise_as_before():
    """Label dropout draws after t and eps, so unconditional training is unchanged by the feature."""
    diff = GaussianDiffusion.from_schedule("linear", 50)
    plain = DDPM(RecordingNet(), diff, "eps", "simple", (1, 2, 2), 17)
    images = torch.randint(0, 17, (16, 1, 2, 2), dtype=torch.uint8)
    gen = torch.Generator().manual_seed(0)
    plain.losses(images, gen, labels=torch.zeros(16, dtype=torch.long))
    reference = torch.Generator().manual_seed(0)
    torch.randint(0, 50, (16,), generator=reference)
    torch.randn(images.shape, generator=reference)
    assert torch.equal(gen.get_state(), reference.get_state())
    assert plain.net.seen == [None]


# ----- the command line ---------------------------------------------------------------------

def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_sentence_error(code, err, *words):
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("genlab: error: ") and lines[0].endswith("."), err
    for w in words:
        assert w in lines[0], (w, lines[0])


FAST = ["--warmup", "5", "--lr", "2e-3", "--eval-bpd", "false", "--checkpoint-every", "0"]


@pytest.fixture(scope="module")
def cond_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cond") / "run"
    assert main(["train", *TINY, *FAST, "--class-conditional", "--steps", "40", "--mixed-precision", "no",
                 "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def clf_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("clf") / "run"
    assert main(["train", "classifier", *TINY, *FAST, "--steps", "30", "--eval-limit", "64", "--out", str(out)]) == 0
    return out


def test_train_family_is_an_optional_positional():
    p = build_parser()
    assert p.parse_args(["train"]).family is None
    assert p.parse_args(["train", "--data", "mnist"]).family is None
    assert p.parse_args(["train", "classifier", "--data", "mnist"]).family == "classifier"
    args = p.parse_args(["train", "--class-conditional"])
    assert args.__dict__["model.class_conditional"] == "true"


def test_a_conditional_run_trains_reloads_and_samples_with_guidance(cond_run, tmp_path, capsys):
    from genlab.config import from_dict
    from genlab.data import load_dataset
    from genlab.run import build_family

    saved = json.loads((cond_run / "config.json").read_text())
    assert saved["model"]["class_conditional"] is True and saved["model"]["cond_drop_prob"] == 0.1
    cfg, family, _, _ = load_run(cond_run, weights="model")
    assert family.num_classes == 10 and family.net.label_embed.num_embeddings == 11
    torch.manual_seed(cfg.train.seed)
    initial = build_family(from_dict(saved))  # the weights training started from (cmd_train seeds them so)
    ds = load_dataset("digits", "train")

    def fixed_loss(f):
        with torch.no_grad():
            return f.losses(ds.images[:256], torch.Generator().manual_seed(5), ds.labels[:256])["loss"].mean().item()

    assert fixed_loss(family) < fixed_loss(initial)

    npz = tmp_path / "s.npz"
    code, out, err = run_cli(capsys, "sample", cond_run, "--class", 3, "--guidance", 2, "--n", 6, "--sampler", "ddim",
                             "--steps", 4, "--npz", npz, "--out", tmp_path / "s.png", "--no-progress")
    assert code == 0, err
    with np.load(npz) as z:
        assert z["labels"].tolist() == [3] * 6
        protocol = json.loads(str(z["protocol"]))
    assert protocol["class"] == 3 and protocol["guidance"] == 2.0 and protocol["guidance_type"] == "classifier-free"
    assert protocol["nfe"] == 8  # one doubled network call per step
    # no --class: classes cycle, and w = 0 (plain conditional) costs one pass per step
    code, out, err = run_cli(capsys, "sample", cond_run, "--n", 12, "--sampler", "ddim", "--steps", 4,
                             "--npz", npz, "--out", tmp_path / "s.png", "--no-progress")
    assert code == 0, err
    with np.load(npz) as z:
        assert z["labels"].tolist() == [i % 10 for i in range(12)]
        assert json.loads(str(z["protocol"]))["nfe"] == 4


def test_train_classifier_logs_its_accuracy(clf_run):
    saved = json.loads((clf_run / "config.json").read_text())
    assert saved["family"] == "classifier"
    records = [json.loads(line) for line in (clf_run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if "event" not in r]
    assert train and all(0 <= r["accuracy"] <= 1 and r["loss"] > 0 for r in train)
    ev = [r for r in records if r.get("event") == "eval"]
    assert ev and ev[-1]["n"] == 64 and 0 <= ev[-1]["accuracy"] <= 1 and 0 <= ev[-1]["accuracy_t0"] <= 1
    cfg, family, _, _ = load_run(clf_run)
    assert isinstance(family, NoisyClassifier) and family.num_classes == 10
    logits = family.net(torch.zeros(3, 1, 8, 8), torch.tensor([0, 10, 49]))
    assert logits.shape == (3, 10)


def test_sampling_an_unconditional_model_with_a_classifier(run_dir, clf_run, tmp_path, capsys):
    npz = tmp_path / "g.npz"
    code, out, err = run_cli(capsys, "sample", run_dir, "--classifier", clf_run, "--class", 7, "--guidance", 3,
                             "--n", 4, "--sampler", "ddim", "--steps", 3, "--npz", npz, "--out", tmp_path / "g.png",
                             "--no-progress")
    assert code == 0, err
    with np.load(npz) as z:
        assert z["labels"].tolist() == [7] * 4
        protocol = json.loads(str(z["protocol"]))
    assert protocol["guidance_type"] == "classifier" and protocol["guidance"] == 3.0
    assert protocol["classifier"] == str(clf_run)
    # a different scale gives different images from the same seed
    code, _, err = run_cli(capsys, "sample", run_dir, "--classifier", clf_run, "--class", 7, "--guidance", 0,
                           "--n", 4, "--sampler", "ddim", "--steps", 3, "--npz", tmp_path / "h.npz",
                           "--out", tmp_path / "h.png", "--no-progress")
    assert code == 0, err
    with np.load(npz) as a, np.load(tmp_path / "h.npz") as b:
        assert not np.array_equal(a["samples"], b["samples"])


def test_bad_conditioning_gives_one_sentence_and_status_2(run_dir, cond_run, clf_run, tmp_path, capsys):
    base = ["--n", 2, "--steps", 2, "--sampler", "ddim", "--out", tmp_path / "x.png", "--no-progress"]
    code, _, err = run_cli(capsys, "sample", run_dir, "--class", 3, *base)
    assert_one_sentence_error(code, err, "unconditional", "--classifier")
    code, _, err = run_cli(capsys, "sample", run_dir, "--guidance", 2, *base)
    assert_one_sentence_error(code, err, "unconditional", "--guidance")
    code, _, err = run_cli(capsys, "sample", cond_run, "--class", 10, *base)
    assert_one_sentence_error(code, err, "--class 10", "0..9")
    code, _, err = run_cli(capsys, "sample", cond_run, "--class", "three", *base)
    assert_one_sentence_error(code, err, "--class")
    code, _, err = run_cli(capsys, "sample", run_dir, "--classifier", cond_run, *base)
    assert_one_sentence_error(code, err, "not a classifier")
    code, _, err = run_cli(capsys, "sample", clf_run, *base)
    assert_one_sentence_error(code, err, "classifier run")
    other = tmp_path / "clf1000"
    other.mkdir()
    saved = json.loads((clf_run / "config.json").read_text())
    saved["diffusion"]["timesteps"] = 1000
    (other / "config.json").write_text(json.dumps(saved))
    code, _, err = run_cli(capsys, "sample", run_dir, "--classifier", other, *base)
    assert_one_sentence_error(code, err, "--timesteps 50")
    code, _, err = run_cli(capsys, "train", "classifier", "--data", "toy2d", "--steps", 1, "--no-progress",
                           "--out", tmp_path / "toy")
    assert_one_sentence_error(code, err, "image data")
    code, _, err = run_cli(capsys, "train", "--cond-drop", 1.5, "--out", tmp_path / "bad")
    assert_one_sentence_error(code, err, "--cond-drop")
