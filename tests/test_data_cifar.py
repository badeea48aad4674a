"""CIFAR-10 from fake binary and python batches built in tmp_path, and the restricted unpickler."""

import io
import pickle
import struct
import tarfile

import numpy as np
import pytest
import torch

from genlab.data import load_dataset
from genlab.data.cifar import CLASS_NAMES, restricted_loads
from genlab.errors import DataError

N = 20  # images per fake batch


def fake_batches(seed=0):
    """{batch name: (uint8 [N, 3072], labels [N])} for data_batch_1..5 and test_batch."""
    rng = np.random.default_rng(seed)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    return {n: (rng.integers(0, 256, (N, 3072), dtype=np.uint8), rng.integers(0, 10, N)) for n in names}


def write_bin(folder, batches):
    folder.mkdir(parents=True, exist_ok=True)
    for name, (x, y) in batches.items():
        records = np.concatenate([y.astype(np.uint8)[:, None], x], 1)
        (folder / f"{name}.bin").write_bytes(records.tobytes())
    return folder


class Py2Pickler(pickle._Pickler):
    """Writes bytes and str the way Python 2 wrote its str, as in the official CIFAR-10 files."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_str8(self, obj):
        data = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = save_str8
    dispatch[str] = save_str8


def py_batch(x, y, protocol, str_keys=False):
    batch = {"batch_label": "training batch 1 of 5", "labels": [int(v) for v in y], "data": x,
             "filenames": [f"img_{i}.png" for i in range(len(y))]}
    if isinstance(protocol, str):  # "py2" or "py2-numpy1"
        buf = io.BytesIO()
        Py2Pickler(buf, protocol=2).dump(batch)
        if protocol == "py2-numpy1":  # the official files name numpy 1's module
            return buf.getvalue().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
        return buf.getvalue()
    if not str_keys:
        batch = {k.encode(): v for k, v in batch.items()}
    return pickle.dumps(batch, protocol=protocol)


def write_py(folder, batches, protocol="py2", str_keys=False):
    folder.mkdir(parents=True, exist_ok=True)
    for name, (x, y) in batches.items():
        (folder / name).write_bytes(py_batch(x, y, protocol, str_keys))
    return folder


def check(d, batches, split):
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    x = np.concatenate([batches[n][0] for n in names]).reshape(-1, 3, 32, 32)
    y = np.concatenate([batches[n][1] for n in names])
    assert d.images.dtype == torch.uint8 and d.images.shape == (len(names) * N, 3, 32, 32)
    assert np.array_equal(d.images.numpy(), x)
    assert d.labels.dtype == torch.int64 and d.labels.tolist() == y.tolist()
    assert d.info.class_names == CLASS_NAMES and d.info.levels == 256 and d.info.name == "cifar10"


@pytest.mark.parametrize("split", ["train", "test"])
@pytest.mark.parametrize("where", ["root", "batches-dir"])
def test_bin_batches(tmp_path, split, where):
    batches = fake_batches()
    folder = write_bin(tmp_path / "cifar-10-batches-bin", batches)
    check(load_dataset("cifar10", split, root=tmp_path if where == "root" else folder), batches, split)


@pytest.mark.parametrize("protocol", ["py2", "py2-numpy1", 2, 4, 5])
def test_python_batches(tmp_path, protocol):
    batches = fake_batches(1)
    write_py(tmp_path / "cifar-10-batches-py", batches, protocol)
    check(load_dataset("cifar10", "train", root=tmp_path), batches, "train")
    check(load_dataset("cifar10", "test", root=tmp_path), batches, "test")


def test_python_batches_with_str_keys_in_cifar10_subfolder(tmp_path):
    batches = fake_batches(2)
    write_py(tmp_path / "cifar10" / "cifar-10-batches-py", batches, 4, str_keys=True)
    check(load_dataset("cifar10", "test", root=tmp_path), batches, "test")


def test_genlab_data_env(tmp_path, monkeypatch):
    batches = fake_batches(3)
    write_bin(tmp_path / "data" / "cifar-10-batches-bin", batches)
    monkeypatch.setenv("GENLAB_DATA", str(tmp_path / "data"))
    check(load_dataset("cifar10", "test"), batches, "test")


@pytest.mark.parametrize("fmt", ["bin", "py"])
def test_official_tar_gz_read_in_place(tmp_path, fmt):
    batches = fake_batches(4)
    staging = tmp_path / "staging"
    folder = staging / f"cifar-10-batches-{fmt}"
    write_bin(folder, batches) if fmt == "bin" else write_py(folder, batches)
    archive = tmp_path / "root" / ("cifar-10-binary.tar.gz" if fmt == "bin" else "cifar-10-python.tar.gz")
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    check(load_dataset("cifar10", "train", root=archive.parent), batches, "train")
    check(load_dataset("cifar10", "test", root=archive), batches, "test")  # the archive itself as root
    archive.write_bytes(archive.read_bytes()[:1000])
    with pytest.raises(DataError, match="truncated or corrupt") as e:
        load_dataset("cifar10", "test", root=archive.parent)
    assert str(archive) in str(e.value)


def test_truncated_bin(tmp_path):
    folder = write_bin(tmp_path / "cifar-10-batches-bin", fake_batches())
    bad = folder / "test_batch.bin"
    bad.write_bytes(bad.read_bytes()[:-10])
    with pytest.raises(DataError, match="truncated") as e:
        load_dataset("cifar10", "test", root=tmp_path)
    assert "test_batch.bin" in str(e.value)


def test_bad_label_in_bin(tmp_path):
    batches = fake_batches()
    batches["test_batch"][1][3] = 42
    write_bin(tmp_path / "cifar-10-batches-bin", batches)
    with pytest.raises(DataError, match="label"):
        load_dataset("cifar10", "test", root=tmp_path)


def test_missing_batch(tmp_path):
    folder = write_bin(tmp_path / "cifar-10-batches-bin", fake_batches())
    (folder / "data_batch_3.bin").unlink()
    with pytest.raises(DataError, match="data_batch_3.bin is missing"):
        load_dataset("cifar10", "train", root=tmp_path)


def test_missing_everything(tmp_path):
    with pytest.raises(DataError, match="cifar-10-batches-py or cifar-10-batches-bin") as e:
        load_dataset("cifar10", "train", root=tmp_path / "nothing")
    assert str(tmp_path / "nothing") in str(e.value)


class Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os
        return os.system, (f"touch {self.marker}",)


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    x, y = fake_batches()["test_batch"]
    payload = {b"data": x, b"labels": list(y), b"evil": Exploit(marker)}
    (folder / "test_batch").write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(DataError, match=r"cannot be read safely .*refusing to load global (posix|nt|os)\.system"):
        load_dataset("cifar10", "test", root=tmp_path)
    assert not marker.exists()
    # and the unpickler itself refuses the global directly
    with pytest.raises(pickle.UnpicklingError):
        restricted_loads(pickle.dumps(Exploit(marker)))
    assert not marker.exists()


@pytest.mark.parametrize("payload", [
    pickle.dumps(len),  # a builtin function
    pickle.dumps(np.array([len], dtype=object)),  # an object array's items go through find_class too
    pickle.dumps(__import__("collections").OrderedDict(a=1)),
])
def test_restricted_unpickler_refuses_other_globals(payload):
    with pytest.raises(pickle.UnpicklingError):
        restricted_loads(payload)


@pytest.mark.parametrize("content", [b"garbage", pickle.dumps([1, 2, 3]), pickle.dumps({b"data": b"x"})])
def test_corrupt_python_batch(tmp_path, content):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(content)
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", "test", root=tmp_path)
    assert str(folder / "test_batch") in str(e.value)
