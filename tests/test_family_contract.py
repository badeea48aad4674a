"""The family contract (genlab.family): every registered family trains, checkpoints, samples and resumes alike.

One tiny run per family on the 8x8 digits, trained by the Trainer as ``genlab train`` does,
then held to what the rest of genlab relies on: the checkpoint reloads bit for bit, sample i
does not depend on the batch size, a run resumed from a checkpoint continues exactly, a
family with a likelihood measures one, and the declared capabilities match the code.
"""

import dataclasses
import inspect

import pytest
import torch

from genlab.config import FAMILIES, SECTIONS, resolve
from genlab.data import load_dataset
from genlab.errors import ConfigError, GenlabError
from genlab.family import SAMPLE_OPTIONS, Family, family_class, family_names, register_family
from genlab.run import build_family, load_run
from genlab.training.checkpoint import load_checkpoint
from genlab.training.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

STEPS = 3
N = 5  # samples drawn in batches of 1, 3 and N


def data_name(name: str) -> str:
    """The digits, captioned for a family that trains on text."""
    return "digits-captions" if family_class(name).uses_text else "digits"


def tiny_cfg(name: str):
    """The smallest settings of every section, whichever of them the family reads."""
    cfg = resolve(data_name(name), {
        "model": {"channels": (8, 16), "num_res_blocks": 1, "attn_resolutions": (), "norm_groups": 8, "dropout": 0.0,
                  "latent_dim": 4, "hidden": 16, "depth": 1},
        "diffusion": {"timesteps": 25},
        "vae": {"iwae_k": 4},
        "text": {"embed_dim": 8, "width": 8, "layers": 1, "heads": 2},
        "energy": {"hidden_units": (16, 16) if name == "dbn" else (16,), "gibbs_steps": 5, "ais_betas": 20,
                   "ais_chains": 4},
        "train": {"batch_size": 16, "steps": STEPS, "log_every": 1, "sample_every": 0, "checkpoint_every": 2,
                  "eval_bpd": False, "mixed_precision": "no", "warmup": 1},
    }, family=name)
    side = 12 if family_class(name).uses_text else 8  # the captioned digits sit in a 12x12 canvas
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, shape=(1, side, side), levels=17, num_classes=10))


def make_trainer(cfg, run_dir, data):
    """A Trainer as genlab train builds one: fresh weights seeded by the run's seed, labels if the family uses them."""
    with torch.random.fork_rng():
        torch.manual_seed(cfg.train.seed)
        family = build_family(cfg)
    labels = (data.tokens if family.uses_text else data.labels) if family.uses_labels else None
    return Trainer(family, cfg, run_dir, data.images, progress=False, labels=labels)


def assert_same_tensors(a: dict, b: dict, what: str):
    assert a.keys() == b.keys(), what
    for name in a:
        assert torch.equal(a[name], b[name]), f"{what}: {name}"


@pytest.fixture(scope="module")
def datasets():
    return {name: load_dataset(name, "train") for name in ("digits", "digits-captions")}


@pytest.fixture(scope="module", params=family_names())
def run(request, tmp_path_factory, datasets):
    """(name, cfg, trainer, run_dir): STEPS steps of a tiny run of the family, a checkpoint at step 2 and at the end."""
    name = request.param
    cfg = tiny_cfg(name)
    digits = datasets[data_name(name)]
    run_dir = tmp_path_factory.mktemp(name) / "run"
    trainer = make_trainer(cfg, run_dir, digits)
    summary = trainer.fit()
    assert summary["steps"] == STEPS and summary["checkpoint"].is_file()
    return name, cfg, trainer, run_dir


def test_it_trains_and_writes_a_checkpoint(run):
    name, cfg, trainer, run_dir = run
    assert (run_dir / "config.json").is_file() and (run_dir / "metrics.jsonl").is_file()
    tensors, meta = load_checkpoint(trainer.checkpoint_path(STEPS))
    assert int(meta["step"]) == STEPS
    assert all(torch.isfinite(v).all() for k, v in tensors.items() if k.startswith("model.") and v.is_floating_point())


def test_the_checkpoint_reloads_bit_identically(run):
    name, cfg, trainer, run_dir = run
    for weights, module in (("model", trainer.unwrapped), ("ema", trainer.ema.model)):
        loaded_cfg, family, _, step = load_run(run_dir, weights=weights)
        assert step == STEPS and loaded_cfg == cfg and type(family) is family_class(name)
        assert_same_tensors(module.state_dict(), family.state_dict(), weights)


def test_samples_do_not_depend_on_the_batch_size(run):
    name, cfg, trainer, run_dir = run
    _, family, _, _ = load_run(run_dir)
    if not family.sampler_names:  # it measures itself instead
        with pytest.raises(ConfigError):
            family.sample(N, seed=0)
        result = family.test_metrics(load_dataset(data_name(name), "test"), limit=8, seed=0)
        assert result["n"] == 8 and family.describe_test_metrics(result)
        return
    x = family.sample(N, seed=0, batch_size=N)
    assert x.dtype == torch.uint8 and x.shape == (N, *cfg.data.shape) and int(x.max()) < cfg.data.levels
    for batch_size in (1, 3):
        assert torch.equal(family.sample(N, seed=0, batch_size=batch_size), x), batch_size
    assert family.sample(0, seed=0).shape == (0, *cfg.data.shape)


def test_resume_is_exact(run, datasets, tmp_path):
    """STEPS steps straight == the checkpoint of step 2, loaded by a fresh Trainer, then the remaining step."""
    name, cfg, trainer, run_dir = run
    resumed = make_trainer(cfg, tmp_path / "resumed", datasets[data_name(name)])
    resumed.load(trainer.checkpoint_path(2))
    assert resumed.step == 2
    resumed.fit()
    assert_same_tensors(trainer.unwrapped.state_dict(), resumed.unwrapped.state_dict(), "model")
    assert_same_tensors(trainer.ema.model.state_dict(), resumed.ema.model.state_dict(), "ema")
    for group in trainer.optimizers:
        a, b = trainer.optimizers[group].state_dict()["state"], resumed.optimizers[group].state_dict()["state"]
        assert a.keys() == b.keys()
        for i in a:
            assert_same_tensors(a[i], b[i], f"optimiser {group!r} parameter {i}")


def test_a_likelihood_is_finite_and_positive(run):
    name, cfg, trainer, run_dir = run
    if not family_class(name).has_likelihood:
        pytest.skip(f"{name} declares no likelihood")
    _, family, _, _ = load_run(run_dir)
    result = family.bits_per_dim(load_dataset("digits", "test").images[:8], seed=0)
    assert result["n"] == 8 and 0 < result["bpd"] < float("inf"), result


def test_the_declared_capabilities_match_the_code(run):
    name, cfg, trainer, run_dir = run
    cls = family_class(name)
    family = trainer.unwrapped
    assert cls.name == name and isinstance(family, Family)
    assert cls.config_section is None or cls.config_section in SECTIONS
    assert cls.describe(cfg).startswith(name)
    assert {k for p in cls.presets.values() for k in p} <= set(SECTIONS)
    forward = inspect.signature(cls.forward).parameters
    assert cls.shardable == ("shard" in forward)
    if cls.custom_step:
        assert callable(family.optimizer_groups) and callable(family.train_step)
    if cls.latent:
        assert callable(family.reconstruct) and callable(family.interpolate)
    if cls.coverage_monitor:
        assert isinstance(family.monitor_every, int) and family.monitor_every >= 0
    if "steps" in cls.sample_options and "sampler" not in cls.sample_options:  # Gibbs chains: their default length
        assert family.default_steps >= 1
    sample = inspect.signature(cls.sample).parameters
    assert set(cls.sample_options) <= set(SAMPLE_OPTIONS)
    for option in cls.sample_options:
        assert option in sample, option
    assert family.preview_count >= (1 if cls.sampler_names else 0)


def test_every_builtin_family_is_known_to_the_config():
    assert set(FAMILIES) <= set(family_names())
    assert {"ddpm", "classifier", "ae", "vae", "gan", "rbm", "dbn"} <= set(family_names())
    from genlab.diffusion import SAMPLERS

    assert family_class("ddpm").sampler_names == tuple(SAMPLERS)


def test_a_class_without_sample_cannot_register():
    class NoSample(torch.nn.Module):
        @classmethod
        def from_config(cls, cfg):
            return cls()

        def forward(self, batch, generator, labels=None):
            return {"loss": batch.float().mean(1)}

        @classmethod
        def describe(cls, cfg):
            return "nosample"

    with pytest.raises(TypeError, match="lacks sample"):
        register_family("nosample")(NoSample)
    assert "nosample" not in family_names()


def test_an_unknown_family_names_the_known_ones():
    with pytest.raises(GenlabError, match="nope") as info:
        family_class("nope")
    for name in ("ddpm", "vae", "gan", "rbm"):
        assert name in str(info.value)
