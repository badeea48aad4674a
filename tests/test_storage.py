"""Faults of the machine, said in one sentence with exit status 2: a full or read-only disk (real tmpfs mounts,
where this process may mount: root on Linux), and an absurd edited config.json, refused before any data is read."""

import json
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from conftest import TINY
from genlab.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def mount(tmp_path):
    """mount(size, readonly) -> a fresh tmpfs of ``size`` (e.g. "1m"); skips where mounting is not allowed."""
    mounted = []

    def make(size: str, readonly: bool = False) -> Path:
        where = tmp_path / f"mnt-{uuid.uuid4().hex[:6]}"
        where.mkdir()
        options = f"size={size}" + (",ro" if readonly else "")
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True)
        if done.returncode:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip() or 'not permitted'})")
        mounted.append(where)
        return where

    yield make
    for where in mounted:
        subprocess.run(["umount", str(where)], capture_output=True)


def _no_data(monkeypatch):
    """Fail the test if training reaches the data (the fault must be said before)."""
    import importlib

    module = importlib.import_module("genlab.train")  # the module (genlab.train is also the function)

    def refuse(*a, **k):
        raise AssertionError("the data was read before the fault was said")

    monkeypatch.setattr(module, "load_split", refuse)


def test_full_disk_is_one_sentence_and_leaves_nothing_half_written(mount, capsys):
    disk = mount("256k")  # room for config.json and the log, not for a 3 MB checkpoint
    run = disk / "run"
    assert main(["train", *TINY, "--steps", "3", "--eval-bpd", "false", "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert "the disk is full" in err and "checkpoints/step_0000003.safetensors" in err and err.count("\n") == 1
    assert "Traceback" not in err
    leftovers = [p.name for p in run.rglob("*") if p.name.endswith(".tmp") or p.suffix == ".safetensors"]
    assert leftovers == []  # no partial checkpoint and no temporary file: --resume starts cleanly


def test_read_only_disk_is_said_before_the_data_is_read(mount, monkeypatch, capsys):
    disk = mount("1m", readonly=True)
    _no_data(monkeypatch)
    assert main(["train", *TINY, "--steps", "3", "--out", str(disk / "run")]) == 2
    err = capsys.readouterr().err
    assert "the file system is read-only" in err and err.count("\n") == 1


def test_absurd_config_is_refused_before_data_and_model(run_dir, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    cfg = json.loads((run / "config.json").read_text())
    cfg["model"]["channels"] = [100000, 100000]
    (run / "config.json").write_text(json.dumps(cfg))
    assert main(["sample", str(run), "--n", "1", "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "parameters, which needs about" in err and "--channels is 100000,100000" in err and err.count("\n") == 1
    _no_data(monkeypatch)
    assert main(["train", "--resume", "--steps", "8", "--out", str(run)]) == 2
    assert "more than this machine's" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
