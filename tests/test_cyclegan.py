"""CycleGAN (genlab.gan.cyclegan): the losses and the history buffer against their definitions, a toy map recovered,
the common space of two datasets, exact resume, and ``genlab sample --translate``."""

import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import nn

from conftest import TINY
from genlab.cli import main
from genlab.config import resolve
from genlab.data import load_dataset
from genlab.errors import ConfigError
from genlab.gan import discriminator_loss as gan_discriminator_loss
from genlab.gan import generator_loss as gan_generator_loss
from genlab.gan.cyclegan import (
    CycleGAN,
    ImagePool,
    class_kept,
    cycle_error,
    cycle_loss,
    discriminator_loss,
    generator_loss,
    identity_loss,
    to_common,
)
from genlab.gan.cyclegan.nets import PointTranslator, build_nets
from genlab.metrics.features import load_feature_network
from genlab.nets.dcgan import MLPDiscriminator
from genlab.run import build_family
from genlab.train import prepare
from genlab.training.trainer import Trainer, batch_indices

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

TINY_NETS = {"model": {"channels": (8, 16)}, "cyclegan": {"res_blocks": 1}}


class Affine(nn.Module):
    def __init__(self, scale, shift):
        super().__init__()
        self.scale, self.shift = scale, shift

    def forward(self, x):
        return x * self.scale + self.shift


def tiny_cfg(steps=4, data_b="digits", **cyclegan):
    train = {"batch_size": 16, "steps": steps, "log_every": 1, "sample_every": 0, "checkpoint_every": 0,
             "mixed_precision": "no"}
    cfg = resolve("digits", {}, {**TINY_NETS, "train": train, "cyclegan": {**TINY_NETS["cyclegan"], "data_b": data_b,
                                                                           **cyclegan}}, family="cyclegan")
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, shape=(1, 8, 8), levels=17, num_classes=10))


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train")


# ----- the losses ------------------------------------------------------------------------
def test_the_cycle_loss_is_zero_for_inverse_maps_and_positive_otherwise():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(-64, 65, (16, 1, 8, 8), generator=g) / 64  # dyadic: 2x + 1 and back is exact in float32
    y = torch.randint(-64, 65, (16, 1, 8, 8), generator=g) / 64
    G, F_ = Affine(2.0, 1.0), Affine(0.5, -0.5)  # F(y) = (y - 1) / 2 = G^-1(y)
    assert cycle_loss(G, F_, x, y) == (0.0, 0.0)
    a, b = cycle_loss(G, Affine(0.5, -0.25), x, y)  # F(G(x)) = x + 1/4, G(F(y)) = y + 1/2
    assert a.item() == pytest.approx(0.25) and b.item() == pytest.approx(0.5)
    # the identity loss: 0 for identity maps, |G(y) - y| + |F(x) - x| otherwise
    assert identity_loss(nn.Identity(), nn.Identity(), x, y) == 0
    assert identity_loss(Affine(1.0, 0.5), Affine(1.0, -0.25), x, y).item() == pytest.approx(0.75)


def test_the_adversarial_losses_follow_their_formulas():
    g = torch.Generator().manual_seed(1)
    real, fake = torch.randn(8, 1, 3, 3, generator=g), torch.randn(8, 1, 3, 3, generator=g)
    # least squares (Mao et al.; CycleGAN halves D's loss)
    assert torch.allclose(discriminator_loss("lsgan", real, fake), ((real - 1) ** 2 + fake**2).mean() / 2)
    assert torch.allclose(generator_loss("lsgan", fake), ((fake - 1) ** 2).mean())
    assert discriminator_loss("lsgan", torch.ones(4), torch.zeros(4)) == 0  # D at its targets
    # the non-saturating loss is the GAN family's, term for term
    assert torch.allclose(discriminator_loss("ns", real, fake), gan_discriminator_loss(real, fake))
    assert torch.allclose(generator_loss("ns", fake), gan_generator_loss("ns", fake))
    with pytest.raises(ValueError, match="lsgan"):
        generator_loss("wgan", fake)


# ----- the history buffer ----------------------------------------------------------------
def reference_query(pool_images, count, size, images, coin, slot):
    """The paper's ImagePool.query, one image at a time, on the same coin flips and slots."""
    pool_images, out = pool_images.clone(), images.clone()
    for i in range(len(images)):
        if count < size:
            pool_images[count] = images[i]
            count += 1
        elif coin[i] < 0.5:
            j = int(slot[i])
            out[i], pool_images[j] = pool_images[j].clone(), images[i]
    return pool_images, count, out


def test_the_history_buffer_follows_its_sampling_law():
    size, B = 50, 8
    pool = ImagePool(size, (1,))
    g = torch.Generator().manual_seed(0)
    # the first 50 images pass through and fill the buffer in order
    first = torch.arange(size, dtype=torch.float32)[:, None]
    for start in range(0, size, 10):
        assert torch.equal(pool.query(first[start:start + 10], g), first[start:start + 10])
    assert int(pool.count) == size and torch.equal(pool.images, first)
    # then: image by image, the new one with probability 1/2, else a uniformly chosen stored one, replaced by it
    new_returned, total, slots = 0, 0, torch.zeros(size)
    next_id = size
    for _ in range(500):
        images = torch.arange(next_id, next_id + B, dtype=torch.float32)[:, None]
        next_id += B
        before = pool.images.clone()
        state = g.get_state()
        coin, slot = torch.rand(B, generator=g), torch.randint(size, (B,), generator=g)
        g.set_state(state)  # the pool draws the same coins and slots
        out = pool.query(images, g)
        expect_images, _, expect_out = reference_query(before, size, size, images, coin, slot)
        assert torch.equal(out, expect_out) and torch.equal(pool.images, expect_images)
        is_new = out[:, 0] == images[:, 0]
        new_returned += int(is_new.sum())
        total += B
        for i in (~is_new).nonzero()[:, 0]:  # an old image came back: which slot it left
            slots[int(slot[i])] += 1
    p = new_returned / total
    assert abs(p - 0.5) < 4 * math.sqrt(0.25 / total), p
    expected = slots.sum() / size  # ~40 per slot
    chi2 = ((slots - expected) ** 2 / expected).sum().item()
    assert chi2 < 49 + 5 * math.sqrt(2 * 49), chi2  # 49 degrees of freedom, 5 standard deviations


def test_a_buffer_of_size_0_passes_images_through_and_draws_nothing():
    pool, g = ImagePool(0, (2,)), torch.Generator().manual_seed(3)
    state = g.get_state()
    x = torch.randn(4, 2)
    assert torch.equal(pool.query(x, g), x) and torch.equal(g.get_state(), state)


# ----- a toy map, recovered ----------------------------------------------------------------
def toy_domains(n, seed):
    """X: 3 unequal gaussian blobs (weights 1/2, 1/3, 1/6: no symmetry maps X to itself); Y = X + SHIFT."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[-1.0, 0.0], [1.0, 0.5], [0.0, -1.0]])
    which = torch.multinomial(torch.tensor([3.0, 2.0, 1.0]), n, replacement=True, generator=g)
    return centres[which] + 0.08 * torch.randn(n, 2, generator=g)


SHIFT = torch.tensor([1.5, -1.0])


def test_a_toy_run_recovers_a_translation_between_two_point_clouds():
    torch.manual_seed(0)
    G, F_ = PointTranslator(2, 32, 2), PointTranslator(2, 32, 2)
    family = CycleGAN(G, F_, MLPDiscriminator(2, 32, 2), MLPDiscriminator(2, 32, 2), (2,), 0, loss="lsgan",
                      cycle_weight=1.0, pool_size=50, lr=2e-3, batch_size=128, seed=0)
    X, Y = toy_domains(4000, 1), toy_domains(4000, 2) + SHIFT  # unpaired: Y is not X's shift point by point
    family.attach("b", "train", Y)
    optimizers = {k: torch.optim.Adam(v["params"], lr=v["lr"], betas=v["betas"]) for k, v in family.optimizer_groups().items()}

    def update(name, loss):
        loss.backward()
        optimizers[name].step()
        for o in optimizers.values():
            o.zero_grad(set_to_none=True)

    noise = torch.Generator().manual_seed(1)
    test = toy_domains(1000, 3)
    assert (family.translate(test) - (test + SHIFT)).norm(dim=1).mean() > 1.7  # the identity map at the start
    for step in range(300):
        family.train_step(X[batch_indices(len(X), 128, 0, step)], noise, None, step, update)
    with torch.no_grad():
        err_g = (family.translate(test) - (test + SHIFT)).norm(dim=1).mean().item()
        err_f = (family.translate(test + SHIFT, "b2a") - test).norm(dim=1).mean().item()
    assert err_g < 0.15 and err_f < 0.15, (err_g, err_f)  # against |SHIFT| = 1.8 and a blob radius of 0.08


# ----- the common space and the family ----------------------------------------------------
def test_the_common_space_resizes_and_converts_channels():
    flat = torch.full((2, 1, 8, 8), 0.25)
    assert torch.allclose(to_common(flat, (1, 28, 28)), torch.full((2, 1, 28, 28), 0.25))  # bilinear keeps constants
    grey = torch.rand(2, 1, 4, 4)
    assert torch.equal(to_common(grey, (3, 4, 4)), grey.expand(-1, 3, -1, -1))
    rgb = torch.rand(2, 3, 4, 4)
    luma = 0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2]
    assert torch.allclose(to_common(rgb, (1, 4, 4))[:, 0], luma)
    with pytest.raises(ConfigError, match="channels"):
        to_common(torch.rand(1, 2, 4, 4), (3, 4, 4))
    with pytest.raises(ConfigError, match="fewer widths"):
        build_nets((1, 6, 6), (8, 16, 32), 1)


def test_prepare_puts_domain_a_into_the_size_of_b():
    cfg, train_ds, family = prepare(tiny_cfg(data_b="digits-captions"))  # 8x8 digits -> the 12x12 captioned canvas
    assert cfg.data.shape == (1, 12, 12) and cfg.cyclegan.source_shape == (1, 8, 8) and cfg.cyclegan.source_levels == 17
    assert tuple(train_ds.images.shape[1:]) == (1, 8, 8)  # the Trainer batches domain A as it is
    x = family.source_to_model(train_ds.images[:4])
    assert x.shape == (4, 1, 12, 12) and x.min() >= -1 and x.max() <= 1
    assert family.sample(3).shape == (3, 1, 12, 12)
    assert CycleGAN.describe(cfg) == "cyclegan lsgan digits->digits-captions"
    y = family.domain_batch(5, "cpu")  # B's batch of step 5: a function of (seed, step)
    idx = batch_indices(1437, 16, cfg.train.seed + 1, 5)
    assert torch.equal(y, load_dataset("digits-captions", "train").images[idx].float() / 16 * 2 - 1)


def test_translate_checks_channels_and_the_measures(digits):
    family = CycleGAN(nn.Identity(), nn.Identity(), nn.Identity(), nn.Identity(), (1, 8, 8), 17,
                      sources={"a": ("digits", None, {}), "b": ("digits", None, {})})
    test = load_dataset("digits", "test")
    assert torch.equal(family.translate(test.images), test.images)
    with pytest.raises(ConfigError, match="channel"):
        family.translate(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))
    assert cycle_error(family, test.images)["cycle_error"] == 0
    fnet = load_feature_network("digits")
    kept = class_kept(family, test.images[:100], test.labels[:100], fnet)
    assert kept["n"] == 100 and kept["class_kept"] > 0.9  # the identity keeps every class the network sees
    family.net = Affine(-1.0, 0.0)  # G inverts the strokes: the class is lost, and F = id does not undo it
    x = test.images[:100].float() / 16 * 2 - 1
    assert cycle_error(family, test.images[:100])["cycle_error"] == pytest.approx(x.abs().mean().item(), abs=1e-6)
    assert class_kept(family, test.images[:100], test.labels[:100], fnet)["class_kept"] < kept["class_kept"] - 0.3


def test_resume_is_bit_identical(tmp_path, digits):
    def trainer(steps, name):
        cfg = tiny_cfg(steps=steps, pool_size=8, identity_weight=0.5)  # the buffer fills in step 1, then swaps
        with torch.random.fork_rng():
            torch.manual_seed(cfg.train.seed)
            family = build_family(cfg)
        return Trainer(family, cfg, tmp_path / name, digits.images, progress=False)

    straight = trainer(4, "straight")
    straight.fit()
    first = trainer(2, "resumed")
    path = first.fit()["checkpoint"]
    second = trainer(4, "resumed")
    second.load(path)
    second.fit()
    for a, b in [(straight.unwrapped, second.unwrapped), (straight.ema.model, second.ema.model)]:
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and "pool_a.images" in sa
        for name in sa:
            assert torch.equal(sa[name], sb[name]), name
    assert int(straight.unwrapped.pool_b.count) == 8
    for group in ("g", "d"):
        a, b = straight.optimizers[group].state_dict()["state"], second.optimizers[group].state_dict()["state"]
        for i in a:
            for k in a[i]:
                assert torch.equal(a[i][k], b[i][k]), (group, i, k)


# ----- the command line --------------------------------------------------------------------
def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_sentence_error(code, err, *words):
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("genlab: error: "), err
    for w in words:
        assert w in lines[0], (w, lines[0])


@pytest.fixture(scope="module")
def cyclegan_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cyclegan") / "run"
    assert main(["train", "cyclegan", "--data", "digits", "--data-b", "digits", "--channels", "8,16", "--cyclegan-blocks",
                 "1", "--batch-size", "16", "--steps", "2", "--sample-every", "0", "--no-progress", "--out", str(out)]) == 0
    return out


def test_train_then_translate_writes_the_grid_and_the_arrays(cyclegan_run, tmp_path, capsys):
    out = tmp_path / "translations"
    code, text, err = run_cli(capsys, "sample", cyclegan_run, "--translate", "digits", "--n", "6", "--out", out)
    assert code == 0, err
    assert (out / "grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    arrays = np.load(out / "translations.npz")
    assert arrays["translations"].shape == (6, 1, 8, 8) and arrays["inputs"].dtype == np.uint8
    assert np.array_equal(arrays["inputs"], load_dataset("digits", "test").images[:6].numpy())
    assert "cycle error" in text
    # a folder of images of the input domain, and the other direction
    from PIL import Image

    pictures = tmp_path / "pictures"
    pictures.mkdir()
    for i in range(3):
        Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(pictures / f"{i}.png")
    code, _, err = run_cli(capsys, "sample", cyclegan_run, "--translate", pictures, "--direction", "b2a", "--out",
                           tmp_path / "folder")
    assert code == 0, err
    assert np.load(tmp_path / "folder" / "translations.npz")["reconstructions"].shape == (3, 1, 8, 8)


def test_bad_translate_input_is_one_sentence_and_writes_nothing(cyclegan_run, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "sample", cyclegan_run, "--translate", tmp_path / "nowhere", "--out", out)
    assert_one_sentence_error(code, err, "neither a dataset", "nor a folder")
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(capsys, "sample", cyclegan_run, "--translate", tmp_path / "empty", "--out", out)
    assert_one_sentence_error(code, err, "no PNG")
    code, _, err = run_cli(capsys, "sample", cyclegan_run, "--translate", "toy2d", "--out", out)
    assert_one_sentence_error(code, err, "points")
    assert not out.exists()
    ddpm = tmp_path / "ddpm"
    assert main(["train", *TINY, "--steps", "1", "--eval-bpd", "false", "--out", str(ddpm)]) == 0
    capsys.readouterr()
    code, _, err = run_cli(capsys, "sample", ddpm, "--translate", "digits", "--out", out)
    assert_one_sentence_error(code, err, "does not translate", "cyclegan")
    assert not out.exists()
    code, _, err = run_cli(capsys, "train", "cyclegan", "--cyclegan-loss", "wgan", "--out", tmp_path / "bad")
    assert_one_sentence_error(code, err, "lsgan or ns")


def test_resume_from_the_command_line_keeps_domain_b(cyclegan_run, tmp_path, capsys):
    cfg = tiny_cfg()
    assert cfg.cyclegan.data_b == "digits" and cfg.cyclegan.pool_size == 50 and cfg.cyclegan.cycle_weight == 10
    code, _, err = run_cli(capsys, "train", "cyclegan", "--resume", "--out", cyclegan_run, "--data-b", "mnist")
    assert_one_sentence_error(code, err, "--data-b", "cannot change")


def test_the_translation_measure_of_the_identity_map_is_the_identity_rows(digits):
    """G = F = id between the digits and themselves: each direction's model row equals its identity row."""
    from genlab.gan.cyclegan.metrics import measure_translation

    family = CycleGAN(nn.Identity(), nn.Identity(), nn.Identity(), nn.Identity(), (1, 8, 8), 17,
                      sources={"a": ("digits", None, {}), "b": ("digits", None, {"classes": "3,5"})})
    r = measure_translation(family, n=60)  # the test split holds 87 threes and fives
    assert r["a2b_n"] == 60 and r["b2a_n"] == 60 and r["a2b_cycle_error"] == 0 == r["b2a_cycle_error"]
    for d in ("a2b", "b2a"):
        assert r[f"{d}_fid"] == pytest.approx(r[f"{d}_fid_identity"])
    assert "a2b_class_kept" not in r and "a2b_class_reached" not in r  # classes overlap but differ: neither measure
    same = CycleGAN(nn.Identity(), nn.Identity(), nn.Identity(), nn.Identity(), (1, 8, 8), 17,
                    sources={"a": ("digits", None, {}), "b": ("digits", None, {})})
    r_same = measure_translation(same, n=60)
    assert r_same["a2b_fid"] < r["a2b_fid"] / 3  # B only 3s and 5s: all digits are far from it
    for d in ("a2b", "b2a"):
        assert r_same[f"{d}_class_kept"] == r_same[f"{d}_class_kept_identity"] > 0.9
    apart = CycleGAN(nn.Identity(), nn.Identity(), nn.Identity(), nn.Identity(), (1, 8, 8), 17,
                     sources={"a": ("digits", None, {"classes": "0"}), "b": ("digits", None, {"classes": "1"})})
    r_apart = measure_translation(apart, n=30)  # 0s -> 1s by the identity: the class is not reached
    assert "a2b_class_kept" not in r_apart and r_apart["a2b_class_reached"] == r_apart["a2b_class_reached_identity"] < 0.1
    same.net = Affine(-1.0, 0.0)  # G inverts the strokes: its class kept falls, its cycle error is the ink
    r = measure_translation(same, n=60)
    assert r["a2b_class_kept"] < r["a2b_class_kept_identity"] - 0.3 and r["a2b_cycle_error"] > 0.1


def test_a_dataset_keeps_the_classes_asked_for_and_names_the_ones_it_has():
    from genlab.data import load_dataset
    from genlab.errors import DataError

    whole = load_dataset("digits", "test")
    ds = load_dataset("digits", "test", classes="3, 5")
    assert set(ds.labels.tolist()) == {3, 5} and len(ds) == int(((whole.labels == 3) | (whole.labels == 5)).sum())
    assert torch.equal(ds.images, whole.images[(whole.labels == 3) | (whole.labels == 5)])
    with pytest.raises(DataError, match="no class 'horse'; its classes are: 0, 1"):
        load_dataset("digits", "test", classes="horse")
    with pytest.raises(DataError, match="does not take classes"):
        load_dataset("toy2d", "test", classes="0")


def test_eval_of_a_cyclegan_run_measures_both_directions(cyclegan_run, capsys):
    code, text, err = run_cli(capsys, "eval", cyclegan_run, "--limit", "50", "--no-progress")
    assert code == 0, err
    assert "G: digits -> digits (50 images)" in text and "class kept" in text and "identity" in text
    import json

    record = json.loads((cyclegan_run / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["metric"] == "translation" and record["a2b_n"] == 50 and "b2a_fid_identity" in record
    code, _, err = run_cli(capsys, "eval", cyclegan_run, "--metrics", "fid")
    assert_one_sentence_error(code, err, "--metrics translation")
