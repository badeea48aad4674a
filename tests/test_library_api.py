"""The library calls behind the CLI, from Python: genlab.train, genlab.RunDir, genlab.evaluate.

They must give what the command line gives (the same samples, the same records), with no
argparse, and the run directory's records must read back in the current schema whatever
schema they were written in. Library errors name settings; the CLI says them as flags.
"""

import ast
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import genlab
from genlab.cli import main
from genlab.config import FLAGS, resolve
from genlab.errors import ConfigError, GenlabError, RunError
from genlab.evaluate import SamplingSpec, draw_samples, load_split, measure_bpd
from genlab.run import SCHEMA, RunDir, upgrade_record

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

SRC = Path(genlab.__file__).parent
TINY = {"model": {"channels": (16, 32), "norm_groups": 8, "attn_resolutions": ()}, "diffusion": {"timesteps": 50},
        "train": {"steps": 4, "batch_size": 32, "sample_every": 0, "grid_steps": 10, "log_every": 2, "eval_limit": 16,
                  "mixed_precision": "no"}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp("api") / "run"
    lines = []
    summary = genlab.train(resolve("digits", TINY), run, progress=False, say=lines.append)
    return run, summary, lines


def test_train_from_python_writes_a_run_and_its_evaluation(trained):
    run, summary, lines = trained
    rd = RunDir(run)
    assert summary["steps"] == 4 and summary["checkpoint"] == rd.latest_checkpoint() == rd.checkpoint_path(4)
    assert rd.read_config().data.shape == (1, 8, 8)  # the data's shape filled in: the run describes itself
    (evaluation,) = summary["evaluations"]
    assert evaluation["bpd_n"] == 16 and np.isfinite(evaluation["bpd"])
    assert rd.evaluations()[-1]["bpd"] == evaluation["bpd"]
    assert all(r["schema"] == SCHEMA for r in rd.records())
    assert any(line.startswith("genlab: test bits/dim") for line in lines)
    with pytest.raises(ConfigError, match="already holds a run"):
        genlab.train(resolve("digits", TINY), run, progress=False, say=lines.append)


def test_draw_samples_gives_what_genlab_sample_gives(trained, tmp_path, capsys):
    run, _, _ = trained
    cfg, family, _, step = RunDir(run).load()
    x, protocol = draw_samples(family, cfg, SamplingSpec(n=6, sampler="ddim", steps=10, seed=3, batch_size=4), step)
    assert x.dtype == torch.uint8 and x.shape == (6, 1, 8, 8) and protocol["nfe"] == 10 and protocol["step"] == 4
    npz = tmp_path / "s.npz"
    assert main(["sample", str(run), "--n", "6", "--sampler", "ddim", "--steps", "10", "--seed", "3", "--npz", str(npz),
                 "--out", str(tmp_path / "g.png"), "--no-progress"]) == 0
    with np.load(npz) as z:
        assert np.array_equal(z["samples"], x.numpy())
    bpd = measure_bpd(family, cfg, load_split(cfg, "test").images[:4], t_samples=5)
    assert np.isfinite(bpd["bpd"]) and bpd["n"] == 4 and bpd["timesteps"] == 50


def test_records_of_the_first_schema_are_upgraded_once_in_one_place(tmp_path):
    old = {"event": "eval", "metric": "bpd", "bpd": 3.1, "n": 360, "split": "test", "seconds": 61.0, "step": 800}
    new = upgrade_record(old)
    assert (new["bpd_n"], new["bpd_split"], new["bpd_seconds"], new["weights"], new["schema"]) == (360, "test", 61.0, "ema", SCHEMA)
    assert "schema" not in old  # the caller's record is not changed
    assert upgrade_record(new) == new
    quality = {"event": "eval", "fid": 1.0, "n": 1000, "bpd": 3.0, "bpd_n": 64, "bpd_split": "test", "schema": 2}
    assert upgrade_record(quality)["bpd_n"] == 64 and upgrade_record(quality)["n"] == 1000
    with pytest.raises(RunError, match="newer than this genlab"):
        upgrade_record({"schema": SCHEMA + 1})
    rd = RunDir(tmp_path)
    rd.metrics_path.write_text(json.dumps(old) + "\n\n" + json.dumps({"step": 50, "loss": 0.1}) + "\n")
    assert [r.get("bpd_n") for r in rd.records()] == [360, None] and len(rd.evaluations()) == 1
    rd.metrics_path.write_text("{not json\n")
    with pytest.raises(RunError, match="line 1 is not JSON"):
        rd.records()


def test_library_errors_name_settings_and_the_cli_says_flags(tmp_path, capsys):
    with pytest.raises(ConfigError) as e:
        resolve("digits", cli_overrides={"train": {"lr": -1}})
    assert str(e.value) == "train.lr must be positive, not -1.0."
    assert e.value.render(FLAGS) == "--lr must be positive, not -1.0."
    assert main(["train", "--lr", "-1", "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.strip() == "genlab: error: --lr must be positive, not -1.0."
    assert not (tmp_path / "r").exists()


def test_every_setting_a_library_message_names_exists():
    """A {section.field} in a message must be a setting with a flag, or the CLI would print it raw."""
    named = set()
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                named |= set(re.findall(r"(?<!`)\{\{?([a-z_]+\.[a-z_]+)\}?\}", node.value))  # not a docstring's ``{x.y}``
    assert named and named <= set(FLAGS), sorted(named - set(FLAGS))
    assert all(flag.startswith("--") for flag in FLAGS.values())
    assert issubclass(ConfigError, GenlabError)


def test_the_library_never_imports_argparse():
    users = [p.relative_to(SRC) for p in SRC.rglob("*.py") if "cli" not in p.relative_to(SRC).parts
             and re.search(r"^\s*(import argparse|from argparse)", p.read_text(), re.M)]
    assert users == []
