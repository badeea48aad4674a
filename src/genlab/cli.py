"""genlab's command line: ``genlab train | sample | eval | report | features``.

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

from genlab.config import FAMILIES, SECTIONS, RunConfig, read_config_file, resolve
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
            switch = {"nargs": "?", "const": "true"} if isinstance(default, bool) else {}  # a bare flag means true
            group.add_argument(flag, dest=f"{section}.{f.name}", default=argparse.SUPPRESS, metavar=f.name.upper(),
                               help=f"{f.metadata['help']} (default: {shown}, or the dataset's preset)", **switch)


def _cli_overrides(args: argparse.Namespace) -> dict:
    out: dict[str, dict] = {}
    for key, value in vars(args).items():
        if "." in key:
            section, name = key.split(".", 1)
            out.setdefault(section, {})[name] = value
    return out


SAMPLER_HELP = ("ancestral (default), ddim, dpmpp-2m (DPM-Solver++ 2M), euler, heun, langevin (annealed Langevin "
                "dynamics) or pc (predictor-corrector)")


def _add_step_flags(p) -> None:
    p.add_argument("--steps", type=int, default=None,
                   help="sampling steps (default: all T for ancestral, 50 for ddim and euler, 20 for dpmpp-2m and heun "
                        "(2 network evaluations per step), 100 noise levels of 5 Langevin steps for langevin, 100 for pc)")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM eta: 0 deterministic, 1 like ancestral (default 0)")
    p.add_argument("--spacing", default="uniform",
                   help="timesteps of ancestral, ddim and pc: uniform (default) or quadratic (denser at low noise)")


DEVICE_HELP = "where the network runs: auto (default: the first CUDA GPU if torch sees one, else the CPU), cpu, cuda or cuda:N"
COMPILE_HELP = ("diffusion runs: run the network through torch.compile (each batch shape compiles once, 30-60 s on "
                "2 cores, seconds when cached; then 1.4-2.6x faster per evaluation on this CPU): for many steps or samples")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="genlab", description="Train, sample and evaluate deep generative models.")
    p.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    t = sub.add_parser("train", help="train a DDPM or a baseline family (default: a DDPM on the bundled 8x8 digits, "
                                     "about 2 minutes on 2 CPU cores)",
                       description="Train a model of one family and write a self-describing run directory: a denoising "
                                   "diffusion model (ddpm), a noise-conditional classifier for classifier guidance, or "
                                   "one of the families diffusion is measured against (ae, vae, gan, rbm, dbn).")
    t.add_argument("family", nargs="?", choices=FAMILIES, default=None,
                   help="what to train: ddpm (default); classifier, a noise-conditional classifier p(y | x_t, t) on "
                        "the same noise schedule, for genlab sample --classifier; ae (autoencoder; --ae-noise for a "
                        "denoising one); vae (--beta for a beta-VAE); gan (DCGAN; --gan-loss ns, minimax or wgan-gp, "
                        "--class-conditional); rbm (restricted Boltzmann machine, CD-k or --persistent); dbn (deep "
                        "belief net, greedy RBMs)")
    t.add_argument("--out", type=Path, default=None, help="run directory (default: runs/<data>-<date>-<time>)")
    t.add_argument("--config", type=Path, default=None, help="JSON or TOML file of settings (same sections as config.json); flags override it")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint (same step, same data order)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--processes", type=int, default=None, metavar="N",
                   help="train in N processes on this machine (gloo on CPUs, NCCL on GPUs), each on 1/N of every "
                        "batch: --batch-size stays the global batch and must be a multiple of N; for several "
                        "machines use accelerate launch or torchrun (see the README)")
    t.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    _add_config_flags(t)

    s = sub.add_parser("sample", help="sample images from a run's EMA weights")
    s.add_argument("run", type=Path, help="run directory written by genlab train")
    s.add_argument("--n", type=int, default=64, help="number of samples (default 64)")
    s.add_argument("--sampler", default=None, help="diffusion runs: " + SAMPLER_HELP)
    _add_step_flags(s)
    s.add_argument("--interpolate", default=None, metavar="A,B",
                   help="autoencoder and VAE runs: decode the latent path between test images A and B (indices) "
                        "instead of sampling; --n images along it")
    s.add_argument("--slerp", action="store_true",
                   help="with --interpolate: spherical instead of linear interpolation (the VAE's prior is Gaussian)")
    s.add_argument("--pixel-noise", action="store_true",
                   help="vae runs: draw the pixels from p(x | z) too, instead of showing the decoder's mean")
    s.add_argument("--reconstruct", action="store_true",
                   help="autoencoder and VAE runs: show the first --n test images above their reconstructions instead of sampling")
    s.add_argument("--seed", type=int, default=0, help="seed; sample i depends only on (seed, i)")
    s.add_argument("--batch-size", type=int, default=256, help="images per network call (does not change the images)")
    s.add_argument("--out", type=Path, default=Path("samples.png"), help="PNG grid to write (default samples.png)")
    s.add_argument("--npz", type=Path, default=None, help="also write the samples as uint8 arrays to this .npz")
    s.add_argument("--weights", choices=("ema", "model"), default="ema", help="which weights to use (default ema)")
    s.add_argument("--mixed-precision", default=None, help="no (fp32) or bf16 (default: the run's training precision)")
    s.add_argument("--class", dest="class_", default=None, metavar="C",
                   help="class to sample, an integer, or 'all': sample i gets class i %% num_classes (the default for a "
                        "class-conditional model or with --classifier)")
    s.add_argument("--guidance", type=float, default=None, metavar="W",
                   help="classifier-free guidance weight w of a class-conditional model, eps = (1+w) eps(x,y) - w eps(x); "
                        "0 (default) is the plain conditional model. With --classifier: the classifier scale s (default 1)")
    s.add_argument("--classifier", type=Path, default=None, metavar="RUN",
                   help="guide with this noise-conditional classifier run (genlab train classifier), same data and schedule")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.add_argument("--compile", action="store_true", help=COMPILE_HELP)
    s.add_argument("--device", default="auto", help=DEVICE_HELP)
    s.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    e = sub.add_parser("eval", help="measure a run: bits/dim (variational bound), FID, KID, precision/recall, speed",
                       description="Measure a run with its EMA weights. bpd: the full variational bound on a data split. "
                                   "fid, kid, pr: draw --n samples (or read --samples) and compare their features under "
                                   "genlab's shipped feature network with the reference split. The result is printed and "
                                   "appended to RUN/metrics.jsonl with its protocol.")
    e.add_argument("run", type=Path, help="run directory written by genlab train")
    e.add_argument("--ode-tol", type=float, default=1e-5,
                   help="bpd-ode: relative and absolute tolerance of the RK45 solver (default 1e-5, as Song et al. 2021)")
    e.add_argument("--metrics", "--metric", dest="metrics", default="bpd",
                   help="comma-separated, any of: fid, kid, pr (precision and recall), bpd (the variational bound; "
                        "default), bpd-ode (the probability-flow ODE's likelihood)")
    g = e.add_argument_group("likelihood (bpd)")
    g.add_argument("--split", default="test", help="data split for bits/dim (default test)")
    g.add_argument("--limit", type=int, default=None, help="use only the first N images of the split (default: all)")
    g.add_argument("--t-samples", type=int, default=None,
                   help="estimate the sum over t from N stratified timesteps per image (unbiased, with a standard "
                        "error) instead of all T (default: all T)")
    g = e.add_argument_group("samples (fid, kid, pr)")
    g.add_argument("--n", type=int, default=10000, help="number of samples to draw (default 10000)")
    g.add_argument("--sampler", default=None, help="diffusion runs: " + SAMPLER_HELP.replace("ancestral (default), ddim", "ancestral, ddim (default)"))
    _add_step_flags(g)
    g.add_argument("--samples", type=Path, default=None, help="measure the samples in this .npz (genlab sample --npz) instead of sampling")
    g.add_argument("--save-samples", type=Path, default=None, help="also write the drawn samples to this .npz")
    g.add_argument("--ref-split", default="train", help="real split the samples are compared with (default train)")
    e.add_argument("--data-dir", default=None, help="where the dataset's files are, if not where training found them")
    e.add_argument("--batch-size", type=int, default=None,
                   help="images per network call (default: 256 samples; bits/dim fills about 512 network inputs)")
    e.add_argument("--seed", type=int, default=0, help="seed of the samples and of the noise draws in the bound")
    e.add_argument("--weights", choices=("ema", "model"), default="ema", help="which weights to use (default ema)")
    e.add_argument("--mixed-precision", default=None, help="no (fp32) or bf16 (default: the run's training precision)")
    e.add_argument("--json", action="store_true", help="print the result as JSON")
    e.add_argument("--compile", action="store_true", help=COMPILE_HELP)
    e.add_argument("--device", default="auto", help=DEVICE_HELP)
    e.add_argument("--no-progress", action="store_true", help="no progress bar")
    e.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    r = sub.add_parser("report", help="the trilemma table and chart (quality, coverage, speed, likelihood) of runs",
                       description="Collect every evaluation in the runs' metrics.jsonl into one table (FID, KID, "
                                   "precision, recall, bits/dim, NFE, seconds per sample) written as Markdown, "
                                   "with a PNG chart of quality against speed (point size: recall) beside it.")
    r.add_argument("runs", type=Path, nargs="+", help="run directories evaluated with genlab eval")
    r.add_argument("--out", type=Path, default=Path("report.md"), help="Markdown file to write (default report.md); "
                   "the chart goes beside it with the suffix .png")
    r.add_argument("--x", choices=("seconds", "nfe"), default="seconds",
                   help="the chart's speed axis: seconds per sample (default) or network evaluations per sample "
                        "(one line per sampler)")
    r.add_argument("--n", type=int, default=None, help="keep only evaluations of this many samples (compare at equal n)")
    r.add_argument("--best", action="store_true",
                   help="keep one row per run: its lowest FID (e.g. one row per family; the protocol says so)")
    r.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    f = sub.add_parser("features", help="genlab's feature networks (the yardstick of FID/KID/precision/recall)")
    fsub = f.add_subparsers(dest="features_command", metavar="{train,show,floor}")
    ft = fsub.add_parser("train", help="train a dataset's feature network (deterministic on a given machine)")
    ft.add_argument("--data", required=True, help="digits, mnist, fashion-mnist or cifar10 (trained on the JPEG copy)")
    ft.add_argument("--data-dir", default=None, help="where the dataset's files are")
    ft.add_argument("--out", type=Path, default=None, help="weights file to write (default features/<data>.safetensors)")
    ft.add_argument("--seed", type=int, default=0, help="seed of initialisation, data order and augmentation (default 0)")
    ft.add_argument("--epochs", type=int, default=None, help="epochs (default: the dataset's recipe)")
    ft.add_argument("--no-progress", action="store_true", help="no progress bar")
    fs = fsub.add_parser("show", help="list the shipped feature networks: version, test accuracy, command")
    fs.add_argument("--json", action="store_true", help="print as JSON")
    ff = fsub.add_parser("floor", help="FID/KID/precision/recall between real sets: the two halves of the test split, "
                                      "and the test split against the train split")
    ff.add_argument("--data", required=True, help="dataset to measure (digits, mnist, fashion-mnist, cifar10-jpeg, cifar10)")
    ff.add_argument("--data-dir", default=None, help="where the dataset's files are")
    ff.add_argument("--json", action="store_true", help="print as JSON")
    ff.add_argument("--no-progress", action="store_true", help="no progress bar")
    for sp in (ft, fs, ff):
        sp.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    _add_editing_parsers(sub)
    _add_hopfield_parser(sub)
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
    from genlab.training.launch import as_in_first_process, launch, launched_processes
    from genlab.training.trainer import Trainer, check_batch, count_parameters
    from genlab.viz import save_samples

    launched = launched_processes()
    if args.processes is not None:
        if args.processes < 1:
            raise ConfigError(f"--processes must be at least 1, not {args.processes}.")
        if launched is not None and launched != args.processes:
            raise ConfigError(f"--processes {args.processes} differs from the {launched} processes accelerate launch or "
                              f"torchrun started; drop --processes when using a launcher.")
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
        cfg = resolve(saved["data"]["name"], saved, {s: v for s, v in changes.items() if v}, family=saved["family"])
    else:
        cfg = resolve(None, file_overrides, overrides, family=args.family)
    if args.family is not None and args.family != cfg.family:
        if args.resume:
            raise ConfigError(f"{args.out} is a {cfg.family} run; resume it with genlab train {cfg.family} --resume.")
        cfg = dataclasses.replace(cfg, family=args.family)
    run_dir = args.out or Path("runs") / f"{cfg.data.name}-{datetime.now():%Y%m%d-%H%M%S}"
    if args.out is None and launched and launched > 1:
        run_dir = as_in_first_process(run_dir)  # the clock may have ticked between the processes
    if not args.resume and (run_dir / "config.json").exists():
        raise ConfigError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out.")
    ckpt = latest_checkpoint(run_dir) if args.resume else None

    # with --processes this process loads and checks everything before it starts the others:
    # a download happens once, and bad input is said once
    t0 = time.perf_counter()
    train = _load_data(cfg, "train")
    cfg = _describe(cfg, train)
    with torch.random.fork_rng():
        torch.manual_seed(cfg.train.seed)
        family = build_family(cfg)
    if args.processes and args.processes > 1 and launched is None:
        check_batch(family, cfg, len(train), args.processes)
        del train, family
        return launch(args.argv, args.processes)
    if cfg.diffusion.super_resolution:  # its progress grids upscale training images
        from genlab.diffusion.superres import set_preview

        set_preview(family, _data_tensor(train))
    levels = cfg.data.levels
    reference = None if levels else _data_tensor(train)[:2000]
    classifier = cfg.family == "classifier"
    monitor, monitor_every = _gan_monitor(cfg, train) if cfg.family == "gan" else (None, 0)
    trainer = Trainer(family, cfg, run_dir, _data_tensor(train),
                      save_samples=None if classifier else lambda x, path: save_samples(x, path, levels, reference),
                      progress=not args.no_progress, labels=train.labels if getattr(family, "uses_labels", False) else None,
                      monitor=monitor, monitor_every=monitor_every)
    say = print if trainer.is_main else lambda *a, **k: None  # one process speaks for all
    if ckpt:
        trainer.load(ckpt)
        say(f"genlab: resuming {run_dir} from step {trainer.step} ({ckpt.name})")
    what = f"{len(train)} images {'x'.join(map(str, cfg.data.shape))}, {levels} levels" if levels else f"{len(train)} points"
    n = trainer.accelerator.num_processes
    batch = f"{cfg.train.batch_size}" + (f" ({cfg.train.batch_size // n} in each of {n} processes)" if n > 1 else "")
    say(f"genlab: training {cfg.family} on {cfg.data.name} ({what}), {count_parameters(family) / 1e6:.2f}M parameters, {cfg.train.steps} steps at batch "
        f"{batch}, precision {cfg.train.mixed_precision}")
    say(f"genlab: run directory {run_dir}")
    summary = trainer.fit()
    if not trainer.is_main:
        _leave_process_group()
        return 0  # the first process alone reports and evaluates
    try:
        return _report_training(args, cfg, trainer, summary, run_dir, levels, classifier, t0)
    finally:
        _leave_process_group()


def _gan_monitor(cfg, train):
    """The mode-collapse monitor of a GAN run (recall and class coverage of 1000 samples), if the data has a
    shipped feature network; (None, 0) otherwise."""
    from genlab.metrics.features import NETWORK_FOR, load_feature_network

    if cfg.data.name not in NETWORK_FOR:
        return None, 0
    from genlab.gan.monitor import coverage_monitor
    from genlab.metrics.evaluate import reference_features

    fnet = load_feature_network(cfg.data.name)
    real = []  # computed at the first measurement, not before training starts

    def monitor(family, step):
        if not real:
            real.append(reference_features(fnet, train.images, train.labels, cfg.data.name, "train")[0])
        return coverage_monitor(family, fnet, real[0], n=1000, seed=cfg.train.seed)

    return monitor, cfg.gan.monitor_every


def _leave_process_group() -> None:
    """Close this process's part of the process group (several processes): a process that exits
    with gloo's threads still running is aborted by the C++ runtime ("terminate called without
    an active exception", signal 6)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _report_training(args, cfg, trainer, summary, run_dir, levels: int, classifier: bool, t0: float) -> int:
    """The first process's report after training: where things are, then the test bits/dim."""
    from genlab.training.trainer import fmt_seconds

    print(f"genlab: trained to step {summary['steps']} in {fmt_seconds(summary['seconds'])}; "
          f"checkpoint {summary['checkpoint']}")
    if summary["grid"]:
        print(f"genlab: samples {summary['grid']}")
    if classifier:
        return _eval_classifier(cfg, trainer, run_dir, t0)
    if cfg.family != "ddpm":
        return _eval_family(args, cfg, trainer, run_dir, summary, t0)
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
    more = f"genlab upscale {run_dir} --image test:0" if cfg.diffusion.super_resolution else f"genlab sample {run_dir}"
    print(f"genlab: done in {fmt_seconds(time.perf_counter() - t0)}; sample more with: {more}")
    return 0


def _eval_family(args, cfg, trainer, run_dir, summary, t0) -> int:
    """A baseline family's test likelihood after training (where it has one), logged and printed."""
    from genlab.training.trainer import fmt_seconds

    family = trainer.ema.model
    if cfg.train.eval_bpd and hasattr(family, "bits_per_dim"):
        try:
            test = _load_data(cfg, "test")
        except GenlabError as e:
            print(f"genlab: no test bits/dim: {e}")
        else:
            images = test.images[: cfg.train.eval_limit] if cfg.train.eval_limit else test.images
            result = _bpd(family, images, cfg, not args.no_progress)
            trainer.log({"event": "eval", "step": summary["steps"], "split": "test", "weights": "ema", **result})
            print(f"genlab: test {_describe_bpd(result)} ({result['n']} images, EMA) in {fmt_seconds(result['seconds'])}")
    _quality_after_training(args, cfg, family, run_dir, summary["steps"])
    print(f"genlab: done in {fmt_seconds(time.perf_counter() - t0)}; sample more with: genlab sample {run_dir}")
    return 0


QUALITY_AFTER_TRAINING = 1000  # samples a baseline family is measured with when its training ends


def _quality_after_training(args, cfg, family, run_dir, step: int) -> None:
    """FID, KID and precision/recall of 1000 EMA samples against the training split, logged as ``genlab eval``
    would: a baseline family samples in one pass (or one Gibbs chain), so this costs seconds, and every
    family then has its row in ``genlab report`` (skipped for data without a feature network)."""
    from genlab.metrics.features import NETWORK_FOR, load_feature_network
    from genlab.run import append_metrics

    if cfg.data.name not in NETWORK_FOR or not cfg.data.levels:
        return
    ns = argparse.Namespace(n=QUALITY_AFTER_TRAINING, seed=cfg.train.seed, steps=None, sampler=None, eta=0.0,
                            spacing="uniform", weights="ema", samples=None, save_samples=None, ref_split="train",
                            data_dir=None, batch_size=None)
    precision = cfg.train.mixed_precision
    record = _measure_samples(ns, cfg, family, step, precision, load_feature_network(cfg.data.name), ("fid", "kid", "pr"),
                              not args.no_progress)
    record.update({"data": cfg.data.name, "weights": "ema", "step": step, "mixed_precision": precision})
    append_metrics(run_dir, {"event": "eval", "metric": "fid,kid,pr", **record})
    print(f"genlab: FID {record['fid']:.3f}, KID {record['kid']:.5f}, precision {record['precision']:.3f}, recall "
          f"{record['recall']:.3f} ({record['n']} EMA samples against the {cfg.data.name} training split; "
          f"{record['seconds_per_sample'] * 1e3:.2f} ms per sample)")


def _describe_bpd(r: dict) -> str:
    """One line for a baseline family's likelihood: what bound or estimate it is."""
    if r.get("binarised"):
        return (f"bits/dim {r['bpd']:.4f} +- {r['bpd_se']:.4f} on binarised images (-log p(v) = {r['nll_nats']:.2f} "
                f"nats per image; log Z = {r['log_z']:.2f} +- {r['log_z_se']:.2f} by AIS, {r['ais_chains']} chains x "
                f"{r['ais_betas']} temperatures)")
    if "iwae_k" in r:
        return (f"bits/dim {r['bpd']:.4f} +- {r['bpd_se']:.4f} (IWAE bound, k = {r['iwae_k']}; ELBO {r['elbo_bpd']:.4f} = "
                f"reconstruction {r['recon_bpd']:.4f} + KL {r['kl_bpd']:.4f})")
    return f"bits/dim {r['bpd']:.4f}"


def _eval_classifier(cfg, trainer, run_dir, t0) -> int:
    """A classifier run's test accuracy (EMA weights) at t = 0 and at t ~ U{0..T-1}, logged and printed."""
    from genlab.training.trainer import fmt_seconds

    try:
        test = _load_data(cfg, "test")
    except GenlabError as e:
        print(f"genlab: no test accuracy: {e}")
    else:
        n = cfg.train.eval_limit or len(test)
        result = trainer.ema.model.accuracy(test.images[:n], test.labels[:n], seed=cfg.train.seed)
        trainer.log({"event": "eval", "step": trainer.step, "split": "test", "weights": "ema", **result})
        print(f"genlab: test accuracy {result['accuracy']:.4f} on x_t with t ~ U{{0..{cfg.diffusion.timesteps - 1}}}, "
              f"{result['accuracy_t0']:.4f} at t = 0 ({result['n']} images, EMA)")
    print(f"genlab: done in {fmt_seconds(time.perf_counter() - t0)}; guide a model with: "
          f"genlab sample RUN --classifier {run_dir} --guidance 1")
    return 0


def _how(result: dict) -> str:
    """How the bound was computed, for printing."""
    if result["t_samples"] is None:
        return ""
    return f" +- {result['bpd_se']:.4f} (stratified estimate, {result['t_samples']} timesteps per image)"


def _autocast(precision: str, family):
    """bf16 autocast for sampling and evaluation on the family's device, or nothing (fp32)."""
    import torch

    device = next(family.parameters()).device.type
    return torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16")


def _device(args):
    """The device of --device: auto is the first CUDA GPU if torch sees one, else the CPU."""
    import torch

    name = getattr(args, "device", "auto")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown --device {name!r}; choose auto, cpu, cuda or cuda:N.") from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device {name} is not supported; choose auto, cpu, cuda or cuda:N.")
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise ConfigError(f"--device {name} needs a CUDA GPU that torch can see, and it sees "
                          f"{torch.cuda.device_count()}; use --device cpu.")
    return device


def _precision(args, cfg) -> str:
    precision = getattr(args, "mixed_precision", None) or cfg.train.mixed_precision
    if precision not in ("no", "bf16"):
        raise ConfigError(f"--mixed-precision must be no or bf16, not {precision!r}.")
    return precision


def _bpd(family, images, cfg, progress: bool, batch_size: int | None = None, seed: int = 0,
         precision: str | None = None, **options) -> dict:
    """``family.bits_per_dim(images, ...)``, timed, under ``precision`` (default: the run's).

    A DDPM's bound fills about 512 network inputs per call (``max_batch``) and records its T;
    ``options`` go to ``bits_per_dim`` (a DDPM's ``t_samples``).
    """
    t0 = time.perf_counter()
    precision = precision or cfg.train.mixed_precision
    diffusion = cfg.family == "ddpm"
    if diffusion:
        options["max_batch"] = 512
        batch_size = batch_size or max(1, min(len(images), 512))
    with _autocast(precision, family):
        result = family.bits_per_dim(images, seed=seed, batch_size=batch_size, progress=progress, **options)
    result.update(seconds=time.perf_counter() - t0, mixed_precision=precision)
    if diffusion:
        result["timesteps"] = cfg.diffusion.timesteps
    return result


def cmd_sample(args) -> int:
    from genlab.run import compile_network, load_run
    from genlab.viz import save_samples

    if args.n < 1 or args.batch_size < 1:
        raise ConfigError("--n and --batch-size must be at least 1.")
    _known_sampler(args)
    cfg, family, ckpt, step = load_run(args.run, weights=args.weights, device=_device(args))
    _require_sampler(cfg, args.run)
    _check_sampling_args(args, cfg)
    if args.compile:
        compile_network(family.net)
    if args.interpolate is not None:
        return _interpolate(args, cfg, family, step)
    if args.reconstruct:
        return _reconstruct(args, cfg, family, step)
    conditioning = _sample_conditioning(args, cfg, family)
    x, protocol = _draw_samples(args, cfg, family, step, _precision(args, cfg), args.batch_size, not args.no_progress,
                                conditioning=conditioning)
    save_samples(x, args.out, cfg.data.levels)
    if args.npz:
        _write_samples_npz(args.npz, x, cfg.data.levels, protocol, labels=conditioning.get("labels"))
    steps = f", {protocol['steps']} steps" if protocol["steps"] is not None else ""
    print(f"genlab: {args.n} samples from {args.run} (step {step}, {args.weights} weights, {protocol['sampler']}"
          f"{steps}, {protocol['nfe']:g} network evaluations each) in {protocol['sampling_seconds']:.1f}s"
          f"{' (compiling included)' if protocol['compiled'] else ''} "
          f"-> {args.out}"
          + (f" and {args.npz}" if args.npz else ""))
    if conditioning["protocol"]:
        c = conditioning["protocol"]
        guided = f", {c['guidance_type']} guidance {c['guidance']:g}" if c.get("guidance_type") else ""
        print(f"genlab: class {c['class']}{guided}")
    return 0


# how each family draws a sample (the "sampler" of its report rows)
FAMILY_SAMPLERS = {"ae": "decoder", "vae": "decoder", "gan": "generator", "rbm": "gibbs", "dbn": "gibbs"}


def _reconstruct(args, cfg, family, step: int) -> int:
    """The first ``--n`` test images (odd rows) above their reconstructions (even rows), 8 per row."""
    import torch

    from genlab.viz.grid import save_grid

    if args.n > 8 and args.n % 8:
        raise ConfigError(f"--reconstruct shows 8 images per row: pass an --n of at most 8 or a multiple of 8, not {args.n}.")
    test = _load_data(cfg, "test")
    images = test.images[: args.n]
    with _autocast(_precision(args, cfg), family):
        recon = family.reconstruct(images)
    rows = [t for i in range(0, len(images), 8) for t in (images[i:i + 8], recon[i:i + 8])]
    save_grid(torch.cat(rows), args.out, cfg.data.levels, nrow=min(8, len(images)))
    mse = ((images.float() - recon.float()) / (cfg.data.levels - 1)).pow(2).mean().item()
    print(f"genlab: {len(images)} test images and their reconstructions from {args.run} (step {step}, {args.weights} "
          f"weights; mean squared error {mse:.5f} on [0, 1] pixels) -> {args.out}")
    return 0


def _require_sampler(cfg, run: Path) -> None:
    """A run whose family draws samples (every family but the noise-conditional classifier)."""
    if cfg.family == "classifier":
        raise ConfigError(f"{run} is a classifier run, which does not draw images; use it with "
                          f"genlab sample MODEL_RUN --classifier {run}.")


def _check_sampling_args(args, cfg) -> None:
    """Diffusion runs: the sampler flags, checked (default ancestral). Other families: which flags apply."""
    if cfg.family == "ddpm":
        if args.sampler is None:
            args.sampler = "ancestral" if args.command == "sample" else "ddim"
        _check_sampler(args)
        if getattr(args, "interpolate", None) is not None or getattr(args, "reconstruct", False):
            raise ConfigError("--interpolate and --reconstruct apply to ae and vae runs; a diffusion run samples (genlab sample RUN).")
        return
    bad = next((flag for flag, given in (("--sampler", args.sampler is not None), ("--eta", args.eta != 0),
                                         ("--spacing", args.spacing != "uniform"),
                                         ("--compile", getattr(args, "compile", False)),
                                         ("--steps", args.steps is not None and cfg.family not in ("rbm", "dbn")))
                if given), None)
    if bad:
        raise ConfigError(f"{bad} applies to diffusion runs (and --steps also to rbm and dbn runs, as Gibbs steps); "
                          f"a {cfg.family} run draws a sample with its {FAMILY_SAMPLERS[cfg.family]}: drop {bad}.")
    if args.steps is not None and args.steps < 1:
        raise ConfigError(f"--steps must be at least 1, not {args.steps}.")
    if getattr(args, "interpolate", None) is not None and cfg.family not in ("ae", "vae"):
        raise ConfigError(f"--interpolate walks the latent space of an ae or vae run; a {cfg.family} run has none to walk.")
    if getattr(args, "pixel_noise", False) and cfg.family != "vae":
        raise ConfigError(f"--pixel-noise draws pixels from a VAE's decoder distribution; a {cfg.family} run has none.")
    if getattr(args, "slerp", False) and getattr(args, "interpolate", None) is None:
        raise ConfigError("--slerp is a way to --interpolate; add --interpolate A,B.")
    if getattr(args, "reconstruct", False) and cfg.family not in ("ae", "vae"):
        raise ConfigError(f"--reconstruct encodes and decodes with an ae or vae run; a {cfg.family} run has no encoder.")


def _interpolate(args, cfg, family, step: int) -> int:
    """Decode the latent path between two test images (autoencoders and VAEs)."""
    import torch

    from genlab.viz.grid import save_grid

    try:
        a, b = (int(v) for v in args.interpolate.split(","))
    except ValueError:
        raise ConfigError(f"--interpolate takes two test-image indices A,B, not {args.interpolate!r}.") from None
    test = _load_data(cfg, "test")
    for i in (a, b):
        if not 0 <= i < len(test):
            raise ConfigError(f"test image {i} does not exist; choose indices in 0..{len(test) - 1}.")
    if args.n < 2:
        raise ConfigError(f"--n must be at least 2 for a path between two images, not {args.n}.")
    with _autocast(_precision(args, cfg), family):
        x = family.interpolate(test.images[a], test.images[b], args.n, method="slerp" if args.slerp else "linear")
    save_grid(torch.cat([test.images[a][None], x, test.images[b][None]]), args.out, cfg.data.levels, nrow=len(x) + 2)
    print(f"genlab: {args.n} decoded points ({'spherical' if args.slerp else 'linear'} path) between test images {a} "
          f"and {b} (shown at both ends) from {args.run} "
          f"(step {step}, {args.weights} weights) -> {args.out}")
    return 0


def _sample_conditioning(args, cfg, family) -> dict:
    """The ``family.sample`` keywords for --class, --guidance and --classifier, checked.

    Returns a dict with ``labels`` ([n] int64 or None), ``guidance`` and ``classifier``
    (keywords of :meth:`DDPM.sample`) and ``protocol`` (what to record with the samples).
    """
    import torch

    from genlab.run import load_classifier

    classifier = None
    if args.classifier is not None:
        _, clf = load_classifier(args.classifier, cfg, weights="ema", device=next(family.parameters()).device)
        classifier = clf.net
    conditional = bool(getattr(family, "num_classes", 0))
    if cfg.family != "ddpm" and (args.guidance is not None or classifier is not None):
        raise ConfigError(f"--guidance and --classifier guide diffusion runs; a {cfg.family} run has no guidance.")
    if not conditional and classifier is None:
        if args.class_ is not None:
            raise ConfigError(f"{args.run} is an unconditional model, so --class needs a classifier to guide it; "
                              "pass --classifier RUN (genlab train classifier) or train with --class-conditional.")
        if args.guidance is not None:
            raise ConfigError(f"{args.run} is an unconditional model, so --guidance needs --classifier RUN or a model "
                              "trained with --class-conditional.")
        return {"labels": None, "guidance": None, "classifier": None, "protocol": {}}
    num_classes = cfg.data.num_classes
    labels = _parse_class(args.class_, args.n, num_classes)
    if cfg.family != "ddpm":  # a conditional GAN: the class goes to the generator, nothing guides it
        return {"labels": torch.as_tensor(labels), "guidance": None, "classifier": None,
                "protocol": {"class": "all" if args.class_ in (None, "all") else int(args.class_)}}
    guidance = args.guidance if args.guidance is not None else (1.0 if classifier is not None else 0.0)
    protocol = {"class": "all" if args.class_ in (None, "all") else int(args.class_), "guidance": guidance,
                "guidance_type": "classifier" if classifier is not None else "classifier-free",
                "classifier": str(args.classifier) if classifier is not None else None}
    return {"labels": torch.as_tensor(labels), "guidance": guidance, "classifier": classifier, "protocol": protocol}


def _parse_class(text: str | None, n: int, num_classes: int) -> list[int]:
    """--class C: every sample of class C; 'all' or none: sample i gets class i % num_classes."""
    if text is None or text == "all":
        return [i % num_classes for i in range(n)]
    try:
        c = int(text)
    except ValueError:
        raise ConfigError(f"--class must be an integer class or 'all', not {text!r}.") from None
    if not 0 <= c < num_classes:
        raise ConfigError(f"--class {c} does not exist; choose a class in 0..{num_classes - 1} or 'all'.")
    return [c] * n


def _parse_metrics(text: str) -> tuple[str, ...]:
    from genlab.metrics.evaluate import QUALITY_METRICS

    known = (*QUALITY_METRICS, "bpd", "bpd-ode")
    names = tuple(dict.fromkeys(m.strip().lower() for m in text.split(",") if m.strip()))
    bad = [m for m in names if m not in known]
    if bad or not names:
        raise ConfigError(f"unknown metric {bad[0] if bad else text!r}; choose from: {', '.join(known)} (comma-separated).")
    return names


def _known_sampler(args) -> None:
    """Sampler flags that are wrong whatever the run (a --sampler names a diffusion sampler): said before reading it."""
    if args.sampler is not None:
        _check_sampler(args)


def _check_sampler(args) -> None:
    from genlab.diffusion import SAMPLERS

    if args.sampler not in SAMPLERS:
        raise ConfigError(f"unknown sampler {args.sampler!r}; choose one of {', '.join(SAMPLERS)}.")
    if args.steps is not None and not 1 <= args.steps <= 10**6:
        raise ConfigError(f"--steps must be at least 1, not {args.steps}.")
    if args.eta != 0 and args.sampler != "ddim":
        raise ConfigError(f"--eta applies to the ddim sampler only, not to {args.sampler}; drop --eta.")
    if args.spacing not in ("uniform", "quadratic"):
        raise ConfigError(f"unknown --spacing {args.spacing!r}; choose uniform or quadratic.")
    if args.spacing != "uniform" and args.sampler not in ("ancestral", "ddim", "pc"):
        raise ConfigError(f"--spacing applies to ancestral, ddim and pc; {args.sampler} uses its own noise levels.")


def _check_eval_args(args, metrics, cfg) -> None:
    if args.split not in ("train", "test") or args.ref_split not in ("train", "test"):
        bad = args.split if args.split not in ("train", "test") else args.ref_split
        raise ConfigError(f"unknown split {bad!r}; choose train or test.")
    for flag, value in (("--limit", args.limit), ("--t-samples", args.t_samples), ("--batch-size", args.batch_size)):
        if value is not None and value < 1:
            raise ConfigError(f"{flag} must be at least 1, not {value}.")
    if not 0 < args.ode_tol < 1:
        raise ConfigError(f"--ode-tol must lie between 0 and 1, not {args.ode_tol:g}.")
    if cfg.family != "ddpm":
        if "bpd-ode" in metrics:
            raise ConfigError(f"bpd-ode is the likelihood of a diffusion model's probability-flow ODE; a {cfg.family} run "
                              f"has none: drop it from --metrics.")
        from genlab.run import family_class

        if "bpd" in metrics and not hasattr(family_class(cfg.family), "bits_per_dim"):
            raise ConfigError(f"a {cfg.family} run has no likelihood to measure; use --metrics fid,kid,pr "
                              f"(likelihoods: ddpm, vae, rbm).")
        if args.t_samples is not None:
            raise ConfigError(f"--t-samples estimates a diffusion bound; a {cfg.family} run has no timesteps: drop it.")
    if any(m not in ("bpd", "bpd-ode") for m in metrics):
        if args.n < 2:
            raise ConfigError(f"--n must be at least 2 to measure samples, not {args.n}.")
    _check_sampling_args(args, cfg)


def _read_samples_npz(path: Path, cfg) -> tuple:
    """(uint8 samples, labels or None, protocol dict) from an .npz written by genlab sample --npz."""
    import numpy as np
    import torch

    try:
        with np.load(path, allow_pickle=False) as z:
            samples = z["samples"]
            levels = int(z["levels"]) if "levels" in z else None
            labels = torch.from_numpy(z["labels"].astype(np.int64)) if "labels" in z else None
            protocol = json.loads(str(z["protocol"])) if "protocol" in z else {}
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist; write samples with genlab sample RUN --npz {path}.") from None
    except (OSError, ValueError, KeyError) as e:
        raise ConfigError(f"{path} is not a samples .npz ({e}); write one with genlab sample RUN --npz FILE.") from None
    shape = tuple(cfg.data.shape)
    if samples.dtype != np.uint8 or samples.ndim != 4 or tuple(samples.shape[1:]) != shape:
        raise ConfigError(f"{path} holds {samples.dtype} samples of shape {list(samples.shape[1:])}, but the run makes uint8 "
                          f"images of shape {list(shape)}; pass samples of this run's model.")
    if levels is not None and levels != cfg.data.levels:
        raise ConfigError(f"{path} holds samples with {levels} levels but {cfg.data.name} has {cfg.data.levels}; pass samples of this run's model.")
    return torch.from_numpy(samples), labels, protocol


def _draw_samples(args, cfg, family, step: int, precision: str, batch_size: int, progress: bool,
                  conditioning: dict | None = None) -> tuple:
    """(``args.n`` uint8 samples, their protocol: sampler settings, weights and the timed speed).

    Network evaluations per sample are counted with a forward hook, not predicted from the settings.
    """
    import torch

    from genlab.diffusion.samplers import DEFAULT_STEPS

    rows = 0

    def count(module, inputs, output):
        nonlocal rows
        rows += inputs[0].shape[0]

    diffusion = cfg.family == "ddpm"
    cond = {k: v for k, v in (conditioning or {}).items() if k != "protocol"}
    if diffusion:
        how = {"sampler": args.sampler, "steps": args.steps, "eta": args.eta, "spacing": args.spacing, **cond}
        sampler = args.sampler
        steps = args.steps if args.steps is not None else (DEFAULT_STEPS[args.sampler] or cfg.diffusion.timesteps)
    else:
        how = {"labels": cond["labels"]} if cond.get("labels") is not None else {}
        if getattr(args, "pixel_noise", False):
            how["pixel_noise"] = True
        sampler = FAMILY_SAMPLERS[cfg.family]
        steps = None
        if cfg.family in ("rbm", "dbn"):  # the length of the Gibbs chains
            steps = args.steps or cfg.energy.gibbs_steps
            how["steps"] = steps
    hook = family.net.register_forward_hook(count)
    try:
        t0 = time.perf_counter()
        with _autocast(precision, family):
            x = family.sample(args.n, seed=args.seed, batch_size=batch_size, progress=progress, **how)
        seconds = time.perf_counter() - t0
    finally:
        hook.remove()
    nfe = rows / args.n
    return x, {"family": cfg.family, "sampler": sampler, "steps": steps, "eta": args.eta if sampler == "ddim" else None,
               "spacing": args.spacing if sampler in ("ancestral", "ddim", "pc") else None,
               "nfe": int(nfe) if nfe == int(nfe) else nfe,
               "seed": args.seed, "weights": args.weights, "step": step, "mixed_precision": precision,
               "sampling_seconds": seconds, "seconds_per_sample": seconds / args.n, "batch_size": batch_size,
               "threads": torch.get_num_threads(), "compiled": bool(getattr(args, "compile", False)),
               **(conditioning or {}).get("protocol", {})}


def _write_samples_npz(path: Path, x, levels: int, protocol: dict, labels=None) -> None:
    import numpy as np

    from genlab.io import atomic_write

    extra = {} if labels is None else {"labels": labels.numpy().astype(np.int64)}  # the classes asked for

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, samples=x.numpy(), levels=np.array(levels), protocol=np.array(json.dumps(protocol)), **extra)

    atomic_write(path, write)


def cmd_eval(args) -> int:
    from genlab.run import append_metrics, compile_network, load_run

    metrics = _parse_metrics(args.metrics)
    _known_sampler(args)
    cfg, family, ckpt, step = load_run(args.run, weights=args.weights, device=_device(args))
    _require_sampler(cfg, args.run)
    _check_eval_args(args, metrics, cfg)
    if args.compile:
        compile_network(family.net)
    quality = tuple(m for m in metrics if m not in ("bpd", "bpd-ode"))
    if cfg.data.levels == 0:
        raise ConfigError(f"{cfg.data.name} is continuous data: bpd, FID, KID and precision/recall need images with discrete levels.")
    fnet = None
    if quality:
        from genlab.metrics.features import load_feature_network

        fnet = load_feature_network(cfg.data.name)  # fail before sampling if there is none
    precision = _precision(args, cfg)
    progress = not (args.no_progress or args.json)
    record: dict = {}
    if quality:
        record.update(_measure_samples(args, cfg, family, step, precision, fnet, quality, progress))
    if "bpd" in metrics:
        ds = _load_data(cfg, args.split, root=args.data_dir)
        images = ds.images[: args.limit] if args.limit else ds.images
        if cfg.family == "ddpm":
            result = _bpd(family, images, cfg, progress, args.batch_size, args.seed, precision, t_samples=args.t_samples)
            record.update({k: result[k] for k in ("bpd", "prior_bpd", "diffusion_bpd", "decoder_bpd", "bpd_se",
                                                  "t_samples", "timesteps")})
        else:
            result = _bpd(family, images, cfg, progress, args.batch_size, args.seed, precision)
            record.update({k: v for k, v in result.items() if k not in ("n", "seconds", "mixed_precision")})
        record.update({"bpd_n": result["n"], "bpd_split": args.split, "bpd_seconds": result["seconds"]})
        if not quality:  # the bpd-only record keeps the names of the foundation issue
            record["n"], record["split"], record["seconds"] = result["n"], args.split, result["seconds"]
    if "bpd-ode" in metrics:
        record.update(_bpd_ode(args, cfg, family, progress))
    record.update({"data": cfg.data.name, "weights": args.weights, "step": step, "mixed_precision": precision})
    append_metrics(args.run, {"event": "eval", "metric": ",".join(metrics), **record})
    if args.json:
        print(json.dumps(record))
        return 0
    if quality:
        _print_quality(args.run, record)
    if "bpd" in metrics and cfg.family != "ddpm":
        print(f"{cfg.data.name} {args.split} ({record['bpd_n']} images, {args.weights} weights, step {step}, "
              f"{record['bpd_seconds']:.1f}s): {_describe_bpd({**record, 'n': record['bpd_n']})}")
    elif "bpd" in metrics:
        _print_bpd(cfg, record)
    if "bpd-ode" in metrics:
        _print_bpd_ode(cfg, record)
    return 0


def _bpd_ode(args, cfg, family, progress: bool) -> dict:
    """The probability-flow ODE's bits/dim on the split (always in float32: the adaptive solver needs it)."""
    ds = _load_data(cfg, args.split, root=args.data_dir)
    images = ds.images[: args.limit] if args.limit else ds.images
    t0 = time.perf_counter()
    r = family.ode_bits_per_dim(images, seed=args.seed, batch_size=args.batch_size or 128, rtol=args.ode_tol,
                                atol=args.ode_tol, progress=progress)
    return {"bpd_ode": r["bpd"], "bpd_ode_se": r["bpd_se"], "bpd_ode_n": r["n"], "bpd_ode_split": args.split,
            "ode_nfe": r["nfe"], "ode_solver": "RK45", "ode_rtol": args.ode_tol, "ode_atol": args.ode_tol,
            "ode_trace": "hutchinson-rademacher", "ode_dequantization": "uniform",
            "bpd_ode_seconds": time.perf_counter() - t0}


def _print_bpd_ode(cfg, r: dict) -> None:
    print(f"bits/dim by the probability-flow ODE on {cfg.data.name} {r['bpd_ode_split']} ({r['bpd_ode_n']} images, "
          f"{r['weights']} weights, step {r['step']}; RK45 rtol=atol={r['ode_rtol']:g}, Hutchinson trace, uniform "
          f"dequantisation; {r['ode_nfe']:.0f} evaluations per batch, {r['bpd_ode_seconds']:.1f}s)")
    print(f"  {'bits/dim (ODE)':<24} {r['bpd_ode']:>9.4f}")
    print(f"  {'standard error':<24} {r['bpd_ode_se']:>9.4f}")


def _measure_samples(args, cfg, family, step, precision, fnet, quality, progress) -> dict:
    from genlab.metrics.evaluate import evaluate_images, reference_features

    if args.samples is not None:
        x, labels, protocol = _read_samples_npz(args.samples, cfg)
        protocol = {**protocol, "samples_file": str(args.samples)}
    else:
        x, protocol = _draw_samples(args, cfg, family, step, precision, args.batch_size or 256, progress)
        labels = None
        if getattr(family, "num_classes", 0):  # a conditional model draws sample i of class i % num_classes
            import torch

            labels = torch.arange(len(x)) % family.num_classes
        if args.save_samples:
            _write_samples_npz(args.save_samples, x, cfg.data.levels, protocol)
    ref = _load_data(cfg, args.ref_split, root=args.data_dir)
    real, _ = reference_features(fnet, ref.images, ref.labels, cfg.data.name, args.ref_split, progress=progress)
    out = evaluate_images(fnet, x, real, quality, labels=labels, progress=progress, seed=args.seed)
    return {**out, "n": len(x), **protocol, "ref_split": args.ref_split, "ref_n": len(real),
            "feature_accuracy": fnet.accuracy}


def _print_quality(run: Path, r: dict) -> None:
    how = (f"from {r['samples_file']}" if "samples_file" in r else
           f"{r['sampler']}" + (f" {r['steps']} steps" if r.get("steps") is not None else "")
           + (f" (eta {r['eta']:g})" if r.get("eta") is not None else ""))
    print(f"sample quality of {run} (step {r['step']}, {r['weights']} weights): {r['n']} samples {how}")
    if r.get("seconds_per_sample") is not None:
        print(f"  speed: {r['nfe']} network evaluations per sample, {r['seconds_per_sample']:.4f} s/sample at batch "
              f"{r['batch_size']} ({r['threads']} threads, {r['mixed_precision']})")
    print(f"  reference: {r['data']} {r['ref_split']} ({r['ref_n']} images), feature network {r['feature_network']} "
          f"(test accuracy {r['feature_accuracy']:.4f})")
    rows = []
    if "fid" in r:
        rows.append(("FID", f"{r['fid']:.3f}"))
    if "kid" in r:
        rows.append(("KID", f"{r['kid']:.5f} +- {r['kid_std']:.5f}"))
    if "precision" in r:
        rows += [(f"precision (k={r['pr_k']})", f"{r['precision']:.4f}"), (f"recall (k={r['pr_k']})", f"{r['recall']:.4f}")]
    if "class_accuracy" in r:
        rows.append(("class accuracy", f"{r['class_accuracy']:.4f}"))
    for name, value in rows:
        print(f"  {name:<24} {value:>18}")


def _print_bpd(cfg, r: dict) -> None:
    T = r["timesteps"]
    how = "all T terms" if r["t_samples"] is None else f"{r['t_samples']} stratified timesteps per image"
    print(f"bits/dim on {cfg.data.name} {r['bpd_split']} ({r['bpd_n']} images, {r['weights']} weights, step {r['step']}, "
          f"T={T}, {how}, {r['bpd_seconds']:.1f}s)")
    rows = [("L_T (prior)", r["prior_bpd"]), (f"sum of L_t-1, t=2..{T}", r["diffusion_bpd"]),
            ("L_0 (decoder)", r["decoder_bpd"]), ("total (bound)", r["bpd"]), ("standard error (total)", r["bpd_se"])]
    for name, value in rows:
        print(f"  {name:<24} {value:>9.4f}")


def cmd_report(args) -> int:
    from genlab.viz.report import best_per_run, collect_rows, write_report

    rows = collect_rows(args.runs)
    if args.n is not None:
        rows = [r for r in rows if r.get("n") == args.n or r.get("fid") is None]
    if args.best:
        rows = best_per_run(rows)
    md, png = write_report(rows, args.out, args.x, best=args.best)
    print(f"genlab: report of {len(rows)} rows from {len(args.runs)} run(s) -> {md} and {png}")
    return 0


def cmd_features(args) -> int:
    import shlex

    from genlab.metrics import features as F

    if args.features_command is None:
        raise ConfigError("say what to do: genlab features train --data NAME, genlab features show or genlab features floor --data NAME.")
    if args.features_command == "train":
        if args.data not in F.TRAIN_DATA:
            raise ConfigError(f"no feature network recipe for {args.data!r}; choose one of: {', '.join(F.TRAIN_DATA)}.")
        out = args.out or Path("features") / f"{args.data}.safetensors"
        command = shlex.join(["genlab", *sys.argv[1:]]) if sys.argv and Path(sys.argv[0]).name in ("genlab", "__main__.py") else ""
        F.train_feature_network(args.data, out, root=args.data_dir, seed=args.seed, epochs=args.epochs,
                                progress=not args.no_progress, command=command)
        return 0
    if args.features_command == "show":
        nets = F.shipped_networks()
        rows = [{"name": n.name, "version": n.version, "test_accuracy": n.accuracy, "test_n": n.meta["test_n"],
                 "data": n.meta["data"], "command": n.command} for n in nets]
        if args.json:
            print(json.dumps(rows))
            return 0
        for r in rows:
            print(f"{r['name']:<14} {r['version']:<28} test accuracy {r['test_accuracy']:.4f} on {r['test_n']} {r['data']} images")
            print(f"{'':<14} reproduce: {r['command']}")
        return 0
    return _features_floor(args)


def _features_floor(args) -> int:
    import torch

    from genlab.data import load_dataset
    from genlab.metrics.evaluate import compare, reference_features
    from genlab.metrics.features import load_feature_network

    fnet = load_feature_network(args.data)
    progress = not (args.no_progress or args.json)
    test = load_dataset(args.data, "test", root=args.data_dir)
    train = load_dataset(args.data, "train", root=args.data_dir)
    test_f, _ = reference_features(fnet, test.images, test.labels, args.data, "test", progress)
    train_f, _ = reference_features(fnet, train.images, train.labels, args.data, "train", progress)
    perm = torch.randperm(len(test_f), generator=torch.Generator().manual_seed(0))
    half = len(test_f) // 2
    a, b = test_f[perm[:half].sort().values], test_f[perm[half : 2 * half].sort().values]
    result = {"data": args.data, "feature_network": fnet.version, "feature_accuracy": fnet.accuracy,
              "test_halves": {"n": half, **compare(a, b)},
              "test_vs_train": {"n": len(test_f), "ref_n": len(train_f), **compare(train_f, test_f)}}
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"real against real on {args.data}, feature network {fnet.version} (test accuracy {fnet.accuracy:.4f}):")
    for key, what in (("test_halves", f"test half vs test half ({half} vs {half})"),
                      ("test_vs_train", f"test vs train ({len(test_f)} vs {len(train_f)})")):
        r = result[key]
        print(f"  {what:<34} FID {r['fid']:.3f}  KID {r['kid']:.5f} +- {r['kid_std']:.5f}  "
              f"precision {r['precision']:.4f}  recall {r['recall']:.4f}")
    return 0


# ----- editing: inpainting (RePaint) and super-resolution ----------------------------------


def _add_editing_parsers(sub) -> None:
    from genlab.diffusion.inpaint import JUMP_LENGTH, MASKS, RESAMPLE, STEPS

    i = sub.add_parser("inpaint", help="fill in the masked part of an image with an unconditional run (RePaint)",
                       description="Keep the known pixels of an image and generate the rest with RePaint (Lugmayr et "
                                   "al. 2022). Writes a grid: input, mask, masked input, then the completions.")
    i.add_argument("run", type=Path, help="run directory written by genlab train")
    i.add_argument("--image", required=True, help="a PNG or JPEG of the run's image size (grey for MNIST), or "
                   "test:INDEX for the INDEX-th image of the run's test split")
    i.add_argument("--mask", required=True, help=f"a mask image of the same size, white (>= 128) = known pixel; or one of "
                   f"{', '.join(MASKS)}, naming the region to generate (half: every second row; random: half the "
                   f"pixels, from --seed)")
    i.add_argument("--out", type=Path, default=Path("inpaint.png"), help="PNG grid to write (default inpaint.png)")
    i.add_argument("--n", type=int, default=1, help="completions of the image (default 1)")
    i.add_argument("--steps", type=int, default=None, help=f"respaced timesteps (default: {STEPS} as in RePaint, or all T if fewer)")
    i.add_argument("--resample", type=int, default=RESAMPLE, help=f"RePaint's r: resamplings at each jump point "
                   f"(default {RESAMPLE}; 1 turns resampling off; the cost grows about r-fold)")
    i.add_argument("--jump", type=int, default=JUMP_LENGTH, help=f"RePaint's j: steps diffused back per resampling (default {JUMP_LENGTH})")
    i.add_argument("--seed", type=int, default=0, help="seed; completion i depends only on (seed, i)")

    u = sub.add_parser("upscale", help="super-resolve an image with a run trained with --super-res",
                       description="Upscale a low-resolution image with a super-resolution run (a DDPM conditioned on "
                                   "the bilinearly upsampled low-resolution image). Writes a grid: the low-resolution "
                                   "input (nearest), Pillow's bicubic, the model's output and, for test:INDEX, the truth. "
                                   "--psnr-test N measures the mean PSNR against bicubic on N test images.")
    u.add_argument("run", type=Path, help="run directory written by genlab train --super-res F")
    u.add_argument("--image", default=None, help="a PNG or JPEG at the low resolution (H/F x W/F) or at the full "
                   "resolution (then downsampled first), or test:INDEX for the INDEX-th test image, downsampled")
    u.add_argument("--out", type=Path, default=Path("upscale.png"), help="PNG grid to write (default upscale.png)")
    u.add_argument("--psnr-test", type=int, default=None, metavar="N", help="mean PSNR (dB) of the model and of bicubic "
                   "upsampling on the first N test images; printed and appended to RUN/metrics.jsonl")
    u.add_argument("--sampler", default="ddim", help="any sampler of genlab sample (default ddim)")
    _add_step_flags(u)
    u.add_argument("--seed", type=int, default=0, help="seed; output i depends only on (seed, i)")
    u.add_argument("--batch-size", type=int, default=256, help="images per network call (does not change the images)")
    for sp in (i, u):
        sp.add_argument("--weights", choices=("ema", "model"), default="ema", help="which weights to use (default ema)")
        sp.add_argument("--mixed-precision", default=None, help="no (fp32) or bf16 (default: the run's training precision)")
        sp.add_argument("--no-progress", action="store_true", help="no progress bar")
        sp.add_argument("--device", default="auto", help=DEVICE_HELP)
        sp.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def _read_picture(path: Path, channels: int, what: str):
    """uint8 [C, H, W] pixels (0..255) of an image file, as grey (C = 1) or RGB (C = 3)."""
    import numpy as np
    import torch
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist; pass a PNG or JPEG file.")
    try:
        with Image.open(path) as img:
            arr = np.asarray(img.convert("L" if channels == 1 else "RGB"))
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise ConfigError(f"{what} {path} is not an image Pillow can read ({e}); pass a PNG or JPEG file.") from None
    arr = arr[:, :, None] if arr.ndim == 2 else arr
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def _image_arg(spec: str, cfg, sizes: list, hint: str):
    """(uint8 [1, C, h, w] in 0..levels-1, "test" if it came from the test split else None) for --image.

    ``sizes``: the (h, w) an image file may have; ``hint``: the size to suggest when it has another.
    """
    import torch

    if spec.startswith("test:"):
        try:
            index = int(spec[5:])
        except ValueError:
            raise ConfigError(f"--image {spec} needs an integer index, as in test:0.") from None
        ds = _load_data(cfg, "test")
        if not 0 <= index < len(ds):
            raise ConfigError(f"--image {spec} is out of range: the {cfg.data.name} test split has {len(ds)} images (0..{len(ds) - 1}).")
        return ds.images[index : index + 1], "test"
    C = cfg.data.shape[0]
    pixels = _read_picture(Path(spec), C, "image")
    h, w = pixels.shape[1:]
    if (h, w) not in sizes:
        raise ConfigError(f"image {spec} is {w}x{h} pixels but {cfg.data.name} runs take {hint}; resize it to {hint}.")
    k = cfg.data.levels - 1
    return torch.round(pixels.float() * k / 255).to(torch.uint8)[None], None


def _mask_arg(spec: str, H: int, W: int, seed: int):
    """float [1, 1, H, W], 1 = known, from a named mask or a mask image (white >= 128 = known)."""
    from genlab.diffusion.inpaint import MASKS, named_mask

    if spec in MASKS:
        return named_mask(spec, H, W, seed)
    if not Path(spec).is_file():
        raise ConfigError(f"mask {spec} is neither an image file nor a named mask; pass a PNG (white = known pixel) "
                          f"or one of {', '.join(MASKS)}.")
    pixels = _read_picture(Path(spec), 1, "mask")
    if tuple(pixels.shape[1:]) != (H, W):
        raise ConfigError(f"mask {spec} is {pixels.shape[2]}x{pixels.shape[1]} pixels but the image is {W}x{H}; "
                          f"pass a {W}x{H} mask (white = known) or one of {', '.join(MASKS)}.")
    return (pixels >= 128).float()[None]


def cmd_inpaint(args) -> int:
    import torch

    from genlab.diffusion.inpaint import STEPS, _family_check, inpaint_images, repaint_network_calls
    from genlab.run import load_run
    from genlab.viz.grid import save_grid

    if args.n < 1 or (args.steps is not None and args.steps < 1) or args.resample < 1 or args.jump < 1:
        raise ConfigError("--n, --steps, --resample and --jump must be at least 1.")
    cfg, family, ckpt, step = load_run(args.run, weights=args.weights, device=_device(args))
    if cfg.family != "ddpm":
        raise ConfigError(f"{args.run} is a {cfg.family} run; inpainting (RePaint) needs a diffusion run.")
    _family_check(family)
    T = cfg.diffusion.timesteps
    if args.steps is not None and args.steps > T:
        raise ConfigError(f"--steps must lie in 1..{T} (the run's timesteps), not {args.steps}.")
    steps = args.steps or min(STEPS, T)
    C, H, W = cfg.data.shape
    image, _ = _image_arg(args.image, cfg, [(H, W)], f"{W}x{H} images")
    mask = _mask_arg(args.mask, H, W, args.seed)
    t0 = time.perf_counter()
    with _autocast(_precision(args, cfg), family):
        out = inpaint_images(family, image, mask, seed=args.seed, n=args.n, steps=steps, jump_length=args.jump,
                             resample=args.resample, progress=not args.no_progress)
    seconds = time.perf_counter() - t0
    levels = cfg.data.levels
    known = mask.expand(1, C, H, W).bool()
    shown_mask = known.to(torch.uint8) * (levels - 1)
    masked = torch.where(known, image, torch.full_like(image, (levels - 1) // 2))
    save_grid(torch.cat([image, shown_mask, masked, out]), args.out, levels, nrow=3 + args.n)
    calls = repaint_network_calls(steps, args.jump, args.resample)
    print(f"genlab: inpainted {args.image} with mask {args.mask} ({args.n} completion(s); {steps} steps, resample "
          f"{args.resample}, jump {args.jump}: {calls} network calls each; step {step}, {args.weights} weights) "
          f"in {seconds:.1f}s -> {args.out}")
    return 0


def cmd_upscale(args) -> int:
    import torch

    from genlab.diffusion.superres import bicubic, downsample, upscale
    from genlab.metrics.psnr import psnr
    from genlab.run import append_metrics, load_run
    from genlab.viz.grid import save_grid

    _check_sampler(args)
    if args.image is None and args.psnr_test is None:
        raise ConfigError("say what to upscale: --image FILE (or test:INDEX), or --psnr-test N.")
    if (args.psnr_test is not None and args.psnr_test < 1) or args.batch_size < 1:
        raise ConfigError("--psnr-test and --batch-size must be at least 1.")
    cfg, family, ckpt, step = load_run(args.run, weights=args.weights, device=_device(args))
    f = cfg.diffusion.super_resolution
    if not f:
        raise ConfigError(f"{args.run} is not a super-resolution run (trained without --super-res); "
                          f"train one with genlab train --super-res 2.")
    precision = _precision(args, cfg)
    levels, (_, H, W) = cfg.data.levels, cfg.data.shape
    h, w = H // f, W // f
    progress = not args.no_progress

    def run_model(low):
        with _autocast(precision, family):
            return upscale(family, low, seed=args.seed, sampler=args.sampler, steps=args.steps, eta=args.eta,
                           spacing=args.spacing, batch_size=args.batch_size, progress=progress)

    if args.image is not None:
        image, _ = _image_arg(args.image, cfg, [(h, w), (H, W)], f"{w}x{h} (low-resolution) or {W}x{H} images")
        truth = image if tuple(image.shape[-2:]) == (H, W) else None  # full size (or test:INDEX): downsample it
        low = downsample(truth, f) if truth is not None else image
        t0 = time.perf_counter()
        out = run_model(low)
        nearest = low.repeat_interleave(f, 2).repeat_interleave(f, 3)
        tiles = [nearest, bicubic(low, f, levels), out] + ([truth] if truth is not None else [])
        save_grid(torch.cat(tiles), args.out, levels, nrow=len(tiles))
        print(f"genlab: upscaled {args.image} from {w}x{h} to {W}x{H} ({args.sampler}"
              f"{'' if args.steps is None else f', {args.steps} steps'}; step {step}, {args.weights} weights) in "
              f"{time.perf_counter() - t0:.1f}s -> {args.out} (nearest, bicubic, model{', truth' if truth is not None else ''})")
    if args.psnr_test is not None:
        ds = _load_data(cfg, "test")
        truth = ds.images[: args.psnr_test]
        low = downsample(truth, f)
        t0 = time.perf_counter()
        out = run_model(low)
        seconds = time.perf_counter() - t0
        model_db = psnr(out, truth, levels).mean().item()
        bicubic_db = psnr(bicubic(low, f, levels), truth, levels).mean().item()
        append_metrics(args.run, {"event": "eval", "metric": "psnr", "psnr": model_db, "psnr_bicubic": bicubic_db,
                                  "n": len(truth), "split": "test", "factor": f, "sampler": args.sampler,
                                  "steps": args.steps, "seed": args.seed, "data": cfg.data.name, "weights": args.weights,
                                  "step": step, "mixed_precision": precision, "seconds": seconds})
        print(f"PSNR on the first {len(truth)} {cfg.data.name} test images upscaled {f}x from {w}x{h} (mean over images, "
              f"[0, 1] scale): model {model_db:.2f} dB, bicubic {bicubic_db:.2f} dB ({args.sampler}, {seconds:.1f}s)")
    return 0


# ----- energy-based models: the Hopfield network -------------------------------------------


def _add_hopfield_parser(sub) -> None:
    h = sub.add_parser("hopfield", help="store binarised images in a Hopfield network and recall them from corrupted copies",
                       description="Store --patterns binarised training images (the first of each class first) with "
                                   "the Hebbian rule, flip --corrupt of their pixels, and update to a fixed point. "
                                   "Writes a grid: stored, corrupted, recalled (one row each). With --capacity, "
                                   "plots recall against the load K/N for random patterns instead.")
    h.add_argument("--data", default="mnist", help="dataset of images to store (default mnist)")
    h.add_argument("--data-dir", default=None, help="folder holding the dataset's files")
    h.add_argument("--patterns", type=int, default=10, help="number of images to store (default 10)")
    h.add_argument("--corrupt", type=float, default=0.2, help="fraction of pixels flipped before recall (default 0.2)")
    h.add_argument("--mode", choices=("async", "sync"), default="async", help="asynchronous (default) or synchronous updates")
    h.add_argument("--seed", type=int, default=0)
    h.add_argument("--capacity", action="store_true", help="run the capacity experiment (random patterns) instead")
    h.add_argument("--neurons", type=int, default=500, help="neurons of the capacity experiment (default 500)")
    h.add_argument("--trials", type=int, default=3, help="networks per load in the capacity experiment (default 3)")
    h.add_argument("--out", type=Path, default=None, help="PNG to write (default hopfield.png, or hopfield-capacity.png)")


def cmd_hopfield(args) -> int:
    import itertools

    import numpy as np
    import torch

    from genlab.energy import Hopfield, binarize, capacity_curve, corrupt

    if not 0 <= args.corrupt <= 1:
        raise ConfigError(f"--corrupt {args.corrupt} is not a fraction; pass a number between 0 and 1.")
    if args.capacity:
        if args.neurons < 10 or args.trials < 1:
            raise ConfigError("--neurons must be at least 10 and --trials at least 1.")
        loads = np.round(np.arange(0.02, 0.305, 0.02), 3)
        t0 = time.perf_counter()
        rows = capacity_curve(args.neurons, loads, trials=args.trials, corrupt_fraction=args.corrupt, seed=args.seed)
        print(f"genlab: Hopfield capacity, {args.neurons} neurons, no self-connections, {args.trials} networks per load, "
              f"patterns flipped by {args.corrupt:g}, asynchronous updates ({time.perf_counter() - t0:.1f}s)")
        print("  K/N    patterns  mean overlap  recall rate (overlap >= 0.95)")
        for r in rows:
            print(f"  {r['alpha']:.3f}  {r['patterns']:8d}  {r['mean_overlap']:12.3f}  {r['recall_rate']:.3f}")
        out = args.out or Path("hopfield-capacity.png")
        _plot_capacity(rows, out, args)
        print(f"genlab: wrote {out}")
        return 0
    from genlab.data import load_dataset

    ds = load_dataset(args.data, "train", root=args.data_dir)
    if args.patterns < 1 or args.patterns > len(ds.images):
        raise ConfigError(f"--patterns {args.patterns} is out of range; pass 1 to {len(ds.images)}.")
    if not hasattr(ds, "images"):
        raise ConfigError(f"{args.data} holds points, not images; store images, e.g. --data mnist or --data digits.")
    labels = ds.labels.numpy()
    first = [int(np.flatnonzero(labels == c)[0]) for c in np.unique(labels)]  # one image per class first
    chosen = set(first)
    rest = (i for i in range(len(ds.images)) if i not in chosen)
    order = first[: args.patterns] + list(itertools.islice(rest, max(0, args.patterns - len(first))))
    images = ds.images[order]
    threshold = max(1, ds.info.levels // 2)
    p = binarize(images.numpy(), threshold=threshold)
    net = Hopfield(p.shape[1]).store(p)
    noisy = corrupt(p, args.corrupt, seed=args.seed)
    final, sweeps = net.recall(noisy, mode=args.mode, seed=args.seed)
    m = net.overlap(final)
    exact = int(sum(np.array_equal(f, q) for f, q in zip(final, p)))
    shape = tuple(images.shape[1:])
    rows = [torch.from_numpy(((x + 1) / 2).astype(np.uint8)).reshape(-1, *shape) for x in (p, noisy, final)]
    out = args.out or Path("hopfield.png")
    from genlab.viz.grid import save_grid

    save_grid(torch.cat(rows), out, levels=2, nrow=len(p))
    print(f"genlab: Hopfield network of {p.shape[1]} neurons storing {len(p)} binarised {args.data} images "
          f"(load {len(p) / p.shape[1]:.3f}); {args.corrupt:g} of the pixels flipped; {args.mode} updates, "
          f"{sweeps} sweeps to a fixed point")
    print(f"genlab: recalled exactly {exact} of {len(p)}; overlap with its own pattern "
          + " ".join(f"{v:.2f}" for v in np.diag(m)) + "; energy of the recalled states "
          + " ".join(f"{e:.1f}" for e in net.energy(final)))
    print(f"genlab: wrote {out} (rows: stored, corrupted, recalled)")
    return 0


def _plot_capacity(rows: list[dict], out: Path, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from genlab.io import atomic_write

    fig, ax = plt.subplots(figsize=(6.4, 4), dpi=120)
    a = [r["alpha"] for r in rows]
    ax.plot(a, [r["recall_rate"] for r in rows], "o-", label="recall rate (overlap >= 0.95)")
    ax.plot(a, [r["mean_overlap"] for r in rows], "s--", label="mean final overlap")
    ax.axvline(0.138, color="grey", linestyle=":", label="0.138 (Amit et al. 1985)")
    ax.set_xlabel("load K / N (patterns per neuron)")
    ax.set_ylabel("fraction")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"Hopfield capacity: {args.neurons} neurons, {args.trials} networks per load, {args.corrupt:g} flipped")
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(out, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    args.argv = [str(a) for a in (sys.argv[1:] if argv is None else argv)]  # for genlab train --processes
    commands = {"train": cmd_train, "sample": cmd_sample, "eval": cmd_eval, "report": cmd_report,
                "features": cmd_features, "inpaint": cmd_inpaint, "upscale": cmd_upscale, "hopfield": cmd_hopfield}
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
