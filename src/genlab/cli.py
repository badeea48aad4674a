"""genlab's command line: ``genlab train | sample | eval``.

Thin: it parses, calls the library and prints. Every user error (a GenlabError) is
printed as one sentence with exit status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from datetime import datetime
from pathlib import Path

from genlab.config import SECTIONS, RunConfig, read_config_file, resolve
from genlab.errors import ConfigError, GenlabError


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per config field that has one (metadata "flag"), grouped by section."""
    for section, cls in SECTIONS.items():
        group = parser.add_argument_group(f"{section} options")
        for f in dataclasses.fields(cls):
            flag = f.metadata.get("flag")
            if not flag:
                continue
            default = f.default if f.default is not dataclasses.MISSING else None
            shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
            group.add_argument(flag, dest=f"{section}.{f.name}", default=argparse.SUPPRESS, metavar=f.name.upper(),
                               help=f"{f.metadata['help']} (default: {shown}, or the dataset's preset)")


def _cli_overrides(args: argparse.Namespace) -> dict:
    out: dict[str, dict] = {}
    for key, value in vars(args).items():
        if "." in key:
            section, name = key.split(".", 1)
            out.setdefault(section, {})[name] = value
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="genlab", description="Train, sample and evaluate deep generative models.")
    p.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    t = sub.add_parser("train", help="train a DDPM (default: on the bundled 8x8 digits, about 2 minutes on 2 CPU cores)",
                       description="Train a denoising diffusion model and write a self-describing run directory.")
    t.add_argument("--out", type=Path, default=None, help="run directory (default: runs/<data>-<date>-<time>)")
    t.add_argument("--config", type=Path, default=None, help="JSON or TOML file of settings (same sections as config.json); flags override it")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint (same step, same data order)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    _add_config_flags(t)

    s = sub.add_parser("sample", help="sample images from a run's EMA weights")
    s.add_argument("run", type=Path, help="run directory written by genlab train")
    s.add_argument("--n", type=int, default=64, help="number of samples (default 64)")
    s.add_argument("--sampler", default="ancestral", help="ancestral (default) or ddim")
    s.add_argument("--steps", type=int, default=None, help="sampling steps (default: all T for ancestral, 50 for ddim)")
    s.add_argument("--eta", type=float, default=0.0, help="DDIM eta: 0 deterministic, 1 like ancestral (default 0)")
    s.add_argument("--seed", type=int, default=0, help="seed; sample i depends only on (seed, i)")
    s.add_argument("--batch-size", type=int, default=256, help="images per network call (does not change the images)")
    s.add_argument("--out", type=Path, default=Path("samples.png"), help="PNG grid to write (default samples.png)")
    s.add_argument("--npz", type=Path, default=None, help="also write the samples as uint8 arrays to this .npz")
    s.add_argument("--weights", choices=("ema", "model"), default="ema", help="which weights to use (default ema)")
    s.add_argument("--mixed-precision", default=None, help="no (fp32) or bf16 (default: the run's training precision)")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    e = sub.add_parser("eval", help="evaluate a run: bits/dim by the full variational bound")
    e.add_argument("run", type=Path, help="run directory written by genlab train")
    e.add_argument("--metric", default="bpd", help="metric to compute: bpd (default)")
    e.add_argument("--split", default="test", help="data split (default test)")
    e.add_argument("--limit", type=int, default=None, help="use only the first N images of the split")
    e.add_argument("--data-dir", default=None, help="where the dataset's files are, if not where training found them")
    e.add_argument("--batch-size", type=int, default=None, help="images per batch (default: fills about 512 network inputs)")
    e.add_argument("--seed", type=int, default=0, help="seed of the noise draws in the bound")
    e.add_argument("--t-samples", type=int, default=None,
                   help="estimate the sum of the T-1 KL terms from K stratified timesteps per image (unbiased, "
                        "K/T of the cost; the standard error is printed) instead of computing all of them")
    e.add_argument("--weights", choices=("ema", "model"), default="ema", help="which weights to use (default ema)")
    e.add_argument("--mixed-precision", default=None, help="no (fp32) or bf16 (default: the run's training precision)")
    e.add_argument("--json", action="store_true", help="print the result as JSON")
    e.add_argument("--no-progress", action="store_true", help="no progress bar")
    e.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return p


def _load_data(cfg, split: str, root=None):
    from genlab.data import load_dataset

    d = cfg.data
    options = {"variant": d.variant} if d.variant else {}
    return load_dataset(d.name, split, root=root if root is not None else d.root, **options)


def _data_tensor(ds):
    return ds.points if hasattr(ds, "points") else ds.images


def _describe(cfg: RunConfig, ds) -> RunConfig:
    """The config with the dataset's shape, levels and classes filled in (so the run describes itself)."""
    info = ds.info
    shape = tuple(_data_tensor(ds).shape[1:])
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, shape=shape, levels=info.levels, num_classes=info.num_classes))


def cmd_train(args) -> int:
    import torch

    from genlab.run import build_family, read_run_config
    from genlab.training.checkpoint import latest_checkpoint
    from genlab.training.trainer import Trainer, count_parameters, fmt_seconds
    from genlab.viz import save_samples

    overrides = _cli_overrides(args)
    file_overrides = read_config_file(args.config) if args.config else {}
    if args.resume:
        if args.out is None:
            raise ConfigError("--resume needs --out RUN, the run directory to continue.")
        saved = read_run_config(args.out).to_dict()
        # a resumed run keeps its data, model and process; only training settings (e.g. --steps)
        # and where the data lives (--data-dir) may change
        allowed = {"train": None, "data": {"root"}}
        for source in (file_overrides, overrides):
            for section, values in source.items():
                bad = [k for k in values if section not in allowed or (allowed[section] and k not in allowed[section])]
                if bad:
                    raise ConfigError(f"{section}.{bad[0]} cannot change when resuming; start a new run with another --out instead.")
        changes = {s: {**file_overrides.get(s, {}), **overrides.get(s, {})} for s in allowed}
        cfg = resolve(saved["data"]["name"], saved, {s: v for s, v in changes.items() if v})
    else:
        cfg = resolve(None, file_overrides, overrides)
    run_dir = args.out or Path("runs") / f"{cfg.data.name}-{datetime.now():%Y%m%d-%H%M%S}"
    if not args.resume and (run_dir / "config.json").exists():
        raise ConfigError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out.")

    t0 = time.perf_counter()
    train = _load_data(cfg, "train")
    cfg = _describe(cfg, train)
    with torch.random.fork_rng():
        torch.manual_seed(cfg.train.seed)
        family = build_family(cfg)
    levels = cfg.data.levels
    reference = None if levels else _data_tensor(train)[:2000]
    trainer = Trainer(family, cfg, run_dir, _data_tensor(train),
                      save_samples=lambda x, path: save_samples(x, path, levels, reference), progress=not args.no_progress)
    if args.resume:
        ckpt = latest_checkpoint(run_dir)
        trainer.load(ckpt)
        print(f"genlab: resuming {run_dir} from step {trainer.step} ({ckpt.name})")
    what = f"{len(train)} images {'x'.join(map(str, cfg.data.shape))}, {levels} levels" if levels else f"{len(train)} points"
    print(f"genlab: training {cfg.family} on {cfg.data.name} ({what}), {count_parameters(family) / 1e6:.2f}M parameters, {cfg.train.steps} steps at batch "
          f"{cfg.train.batch_size}, precision {cfg.train.mixed_precision}")
    print(f"genlab: run directory {run_dir}")
    summary = trainer.fit()
    print(f"genlab: trained to step {summary['steps']} in {fmt_seconds(summary['seconds'])}; "
          f"checkpoint {summary['checkpoint']}")
    if summary["grid"]:
        print(f"genlab: samples {summary['grid']}")
    test = None
    if cfg.train.eval_bpd and levels > 0:
        try:
            test = _load_data(cfg, "test")
        except GenlabError as e:  # training succeeded; say why there is no test figure
            print(f"genlab: no test bits/dim: {e}")
    if test is not None:
        images = test.images[: cfg.train.eval_limit] if cfg.train.eval_limit else test.images
        result = _bpd(trainer.ema.model, images, cfg, not args.no_progress, t_samples=cfg.train.eval_t_samples)
        trainer.log({"event": "eval", "step": summary["steps"], "split": "test", "weights": "ema", **result})
        print(f"genlab: test bits/dim {result['bpd']:.4f}{_how(result)} (L_T {result['prior_bpd']:.4f} + sum L_t-1 "
              f"{result['diffusion_bpd']:.4f} + L_0 {result['decoder_bpd']:.4f}; {result['n']} images, EMA) "
              f"in {fmt_seconds(result['seconds'])}")
    print(f"genlab: done in {fmt_seconds(time.perf_counter() - t0)}; sample more with: genlab sample {run_dir}")
    return 0


def _how(result: dict) -> str:
    """How the bound was computed, for printing."""
    if result["t_samples"] is None:
        return ""
    return f" +- {result['bpd_se']:.4f} (stratified estimate, {result['t_samples']} timesteps per image)"


def _autocast(precision: str):
    """bf16 autocast for sampling and evaluation, or nothing (fp32)."""
    import torch

    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")


def _precision(args, cfg) -> str:
    precision = getattr(args, "mixed_precision", None) or cfg.train.mixed_precision
    if precision not in ("no", "bf16"):
        raise ConfigError(f"--mixed-precision must be no or bf16, not {precision!r}.")
    return precision


def _bpd(family, images, cfg, progress: bool, batch_size: int | None = None, seed: int = 0,
         t_samples: int | None = None, precision: str | None = None) -> dict:
    t0 = time.perf_counter()
    max_batch = 512
    batch_size = batch_size or max(1, min(len(images), max_batch))
    precision = precision or cfg.train.mixed_precision
    with _autocast(precision):
        result = family.bits_per_dim(images, seed=seed, batch_size=batch_size, max_batch=max_batch,
                                     t_samples=t_samples, progress=progress)
    result["seconds"] = time.perf_counter() - t0
    result["timesteps"] = cfg.diffusion.timesteps
    result["precision"] = precision
    return result


def cmd_sample(args) -> int:
    import numpy as np

    from genlab.diffusion import SAMPLERS
    from genlab.io import atomic_write
    from genlab.run import load_run
    from genlab.viz import save_samples

    if args.sampler not in SAMPLERS:
        raise ConfigError(f"unknown sampler {args.sampler!r}; choose one of {', '.join(SAMPLERS)}.")
    if args.n < 1 or args.batch_size < 1:
        raise ConfigError("--n and --batch-size must be at least 1.")
    if args.steps is not None and not 1 <= args.steps <= 10**6:
        raise ConfigError(f"--steps must be at least 1, not {args.steps}.")
    cfg, family, ckpt, step = load_run(args.run, weights=args.weights)
    t0 = time.perf_counter()
    with _autocast(_precision(args, cfg)):
        x = family.sample(args.n, seed=args.seed, sampler=args.sampler, steps=args.steps, eta=args.eta,
                          batch_size=args.batch_size, progress=not args.no_progress)
    seconds = time.perf_counter() - t0
    save_samples(x, args.out, cfg.data.levels)
    if args.npz:
        arr = x.numpy()
        atomic_write(args.npz, lambda tmp: np.savez(open(tmp, "wb"), samples=arr, levels=np.array(cfg.data.levels)))
    print(f"genlab: {args.n} samples from {args.run} (step {step}, {args.weights} weights, {args.sampler}"
          f"{'' if args.steps is None else f', {args.steps} steps'}) in {seconds:.1f}s -> {args.out}"
          + (f" and {args.npz}" if args.npz else ""))
    return 0


def cmd_eval(args) -> int:
    from genlab.run import append_metrics, load_run

    if args.metric != "bpd":
        raise ConfigError(f"unknown metric {args.metric!r}; this genlab computes: bpd.")
    if args.split not in ("train", "test"):
        raise ConfigError(f"unknown split {args.split!r}; choose train or test.")
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be at least 1, not {args.limit}.")
    cfg, family, ckpt, step = load_run(args.run, weights=args.weights)
    if cfg.data.levels == 0:
        raise ConfigError(f"{cfg.data.name} is continuous data: bits/dim needs images with discrete levels.")
    ds = _load_data(cfg, args.split, root=args.data_dir)
    images = ds.images[: args.limit] if args.limit else ds.images
    if args.t_samples is not None and args.t_samples < 1:
        raise ConfigError(f"--t-samples must be at least 1, not {args.t_samples}.")
    result = _bpd(family, images, cfg, not (args.no_progress or args.json), args.batch_size, args.seed, args.t_samples,
                  _precision(args, cfg))
    record = {"bpd": result["bpd"], "prior_bpd": result["prior_bpd"], "diffusion_bpd": result["diffusion_bpd"],
              "decoder_bpd": result["decoder_bpd"], "bpd_se": result["bpd_se"], "t_samples": result["t_samples"],
              "n": result["n"], "split": args.split, "data": cfg.data.name,
              "weights": args.weights, "step": step, "timesteps": result["timesteps"], "precision": result["precision"],
              "seconds": result["seconds"]}
    append_metrics(args.run, {"event": "eval", "metric": "bpd", **record})
    if args.json:
        print(json.dumps(record))
        return 0
    T = result["timesteps"]
    how = "all T terms" if result["t_samples"] is None else f"{result['t_samples']} stratified timesteps per image"
    print(f"bits/dim on {cfg.data.name} {args.split} ({result['n']} images, {args.weights} weights, step {step}, T={T}, "
          f"{how}, {result['seconds']:.1f}s)")
    rows = [("L_T (prior)", result["prior_bpd"]), (f"sum of L_t-1, t=2..{T}", result["diffusion_bpd"]),
            ("L_0 (decoder)", result["decoder_bpd"]), ("total (bound)", result["bpd"]),
            ("standard error (total)", result["bpd_se"])]
    for name, value in rows:
        print(f"  {name:<24} {value:>9.4f}")
    return 0


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    commands = {"train": cmd_train, "sample": cmd_sample, "eval": cmd_eval}
    try:
        return commands[args.command](args)
    except GenlabError as e:
        if args.debug:
            raise
        print(f"genlab: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("genlab: interrupted; resume with --resume --out RUN", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
