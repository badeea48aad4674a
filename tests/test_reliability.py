"""What a stopped run leaves behind, and the commands a user tries next (issue 19's first part)."""

import json

from safetensors.torch import load_file

from conftest import TINY
from genlab.cli import main
from test_cli import assert_one_sentence_error, run_cli

FLAGS = [*TINY, "--eval-bpd", "false", "--checkpoint-every", "2", "--log-every", "1"]


def final_tensors(run, step):
    return load_file(str(run / "checkpoints" / f"step_{step:07d}.safetensors"))


def test_version(capsys):
    try:
        main(["--version"])
    except SystemExit as e:
        assert e.code == 0
    out = capsys.readouterr().out
    assert out.startswith("genlab 0.") and "torch 2." in out


def test_an_out_that_is_a_file_is_one_sentence_and_the_file_stays(tmp_path, capsys):
    afile = tmp_path / "notes.txt"
    afile.write_text("mine")
    code, _, err = run_cli(capsys, "train", *FLAGS, "--steps", "1", "--out", afile)
    assert_one_sentence_error(code, err, "is an existing file")
    assert afile.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_the_unchanged_command_resumes_and_a_changed_one_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    assert run_cli(capsys, "train", *FLAGS, "--steps", "2", "--out", run)[0] == 0
    code, out, _ = run_cli(capsys, "train", *FLAGS, "--steps", "4", "--out", run, "--resume")  # the same flags again
    assert code == 0 and "from step 2" in out
    code, _, err = run_cli(capsys, "train", *FLAGS, "--channels", "16,16", "--steps", "6", "--out", run, "--resume")
    assert_one_sentence_error(code, err, "cannot change when resuming")


def test_a_run_stopped_before_its_first_checkpoint_resumes_from_step_0_exactly(tmp_path, capsys):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert run_cli(capsys, "train", *FLAGS, "--steps", "4", "--out", whole)[0] == 0
    assert run_cli(capsys, "train", *FLAGS, "--steps", "4", "--out", cut)[0] == 0
    # what a kill at step 1 leaves: config.json, a log row, half a row, a 0-byte temporary checkpoint
    for p in (cut / "checkpoints").iterdir():
        p.unlink()
    (cut / "checkpoints" / ".step_0000002.safetensors.x1y2.tmp").write_bytes(b"")
    first = (cut / "metrics.jsonl").read_text().splitlines()[0]
    (cut / "metrics.jsonl").write_text(first + "\n" + first[:9])
    code, _, err = run_cli(capsys, "train", *FLAGS, "--steps", "4", "--out", cut)
    assert_one_sentence_error(code, err, "already holds a run", "--resume")
    code, out, _ = run_cli(capsys, "train", "--resume", "--out", cut, "--no-progress")
    assert code == 0 and "no checkpoint yet" in out and "from step 0" in out
    assert not list((cut / "checkpoints").glob(".*.tmp"))
    a, b = final_tensors(whole, 4), final_tensors(cut, 4)
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)  # model, EMA and optimiser
    steps = [json.loads(x)["step"] for x in (cut / "metrics.jsonl").read_text().splitlines() if "event" not in x]
    assert steps == [1, 2, 3, 4]  # no row twice, none cut short


def test_a_resume_writes_no_log_row_twice(tmp_path, capsys):
    run = tmp_path / "run"
    assert run_cli(capsys, "train", *FLAGS, "--steps", "3", "--out", run)[0] == 0
    (run / "checkpoints" / "step_0000003.safetensors").unlink()  # killed after logging step 3, before its checkpoint
    assert run_cli(capsys, "train", "--resume", "--out", run, "--steps", "4", "--no-progress")[0] == 0
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines() if "event" not in x]
    assert steps == [1, 2, 3, 4]


def test_a_second_training_process_on_the_same_run_is_refused(tmp_path, capsys):
    from genlab.run import RunDir

    run = tmp_path / "run"
    assert run_cli(capsys, "train", *FLAGS, "--steps", "2", "--out", run)[0] == 0
    assert not (run / ".lock").exists()  # released with the process's training
    with RunDir(run).lock():  # another process training it (flock: another open file, the same conflict)
        code, _, err = run_cli(capsys, "train", "--resume", "--out", run, "--steps", "4", "--no-progress")
        assert_one_sentence_error(code, err, "being written by another genlab process", "--out")
    assert not (run / "checkpoints" / "step_0000004.safetensors").exists()
    code, _, err = run_cli(capsys, "train", *FLAGS, "--data", "mnist", "--data-dir", tmp_path / "none", "--out", tmp_path / "new")
    assert code == 2 and not (tmp_path / "new").exists()  # a start that fails inside the lock leaves no directory


def same_tensors(a, b):
    return a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def test_a_time_budget_stops_cleanly_and_the_resumed_run_ends_bit_identical(tmp_path, capsys):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert run_cli(capsys, "train", *FLAGS, "--steps", "5", "--out", whole)[0] == 0
    code, out, _ = run_cli(capsys, "train", *FLAGS, "--steps", "5", "--max-minutes", "1e-6", "--out", cut)
    assert code == 0 and "stopped by time budget at step 1 of 5" in out and "genlab train --resume --out" in out
    assert (cut / "checkpoints" / "step_0000001.safetensors").exists() and not (cut / "samples").exists()
    code, out, _ = run_cli(capsys, "train", "--resume", "--out", cut, "--max-minutes", "0", "--no-progress")
    assert code == 0 and "trained to step 5" in out
    assert same_tensors(final_tensors(whole, 5), final_tensors(cut, 5))


def _train_process(run, *extra):
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "genlab", "train", *FLAGS, "--out", str(run), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait_for_rows(run, n, proc, timeout=60.0):
    import time

    t0 = time.time()
    while time.time() - t0 < timeout and proc.poll() is None:
        log = run / "metrics.jsonl"
        if log.exists() and len(log.read_text().splitlines()) >= n:
            return
        time.sleep(0.02)


def test_sigterm_checkpoints_and_sigkill_at_any_moment_resumes_bit_identical(tmp_path, capsys):
    """Kills at several moments, one during a checkpoint write (every step is checkpointed here), then --resume."""
    import random
    import signal
    import time

    steps = 24
    whole = tmp_path / "whole"  # in a process like the killed ones: one thread, so the same float sums
    reference = _train_process(whole, "--steps", str(steps), "--checkpoint-every", "1")
    reference.communicate(timeout=120)
    assert reference.returncode == 0
    want = final_tensors(whole, steps)
    # the kills land within two steps of a new checkpoint, whatever this machine's speed (steps in bf16 on a
    # CPU with AVX512-BF16 are several times faster than in fp32 elsewhere)
    times = [r["time_s"] for r in map(json.loads, (whole / "metrics.jsonl").read_text().splitlines()) if "time_s" in r]
    step_seconds = (times[-1] - times[0]) / (len(times) - 1)
    run = tmp_path / "run"
    proc = _train_process(run, "--steps", str(steps), "--checkpoint-every", "1")
    _wait_for_rows(run, 2, proc)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "stopped by SIGTERM" in out
    from genlab.run import RunDir

    rng = random.Random(0)
    for _ in range(3):  # SIGKILL: no handler runs; whatever was mid-write stays half-written
        before = RunDir(run).checkpoints()[-1][0]
        proc = _train_process(run, "--resume", "--steps", str(steps), "--checkpoint-every", "1")
        t0 = time.time()  # wait until it trains (a new checkpoint), then kill at a random moment after
        while proc.poll() is None and RunDir(run).checkpoints()[-1][0] <= before and time.time() - t0 < 60:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 2 * step_seconds))
        proc.kill()
        proc.wait(timeout=30)
        assert RunDir(run).checkpoints()[-1][0] < steps, "the run finished before the kill; it tests nothing"
        for _, path in RunDir(run).checkpoints():  # a checkpoint that is there is whole: it loads
            load_file(str(path))
    last = _train_process(run, "--resume", "--steps", str(steps), "--checkpoint-every", "1")
    last.communicate(timeout=120)
    assert last.returncode == 0
    assert same_tensors(want, final_tensors(run, steps))
    assert not list((run / "checkpoints").glob(".*.tmp"))
    rows = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines() if "event" not in x]
    assert rows == list(range(1, steps + 1))
