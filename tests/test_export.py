"""genlab export: an inference-only folder that samples exactly as its run does, with a model card."""

import json

import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import save_file

from genlab import RunDir
from genlab.cli import main
from genlab.errors import RunError
from genlab.evaluate import SamplingSpec, draw_samples

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "model"
    assert main(["export", str(run_dir), str(out)]) == 0
    return out


def test_folder_holds_config_ema_weights_and_card(run_dir, exported):
    assert sorted(p.name for p in exported.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert json.loads((exported / "config.json").read_text()) == json.loads((run_dir / "config.json").read_text())
    _, ema, _, step = RunDir(run_dir).load("ema")
    with safe_open(str(exported / "model.safetensors"), framework="pt") as f:
        keys, meta = set(f.keys()), f.metadata()
        assert keys == set(ema.state_dict())  # the EMA weights alone: no optimiser, no training weights, no RNG
        for k, v in ema.state_dict().items():
            assert torch.equal(f.get_tensor(k), v)
    assert meta["weights"] == "ema" and meta["step"] == str(step) == "4"


def test_model_card_front_matter_and_figures(run_dir, exported):
    text = (exported / "README.md").read_text()
    assert text.startswith("---\n")
    front = yaml.safe_load(text.split("---\n")[1])
    assert front["library_name"] == "genlab" and front["family"] == "ddpm" and front["datasets"] == ["digits"]
    assert front["training_steps"] == 4 and front["parameters"] == sum(p.numel() for p in RunDir(run_dir).load()[1].parameters())
    assert front["training_time_s"] > 0
    (bpd,) = [r for r in RunDir(run_dir).evaluations() if "bpd" in r]
    assert f"{bpd['bpd']:.4f}" in text and f"bits/dim on {bpd['bpd_n']} test images" in text  # the figure with its protocol


def test_exported_folder_samples_like_its_run(run_dir, exported, tmp_path):
    spec = SamplingSpec(n=3, seed=5, sampler="ddim", steps=4)
    cfg, run_family, _, _ = RunDir(run_dir).load()
    cfg2, export_family, path, step = RunDir(exported).load()
    assert path.name == "model.safetensors" and step == 4 and cfg2 == cfg
    assert torch.equal(draw_samples(run_family, cfg, spec)[0], draw_samples(export_family, cfg2, spec)[0])
    assert main(["sample", str(exported), "--n", "2", "--sampler", "ddim", "--steps", "3", "--out", str(tmp_path / "x.png")]) == 0
    assert (tmp_path / "x.png").stat().st_size > 0
    with pytest.raises(RunError, match="holding only its ema weights"):
        RunDir(exported).load("model")


def test_bad_targets_are_one_sentence_and_write_nothing(run_dir, exported, tmp_path, capsys):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    assert main(["export", str(run_dir), str(busy)]) == 2
    assert "already exists and is not an empty folder" in capsys.readouterr().err
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]
    assert main(["export", str(exported), str(tmp_path / "again")]) == 2
    assert "already an exported folder" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "nope"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "not a directory" in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy"]  # no half-written folder, no staging left


def test_a_foreign_weights_file_is_refused(exported, tmp_path):
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "config.json").write_text((exported / "config.json").read_text())
    save_file({"w": torch.zeros(1)}, str(fake / "model.safetensors"), metadata={"format": "something-else"})
    with pytest.raises(RunError, match="not a genlab export"):
        RunDir(fake).load()


def test_the_demo_serves_an_exported_folder(exported):
    from genlab.demo import Demo

    demo = Demo([exported])
    grid, info = demo.generate(str(exported), "ddim", 3, seed=0, n=2)
    assert grid.ndim == 3 and "2 samples, ddim, 3 steps: 3 network evaluations each" in info
    assert "step 4" in demo.summary(str(exported))
