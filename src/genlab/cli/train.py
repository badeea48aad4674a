"""``genlab train [FAMILY]``: train a model of one family into a self-describing run directory."""

from __future__ import annotations

import argparse
import dataclasses
import os
from datetime import datetime
from pathlib import Path

from genlab.cli._common import add_config_flags, cli_overrides
from genlab.config import read_config_file, resolve
from genlab.errors import ConfigError
from genlab.family import family_names


def add_parser(sub) -> None:
    names = family_names()
    t = sub.add_parser("train", help="train a DDPM or a baseline family (default: a DDPM on the bundled 8x8 digits, "
                                     "about 2 minutes on 2 CPU cores)",
                       description="Train a model of one family and write a self-describing run directory: a denoising "
                                   "diffusion model (ddpm, the default) or any other registered family "
                                   f"({', '.join(n for n in names if n != 'ddpm')}; genlab.family, README 'Contributing').")
    t.add_argument("family", nargs="?", choices=names, default=None,
                   help="what to train (default ddpm); each family's settings are its config section's flags below")
    t.add_argument("--out", type=Path, default=None, help="run directory (default: runs/<data>-<date>-<time>)")
    t.add_argument("--config", type=Path, default=None, help="JSON or TOML file of settings (same sections as config.json); flags override it")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint (same step, same data order)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--processes", type=int, default=None, metavar="N",
                   help="train in N processes on this machine (gloo on CPUs, NCCL on GPUs), each on 1/N of every "
                        "batch: --batch-size stays the global batch and must be a multiple of N; for several "
                        "machines use accelerate launch or torchrun (see the README)")
    t.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    add_config_flags(t)


def _config(args):
    """The run's config from presets, --config and flags (or, with --resume, the saved one and the changes allowed)."""
    from genlab.train import resume_config

    overrides = cli_overrides(args)
    file_overrides = read_config_file(args.config) if args.config else {}
    if args.resume:
        if args.out is None:
            raise ConfigError("--resume needs --out RUN, the run directory to continue.")
        cfg = resume_config(args.out, file_overrides, overrides)
        if args.family is not None and args.family != cfg.family:
            raise ConfigError(f"{args.out} is a {cfg.family} run; resume it with genlab train {cfg.family} --resume.")
        return cfg
    cfg = resolve(None, file_overrides, overrides, family=args.family)
    return cfg if args.family is None else dataclasses.replace(cfg, family=args.family)


def run(args) -> int:
    from genlab.run import RunDir
    from genlab.train import prepare, train
    from genlab.training.launch import as_in_first_process, launch, launched_processes
    from genlab.training.trainer import check_batch

    launched = launched_processes()
    if args.processes is not None:
        if args.processes < 1:
            raise ConfigError(f"--processes must be at least 1, not {args.processes}.")
        if launched is not None and launched != args.processes:
            raise ConfigError(f"--processes {args.processes} differs from the {launched} processes accelerate launch or "
                              f"torchrun started; drop --processes when using a launcher.")
    restarts = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)
    if restarts and not args.resume and args.out is not None and RunDir(args.out).exists():
        # torchrun --max-restarts started this worker again after one failed: continue the run it was training
        args.resume = True
        print(f"genlab: restarted by the launcher (restart {restarts}); resuming {args.out} from its checkpoint")
    cfg = _config(args)
    run_dir = args.out or Path("runs") / f"{cfg.data.name}-{datetime.now():%Y%m%d-%H%M%S}"
    if args.out is None and launched and launched > 1:
        run_dir = as_in_first_process(run_dir)  # the clock may have ticked between the processes

    if not args.resume and RunDir(run_dir).exists():
        raise ConfigError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out.")
    if args.processes and args.processes > 1 and launched is None:
        # this process loads and checks everything before it starts the others: a download happens
        # once, and bad input is said once
        cfg, train_ds, family = prepare(cfg)
        check_batch(family, cfg, len(train_ds), args.processes)
        del train_ds, family
        return launch(args.argv, args.processes)
    from genlab.config import FLAGS
    from genlab.errors import render

    summary = train(cfg, run_dir, resume=args.resume, progress=not args.no_progress, say=lambda text: print(render(text, FLAGS)))
    signals = {"SIGINT": 130, "SIGTERM": 143}  # the shell's 128 + signal number; a time budget is a success
    return signals.get(summary.get("stopped") or "", 0)
