"""FID, KID and precision/recall against their definitions, then the shipped feature networks on real data."""

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from conftest import SHARED, needs_shared
from genlab.data import load_dataset
from genlab.errors import ConfigError, RunError
from genlab.metrics import evaluate as E
from genlab.metrics import features as F
from genlab.metrics.quality import class_accuracy, fid, kid, precision_recall


def gaussian(n, d, seed, mean=0.0, scale=1.0):
    A = torch.randn(d, d, generator=torch.Generator().manual_seed(1234), dtype=torch.float64) * 0.3 + torch.eye(d, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d, generator=g, dtype=torch.float64) @ A) * scale + mean


# ---- FID -------------------------------------------------------------------------------------

def fid_by_definition(a, b):
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) with scipy's matrix square root."""
    a, b = a.numpy(), b.numpy()
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(s_a @ s_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a + s_b - 2 * root))


def test_fid_matches_its_definition():
    a, b = gaussian(3000, 16, 0), gaussian(2000, 16, 1, mean=0.3, scale=1.5)
    assert fid(a, b) == pytest.approx(fid_by_definition(a, b), rel=1e-6)


def test_fid_of_a_set_with_itself_is_zero_and_a_shift_costs_its_square():
    a = gaussian(2000, 32, 2)
    assert fid(a, a) == pytest.approx(0.0, abs=1e-6)
    shift = torch.linspace(-1, 1, 32, dtype=torch.float64)
    assert fid(a, a + shift) == pytest.approx(float((shift**2).sum()), rel=1e-6)


def test_fid_needs_two_points_and_equal_widths():
    with pytest.raises(ValueError):
        fid(gaussian(10, 4, 0), gaussian(1, 4, 1))
    with pytest.raises(ValueError):
        fid(gaussian(10, 4, 0), gaussian(10, 5, 1))


# ---- KID -------------------------------------------------------------------------------------

def kid_by_definition(x, y):
    """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3, by brute force over pairs."""
    d = x.shape[1]
    k = lambda a, b: (a @ b.T / d + 1) ** 3  # noqa: E731
    m, n = len(x), len(y)
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    return float((kxx.sum() - kxx.diag().sum()) / (m * (m - 1)) + (kyy.sum() - kyy.diag().sum()) / (n * (n - 1))
                 - 2 * kxy.mean())


def test_kid_with_the_whole_set_as_subset_is_the_unbiased_mmd():
    x, y = gaussian(60, 8, 3), gaussian(60, 8, 4, mean=0.5)
    mean, std = kid(x, y, subsets=3, subset_size=60)
    assert mean == pytest.approx(kid_by_definition(x, y), rel=1e-9)
    assert std == pytest.approx(0.0, abs=1e-9)  # every subset is the whole set, reordered


def test_kid_is_near_zero_for_one_distribution_and_positive_for_two():
    a, b = gaussian(2000, 16, 5), gaussian(2000, 16, 6)
    same, same_std = kid(a, b)
    other, _ = kid(a, gaussian(2000, 16, 7, mean=0.5))
    assert abs(same) < 3 * same_std + 1e-3
    assert other > 20 * max(abs(same), 1e-4)


def test_kid_is_the_same_run_to_run():
    a, b = gaussian(1500, 8, 8), gaussian(1500, 8, 9, mean=0.1)
    assert kid(a, b, seed=3) == kid(a, b, seed=3)


# ---- precision / recall ----------------------------------------------------------------------

def pr_by_definition(real, fake, k):
    """Kynkaanniemi et al. 2019 with plain loops: balls to the k-th nearest neighbour."""
    def radii(x):
        return [sorted(float((x[i] - x[j]).norm()) for j in range(len(x)) if j != i)[k - 1] for i in range(len(x))]

    def covered(queries, points, r):
        return sum(any(float((q - p).norm()) <= rp for p, rp in zip(points, r, strict=True)) for q in queries) / len(queries)

    return covered(fake, real, radii(real)), covered(real, fake, radii(fake))


def test_precision_recall_match_brute_force():
    real, fake = gaussian(40, 3, 10), gaussian(35, 3, 11, mean=0.7, scale=0.6)
    for k in (1, 3):
        assert precision_recall(real, fake, k=k, chunk=7) == pytest.approx(pr_by_definition(real, fake, k))


def clusters(n_per, centres, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.cat([c + 0.3 * torch.randn(n_per, centres.shape[1], generator=g, dtype=torch.float64) for c in centres])


def test_dropping_half_the_modes_keeps_precision_and_halves_recall():
    angles = torch.arange(10, dtype=torch.float64) * 2 * math.pi / 10
    centres = 10 * torch.stack([angles.cos(), angles.sin()], 1)  # ten well-separated modes in the plane
    real = clusters(200, centres, 0)
    fake = clusters(400, centres[:5], 1)
    p, r = precision_recall(real, fake)
    assert p > 0.95 and 0.4 < r < 0.55
    p, r = precision_recall(real, clusters(200, centres, 2))
    assert p > 0.95 and r > 0.95


def test_class_accuracy_counts_each_requested_class():
    logits = torch.eye(3)[[0, 1, 2, 2]]
    out = class_accuracy(logits, torch.tensor([0, 1, 2, 1]), 3)
    assert out["class_accuracy"] == 0.75 and out["class_accuracy_per_class"] == {0: 1.0, 1: 0.5, 2: 1.0}


# ---- the feature networks ---------------------------------------------------------------------

@pytest.mark.parametrize("name", list(F.TRAIN_DATA))
def test_every_feature_network_ships_with_its_accuracy_and_command(name):
    net = F.load_feature_network(name)
    assert net.version.startswith(f"{name}-") and len(net.version) == len(name) + 13
    assert net.accuracy >= F.ACCURACY_GOALS[name]
    assert net.command.startswith(f"genlab features train --data {name}")
    assert F.weights_path(name).stat().st_size < 2_000_000
    assert net.meta["test_n"] == {"digits": 360, "mnist": 10000, "fashion-mnist": 10000, "cifar10": 10000}[name]


def test_datasets_map_to_their_networks_and_others_are_refused():
    assert F.load_feature_network("cifar10-jpeg").version == F.load_feature_network("cifar10").version
    with pytest.raises(ConfigError, match="no feature network for 'toy2d'"):
        F.load_feature_network("toy2d")


def test_changed_weights_change_the_version_and_are_refused(tmp_path):
    src = F.weights_path("digits")
    with safe_open(str(src), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    tensors["head.bias"] = tensors["head.bias"] + 1e-3
    assert F.weights_version(tensors) != F.load_feature_network("digits").version.split("-", 1)[1]
    save_file(tensors, str(tmp_path / "edited.safetensors"), metadata=meta)
    with pytest.raises(RunError, match="was changed"):
        F.load_feature_network("digits", path=tmp_path / "edited.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a network")
    with pytest.raises(RunError, match="not a genlab feature network"):
        F.load_feature_network("digits", path=tmp_path / "junk.safetensors")


def test_feature_training_is_deterministic_and_recorded(tmp_path):
    metas = [F.train_feature_network("digits", tmp_path / f"{i}.safetensors", epochs=2, progress=False, log=lambda s: None)
             for i in range(2)]
    assert metas[0]["version"] == metas[1]["version"]
    a, b = (load_file(str(tmp_path / f"{i}.safetensors")) for i in range(2))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert all(v.dtype == torch.float16 for k, v in a.items() if "num_batches" not in k)  # shipped at half size
    net = F.load_feature_network("digits", path=tmp_path / "0.safetensors")
    assert net.version == metas[0]["version"] and net.meta["recipe"]["epochs"] == 2
    assert net.accuracy > 0.5  # two epochs already learn most of it


def test_the_feature_network_refuses_images_of_another_kind():
    net = F.load_feature_network("digits")
    with pytest.raises(ConfigError, match="uint8 images of shape"):
        net.extract(torch.zeros(2, 1, 28, 28, dtype=torch.uint8))
    with pytest.raises(ConfigError, match="17 levels"):
        net.extract(torch.full((2, 1, 8, 8), 200, dtype=torch.uint8))


def test_reference_features_are_cached_per_network_version(monkeypatch):
    net = F.load_feature_network("digits")
    ds = load_dataset("digits", "test")
    first, labels = E.reference_features(net, ds.images, ds.labels, "digits", "test")
    assert first.dtype == torch.float64 and first.shape == (360, net.net.num_features)
    assert torch.equal(labels, ds.labels)
    files = list(E.features_cache_dir().rglob("*.safetensors"))
    assert len(files) == 1 and files[0].parent.name == net.version

    def no_extract(*a, **k):
        raise AssertionError("the cache was not used")

    monkeypatch.setattr(F.FeatureNetwork, "extract", no_extract)
    again, _ = E.reference_features(net, ds.images, ds.labels, "digits", "test")
    assert torch.equal(first, again)


# ---- sanity on real data -------------------------------------------------------------------------

def halves(features, labels, seed=0):
    perm = torch.randperm(len(features), generator=torch.Generator().manual_seed(seed))
    h = len(features) // 2
    return (features[perm[:h]], labels[perm[:h]]), (features[perm[h:2 * h]], labels[perm[h:2 * h]])


def sanity(name, data_dir):
    net = F.load_feature_network(name)
    ds = load_dataset(name, "test", root=data_dir)
    feats, _ = net.extract(ds.images)
    (a, la), (b, lb) = halves(feats, ds.labels)
    noise = torch.randint(0, ds.info.levels, ds.images[: len(a)].shape, generator=torch.Generator().manual_seed(0),
                          dtype=torch.uint8)
    noise_feats, _ = net.extract(noise)
    floor = fid(a, b)
    assert fid(a, a) == pytest.approx(0.0, abs=1e-6)
    assert fid(a, noise_feats) > 10 * floor
    k, k_std = kid(a, b)
    assert abs(k) < 0.05 * kid(a, noise_feats)[0]
    p_all, r_all = precision_recall(a, b)
    p, r = precision_recall(a, b[lb < 5])  # a 'model' that lost five of the ten classes
    assert p > 0.75 and p > p_all - 0.05, (p, p_all)  # what it makes is still real-looking
    assert 0.35 < r / r_all < 0.65, (r, r_all)  # but it covers about half of the real set
    again, _ = net.extract(ds.images)
    assert torch.equal(again, feats)
    (a2, _), (b2, _) = halves(again, ds.labels)
    assert fid(a2, b2) == floor and kid(a2, b2) == (k, k_std)
    return floor


def test_digits_real_sets_are_close_and_noise_is_far():
    assert sanity("digits", None) < 20


@needs_shared
@pytest.mark.slow
def test_mnist_real_sets_are_close_and_noise_is_far():
    assert sanity("mnist", SHARED / "mnist") < 2.0
