"""The command line: help, a tiny end-to-end run, determinism, and one clear sentence on bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import TINY
from genlab.cli import main
from genlab.data import download as dl


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_sentence_error(code, err, *words):
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("genlab: error: ") and lines[0].endswith("."), lines[0]
    assert "Traceback" not in err
    for w in words:
        assert w in lines[0], (w, lines[0])


def test_help_lists_the_options_a_user_expects(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for flag in ["--data", "--data-dir", "--out", "--steps", "--batch-size", "--lr", "--seed", "--schedule",
                 "--timesteps", "--loss", "--resume", "--config", "--channels", "--res-blocks", "--attn", "--mixed-precision"]:
        assert flag in out, flag
    for cmd in ("sample", "eval"):
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        assert "RUN" in capsys.readouterr().out.upper()


def test_train_writes_a_self_describing_run(run_dir):
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["data"]["name"] == "digits" and cfg["data"]["levels"] == 17 and cfg["data"]["shape"] == [1, 8, 8]
    assert cfg["model"]["channels"] == [16, 32] and cfg["diffusion"]["timesteps"] == 50
    assert list((run_dir / "checkpoints").glob("step_0000004.safetensors"))
    assert list((run_dir / "samples").glob("*.png"))
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["event"] == "eval" and records[-1]["n"] == 8
    assert not list(run_dir.rglob("*.pt")) and not list(run_dir.rglob("*.pkl"))


def test_eval_prints_the_bound_and_its_parts(run_dir, capsys):
    code, out, _ = run_cli(capsys, "eval", run_dir, "--limit", "6", "--json")
    assert code == 0
    r = json.loads(out)
    assert r["n"] == 6 and r["weights"] == "ema" and r["t_samples"] is None
    assert r["bpd"] == pytest.approx(r["prior_bpd"] + r["diffusion_bpd"] + r["decoder_bpd"])
    assert 0 < r["bpd"] < 20
    code, out, _ = run_cli(capsys, "eval", run_dir, "--limit", "6", "--no-progress")
    assert code == 0 and "L_T (prior)" in out and "L_0 (decoder)" in out and "total (bound)" in out
    code, out, _ = run_cli(capsys, "eval", run_dir, "--limit", "6", "--t-samples", "5", "--json")
    assert code == 0 and json.loads(out)["t_samples"] == 5


def test_sampling_is_reproducible_whatever_the_batch_size(run_dir, tmp_path, capsys):
    for name, bs in (("a", 16), ("b", 16), ("c", 3)):
        code, _, _ = run_cli(capsys, "sample", run_dir, "--n", "10", "--sampler", "ddim", "--steps", "5", "--seed", "1",
                             "--batch-size", bs, "--out", tmp_path / f"{name}.png", "--npz", tmp_path / f"{name}.npz", "--no-progress")
        assert code == 0
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    a, c = np.load(tmp_path / "a.npz"), np.load(tmp_path / "c.npz")
    assert a["samples"].dtype == np.uint8 and a["samples"].shape == (10, 1, 8, 8) and int(a["levels"]) == 17
    assert np.array_equal(a["samples"], c["samples"])
    code, _, _ = run_cli(capsys, "sample", run_dir, "--n", "4", "--sampler", "ancestral", "--seed", "2",
                         "--out", tmp_path / "anc.png", "--no-progress")
    assert code == 0 and (tmp_path / "anc.png").stat().st_size > 0


@pytest.mark.parametrize("sampler,steps,nfe", [("ancestral", 4, 4), ("ddim", 4, 4), ("dpmpp-2m", 4, 4), ("euler", 4, 4),
                                               ("heun", 4, 7), ("langevin", 4, 21), ("pc", 4, 7)])
def test_every_sampler_runs_reproducibly_and_counts_its_evaluations(run_dir, tmp_path, capsys, sampler, steps, nfe):
    """The network evaluations are counted with a hook; the stochastic samplers repeat with the seed."""
    for name, bs in (("a", 5), ("b", 2)):
        code, out, _ = run_cli(capsys, "sample", run_dir, "--n", "5", "--sampler", sampler, "--steps", steps, "--seed", "3",
                               "--batch-size", bs, "--out", tmp_path / f"{name}.png", "--npz", tmp_path / f"{name}.npz",
                               "--no-progress")
        assert code == 0 and f"{nfe} network evaluations each" in out, out
    a, b = np.load(tmp_path / "a.npz"), np.load(tmp_path / "b.npz")
    assert np.array_equal(a["samples"], b["samples"])
    protocol = json.loads(str(a["protocol"]))
    assert protocol["sampler"] == sampler and protocol["nfe"] == nfe and protocol["steps"] == steps


def test_compiled_sampling_draws_the_same_samples_with_the_same_evaluations(run_dir, tmp_path, capsys):
    """genlab sample --compile runs the network's forward through torch.compile: same images, same NFE count."""
    for name, extra in (("eager", []), ("compiled", ["--compile"])):
        code, out, _ = run_cli(capsys, "sample", run_dir, "--n", "6", "--sampler", "ddim", "--steps", "4", "--seed", "5",
                               "--mixed-precision", "no", "--out", tmp_path / f"{name}.png", "--npz", tmp_path / f"{name}.npz",
                               "--no-progress", *extra)
        assert code == 0 and "4 network evaluations each" in out, out
    assert "(compiling included)" in out
    eager, compiled = np.load(tmp_path / "eager.npz"), np.load(tmp_path / "compiled.npz")
    gap = np.abs(eager["samples"].astype(int) - compiled["samples"].astype(int))
    assert gap.max() <= 1 and (gap > 0).mean() < 0.01  # fp32 kernels in another order: a level at most, rarely
    assert json.loads(str(compiled["protocol"]))["compiled"] and not json.loads(str(eager["protocol"]))["compiled"]


def test_config_file_then_flags(tmp_path, capsys):
    (tmp_path / "c.toml").write_text('[train]\nsteps = 3\nlr = 0.0005\n[diffusion]\nschedule = "cosine"\n')
    code, out, _ = run_cli(capsys, "train", *TINY, "--config", tmp_path / "c.toml", "--steps", "2", "--eval-bpd", "false",
                           "--out", tmp_path / "run")
    assert code == 0, out
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["train"]["steps"] == 2 and cfg["train"]["lr"] == 0.0005 and cfg["diffusion"]["schedule"] == "cosine"
    (tmp_path / "c.json").write_text(json.dumps({"train": {"steps": 1}}))
    code, _, _ = run_cli(capsys, "train", *TINY, "--config", tmp_path / "c.json", "--eval-bpd", "false", "--out", tmp_path / "run2")
    assert code == 0 and json.loads((tmp_path / "run2" / "config.json").read_text())["train"]["steps"] == 1


def test_resume_continues_the_step_count(tmp_path, capsys):
    run = tmp_path / "run"
    assert run_cli(capsys, "train", *TINY, "--steps", "2", "--eval-bpd", "false", "--out", run)[0] == 0
    code, out, _ = run_cli(capsys, "train", "--resume", "--out", run, "--steps", "4", "--eval-bpd", "false", "--no-progress")
    assert code == 0 and "resuming" in out and "from step 2" in out
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4]
    assert (run / "checkpoints" / "step_0000004.safetensors").exists()
    code, _, err = run_cli(capsys, "train", "--resume", "--out", run, "--timesteps", "10")
    assert_one_sentence_error(code, err, "cannot change when resuming")


@pytest.mark.parametrize("argv,words", [
    (["train", "--data", "nope"], ["nope"]),
    (["train", "--schedule", "wiggly"], ["unknown schedule 'wiggly'", "linear"]),
    (["train", "--timesteps", "10"], ["beta >= 1", "--timesteps 21"]),
    (["train", "--channels", "a,b"], ["--channels"]),
    (["train", "--loss", "hinge"], ["unknown loss"]),
    (["train", "--resume"], ["--resume needs --out"]),
    (["sample", "--sampler", "rk45", "."], ["unknown sampler 'rk45'"]),
    (["sample", "--sampler", "heun", "--eta", "0.5", "."], ["--eta applies to the ddim sampler only"]),
    (["sample", "--sampler", "euler", "--spacing", "quadratic", "."], ["--spacing applies to"]),
    (["sample", "--device", "cuda:99", "."], ["--device cuda:99 needs a CUDA GPU", "--device cpu"]),
    (["eval", "--device", "bogus", "."], ["unknown --device 'bogus'", "auto, cpu, cuda"]),
])
def test_bad_options_give_one_sentence_and_status_2(argv, words, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, *argv)
    assert_one_sentence_error(code, err, *words)
    assert not (tmp_path / "runs").exists()


def test_a_directory_that_is_not_a_run(tmp_path, capsys):
    code, _, err = run_cli(capsys, "sample", tmp_path, "--out", tmp_path / "x.png")
    assert_one_sentence_error(code, err, "not a genlab run")
    code, _, err = run_cli(capsys, "eval", tmp_path / "missing")
    assert_one_sentence_error(code, err, "not a directory")
    assert not (tmp_path / "x.png").exists()


def test_corrupt_or_mismatched_checkpoints(run_dir, tmp_path, capsys):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(run_dir, bad)
    ckpt = next((bad / "checkpoints").glob("*.safetensors"))
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    code, _, err = run_cli(capsys, "sample", bad, "--out", tmp_path / "x.png")
    assert_one_sentence_error(code, err, "cannot be read")

    mismatch = tmp_path / "mismatch"
    shutil.copytree(run_dir, mismatch)
    cfg = json.loads((mismatch / "config.json").read_text())
    cfg["model"]["channels"] = [16, 48]
    (mismatch / "config.json").write_text(json.dumps(cfg))
    code, _, err = run_cli(capsys, "eval", mismatch)
    assert_one_sentence_error(code, err, "does not match")


def test_existing_run_is_not_overwritten(run_dir, capsys):
    before = (run_dir / "config.json").read_text()
    code, _, err = run_cli(capsys, "train", *TINY, "--out", run_dir)
    assert_one_sentence_error(code, err, "already holds a run")
    assert (run_dir / "config.json").read_text() == before


def test_missing_mnist_offline_is_one_sentence(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(dl.MIRRORS, "mnist", ("http://127.0.0.1:9/",))  # the discard port: refused at once
    code, _, err = run_cli(capsys, "train", "--data", "mnist", "--data-dir", tmp_path / "nowhere", "--steps", "1",
                           "--out", tmp_path / "run")
    assert_one_sentence_error(code, err, "--data-dir")
    assert not (tmp_path / "run").exists()


def test_the_console_entry_point_hides_tracebacks_unless_debug(tmp_path):
    cmd = [sys.executable, "-m", "genlab", "train", "--data", "nope", "--out", str(tmp_path / "r")]
    p = subprocess.run(cmd, capture_output=True, text=True)
    assert p.returncode == 2 and "Traceback" not in p.stderr and "nope" in p.stderr
    p = subprocess.run([sys.executable, "-m", "genlab", "--debug", "train", "--data", "nope"], capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode != 0 and "Traceback" in p.stderr


def test_eval_precision_can_be_chosen(run_dir, capsys):
    code, out, _ = run_cli(capsys, "eval", run_dir, "--limit", "4", "--mixed-precision", "no", "--json")
    assert code == 0 and json.loads(out)["mixed_precision"] == "no"
    code, _, err = run_cli(capsys, "eval", run_dir, "--mixed-precision", "fp8")
    assert_one_sentence_error(code, err, "--mixed-precision")


def test_text_options_are_refused_by_a_run_without_text(run_dir, capsys):
    for argv, words in ((["sample", run_dir, "--prompt", "a 3"], ["--prompt", "ldm"]),
                        (["eval", run_dir, "--metrics", "prompts"], ["takes no text"]),
                        (["eval", run_dir, "--metrics", "fid", "--guidance", "2"], ["--guidance", "text-conditioned"])):
        code, _, err = run_cli(capsys, *argv)
        assert_one_sentence_error(code, err, *words)
