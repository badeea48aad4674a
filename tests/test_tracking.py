"""--log-with: what metrics.jsonl logs (and the sample grids) reaches TensorBoard, read back from its event files."""

import json

import pytest

from conftest import TINY
from genlab import tracking
from genlab.cli import main
from genlab.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")
tensorboard = pytest.importorskip("tensorboard", reason="--log-with tensorboard needs the tensorboard package (genlab[track])")


def _events(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / tracking.LOG_DIR / tracking.PROJECT), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def _records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_metrics_and_grids_reach_tensorboard(tmp_path):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--steps", "10", "--sample-every", "5", "--eval-limit", "4", "--eval-t-samples", "2",
                 "--log-with", "tensorboard", "--out", str(run)]) == 0
    events = _events(run)
    logged = [r for r in _records(run) if "event" not in r]
    assert [e.step for e in events.Scalars("train/loss")] == [r["step"] for r in logged] == [5, 10]
    for e, r in zip(events.Scalars("train/loss"), logged, strict=True):
        assert e.value == pytest.approx(r["loss"], rel=1e-6)  # float32 in the event file
    (bpd,) = [r for r in _records(run) if r.get("event") == "eval"]
    (e,) = events.Scalars("eval/bpd")
    assert (e.step, e.value) == (10, pytest.approx(bpd["bpd"], rel=1e-6))
    grids = events.Images("samples")
    assert [g.step for g in grids] == [5, 10] and grids[0].width > 8  # the PNG grid, read back as an image


def test_resume_does_not_repeat_steps(tmp_path):
    run = tmp_path / "run"
    base = ["train", *TINY, "--eval-bpd", "false", "--log-with", "tensorboard", "--out", str(run)]
    assert main([*base, "--steps", "10"]) == 0
    assert main([*base, "--steps", "20", "--resume"]) == 0
    assert [e.step for e in _events(run).Scalars("train/loss")] == [5, 10, 15, 20]


def test_scalars_and_hyperparameters():
    record = {"event": "eval", "step": 3, "fid": 4.5, "n": 1000, "sampler": "ddim", "ok": True, "kid": float("nan")}
    assert tracking.scalars(record) == {"eval/fid": 4.5}  # counts, text, flags and NaN are not measurements
    assert tracking.scalars({"step": 5, "loss": 1.0}) == {"train/loss": 1.0}
    flat = tracking.hyperparameters({"model": {"channels": (16, 32), "dropout": 0.1}, "train": {"max_minutes": None}})
    assert flat == {"model.channels": "16,32", "model.dropout": 0.1, "train.max_minutes": "none"}


def test_missing_package_is_one_sentence(monkeypatch, tmp_path, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ConfigError, match="needs the wandb package"):
        tracking.require("wandb")
    assert main(["train", *TINY, "--steps", "2", "--log-with", "wandb", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "--log-with wandb needs the wandb package" in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists()  # said before anything was written
    assert main(["train", *TINY, "--steps", "2", "--log-with", "mlflow", "--out", str(tmp_path / "r")]) == 2
    assert "unknown --log-with 'mlflow'" in capsys.readouterr().err
