"""genlab.data: the registry, scikit-learn digits, transforms and 2-D toy densities."""

import numpy as np
import pytest
import torch

from genlab.data import DATASETS, DatasetInfo, ImageDataset, PointDataset, from_model, levels_to_pixels, load_dataset, to_model
from genlab.errors import DataError, GenlabError


def test_registry_names():
    assert set(DATASETS) >= {"digits", "mnist", "fashion-mnist", "cifar10", "cifar10-jpeg", "folder", "toy2d"}


def test_unknown_name_lists_known_names():
    with pytest.raises(DataError, match="unknown dataset 'imagenet'.*digits.*mnist") as e:
        load_dataset("imagenet")
    assert isinstance(e.value, GenlabError)


def test_unknown_split():
    with pytest.raises(DataError, match="unknown split 'valid'.*train, test"):
        load_dataset("digits", "valid")


def test_unknown_option_fails_loudly():
    with pytest.raises(DataError, match="no option 'colour'.*channels"):
        load_dataset("folder", "train", root="/nonexistent", colour=3)
    with pytest.raises(DataError, match="no option 'variant'.*no options"):
        load_dataset("digits", variant="x")


# ---------------------------------------------------------------- digits

def test_digits_split_sizes_levels_and_values():
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert (len(train), len(test)) == (1437, 360)
    for d in (train, test):
        assert d.info == DatasetInfo("digits", 1, 8, 8, 17, 10, tuple("0123456789"))
        assert d.images.dtype == torch.uint8 and d.images.shape[1:] == (1, 8, 8)
        assert d.labels.dtype == torch.int64 and set(d.labels.tolist()) == set(range(10))
    assert int(train.images.max()) == int(test.images.max()) == 16
    assert int(train.images.min()) == 0


def test_digits_split_is_i_mod_5():
    from sklearn.datasets import load_digits

    d = load_digits()
    test = load_dataset("digits", "test")
    train = load_dataset("digits", "train")
    np.testing.assert_array_equal(test.images[:, 0].numpy(), d.images[::5])
    np.testing.assert_array_equal(test.labels.numpy(), d.target[::5])
    keep = np.arange(len(d.target)) % 5 != 0
    np.testing.assert_array_equal(train.labels.numpy(), d.target[keep])


def test_image_dataset_len_getitem_and_shape_check():
    d = load_dataset("digits", "test")
    x, y = d[3]
    assert x.shape == (1, 8, 8) and int(y) == int(d.labels[3])
    with pytest.raises(ValueError):
        ImageDataset(d.images.float(), d.labels, d.info, "test")


# ---------------------------------------------------------------- transforms

@pytest.mark.parametrize("levels", [17, 256])
def test_transforms_round_trip_exactly(levels):
    u = torch.arange(levels, dtype=torch.uint8).repeat(3)
    x = to_model(u, levels)
    assert x.dtype == torch.float32
    assert float(x.min()) == -1.0 and float(x.max()) == 1.0
    assert torch.equal(from_model(x, levels), u)
    # the levels are evenly spaced in [-1, 1]
    torch.testing.assert_close(x[:levels], torch.linspace(-1, 1, levels))
    # a small perturbation (less than half a bin) still rounds back
    half_bin = 1.0 / (levels - 1)
    assert torch.equal(from_model(x + 0.49 * half_bin, levels), u)
    assert torch.equal(from_model(x - 0.49 * half_bin, levels), u)


def test_from_model_clamps():
    out = from_model(torch.tensor([-5.0, -1.0, 1.0, 7.0]), 17)
    assert out.tolist() == [0, 0, 16, 16] and out.dtype == torch.uint8


def test_levels_to_pixels():
    u = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(levels_to_pixels(u, 256), u)
    p = levels_to_pixels(torch.arange(17, dtype=torch.uint8), 17)
    assert p.dtype == torch.uint8
    expected = [int(np.floor(i * 255 / 16 + 0.5)) for i in range(17)]
    assert p.tolist() == expected and p[0] == 0 and p[-1] == 255 and p[8] == 128
    assert levels_to_pixels(torch.tensor([0, 1], dtype=torch.uint8), 2).tolist() == [0, 255]


def test_transforms_reject_bad_levels():
    for bad in (1, 257, 2.0):
        with pytest.raises(ValueError):
            to_model(torch.zeros(1, dtype=torch.uint8), bad)


# ---------------------------------------------------------------- toy2d

@pytest.mark.parametrize("variant,classes,bound", [("moons", 2, 4.5), ("8gaussians", 8, 5.0),
                                                   ("swissroll", 1, 4.5), ("checkerboard", 1, 4.0)])
def test_toy2d(variant, classes, bound):
    train = load_dataset("toy2d", "train", variant=variant)
    test = load_dataset("toy2d", "test", variant=variant)
    assert isinstance(train, PointDataset) and train.variant == variant
    assert (len(train), len(test)) == (10000, 2000)
    assert train.points.dtype == torch.float32 and train.points.shape == (10000, 2)
    assert train.labels.dtype == torch.int64 and set(train.labels.tolist()) == set(range(classes))
    assert train.info.num_classes == classes and train.info.channels == 2 and train.info.levels == 0
    assert float(train.points.abs().max()) <= bound
    again = load_dataset("toy2d", "train", variant=variant)
    assert torch.equal(again.points, train.points)  # deterministic
    assert not torch.equal(test.points, train.points[:2000])  # train and test differ
    small = load_dataset("toy2d", "test", variant=variant, n=10, seed=7)
    assert small.points.shape == (10, 2)


def test_8gaussians_geometry():
    d = load_dataset("toy2d", "train", variant="8gaussians")
    for k in range(8):
        pts = d.points[d.labels == k].double()
        mean = pts.mean(0)
        angle = k * np.pi / 4
        centre = 2 * np.sqrt(2) * torch.tensor([np.cos(angle), np.sin(angle)], dtype=torch.float64)
        assert torch.allclose(mean, centre, atol=0.05)
        assert torch.allclose(pts.std(0), torch.full((2,), 0.5 / np.sqrt(2), dtype=torch.float64), atol=0.03)


def test_checkerboard_only_dark_squares():
    p = load_dataset("toy2d", "train", variant="checkerboard").points
    cells = torch.floor(p / 2).long()
    assert torch.all((cells[:, 0] + cells[:, 1]) % 2 == 0)


def test_toy2d_bad_options():
    with pytest.raises(DataError, match="unknown toy2d variant 'spiral'.*moons"):
        load_dataset("toy2d", variant="spiral")
    with pytest.raises(DataError, match="n=0"):
        load_dataset("toy2d", variant="moons", n=0)
    with pytest.raises(DataError, match="seed=-1"):
        load_dataset("toy2d", variant="moons", seed=-1)
