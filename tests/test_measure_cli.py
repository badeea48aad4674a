"""genlab eval --metrics fid,kid,pr, genlab report and genlab features, end to end on a tiny digits run."""

import json
import shutil

import numpy as np
import pytest

from genlab.cli import main
from genlab.metrics.features import TRAIN_DATA, load_feature_network
from test_cli import assert_one_sentence_error, run_cli


def records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_eval_measures_samples_and_records_the_protocol(run_dir, capsys):
    code, out, _ = run_cli(capsys, "eval", run_dir, "--metrics", "fid,kid,pr", "--n", "40", "--sampler", "ddim",
                           "--steps", "3", "--json")
    assert code == 0
    r = json.loads(out)
    assert r["fid"] > 0 and r["kid"] == r["kid"] and 0 <= r["precision"] <= 1 and 0 <= r["recall"] <= 1
    assert r["n"] == 40 and r["sampler"] == "ddim" and r["steps"] == 3 and r["nfe"] == 3 and r["eta"] == 0
    assert r["seconds_per_sample"] > 0 and r["batch_size"] == 256 and r["weights"] == "ema"
    assert r["ref_split"] == "train" and r["ref_n"] == 1437 and r["pr_reference_n"] == 40 and r["pr_k"] == 3
    assert r["feature_network"] == load_feature_network("digits").version
    last = records(run_dir)[-1]
    assert last["event"] == "eval" and last["metric"] == "fid,kid,pr" and last["fid"] == r["fid"]
    # the same seed gives the same samples, hence the same figures
    code, out, _ = run_cli(capsys, "eval", run_dir, "--metrics", "fid,kid,pr", "--n", "40", "--sampler", "ddim",
                           "--steps", "3", "--json", "--batch-size", "7")
    again = json.loads(out)
    assert (again["fid"], again["kid"], again["precision"], again["recall"]) == (r["fid"], r["kid"], r["precision"], r["recall"])


def test_eval_prints_a_table_with_likelihood_and_quality(run_dir, capsys):
    code, out, _ = run_cli(capsys, "eval", run_dir, "--metrics", "fid,bpd", "--n", "20", "--steps", "2", "--limit", "4",
                           "--no-progress")
    assert code == 0
    for words in ("FID", "network evaluations per sample", "feature network digits-", "total (bound)", "4 images"):
        assert words in out
    last = records(run_dir)[-1]
    assert "fid" in last and "kid" not in last and last["bpd_n"] == 4 and last["bpd_split"] == "test"


def test_eval_reads_samples_written_by_genlab_sample(run_dir, tmp_path, capsys):
    npz = tmp_path / "s.npz"
    assert run_cli(capsys, "sample", run_dir, "--n", "30", "--sampler", "ddim", "--steps", "2", "--out",
                   tmp_path / "s.png", "--npz", npz, "--no-progress")[0] == 0
    code, out, _ = run_cli(capsys, "eval", run_dir, "--metrics", "pr", "--samples", npz, "--json")
    r = json.loads(out)
    assert code == 0 and r["n"] == 30 and r["sampler"] == "ddim" and r["nfe"] == 2 and r["samples_file"] == str(npz)
    np.savez(tmp_path / "bad.npz", samples=np.zeros((3, 1, 28, 28), np.uint8))
    code, _, err = run_cli(capsys, "eval", run_dir, "--metrics", "fid", "--samples", tmp_path / "bad.npz")
    assert_one_sentence_error(code, err, "shape")


@pytest.mark.parametrize("argv,words", [
    (["--metrics", "fid,is"], ["unknown metric 'is'"]),
    (["--metrics", "fid", "--n", "1"], ["--n must be at least 2"]),
    (["--metrics", "fid", "--sampler", "rk45"], ["unknown sampler 'rk45'"]),
    (["--metrics", "fid", "--ref-split", "val"], ["unknown split 'val'"]),
    (["--metrics", "fid", "--samples", "missing.npz"], ["does not exist"]),
])
def test_bad_eval_options_give_one_sentence(run_dir, argv, words, capsys):
    before = (run_dir / "metrics.jsonl").read_text()
    code, _, err = run_cli(capsys, "eval", run_dir, *argv)
    assert_one_sentence_error(code, err, *words)
    assert (run_dir / "metrics.jsonl").read_text() == before


def test_report_writes_the_table_and_the_chart(run_dir, tmp_path, capsys):
    for steps in ("3", "4"):  # two rows, whatever the other tests measured on this run
        run_cli(capsys, "eval", run_dir, "--metrics", "fid,kid,pr", "--n", "30", "--steps", steps, "--json")
    code, out, _ = run_cli(capsys, "report", run_dir, "--out", tmp_path / "r.md")
    assert code == 0
    md = (tmp_path / "r.md").read_text()
    assert ("| run | family | sampler | n | FID | KID | precision | recall | bits/dim | bits/dim (ODE) | NFE | s/sample "
            "| training |") in md and "| ddpm | DDIM 4" in md  # " fp32" where the CPU chose it
    assert "DDIM 4" in md and "DDIM 3" in md and "feature network `digits-" in md and "![quality against speed](r.png)" in md
    png = (tmp_path / "r.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_bpd_ode_is_recorded_and_reported_against_nfe(run_dir, tmp_path, capsys):
    code, out, _ = run_cli(capsys, "eval", run_dir, "--metric", "bpd-ode", "--limit", "4", "--ode-tol", "1e-3", "--json")
    assert code == 0
    r = json.loads(out)
    assert r["bpd_ode_n"] == 4 and r["ode_solver"] == "RK45" and r["ode_rtol"] == 1e-3 and r["ode_nfe"] > 10
    assert 0 < r["bpd_ode"] < 100 and r["bpd_ode_se"] > 0  # a model trained for 4 steps: finite, not good
    assert records(run_dir)[-1]["bpd_ode"] == r["bpd_ode"]
    run_cli(capsys, "eval", run_dir, "--metrics", "fid", "--n", "20", "--sampler", "heun", "--steps", "3", "--json")
    code, _, _ = run_cli(capsys, "report", run_dir, "--out", tmp_path / "nfe.md", "--x", "nfe", "--n", "20")
    md = (tmp_path / "nfe.md").read_text()
    assert code == 0 and ("| Heun 3 | 20 |" in md or "| Heun 3 fp32 | 20 |" in md) and f"{r['bpd_ode']:.4f}" in md and "probability-flow ODE" in md
    assert (tmp_path / "nfe.png").read_bytes()[:4] == b"\x89PNG"


def test_report_refuses_figures_from_another_feature_network(run_dir, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(run_dir, other)
    rec = {**records(run_dir)[-1], "feature_network": "digits-000000000000", "fid": 1.0}
    with open(other / "metrics.jsonl", "a") as f:
        f.write(json.dumps(rec) + "\n")
    code, _, err = run_cli(capsys, "report", other, "--out", tmp_path / "r.md")
    assert_one_sentence_error(code, err, "digits-000000000000", "not comparable")
    assert not (tmp_path / "r.md").exists() and not (tmp_path / "r.png").exists()


def test_report_of_a_run_never_evaluated(run_dir, tmp_path, capsys):
    bare = tmp_path / "bare"
    shutil.copytree(run_dir, bare)
    (bare / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 1.0}) + "\n")
    code, _, err = run_cli(capsys, "report", bare, "--out", tmp_path / "r.md")
    assert_one_sentence_error(code, err, "no evaluations")


def test_continuous_data_has_no_image_metrics(tmp_path, capsys):
    run = tmp_path / "toy"
    assert main(["train", "--data", "toy2d", "--steps", "2", "--timesteps", "50", "--hidden", "16", "--no-progress",
                 "--sample-every", "0", "--out", str(run)]) == 0
    code, _, err = run_cli(capsys, "eval", run, "--metrics", "fid")
    assert_one_sentence_error(code, err, "continuous")


def test_features_show_and_floor(capsys):
    code, out, _ = run_cli(capsys, "features", "show", "--json")
    rows = json.loads(out)
    assert code == 0 and [r["name"] for r in rows] == list(TRAIN_DATA)
    code, out, _ = run_cli(capsys, "features", "floor", "--data", "digits", "--json")
    r = json.loads(out)
    assert code == 0 and r["test_halves"]["n"] == 180 and r["test_vs_train"]["ref_n"] == 1437
    assert 0 < r["test_vs_train"]["fid"] < r["test_halves"]["fid"]  # more images, less bias
    code, _, err = run_cli(capsys, "features", "train", "--data", "svhn")
    assert_one_sentence_error(code, err, "svhn")


def test_report_rows_merge_old_and_new_records_and_lines_follow_the_sampler(run_dir, tmp_path):
    from genlab.viz.report import collect_rows

    run = tmp_path / "r"
    shutil.copytree(run_dir, run)
    base = {"event": "eval", "feature_network": load_feature_network("digits").version, "data": "digits", "n": 10,
            "weights": "ema", "ref_split": "train", "step": 4, "fid": 1.0, "recall": 0.5}
    recs = [{**base, "sampler": "ddim", "steps": 10, "nfe": 10},  # written before eta and spacing were recorded
            {**base, "sampler": "ddim", "steps": 10, "nfe": 10, "eta": 0.0, "spacing": "uniform", "fid": 2.0},
            {**base, "sampler": "ddim", "steps": 20, "nfe": 20, "eta": 0.0, "spacing": "uniform"},
            {**base, "sampler": "ddim", "steps": 20, "nfe": 20, "eta": 1.0, "spacing": "uniform"},
            {**base, "sampler": "heun", "steps": 5, "nfe": 9, "eta": 0.0, "spacing": "uniform"},
            {**base, "sampler": "heun", "steps": 5, "nfe": 9, "eta": 0.0, "spacing": "uniform", "mixed_precision": "no"},
            {**base, "sampler": "ancestral", "steps": 20, "nfe": 20, "class": "all", "guidance": 2.0, "guidance_type": "classifier"},
            {**base, "sampler": "ancestral", "steps": 20, "nfe": 40, "class": 3, "guidance": 1.0, "guidance_type": "classifier-free"}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    rows = collect_rows([run])
    assert sorted(r["label"] for r in rows) == ["DDIM 10", "DDIM 20", "DDIM 20 eta=1", "Heun 5", "Heun 5 fp32",
                                                "ancestral 20 class 3 cfg w=1", "ancestral 20 classifier s=2"]
    assert next(r["fid"] for r in rows if r["label"] == "DDIM 10") == 2.0  # the latest of the same setting
    assert sorted({r["series"] for r in rows}) == ["DDIM", "DDIM eta=1", "Heun", "Heun fp32",
                                                   "ancestral class 3 cfg w=1", "ancestral classifier s=2"]


def test_report_shows_text_alignment_and_the_latent_bound_apart_from_bits_per_dim(run_dir, tmp_path):
    from genlab.viz.report import collect_rows, markdown_table, write_report

    run = tmp_path / "r"
    shutil.copytree(run_dir, run)
    base = {"event": "eval", "feature_network": load_feature_network("digits").version, "data": "digits", "n": 10,
            "weights": "ema", "ref_split": "train", "step": 4, "fid": 1.0, "recall": 0.5, "sampler": "ddim", "steps": 10,
            "nfe": 10}
    recs = [{"step": 2, "loss": 1.0, "images_per_s": 100.0, "time_s": 1.0},
            {"step": 4, "loss": 0.5, "images_per_s": 300.0, "time_s": 2.0}, base,
            {"event": "eval", "step": 4, "prompt_guidance": 3.0, "prompt_held_out_combination_all": 0.925,
             "prompt_held_out_combination_n": 200, "prompt_held_out_combination_clip_score": 31.5, "sampler": "ddim",
             "steps": 50},
            {"event": "eval", "step": 4, "latent_bpd_bound": 5.25, "latent_bpd_se": 0.01, "latent_n": 100,
             "latent_decoder_bpd": 4.5, "latent_split": "test"}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    rows = collect_rows([run, run_dir])
    table = markdown_table(rows)
    assert "prompts right (held-out)" in table and "0.925 (w=3)" in table
    assert rows[0]["train_images_per_s"] == 200.0 and rows[0].get("bpd") is None  # the latent bound is not bits/dim
    md, _ = write_report(rows, tmp_path / "report.md")
    text = md.read_text()
    assert "latent bound + decoder 5.250 ± 0.010 bits per pixel on 100 test images" in text and "not comparable" in text
    assert "at 200 images/s" in text and "CLIP score 31.50" in text
    assert "prompts right" not in markdown_table(collect_rows([run_dir]))  # no text runs, no column
