"""``genlab train --processes N``: the same command in N processes on this machine.

The command starts itself N times under PyTorch's elastic launcher, as ``torchrun
--standalone --nproc-per-node N -m genlab ...`` would: the processes meet at a
rendezvous on a free local port, and Accelerate reads RANK, WORLD_SIZE and LOCAL_RANK
from their environment and joins them with gloo on CPUs or NCCL on GPUs. Each process
sees ``--processes N`` and WORLD_SIZE = N, so it trains as one of N
(:func:`launched_processes`) instead of launching again.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import uuid


def launched_processes() -> int | None:
    """How many processes a launcher (torchrun, accelerate launch, --processes) started this one among; None if none."""
    size = os.environ.get("WORLD_SIZE")
    return int(size) if size else None


def as_in_first_process(value):
    """``value`` as the first of the launched processes has it (say, a name made from the clock), in every one."""
    import torch
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list

    PartialState(cpu=not torch.cuda.is_available())  # joins the processes, as the Trainer's Accelerator will
    return broadcast_object_list([value])[0]


def launch(argv: list[str], processes: int) -> int:
    """Run ``python -m genlab *argv`` in ``processes`` processes here; 0, or the exit status of the first to fail.

    A process that fails has printed why (a genlab error is one sentence, status 2); one that
    crashes without a status of its own (a signal) is reported here with status 1.
    """
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs
    from torch.distributed.launcher.api import LaunchConfig

    with tempfile.TemporaryDirectory(prefix="genlab-launch-") as logs:  # the launcher's files, removed afterwards
        config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=processes, run_id=str(uuid.uuid4()),
                              rdzv_backend="c10d", rdzv_endpoint="localhost:0",  # a free port, as torchrun --standalone
                              max_restarts=0, monitor_interval=0.1, logs_specs=DefaultLogsSpecs(log_dir=logs))
        return _launch(config, argv, processes)


def _launch(config, argv: list[str], processes: int) -> int:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import elastic_launch

    # N processes that each use every core slow each other down (torchrun sets 1 thread)
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // processes))
    old = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = threads  # the launcher hands its environment to the processes
    logging.disable(logging.ERROR)  # the launcher's log lines: the processes say themselves why they stopped
    try:
        elastic_launch(config, sys.executable)("-m", "genlab", *argv)
    except ChildFailedError as e:
        rank, failure = e.get_first_failure()
        if failure.exitcode > 0:
            return failure.exitcode
        print(f"genlab: error: training process {rank} was stopped by signal {-failure.exitcode}; "
              f"resume with --resume --out RUN once the cause is gone.", file=sys.stderr)
        return 1
    except SignalException as e:  # Ctrl-C or a kill reached the launcher; the processes have been stopped
        print(f"genlab: interrupted ({e.sigval.name}); resume with --resume --out RUN", file=sys.stderr)
        return 130
    finally:
        logging.disable(logging.NOTSET)
        if old is None:
            del os.environ["OMP_NUM_THREADS"]
        else:
            os.environ["OMP_NUM_THREADS"] = old
    return 0


def join_restarted_group() -> bool:
    """In a worker that torchrun restarted (``TORCHELASTIC_RESTART_COUNT`` > 0), join the process group under a key
    prefix of its own restart, before Accelerate would join it; returns whether it did.

    torchrun's agent keeps one key-value store across restarts, so workers joining under the default prefix may
    read the address a dead worker of the previous attempt left there and wait on it (gloo: "Connection refused"
    until the timeout). The prefix makes each attempt meet only its own workers; Accelerate then uses the group.
    """
    import torch
    import torch.distributed as dist

    restarts = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)
    if not restarts or not dist.is_available() or dist.is_initialized() or "MASTER_ADDR" not in os.environ:
        return False
    from datetime import timedelta

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world,
                          is_master=not agent_store and rank == 0, timeout=timedelta(minutes=10),
                          multi_tenant=not agent_store)
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend, store=dist.PrefixStore(f"genlab/restart-{restarts}", store), rank=rank,
                            world_size=world)
    return True
