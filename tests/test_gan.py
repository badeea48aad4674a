"""The GAN family: the objectives against their closed forms first, then training, sampling and resume."""

import dataclasses
import json
import math

import pytest
import torch
from torch import nn

from genlab.config import resolve
from genlab.data import load_dataset
from genlab.errors import ConfigError
from genlab.gan import GAN, coverage_monitor, discriminator_loss, generator_loss, gradient_penalty, mode_coverage
from genlab.gan.monitor import histogram_summary
from genlab.nets.dcgan import DCGANDiscriminator, DCGANGenerator
from genlab.training.trainer import Trainer

SHAPES = {"digits": ((1, 8, 8), 17, 10), "toy2d": ((2,), 0, 8)}


def gan_cfg(data="digits", model=None, train=None, **gan):
    model = {"channels": (16, 32), **(model or {})} if data != "toy2d" else (model or {})
    train = {"batch_size": 32, "steps": 4, "log_every": 1, "sample_every": 0, "checkpoint_every": 0, **(train or {})}
    cfg = resolve(None, {}, {"data": {"name": data}, "model": model, "train": train, "gan": gan}, family="gan")
    shape, levels, num_classes = SHAPES[data]
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, shape=shape, levels=levels, num_classes=num_classes))


def build(cfg):
    with torch.random.fork_rng():
        torch.manual_seed(cfg.train.seed)
        return GAN.from_config(cfg)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train")


def eight_gaussians():
    ds = load_dataset("toy2d", "train", variant="8gaussians")
    angle = torch.arange(8) * (math.pi / 4)
    centres = torch.stack([angle.cos(), angle.sin()], 1) * 4 / math.sqrt(2)
    return ds, centres, 3 * 0.5 / math.sqrt(2)  # within 3 standard deviations of a centre


# ----- the objectives in closed form ----------------------------------------------------------
def test_saturating_generator_loss_vanishes_where_the_non_saturating_one_does_not():
    # early in training D rejects the fakes: D(G(z)) = sigmoid(l) -> 0 as the logit l -> -inf
    for l0 in (-5.0, -10.0, -20.0):
        grads = {}
        for loss in ("minimax", "ns"):
            logit = torch.tensor([l0], requires_grad=True)
            generator_loss(loss, logit).backward()
            grads[loss] = logit.grad.item()
        assert grads["minimax"] == pytest.approx(-torch.sigmoid(torch.tensor(l0)).item(), rel=1e-4)  # -> 0
        assert grads["ns"] == pytest.approx(-1.0, abs=1e-2)  # d/dl -log sigmoid(l) = -(1 - sigmoid(l)) -> -1
        assert abs(grads["minimax"]) < 1e-2 and grads["minimax"] < 0  # both push l up; only NS with force
    # the losses themselves: minimax is log(1 - D), ns is -log D
    logits = torch.tensor([0.3, -1.2])
    assert generator_loss("minimax", logits).item() == pytest.approx(torch.log(1 - torch.sigmoid(logits)).mean().item(), rel=1e-5)
    assert generator_loss("ns", logits).item() == pytest.approx(-torch.log(torch.sigmoid(logits)).mean().item(), rel=1e-5)


def test_optimal_discriminator_minimises_the_d_loss_and_the_value_is_jsd():
    # discrete data and generator distributions on 3 points, written as batches with the exact proportions
    counts_p, counts_q = torch.tensor([5, 3, 2]), torch.tensor([1, 6, 3])
    p, q = counts_p / 10.0, counts_q / 10.0
    real_idx, fake_idx = torch.arange(3).repeat_interleave(counts_p), torch.arange(3).repeat_interleave(counts_q)

    def d_loss(logits):  # one discriminator logit per point
        return discriminator_loss(logits[real_idx], logits[fake_idx])

    d_star = p / (p + q)  # Goodfellow et al. Proposition 1
    logit_star = torch.log(d_star / (1 - d_star))
    m = (p + q) / 2
    jsd = 0.5 * (p * (p / m).log()).sum() + 0.5 * (q * (q / m).log()).sum()
    # Theorem 1: at D*, V(D*, G) = -log 4 + 2 JSD(p_data || p_g), and the D loss is -V
    assert -d_loss(logit_star).item() == pytest.approx(-math.log(4) + 2 * jsd.item(), abs=1e-6)
    # D* is the minimiser: gradient descent from D = 1/2 finds it, and every perturbation costs
    logits = torch.zeros(3, requires_grad=True)
    opt = torch.optim.LBFGS([logits], max_iter=200, tolerance_grad=1e-10, tolerance_change=1e-12)

    def closure():
        opt.zero_grad()
        loss = d_loss(logits)
        loss.backward()
        return loss

    opt.step(closure)
    assert torch.allclose(torch.sigmoid(logits.detach()), d_star, atol=1e-4)
    for delta in torch.eye(3).repeat(2, 1) * torch.tensor([0.1] * 3 + [-0.1] * 3)[:, None]:
        assert d_loss(logit_star + delta) > d_loss(logit_star)
    # equal distributions: D* = 1/2 everywhere and the value is -log 4
    assert discriminator_loss(torch.zeros(4), torch.zeros(4)).item() == pytest.approx(math.log(4))


class LinearCritic(nn.Module):
    """f(x) = w . x: its gradient is w everywhere, so the penalty is (||w|| - 1)^2 exactly."""

    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(w)

    def forward(self, x, y=None):
        return x.flatten(1) @ self.w.to(x.dtype)


def test_gradient_penalty_of_a_linear_critic():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(64, generator=gen) * 0.3
    critic = LinearCritic(w)
    real, fake = torch.rand(5, 1, 8, 8, generator=gen), torch.rand(5, 1, 8, 8, generator=gen)
    expected = (w.norm() - 1) ** 2
    gp = gradient_penalty(critic, real, fake, torch.rand(5, generator=gen))
    assert torch.allclose(gp, expected.expand(5), rtol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # computed in float32 even under autocast
        gp_bf16 = gradient_penalty(critic, real, fake, torch.rand(5, generator=gen))
    assert gp_bf16.dtype == torch.float32 and torch.allclose(gp_bf16, expected.expand(5), rtol=1e-5)
    # the penalty trains the critic: its gradient is d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w||
    gp.mean().backward()
    assert torch.allclose(critic.w.grad, 2 * (w.norm() - 1) * w / w.norm(), rtol=1e-4)

    # the family's critic loss is f(G(z)) - f(x) + lambda * penalty
    family = build(gan_cfg(loss="wgan-gp", gp_weight=7.0))
    family.disc = LinearCritic(w)
    batch = load_dataset("digits", "train").images[:16]
    terms = family.discriminator_terms(family.to_model(batch), None, torch.Generator().manual_seed(1))
    assert terms["gp"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert terms["d_loss"].item() == pytest.approx(-terms["wasserstein"].item() + 7.0 * expected.item(), rel=1e-5, abs=1e-6)


# ----- the update schedule ----------------------------------------------------------------
def test_k_discriminator_steps_per_generator_step(tmp_path, digits):
    family = build(gan_cfg(d_steps=3))
    calls = []
    gen = torch.Generator().manual_seed(0)
    for step in range(9):
        family.train_step(digits.images[:16], gen, None, step, lambda name, loss: calls.append(name))
    assert calls == ["d", "d", "d", "g"] * 3  # G after every k-th D update (Algorithm 1, Goodfellow et al.)
    # through the Trainer: the two Adams count their own steps
    cfg = gan_cfg(d_steps=3, train={"steps": 6})
    trainer = Trainer(build(cfg), cfg, tmp_path / "run", digits.images, progress=False)
    trainer.fit()
    d_opt, g_opt = trainer.optimizers["d"], trainer.optimizers["g"]
    assert {int(s["step"]) for s in d_opt.state.values()} == {6}
    assert {int(s["step"]) for s in g_opt.state.values()} == {2}
    # the default k depends on the loss
    assert build(gan_cfg()).d_steps == 1 and build(gan_cfg(loss="wgan-gp")).d_steps == 5


def test_the_discriminator_step_does_not_reach_the_generator(digits):
    family = build(gan_cfg())
    x = family.to_model(digits.images[:16])
    terms = family.discriminator_terms(x, None, torch.Generator().manual_seed(0))
    terms["d_loss"].backward()
    assert all(p.grad is None for p in family.net.parameters())  # the fakes are detached
    assert all(p.grad is not None for p in family.disc.parameters())
    g_loss = family.generator_terms(16, None, torch.Generator().manual_seed(0), x.device)
    g_loss.backward()
    assert all(p.grad is not None for p in family.net.parameters())


def test_defaults_follow_the_loss():
    ns = build(gan_cfg(train={"lr": 3e-4}))
    groups = ns.optimizer_groups()
    assert groups["d"]["betas"] == (0.5, 0.999) and groups["g"]["lr"] == groups["d"]["lr"] == 3e-4  # DCGAN
    assert {id(p) for p in groups["g"]["params"]} == {id(p) for p in ns.net.parameters()}
    assert {id(p) for p in groups["d"]["params"]} == {id(p) for p in ns.disc.parameters()}
    wgan = build(gan_cfg(loss="wgan-gp", d_lr=1e-4, beta1=0.2))
    groups = wgan.optimizer_groups()
    assert groups["g"]["betas"] == (0.2, 0.9) and groups["d"]["lr"] == 1e-4 and groups["g"]["lr"] == 2e-4
    assert build(gan_cfg(loss="wgan-gp")).betas == (0.0, 0.9)  # WGAN-GP's Adam
    # the critic has no batch norm (the penalty is per example); the DCGAN discriminator has
    assert not any(isinstance(m, nn.BatchNorm2d) for m in wgan.disc.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in ns.disc.modules())
    with pytest.raises(ConfigError, match="model.class_conditional needs labelled data"):
        cfg = gan_cfg(model={"class_conditional": True})
        GAN.from_config(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, num_classes=0)))


@pytest.mark.parametrize("shape,channels", [((1, 8, 8), (32, 64)), ((1, 28, 28), (32, 64, 64)), ((3, 32, 32), (16, 32, 64))])
def test_dcgan_networks_follow_the_guidelines(shape, channels):
    G, D = DCGANGenerator(16, shape, channels, num_classes=10), DCGANDiscriminator(shape, channels, num_classes=10)
    z, y = torch.randn(3, 16), torch.tensor([0, 4, 9])
    x = G(z, y)
    assert x.shape == (3, *shape) and x.abs().max() < 1  # tanh output
    assert D(x, y).shape == (3,)
    for net in (G, D):  # strided convolutions, no pooling, no hidden fully connected layers
        assert not any(isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)) for m in net.modules())
        assert sum(isinstance(m, nn.Linear) for m in net.modules()) == 1
    # batch norm in G everywhere but the output, in D everywhere but the input
    assert sum(isinstance(m, nn.BatchNorm2d) for m in G.modules()) == len(channels)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in D.modules()) == len(channels) - 1
    assert isinstance(D.body[1], nn.LeakyReLU) and D.body[1].negative_slope == 0.2


# ----- training ---------------------------------------------------------------------------
def test_non_saturating_gan_covers_the_8_gaussians(tmp_path):
    ds, centres, radius = eight_gaussians()
    cfg = gan_cfg("toy2d", train={"steps": 1500, "batch_size": 128, "lr": 1e-3, "log_every": 500, "ema_decay": 0.99,
                                  "mixed_precision": "no"})
    trainer = Trainer(build(cfg), cfg, tmp_path / "run", ds.points, progress=False)
    trainer.fit()
    points = trainer.ema.model.sample(2000, seed=1)
    assert points.shape == (2000, 2) and points.dtype == torch.float32
    cover = mode_coverage(points, centres, radius)
    assert cover["modes_covered"] == 8, cover
    assert min(cover["mode_histogram"]) > 0.05, cover  # every mode a reasonable share (1/8 is 0.125)
    assert cover["near_mode"] > 0.8, cover  # most samples near a mode, not smeared between them


def test_conditional_gan_draws_the_asked_mode(tmp_path):
    ds, centres, radius = eight_gaussians()
    cfg = gan_cfg("toy2d", model={"class_conditional": True, "hidden": 64},
                  train={"steps": 600, "batch_size": 128, "lr": 1e-3, "log_every": 300, "ema_decay": 0.5, "mixed_precision": "no"})
    family = build(cfg)
    assert family.uses_labels and family.num_classes == 8
    trainer = Trainer(family, cfg, tmp_path / "run", ds.points, progress=False, labels=ds.labels)
    trainer.fit()
    model = trainer.ema.model
    labels = torch.arange(400) % 8
    points = model.sample(400, seed=2, labels=labels)
    nearest = torch.cdist(points, centres).argmin(1)
    assert (nearest == labels).float().mean() > 0.9  # component c of the mixture is mode c
    assert torch.equal(model.sample(16, seed=2), model.sample(16, seed=2, labels=torch.arange(16) % 8))  # default i % K
    with pytest.raises(ConfigError, match="does not exist"):
        model.sample(2, labels=torch.tensor([0, 8]))
    with pytest.raises(ConfigError, match="unconditional"):
        build(gan_cfg("toy2d")).sample(2, labels=torch.tensor([0, 1]))


def test_conditional_dcgan_trains_on_labelled_digits(tmp_path, digits):
    cfg = gan_cfg(model={"class_conditional": True}, train={"steps": 3})
    trainer = Trainer(build(cfg), cfg, tmp_path / "run", digits.images, progress=False, labels=digits.labels)
    trainer.fit()
    x = trainer.ema.model.sample(20, seed=0, labels=torch.full((20,), 3))
    assert x.shape == (20, 1, 8, 8) and x.dtype == torch.uint8 and int(x.max()) <= 16
    raw = [trainer.unwrapped.sample(20, seed=0, labels=torch.full((20,), c), raw=True) for c in (3, 7)]
    assert not torch.allclose(raw[0], raw[1])  # the label matters


@pytest.mark.parametrize("loss", ["wgan-gp", "minimax"])
def test_other_losses_train_with_finite_terms_under_bf16(tmp_path, digits, loss):
    cfg = gan_cfg(loss=loss, d_steps=2, train={"steps": 6, "mixed_precision": "bf16"})
    trainer = Trainer(build(cfg), cfg, tmp_path / "run", digits.images, progress=False)
    trainer.fit()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 6
    keys = {"wasserstein", "gp"} if loss == "wgan-gp" else {"d_real", "d_fake"}
    for r in records:
        assert {"loss", "d_loss", "g_loss", *keys} <= set(r) and all(math.isfinite(r[k]) for k in ("loss", "g_loss", *keys))
    if loss == "wgan-gp":
        assert all(r["gp"] > 0 for r in records)
    assert torch.isfinite(trainer.ema.model.sample(4, raw=True)).all()


def test_samples_do_not_depend_on_batch_size_and_use_running_statistics(tmp_path, digits):
    # batch norm's running statistics (momentum 0.1, two G passes per step) settle within ~25 steps
    cfg = gan_cfg(train={"steps": 25, "log_every": 25})
    trainer = Trainer(build(cfg), cfg, tmp_path / "run", digits.images, progress=False)
    trainer.fit()
    family = trainer.unwrapped.train()
    a = family.sample(10, seed=4, batch_size=10, raw=True)
    b = family.sample(10, seed=4, batch_size=3, raw=True)
    assert torch.allclose(a, b, atol=1e-5)
    assert torch.allclose(a[:5], family.sample(5, seed=4, batch_size=2, raw=True), atol=1e-5)  # a prefix
    x = family.sample(10, seed=4)
    assert torch.equal(x, family.sample(10, seed=4, batch_size=4))
    assert not torch.equal(x, family.sample(10, seed=5))
    assert x.float().std() > 0.5  # eval mode with the running statistics draws images, not a constant (std 0)
    assert family.training and family.net.training  # sample() ran G in eval mode and put it back
    rows = []  # one evaluation of G per sample (what genlab sample's forward hook on family.net counts)
    handle = family.net.register_forward_hook(lambda module, args, out: rows.append(out.shape[0]))
    family.sample(10, seed=4, batch_size=4)
    handle.remove()
    assert rows == [4, 4, 2]


def test_resume_is_bit_identical(tmp_path, digits):
    def trainer(steps, name):
        cfg = gan_cfg(loss="ns", d_steps=2, train={"steps": steps})
        return Trainer(build(cfg), cfg, tmp_path / name, digits.images, progress=False)

    straight = trainer(6, "straight")
    straight.fit()
    first = trainer(3, "resumed")
    path = first.fit()["checkpoint"]
    second = trainer(6, "resumed")
    second.load(path)
    second.fit()
    for a, b in [(straight.unwrapped, second.unwrapped), (straight.ema.model, second.ema.model)]:
        for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
            assert torch.equal(x, y), name  # weights and batch-norm statistics of both players
    assert torch.equal(straight.noise_gen.get_state(), second.noise_gen.get_state())


# ----- the mode-collapse monitor ----------------------------------------------------------
def test_coverage_rule_and_entropy():
    s = histogram_summary(torch.tensor([100] * 10))
    assert s["classes_covered"] == 10 and s["class_entropy_bits"] == pytest.approx(math.log2(10))
    s = histogram_summary(torch.tensor([970, 10, 9, 11] + [0] * 6))  # 10% of the uniform share = 10 of 1000
    assert s["classes_covered"] == 3 and s["class_histogram"][0] == pytest.approx(0.97)
    assert s["class_entropy_bits"] == pytest.approx(-sum(p * math.log2(p) for p in (0.97, 0.01, 0.009, 0.011)))


class Replay(nn.Module):
    """A 'family' whose samples are given images: the monitor's figures are then known."""

    def __init__(self, images):
        super().__init__()
        self.images = images

    def sample(self, n, seed=0):
        return self.images[torch.arange(n) % len(self.images)]


def test_coverage_monitor_sees_collapse_and_coverage(tmp_path, digits):
    from genlab.metrics.features import load_feature_network

    fnet = load_feature_network("digits")
    real, _ = fnet.extract(digits.images[:600])
    full = coverage_monitor(Replay(digits.images[600:]), fnet, real, n=500)
    assert full["classes_covered"] == 10 and full["class_entropy_bits"] > 3.2 and full["recall"] > 0.5
    assert len(full["class_histogram"]) == 10 and sum(full["class_histogram"]) == pytest.approx(1.0)
    collapsed = coverage_monitor(Replay(digits.images[digits.labels == 3]), fnet, real, n=500)
    assert collapsed["classes_covered"] <= 2 and collapsed["class_entropy_bits"] < 0.5
    assert collapsed["recall"] < 0.5 * full["recall"] and collapsed["precision"] > 0.5

    # and as the Trainer's monitor: logged at every monitor_every steps and at the end
    cfg = gan_cfg(train={"steps": 4})
    trainer = Trainer(build(cfg), cfg, tmp_path / "run", digits.images, progress=False,
                      monitor=lambda fam, step: coverage_monitor(fam, fnet, real, n=200), monitor_every=2)
    trainer.fit()
    events = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    events = [e for e in events if e.get("event") == "monitor"]
    assert [e["step"] for e in events] == [2, 4]
    assert {"recall", "precision", "classes_covered", "class_histogram", "class_entropy_bits"} <= set(events[-1])
