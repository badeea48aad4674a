"""RBM and deep belief net families: CD as a loss, Gibbs chains against enumeration, AIS likelihood, training."""

import dataclasses
import itertools
import math

import pytest
import torch

from genlab.config import resolve
from genlab.data import load_dataset
from genlab.energy.family import DBNFamily, GibbsRBM, RBMFamily, binarize_levels, cd_loss, gibbs_chains, rbm_likelihood
from genlab.energy.rbm import RBM
from genlab.run import load_run
from genlab.training.trainer import Trainer


def tiny_rbm(visible=4, hidden=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    rbm = GibbsRBM(visible, hidden, init_std=1.0, generator=g)
    with torch.no_grad():
        rbm.b.copy_(torch.randn(visible, generator=g) * 0.5)
        rbm.c.copy_(torch.randn(hidden, generator=g) * 0.5)
    return rbm


def all_states(n):
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=n)))


def cfg_for(family, **sections):
    overrides = {"train": {"batch_size": 50, "steps": 20, "log_every": 10, "sample_every": 0, "checkpoint_every": 0},
                 "energy": {"hidden_units": (32,), "gibbs_steps": 20, "ais_betas": 200, "ais_chains": 20}}
    for k, v in sections.items():
        overrides[k] = {**overrides.get(k, {}), **v}
    cfg = resolve(None, {}, overrides, family=family)
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, shape=(1, 8, 8), levels=17, num_classes=10))


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train").images


def test_the_cd_loss_gradient_is_minus_the_cd_gradient():
    rbm = tiny_rbm(6, 4)
    g = torch.Generator().manual_seed(1)
    v = (torch.rand(32, 6, generator=g) < 0.5).float()
    gen = torch.Generator().manual_seed(2)
    terms = cd_loss(rbm, v, k=3, generator=gen)
    terms["loss"].mean().backward()
    gen = torch.Generator().manual_seed(2)  # the same negative samples, by hand
    v_neg = v
    with torch.no_grad():
        for _ in range(3):
            h = (torch.rand(32, 4, generator=gen) < rbm.p_h(v_neg)).float()
            v_neg = (torch.rand(32, 6, generator=gen) < rbm.p_v(h)).float()
    expected = RBM.cd_gradients(rbm, v, v_neg)
    for name in ("W", "b", "c"):
        torch.testing.assert_close(getattr(rbm, name).grad, -expected[name], atol=1e-6, rtol=1e-5)


def test_long_gibbs_chains_reach_the_exact_distribution():
    rbm = tiny_rbm(4, 3, seed=3)
    states = all_states(4)
    exact = torch.softmax(-rbm.free_energy(states).detach().double(), 0)
    with torch.no_grad():
        v, p_v = gibbs_chains(rbm, 4000, steps=30, seed=0)
    index = (v * torch.tensor([8.0, 4.0, 2.0, 1.0])).sum(1).long()
    empirical = torch.bincount(index, minlength=16).double() / len(v)
    tv = 0.5 * (empirical - exact).abs().sum().item()
    assert tv < 0.03, tv
    # p(v | h) of the last step averages to the exact marginal of each unit too
    torch.testing.assert_close(p_v.mean(0).double(), exact @ states.double(), atol=0.02, rtol=0)


def test_samples_do_not_depend_on_the_batch_size():
    fam = RBMFamily((1, 2, 3), levels=5, hidden=4, gibbs_steps=7)
    torch.manual_seed(0)
    with torch.no_grad():
        fam.net.W.normal_()
    a = fam.sample(9, seed=4, batch_size=9)
    b = fam.sample(9, seed=4, batch_size=2)
    assert a.dtype == torch.uint8 and a.shape == (9, 1, 2, 3) and int(a.max()) <= 4
    assert torch.equal(a, b)
    assert not torch.equal(a, fam.sample(9, seed=5))


def test_the_likelihood_uses_ais_and_matches_enumeration_on_a_tiny_model():
    rbm = tiny_rbm(6, 3, seed=4)
    images = torch.randint(0, 5, (40, 1, 2, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    r = rbm_likelihood(rbm, images, levels=5, seed=0, ais_chains=200, ais_betas=1000)
    v = binarize_levels(images, 5, torch.Generator().manual_seed(0))  # the same seeded binarisation
    exact = (rbm.double().free_energy(v.double()) + rbm.log_z_exact()).mean().item()
    assert r["binarised"] and r["n"] == 40
    assert r["nll_nats"] == pytest.approx(exact, abs=0.02)
    assert r["bpd"] == pytest.approx(exact / (6 * math.log(2)), abs=0.01)


def test_binarisation_keeps_the_grey_level_as_a_probability():
    images = torch.full((20000, 1, 1, 1), 3, dtype=torch.uint8)
    v = binarize_levels(images, 5, torch.Generator().manual_seed(0))
    assert set(v.unique().tolist()) <= {0.0, 1.0}
    assert v.mean().item() == pytest.approx(3 / 4, abs=0.01)


@pytest.mark.parametrize("persistent", [False, True])
def test_training_raises_the_likelihood_and_resumes_exactly(tmp_path, digits, persistent):
    cfg = cfg_for("rbm", energy={"persistent": persistent}, train={"steps": 60, "lr": 3e-3})
    torch.manual_seed(0)
    fam = RBMFamily.from_config(cfg)
    before = rbm_likelihood(fam.rbm, digits[:200], 17, 0, 50, 300)["nll_nats"]
    trainer = Trainer(fam, cfg, tmp_path / "run", digits, progress=False)
    trainer.fit()
    after = rbm_likelihood(trainer.unwrapped.rbm, digits[:200], 17, 0, 50, 300)["nll_nats"]
    assert after < before - 5, (before, after)
    if persistent:
        assert trainer.unwrapped.chains.shape == (50, 64) and trainer.unwrapped.chains.any()
    # 30 steps, a checkpoint, 30 more in a fresh Trainer == 60 straight
    cfg30 = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=30))
    torch.manual_seed(0)
    t1 = Trainer(RBMFamily.from_config(cfg30), cfg30, tmp_path / "resumed", digits, progress=False)
    t1.fit()
    torch.manual_seed(0)
    t2 = Trainer(RBMFamily.from_config(cfg), cfg, tmp_path / "resumed", digits, progress=False)
    t2.load(t1.checkpoint_path(30))
    t2.fit()
    for (name, a), b in zip(trainer.unwrapped.state_dict().items(), t2.unwrapped.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    cfg_run, loaded, _, step = load_run(tmp_path / "resumed")
    assert step == 60 and cfg_run.family == "rbm"
    assert torch.equal(loaded.sample(4, seed=1), t2.ema.model.sample(4, seed=1))


def test_a_deep_belief_net_trains_its_layers_greedily(tmp_path, digits):
    cfg = cfg_for("dbn", energy={"hidden_units": (24, 16)}, train={"steps": 40, "lr": 3e-3})
    torch.manual_seed(0)
    fam = DBNFamily.from_config(cfg)
    assert [fam.layer_at(s) for s in (0, 19, 20, 39)] == [0, 0, 1, 1]
    trainer = Trainer(fam, cfg, tmp_path / "dbn", digits, progress=False)
    snapshots = {}

    def watch(module, step):
        snapshots[step] = {k: v.clone() for k, v in trainer.unwrapped.state_dict().items()}

    trainer.monitor, trainer.monitor_every = watch, 20
    trainer.fit()
    first, last = snapshots[20], snapshots[40]
    assert torch.equal(first["layers.0.W"], last["layers.0.W"])  # frozen once the second layer trains
    assert not torch.equal(first["layers.1.W"], last["layers.1.W"])
    x = trainer.ema.model.sample(6, seed=0, batch_size=4)
    assert x.shape == (6, 1, 8, 8) and x.dtype == torch.uint8 and torch.equal(x, trainer.ema.model.sample(6, seed=0))


def test_energy_settings_are_checked():
    from genlab.errors import ConfigError

    with pytest.raises(ConfigError, match="one hidden layer"):
        resolve(None, {}, {"energy": {"hidden_units": (10, 10)}}, family="rbm")
    with pytest.raises(ConfigError, match="energy.cd_k"):
        resolve(None, {}, {"energy": {"cd_k": 0}}, family="rbm")
    with pytest.raises(ConfigError, match="continuous"):
        resolve(None, {}, {"data": {"name": "toy2d"}}, family="rbm")
