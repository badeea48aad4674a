"""``genlab eval RUN``: bits/dim (variational bound or probability-flow ODE), FID, KID, precision/recall."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import genlab.cli._text as _text
import genlab.cli._translate as _translate
from genlab.cli._common import COMPILE_HELP, add_run_flags, load, names_with, precision
from genlab.cli._sampling import add_step_flags, check_sampling_args, known_sampler, require_sampler, sampler_help
from genlab.cli._text import ALIGNMENT, LATENT, text_conditioning
from genlab.errors import ConfigError

LIKELIHOODS = ("bpd", "bpd-ode")


def add_parser(sub) -> None:
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
                        "default), bpd-ode (the probability-flow ODE's likelihood), prompts (text-conditioned runs: "
                        "class and attribute accuracy of samples drawn for test captions), latent-bpd (latent "
                        "diffusion runs: latent bound + decoder, in bits per pixel), translation (translating runs, "
                        "their only and default measure: class kept, FID and cycle error both ways against the "
                        "identity map)")
    g = e.add_argument_group("likelihood (bpd)")
    g.add_argument("--split", default="test", help="data split for bits/dim (default test)")
    g.add_argument("--limit", type=int, default=None, help="use only the first N images of the split (default: all)")
    g.add_argument("--t-samples", type=int, default=None,
                   help="estimate the sum over t from N stratified timesteps per image (unbiased, with a standard "
                        "error) instead of all T (default: all T)")
    g = e.add_argument_group("samples (fid, kid, pr)")
    g.add_argument("--n", type=int, default=10000, help="number of samples to draw (default 10000)")
    g.add_argument("--sampler", default=None, help=sampler_help("ddim"))
    add_step_flags(g)
    g.add_argument("--guidance", type=float, default=None, metavar="W",
                   help="text-conditioned runs: classifier-free guidance weight of the samples (default 0)")
    g.add_argument("--prompts-per-group", type=int, default=100, metavar="N",
                   help="prompts: test captions per group (held-out combinations, held-out templates, seen; default 100)")
    g.add_argument("--clip", type=Path, default=None, metavar="RUN",
                   help="prompts: also the CLIP score of the samples under this run of genlab train clip")
    g.add_argument("--samples", type=Path, default=None, help="measure the samples in this .npz (genlab sample --npz) instead of sampling")
    g.add_argument("--save-samples", type=Path, default=None, help="also write the drawn samples to this .npz")
    g.add_argument("--ref-split", default="train", help="real split the samples are compared with (default train)")
    e.add_argument("--data-dir", default=None, help="where the dataset's files are, if not where training found them")
    e.add_argument("--batch-size", type=int, default=None,
                   help="images per network call (default: 256 samples; bits/dim fills about 512 network inputs)")
    e.add_argument("--seed", type=int, default=0, help="seed of the samples and of the noise draws in the bound")
    e.add_argument("--json", action="store_true", help="print the result as JSON")
    e.add_argument("--compile", action="store_true", help=COMPILE_HELP)
    add_run_flags(e)


def parse_metrics(text: str) -> tuple[str, ...]:
    from genlab.metrics.evaluate import QUALITY_METRICS

    known = (*QUALITY_METRICS, *LIKELIHOODS, *ALIGNMENT, *LATENT)
    names = tuple(dict.fromkeys(m.strip().lower() for m in text.split(",") if m.strip()))
    bad = [m for m in names if m not in known]
    if bad or not names:
        raise ConfigError(f"unknown metric {bad[0] if bad else text!r}; choose from: {', '.join(known)} (comma-separated).")
    return names


def check_args(args, metrics, cfg, family) -> None:
    from genlab.evaluate import is_diffusion

    if args.split not in ("train", "test") or args.ref_split not in ("train", "test"):
        bad = args.split if args.split not in ("train", "test") else args.ref_split
        raise ConfigError(f"unknown split {bad!r}; choose train or test.")
    for flag, value in (("--limit", args.limit), ("--t-samples", args.t_samples), ("--batch-size", args.batch_size)):
        if value is not None and value < 1:
            raise ConfigError(f"{flag} must be at least 1, not {value}.")
    if not 0 < args.ode_tol < 1:
        raise ConfigError(f"--ode-tol must lie between 0 and 1, not {args.ode_tol:g}.")
    if not is_diffusion(family):
        if "bpd-ode" in metrics:
            raise ConfigError(f"bpd-ode is the likelihood of a diffusion model's probability-flow ODE; a {cfg.family} run "
                              f"has none: drop it from --metrics.")
        if "bpd" in metrics and not family.has_likelihood:
            raise ConfigError(f"a {cfg.family} run has no likelihood to measure; use --metrics fid,kid,pr "
                              f"(likelihoods: {', '.join(names_with(lambda c: c.has_likelihood))}).")
        if args.t_samples is not None:
            raise ConfigError(f"--t-samples estimates a diffusion bound; a {cfg.family} run has no timesteps: drop it.")
    _text.check_args(args, metrics, cfg, family)
    if any(m not in (*LIKELIHOODS, *ALIGNMENT, *LATENT) for m in metrics) and args.n < 2:
        raise ConfigError(f"--n must be at least 2 to measure samples, not {args.n}.")
    check_sampling_args(args, cfg, family, default_sampler="ddim")


def run(args) -> int:
    """Measure, then one line saying where the figures went (what ``genlab report`` reads)."""
    from genlab.run import RunDir

    log = RunDir(args.run).metrics_path
    before = log.stat().st_size if log.is_file() else 0
    code = _run(args)
    if code == 0 and not getattr(args, "json", False) and log.is_file() and log.stat().st_size > before:
        print(f"genlab: recorded in {log}; tabulate with: genlab report {args.run}")
    return code


def _run(args) -> int:
    from genlab.evaluate import is_diffusion, load_split, measure_bpd, measure_bpd_ode
    from genlab.run import RunDir, compile_network

    cfg, family, _, step = load(args)
    if _translate.can_translate(family):  # a CycleGAN: both directions against the identity map
        return _translate.evaluate(args, cfg, family, step)
    metrics = parse_metrics(args.metrics)
    known_sampler(args)
    if not family.sampler_names:  # a classifier or CLIP: it measures itself on a split
        return _self_measured(args, cfg, family, step)
    require_sampler(family, cfg, args.run)
    check_args(args, metrics, cfg, family)
    if args.compile:
        compile_network(family.net)
    quality = tuple(m for m in metrics if m not in (*LIKELIHOODS, *ALIGNMENT, *LATENT))
    if cfg.data.levels == 0:
        raise ConfigError(f"{cfg.data.name} is continuous data: bpd, FID, KID and precision/recall need images with discrete levels.")
    fnet = None
    if quality:
        from genlab.metrics.features import load_feature_network

        fnet = load_feature_network(cfg.data.name)  # fail before sampling if there is none
    prec = precision(args, cfg)
    progress = not (args.no_progress or args.json)
    record: dict = {}
    if quality:
        record.update(_measure_samples(args, cfg, family, step, prec, fnet, quality, progress))
    if "bpd" in metrics or "bpd-ode" in metrics:
        ds = load_split(cfg, args.split, root=args.data_dir)
        images = ds.images[: args.limit] if args.limit else ds.images
    if "bpd" in metrics:
        options: dict[str, Any] = {"t_samples": args.t_samples} if is_diffusion(family) else {}
        result = measure_bpd(family, cfg, images, progress, args.batch_size, args.seed, prec, **options)
        if is_diffusion(family):
            record.update({k: result[k] for k in ("bpd", "prior_bpd", "diffusion_bpd", "decoder_bpd", "bpd_se",
                                                  "t_samples", "timesteps")})
        else:
            record.update({k: v for k, v in result.items() if k not in ("n", "seconds", "mixed_precision")})
        record.update({"bpd_n": result["n"], "bpd_split": args.split, "bpd_seconds": result["seconds"]})
        if not quality:  # the bpd-only record keeps the names of the foundation issue
            record["n"], record["split"], record["seconds"] = result["n"], args.split, result["seconds"]
    record.update(_text.measure(args, metrics, cfg, family, step, prec, progress))
    if "bpd-ode" in metrics:
        record.update(measure_bpd_ode(family, images, seed=args.seed, batch_size=args.batch_size or 128,
                                      tol=args.ode_tol, progress=progress, split=args.split))
    record.update({"data": cfg.data.name, "weights": args.weights, "step": step, "mixed_precision": prec})
    RunDir(args.run).append_metrics({"event": "eval", "metric": ",".join(metrics), **record})
    if args.json:
        print(json.dumps(record))
        return 0
    if quality:
        _print_quality(args.run, record)
    if "bpd" in metrics and not is_diffusion(family):
        from genlab.evaluate import describe_bpd

        print(f"{cfg.data.name} {args.split} ({record['bpd_n']} images, {args.weights} weights, step {step}, "
              f"{record['bpd_seconds']:.1f}s): {describe_bpd({**record, 'n': record['bpd_n']})}")
    elif "bpd" in metrics:
        _print_bpd(cfg, record)
    if "bpd-ode" in metrics:
        _print_bpd_ode(cfg, record)
    _text.report(args, metrics, cfg, record)
    return 0


def _self_measured(args, cfg, family, step: int) -> int:
    """The measurements of a family that draws no samples (its test_metrics) on --split, the first --limit images."""
    from genlab.evaluate import autocast, load_split
    from genlab.run import RunDir

    if args.split not in ("train", "test"):
        raise ConfigError(f"unknown split {args.split!r}; choose train or test.")
    if args.metrics != "bpd" or args.samples is not None:
        raise ConfigError(f"a {cfg.family} run draws no samples and has no likelihood; drop --metrics and --samples "
                          f"(genlab eval RUN measures what it measures itself).")
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be at least 1, not {args.limit}.")
    ds = load_split(cfg, args.split, root=args.data_dir)
    prec = precision(args, cfg)
    with autocast(prec, family):
        result = family.test_metrics(ds, limit=args.limit, seed=args.seed)
    record = {**result, "split": args.split, "data": cfg.data.name, "weights": args.weights, "step": step,
              "mixed_precision": prec}
    RunDir(args.run).append_metrics({"event": "eval", "metric": "self", **record})
    print(json.dumps(record) if args.json else f"{args.run} (step {step}, {args.weights} weights, {args.split} split): "
          f"{family.describe_test_metrics(result)}")
    return 0


def _measure_samples(args, cfg, family, step, prec, fnet, quality, progress) -> dict:
    import torch

    from genlab.evaluate import SamplingSpec, draw_samples, measure_quality, read_samples_npz, write_samples_npz

    if args.samples is not None:
        x, labels, protocol = read_samples_npz(args.samples, cfg)
        protocol = {**protocol, "samples_file": str(args.samples)}
    else:
        spec = SamplingSpec(n=args.n, seed=args.seed, batch_size=args.batch_size or 256, sampler=args.sampler,
                            steps=args.steps, eta=args.eta, spacing=args.spacing, weights=args.weights,
                            precision=prec, compiled=args.compile, default_sampler="ddim", guidance=args.guidance,
                            conditioning=text_conditioning(family, args.guidance))
        x, protocol = draw_samples(family, cfg, spec, step, progress)
        # a conditional model draws sample i of class i % num_classes
        labels = torch.arange(len(x)) % family.num_classes if getattr(family, "num_classes", 0) else None
        if args.save_samples:
            write_samples_npz(args.save_samples, x, cfg.data.levels, protocol)
    q = measure_quality(x, cfg, quality, labels=labels, ref_split=args.ref_split, data_dir=args.data_dir, fnet=fnet,
                        seed=args.seed, progress=progress)
    return {**q, **protocol, "n": len(x)}


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


def _print_bpd_ode(cfg, r: dict) -> None:
    print(f"bits/dim by the probability-flow ODE on {cfg.data.name} {r['bpd_ode_split']} ({r['bpd_ode_n']} images, "
          f"{r['weights']} weights, step {r['step']}; RK45 rtol=atol={r['ode_rtol']:g}, Hutchinson trace, uniform "
          f"dequantisation; {r['ode_nfe']:.0f} evaluations per batch, {r['bpd_ode_seconds']:.1f}s)")
    print(f"  {'bits/dim (ODE)':<24} {r['bpd_ode']:>9.4f}")
    print(f"  {'standard error':<24} {r['bpd_ode_se']:>9.4f}")
