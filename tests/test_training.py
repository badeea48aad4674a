"""The Trainer: the loss goes down, checkpoints reload bit-identically, resume continues exactly."""

import dataclasses

import pytest
import torch

from genlab.config import resolve
from genlab.data import load_dataset
from genlab.diffusion.model import DDPM
from genlab.errors import RunError, TrainingError
from genlab.run import RunDir, load_run
from genlab.training import checkpoint as ckpt_mod
from genlab.training.trainer import Trainer, batch_indices


def tiny_cfg(dropout=0.0, **train):
    cfg = resolve(None, {}, {
        "model": {"channels": (16, 32), "num_res_blocks": 1, "attn_resolutions": (4,), "norm_groups": 8, "dropout": dropout},
        "diffusion": {"timesteps": 50},
        "train": {"batch_size": 32, "steps": 10, "log_every": 5, "sample_every": 0, "checkpoint_every": 0,
                  "warmup": 5, "mixed_precision": "no", **train},
    })
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, shape=(1, 8, 8), levels=17, num_classes=10))


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train").images


def make_trainer(cfg, run_dir, digits):
    with torch.random.fork_rng():
        torch.manual_seed(cfg.train.seed)
        family = DDPM.from_config(cfg)
    return Trainer(family, cfg, run_dir, digits, progress=False)


def fixed_batch_loss(family, digits):
    """L_simple on a fixed batch with fixed t and noise: a noiseless yardstick."""
    gen = torch.Generator().manual_seed(123)
    with torch.no_grad():
        return family.losses(digits[:256], gen)["loss"].mean().item()


def test_batch_order_is_a_function_of_seed_and_step():
    a = batch_indices(100, 32, seed=0, step=4)
    assert torch.equal(a, batch_indices(100, 32, seed=0, step=4))
    epoch0 = torch.cat([batch_indices(100, 32, 0, s) for s in range(3)])
    assert len(set(epoch0.tolist())) == 96  # no repeats within an epoch
    assert not torch.equal(batch_indices(100, 32, 0, 0), batch_indices(100, 32, 1, 0))


def test_a_few_dozen_steps_lower_the_loss(tmp_path, digits):
    cfg = tiny_cfg(steps=40, lr=2e-3)
    trainer = make_trainer(cfg, tmp_path / "run", digits)
    before = fixed_batch_loss(trainer.unwrapped, digits)
    trainer.fit()
    after = fixed_batch_loss(trainer.unwrapped, digits)
    assert after < 0.6 * before, (before, after)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 8 and '"images_per_s"' in lines[0]


def test_checkpoint_reloads_bit_identically(tmp_path, digits):
    cfg = tiny_cfg(steps=6)
    trainer = make_trainer(cfg, tmp_path / "run", digits)
    trainer.fit()
    _, family, path, step = load_run(tmp_path / "run", weights="model")
    assert step == 6 and path == RunDir(tmp_path / "run").latest_checkpoint()
    for (name, a), (_, b) in zip(trainer.unwrapped.state_dict().items(), family.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    _, ema_family, _, _ = load_run(tmp_path / "run")
    for (name, a), (_, b) in zip(trainer.ema.model.state_dict().items(), ema_family.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    # and samples from the reloaded EMA equal those from the in-memory EMA
    assert torch.equal(trainer.ema.model.sample(4, seed=3, sampler="ddim", steps=5), ema_family.sample(4, seed=3, sampler="ddim", steps=5))
    assert not list((tmp_path / "run" / "checkpoints").glob("*.tmp"))


def test_resume_continues_exactly(tmp_path, digits):
    """10 steps in one go == 6 steps, stop, resume to 10: same parameters, bit for bit.

    Dropout is on, so the global RNG state saved in the checkpoint matters too.
    """
    straight = make_trainer(tiny_cfg(0.1, steps=10), tmp_path / "a", digits)
    straight.fit()

    first = make_trainer(tiny_cfg(0.1, steps=6), tmp_path / "b", digits)
    first.fit()
    second = make_trainer(tiny_cfg(0.1, steps=10), tmp_path / "b", digits)
    second.load(RunDir(tmp_path / "b").latest_checkpoint())
    assert second.step == 6
    second.fit()
    assert second.step == 10
    for (name, a), (_, b) in zip(straight.unwrapped.state_dict().items(), second.unwrapped.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    for (name, a), (_, b) in zip(straight.ema.model.state_dict().items(), second.ema.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_old_checkpoints_are_pruned(tmp_path, digits):
    trainer = make_trainer(tiny_cfg(steps=8, checkpoint_every=2, keep_checkpoints=2), tmp_path / "run", digits)
    trainer.fit()
    assert [s for s, _ in RunDir(tmp_path / "run").checkpoints()] == [6, 8]


def test_nan_loss_stops_with_a_clear_error(tmp_path, digits):
    trainer = make_trainer(tiny_cfg(steps=5), tmp_path / "run", digits)
    with torch.no_grad():
        next(trainer.unwrapped.parameters()).fill_(float("nan"))
    with pytest.raises(TrainingError, match=r"the loss became nan at step 1 \(its term 'mse' first\); lower train.lr") as e:
        trainer.fit()
    assert "start again (no checkpoint was written yet)" in str(e.value)
    assert not RunDir(tmp_path / "run").checkpoints()  # nothing trained on NaN weights reaches the disk


def test_a_failed_checkpoint_write_leaves_nothing_behind(tmp_path, digits, monkeypatch):
    trainer = make_trainer(tiny_cfg(steps=2), tmp_path / "run", digits)

    def broken(tensors, path, metadata=None):
        open(path, "wb").write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_mod, "save_file", broken)
    with pytest.raises(OSError):
        trainer.fit()
    assert list((tmp_path / "run" / "checkpoints").iterdir()) == []


def test_checkpoint_that_does_not_match_its_config_is_refused(tmp_path, digits):
    trainer = make_trainer(tiny_cfg(steps=2), tmp_path / "run", digits)
    trainer.fit()
    other = dataclasses.replace(trainer.cfg, model=dataclasses.replace(trainer.cfg.model, channels=(16, 48)))
    (tmp_path / "run" / "config.json").write_text(other.to_json())
    with pytest.raises(RunError, match="does not match the model its config.json describes"):
        load_run(tmp_path / "run")


@pytest.mark.parametrize("loss,prediction", [("vlb", "eps"), ("simple", "x0"), ("simple", "v")])
def test_every_objective_and_prediction_trains(tmp_path, digits, loss, prediction):
    cfg = tiny_cfg(steps=30, lr=2e-3)
    cfg = dataclasses.replace(cfg, diffusion=dataclasses.replace(cfg.diffusion, loss=loss, parameterization=prediction))
    trainer = make_trainer(cfg, tmp_path / "run", digits)
    before = fixed_batch_loss(trainer.unwrapped, digits)
    trainer.fit()
    assert fixed_batch_loss(trainer.unwrapped, digits) < before
    x = trainer.ema.model.sample(4, seed=0, sampler="ddim", steps=5)
    assert x.dtype == torch.uint8 and x.shape == (4, 1, 8, 8) and int(x.max()) <= 16
