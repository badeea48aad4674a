"""genlab train / sample / eval / report for the families beyond diffusion, end to end on the digits."""

import json

import pytest

from test_cli import assert_one_sentence_error, run_cli

FAST = ["--data", "digits", "--steps", "6", "--batch-size", "32", "--sample-every", "0", "--checkpoint-every", "0",
        "--log-every", "3", "--eval-limit", "20", "--no-progress"]


def records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def rbm_run(tmp_path_factory):
    from genlab.cli import main

    run = tmp_path_factory.mktemp("families") / "rbm"
    code = main(["train", "rbm", *FAST, "--rbm-hidden", "16", "--gibbs-steps", "5", "--ais-betas", "50",
                 "--ais-chains", "10", "--out", str(run)])
    assert code == 0
    return run


def test_an_rbm_run_ends_with_its_likelihood_and_sample_quality(rbm_run):
    cfg = json.loads((rbm_run / "config.json").read_text())
    assert cfg["family"] == "rbm" and cfg["energy"]["hidden_units"] == [16] and cfg["train"]["mixed_precision"] == "no"
    evals = [r for r in records(rbm_run) if r.get("event") == "eval"]
    bpd, quality = evals
    assert bpd["binarised"] and bpd["n"] == 20 and bpd["ais_betas"] == 50 and 0 < bpd["bpd"] < 2
    assert quality["n"] == 1000 and quality["sampler"] == "gibbs" and quality["steps"] == 5 and quality["nfe"] == 5
    assert quality["family"] == "rbm" and quality["fid"] > 0


def test_sample_eval_and_report_take_an_rbm_run(rbm_run, tmp_path, capsys):
    code, out, _ = run_cli(capsys, "sample", rbm_run, "--n", "8", "--steps", "12", "--out", tmp_path / "s.png", "--no-progress")
    assert code == 0 and "gibbs, 12 steps, 12 network evaluations each" in out
    code, out, _ = run_cli(capsys, "eval", rbm_run, "--metrics", "bpd", "--limit", "10", "--json", "--no-progress")
    r = json.loads(out)
    assert code == 0 and r["bpd_n"] == 10 and r["binarised"] and r["log_z"] > 0
    code, out, _ = run_cli(capsys, "report", rbm_run, "--out", tmp_path / "r.md")
    md = (tmp_path / "r.md").read_text()
    assert code == 0 and "| rbm cd-1 | gibbs 5 fp32 | 1000 |" in md and "(binary)" in md and "binarised" in md


@pytest.mark.parametrize("argv, words", [
    (["sample", "{run}", "--sampler", "ddim"], ["--sampler applies to diffusion runs"]),
    (["sample", "{run}", "--compile"], ["--compile applies to diffusion runs"]),
    (["sample", "{run}", "--guidance", "1"], ["no guidance"]),
    (["sample", "{run}", "--interpolate", "0,1"], ["no", "latent"]),
    (["eval", "{run}", "--metrics", "bpd-ode"], ["probability-flow ODE"]),
    (["eval", "{run}", "--t-samples", "4"], ["--t-samples"]),
    (["inpaint", "{run}", "--image", "test:0", "--mask", "center"], ["needs a diffusion run"]),
])
def test_diffusion_only_options_are_refused_on_other_families(rbm_run, capsys, argv, words):
    code, _, err = run_cli(capsys, *[a.format(run=rbm_run) for a in argv])
    assert_one_sentence_error(code, err, *words)


def test_family_presets_and_settings(capsys):
    from genlab.config import resolve

    gan = resolve(None, {}, {"data": {"name": "mnist"}}, family="gan")
    assert gan.family == "gan" and gan.train.lr == 2e-4 and gan.train.grad_clip == 0
    assert resolve(None, {}, {"train": {"lr": 1e-3}}, family="gan").train.lr == 1e-3  # flags beat presets
    assert resolve(None, {}, {}).family == "ddpm" and resolve(None, {}, {}).train.lr == 1e-3
    code, _, err = run_cli(capsys, "train", "gan", "--gan-loss", "hinge", "--out", "/nonexistent/x")
    assert_one_sentence_error(code, err, "hinge", "ns, minimax or wgan-gp")


def test_best_keeps_one_unguided_row_per_run():
    from genlab.viz.report import best_per_run

    rows = [{"run": "a", "fid": 3.0}, {"run": "a", "fid": 1.0, "guided": True}, {"run": "a", "fid": 2.0},
            {"run": "b", "fid": None}, {"run": "c", "fid": 5.0, "guided": True}]
    assert [(r["run"], r["fid"]) for r in best_per_run(rows)] == [("a", 2.0), ("b", None), ("c", 5.0)]


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    from genlab.cli import main

    run = tmp_path_factory.mktemp("families") / "vae"
    assert main(["train", "vae", *FAST, "--channels", "16,16", "--iwae-k", "5", "--out", str(run)]) == 0
    return run


def test_a_vae_run_samples_reconstructs_interpolates_and_reports(vae_run, tmp_path, capsys):
    evals = [r for r in records(vae_run) if r.get("event") == "eval"]
    bpd, quality = evals
    assert bpd["iwae_k"] == 5 and bpd["n"] == 20 and bpd["bpd"] <= bpd["elbo_bpd"] + 1e-9
    assert quality["sampler"] == "decoder" and quality["nfe"] == 1 and quality["steps"] is None
    code, out, _ = run_cli(capsys, "sample", vae_run, "--n", "8", "--pixel-noise", "--out", tmp_path / "s.png", "--no-progress")
    assert code == 0 and "decoder, 1 network evaluations each" in out
    code, out, _ = run_cli(capsys, "sample", vae_run, "--reconstruct", "--n", "16", "--out", tmp_path / "r.png")
    assert code == 0 and "reconstructions" in out and (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
    code, out, _ = run_cli(capsys, "sample", vae_run, "--interpolate", "0,5", "--slerp", "--n", "6", "--out", tmp_path / "i.png")
    assert code == 0 and "spherical" in out
    code, out, _ = run_cli(capsys, "report", vae_run, "--out", tmp_path / "rep.md")
    md = (tmp_path / "rep.md").read_text()
    assert code == 0 and ("| vae | decoder | 1000 |" in md or "| vae | decoder fp32 | 1000 |" in md)  # fp32 where auto chose it
    assert "(IWAE k=5)" in (tmp_path / "rep.md").read_text()
    for argv, words in ((["--reconstruct", "--n", "12"], ["multiple of 8"]), (["--interpolate", "0,99999"], ["does not exist"]),
                        (["--slerp"], ["--interpolate"]), (["--steps", "5"], ["--steps applies"])):
        code, _, err = run_cli(capsys, "sample", vae_run, *argv, "--out", tmp_path / "x.png")
        assert_one_sentence_error(code, err, *words)
    assert not (tmp_path / "x.png").exists()


def test_a_conditional_gan_run_samples_a_class_and_is_scored_on_it(tmp_path, capsys):
    from genlab.cli import main

    run = tmp_path / "cgan"
    assert main(["train", "gan", *FAST, "--class-conditional", "--channels", "8,16", "--out", str(run)]) == 0
    quality = [r for r in records(run) if r.get("event") == "eval"][-1]
    assert quality["sampler"] == "generator" and quality["nfe"] == 1 and 0 <= quality["class_accuracy"] <= 1
    assert [r for r in records(run) if r.get("event") == "monitor"][-1]["n"] == 1000
    code, out, _ = run_cli(capsys, "sample", run, "--n", "4", "--class", "3", "--out", tmp_path / "c.png")
    assert code == 0 and "class 3" in out and "guidance" not in out
    code, _, err = run_cli(capsys, "sample", run, "--class", "3", "--guidance", "2", "--out", tmp_path / "g.png")
    assert_one_sentence_error(code, err, "no guidance")
