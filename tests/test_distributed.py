"""Training in several processes (CPU, gloo): the shards of a batch, the same parameters as one
process, checkpoints that move between one and two processes, one sentence on bad input.

The two-process runs are real: ``genlab train --processes 2`` and ``accelerate launch`` in
subprocesses, each with 1 thread, on the tiny U-Net of conftest.py.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import genlab
from conftest import TINY
from genlab.cli import main
from genlab.errors import ConfigError
from genlab.run import RunDir
from genlab.training.trainer import batch_indices, shard_rows

# fp32, a loss line per step, no final evaluation; class-conditional with label dropout, so every
# random draw of a step is sharded
RUN = [*TINY, "--mixed-precision", "no", "--log-every", "1", "--eval-bpd", "false", "--class-conditional",
       "--cond-drop", "0.5"]
ATOL = 1e-5  # fp32: two processes add the two halves' gradients in another order than one process


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def genlab_subprocess(*argv, launcher=(), tmpdir=None) -> subprocess.CompletedProcess:
    """``python [launcher] -m genlab ARGV`` on the CPU, 1 thread per process, importing this genlab."""
    src = str(Path(genlab.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", **({"TMPDIR": str(tmpdir)} if tmpdir else {})}
    env.pop("WORLD_SIZE", None)
    p = subprocess.run([sys.executable, *launcher, "-m", "genlab", *map(str, argv)], env=env, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    return p


def tensors(run: Path, prefix: str = "model.") -> dict[str, torch.Tensor]:
    return {k: v for k, v in load_file(RunDir(run).latest_checkpoint()).items() if k.startswith(prefix)}


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()  # no "module." prefixes: the same format from any number of processes
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The reference: 4 steps at batch 32 in this process."""
    out = tmp_path_factory.mktemp("one") / "run"
    assert main(["train", *RUN, "--steps", "4", "--out", str(out)]) == 0
    return out


def test_the_shards_of_a_batch_are_disjoint_and_cover_it():
    idx = batch_indices(1437, 48, seed=0, step=31)
    for n in (1, 2, 3, 4, 6):
        shards = [idx[shard_rows(48, r, n)] for r in range(n)]
        assert all(len(s) == 48 // n for s in shards)
        assert torch.equal(torch.cat(shards), idx)  # in rank order they are the one-process batch
        assert len(set(torch.cat(shards).tolist())) == 48  # no example twice
    with pytest.raises(ConfigError, match="does not split evenly over 5 processes"):
        shard_rows(48, 0, 5)


def test_two_processes_train_the_same_parameters_as_one(one_process, tmp_path):
    two = tmp_path / "two"
    (tmp_path / "tmp").mkdir()
    p = genlab_subprocess("train", *RUN, "--steps", "4", "--out", two, "--processes", 2, tmpdir=tmp_path / "tmp")
    assert p.stdout.count("genlab: training ddpm") == 1 and "16 in each of 2 processes" in p.stdout  # one speaks
    for prefix in ("model.", "ema."):
        assert max_difference(tensors(one_process, prefix), tensors(two, prefix)) < ATOL, prefix
    assert losses(two) == pytest.approx(losses(one_process), rel=1e-6)  # averaged over both processes, logged once
    assert sorted(p.name for p in (two / "checkpoints").iterdir()) == ["step_0000004.safetensors"]
    assert not list((tmp_path / "tmp").iterdir())  # the launcher's log folders are removed


def test_a_checkpoint_moves_between_one_and_two_processes(one_process, tmp_path, capsys):
    """1 process to step 2, accelerate launch with 2 processes to step 3, 1 process to step 4 == 4 steps in one."""
    run = tmp_path / "run"
    assert main(["train", *RUN, "--steps", "2", "--out", str(run)]) == 0
    accelerate = ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                  "--main_process_port", str(free_port()), "--mixed_precision", "no", "--dynamo_backend", "no"]
    (tmp_path / "tmp").mkdir()  # torchrun under accelerate launch leaves its log folder there, not in /tmp
    p = genlab_subprocess("train", "--resume", "--out", run, "--steps", "3", "--no-progress", launcher=accelerate,
                          tmpdir=tmp_path / "tmp")
    assert "resuming" in p.stdout and "2 processes" in p.stdout
    assert main(["train", "--resume", "--out", str(run), "--steps", "4", "--no-progress"]) == 0
    assert "resuming" in capsys.readouterr().out
    assert RunDir(run).latest_checkpoint().name == "step_0000004.safetensors"
    assert max_difference(tensors(one_process), tensors(run)) < ATOL
    assert losses(run) == pytest.approx(losses(one_process), rel=1e-6)


@pytest.mark.parametrize("argv,words", [
    (["--processes", "3", "--batch-size", "64"], "multiple of 3"),
    (["--processes", "0"], "at least 1"),
    (["classifier", "--processes", "2"], "one process only"),
])
def test_bad_process_counts_are_one_sentence_and_write_nothing(argv, words, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", *argv, "--steps", "1", "--out", str(out)])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("genlab: error: ") and lines[0].endswith(".") and words in lines[0]
    assert not out.exists()


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *args]


def _env(tmp_path) -> dict:
    src = str(Path(genlab.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1",
           "CUDA_VISIBLE_DEVICES": "", "TMPDIR": str(tmp_path)}
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "TORCHELASTIC_RESTART_COUNT"):
        env.pop(k, None)
    return env


def test_two_nodes_train_the_same_parameters_as_one(one_process, tmp_path):
    """Two torchrun "machines" on this one (c10d rendezvous on 127.0.0.1, one process each), as the README's recipe."""
    two = tmp_path / "two"
    port = free_port()
    logs = [tmp_path / f"node{rank}.log" for rank in (0, 1)]
    nodes = [subprocess.Popen(_torchrun("--nnodes", "2", "--node-rank", str(rank), "--nproc-per-node", "1",
                                        "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
                                        "--rdzv-id", "genlab-test", "-m", "genlab", "train", *RUN, "--steps", "4",
                                        "--out", str(two)),
                              env=_env(tmp_path), stdout=open(logs[rank], "w"), stderr=subprocess.STDOUT)
             for rank in (0, 1)]
    try:
        codes = [p.wait(timeout=180) for p in nodes]
    finally:
        for p in nodes:
            p.kill()
    assert codes == [0, 0], "\n".join(log.read_text()[-2000:] for log in logs)
    for prefix in ("model.", "ema."):
        assert max_difference(tensors(one_process, prefix), tensors(two, prefix)) < ATOL, prefix
    assert losses(two) == pytest.approx(losses(one_process), rel=1e-6)


def _worker(run: Path, local_rank: int) -> int | None:
    """The pid of the training worker of ``run`` with LOCAL_RANK ``local_rank`` (not its launcher)."""
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
            env = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(run).encode() in cmd and b"torch.distributed.run" not in cmd and f"LOCAL_RANK={local_rank}".encode() in env:
            return int(proc.name)
    return None


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the worker through /proc (Linux)")
def test_a_killed_worker_recovers_through_the_checkpoint(tmp_path):
    """torchrun --max-restarts 1: a worker killed with SIGKILL mid-run; the restarted workers resume from the last
    checkpoint and end on the parameters of an uninterrupted one-process run, with no log row twice."""
    import signal
    import time

    steps = ["--steps", "60", "--checkpoint-every", "10"]
    reference = tmp_path / "one"
    assert main(["train", *RUN, *steps, "--out", str(reference)]) == 0
    run = tmp_path / "run"
    p = subprocess.Popen(_torchrun("--standalone", "--nproc-per-node", "2", "--max-restarts", "1", "--monitor-interval", "0.2",
                                   "-m", "genlab", "train", *RUN, *steps, "--out", str(run)),
                         env=_env(tmp_path), stdout=open(tmp_path / "torchrun.log", "w"), stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not RunDir(run).checkpoints():
            time.sleep(0.05)
        pid = _worker(run, 1)
        assert pid is not None, "no worker found"
        os.kill(pid, signal.SIGKILL)
        code = p.wait(timeout=300)
    finally:
        p.kill()
    out = (tmp_path / "torchrun.log").read_text()
    assert code == 0, out[-3000:]
    assert "restarted by the launcher (restart 1); resuming" in out
    assert RunDir(run).checkpoints()[-1][0] == 60
    for prefix in ("model.", "ema."):
        assert max_difference(tensors(reference, prefix), tensors(run, prefix)) < ATOL, prefix
    rows = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows == list(range(1, 61))  # the rows past the checkpoint were dropped and written again once
