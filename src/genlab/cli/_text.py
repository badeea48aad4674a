"""``genlab eval`` for text-conditioned and latent diffusion runs: prompt alignment, CLIP score, latent bound.

Kept beside ``eval.py`` so that command stays the one table of what it measures; these are the
measurements only a run that takes captions (``prompts``) or has a latent diffusion model
(``latent-bpd``: latent bound + decoder, never pixel bits/dim) can make.
"""

from __future__ import annotations

from pathlib import Path

from genlab.errors import ConfigError

ALIGNMENT = ("prompts",)  # text-conditioned runs: class and attributes of samples drawn for test captions
LATENT = ("latent-bpd",)  # latent diffusion runs: the latent bound + decoder


def check_args(args, metrics, cfg, family) -> None:
    """The flags of the measurements of this module, checked before anything is loaded or drawn."""
    text = "prompts" in family.sample_options
    if "prompts" in metrics and not text:
        raise ConfigError(f"prompts measures samples drawn for captions; a {cfg.family} run takes no text: drop it from --metrics.")
    if "latent-bpd" in metrics and not callable(getattr(family, "latent_bound", None)):
        raise ConfigError(f"latent-bpd is the bound of a latent diffusion model (genlab train ldm); a {cfg.family} run has none: "
                          f"drop it from --metrics" + (" (its likelihood is --metrics bpd)." if family.has_likelihood else "."))
    if "bpd" in metrics and not family.has_likelihood and callable(getattr(family, "latent_bound", None)):
        raise ConfigError(f"a {cfg.family} run has no pixel-space bound; measure --metrics latent-bpd (latent bound + decoder) "
                          f"or fid,kid,pr,prompts.")
    if args.guidance is not None and not text:
        raise ConfigError(f"--guidance in genlab eval weighs the captions of a text-conditioned run; a {cfg.family} run has "
                          f"none (guided samples of a class-conditional run: genlab sample --guidance W --npz, then --samples).")
    if args.guidance is not None and args.guidance < 0:
        raise ConfigError(f"--guidance must be at least 0, not {args.guidance:g}.")
    if args.prompts_per_group < 1:
        raise ConfigError(f"--prompts-per-group must be at least 1, not {args.prompts_per_group}.")
    if args.clip is not None and "prompts" not in metrics:
        raise ConfigError("--clip scores samples drawn for prompts; add prompts to --metrics or drop --clip.")


def measure(args, metrics, cfg, family, step: int, prec: str, progress: bool) -> dict:
    """The record fields of ``prompts`` and ``latent-bpd`` among ``metrics``."""
    from genlab.evaluate import SamplingSpec, load_split, measure_latent_bpd, measure_prompts

    record: dict = {}
    if "latent-bpd" in metrics:
        ds, fit = load_split(cfg, args.split, root=args.data_dir), load_split(cfg, "train", root=args.data_dir)
        images = ds.images[: args.limit] if args.limit else ds.images
        r = measure_latent_bpd(family, cfg, images, fit.images[:1000], seed=args.seed, batch_size=args.batch_size,
                               t_samples=args.t_samples, precision=prec, progress=progress)
        record.update({k: v for k, v in r.items() if k.startswith("latent_") or k in ("timesteps", "decoder_fit_n")})
        record.update({"latent_n": r["n"], "latent_split": args.split, "latent_t_samples": r["t_samples"],
                       "latent_seconds": r["seconds"]})
    if "prompts" in metrics:
        spec = SamplingSpec(seed=args.seed, batch_size=args.batch_size or 256, sampler=args.sampler, steps=args.steps,
                            eta=args.eta, spacing=args.spacing, guidance=args.guidance, weights=args.weights,
                            precision=prec, compiled=args.compile, default_sampler="ddim")
        clip = _clip(args.clip, cfg) if args.clip else None
        record.update(measure_prompts(family, cfg, spec, args.prompts_per_group, args.data_dir, step, progress, clip))
        record.update({"clip_run": str(args.clip)} if clip is not None else {})
    return record


def report(args, metrics, cfg, r: dict) -> None:
    """Print what :func:`measure` measured."""
    if "latent-bpd" in metrics:
        how = "all T terms" if r["latent_t_samples"] is None else f"{r['latent_t_samples']} stratified timesteps per image"
        print(f"latent bound + decoder on {cfg.data.name} {r['latent_split']} ({r['latent_n']} images, {r['weights']} weights, "
              f"step {r['step']}, T={r['timesteps']}, {how}, one z ~ q(z|x) per image, {r['latent_seconds']:.1f}s); "
              f"bits per pixel, not comparable with a pixel model's bits/dim")
        rows = [(f"decoder -log p(x|z), sigma {r['latent_decoder_sigma']:.4f}", r["latent_decoder_bpd"]),
                ("latent bound -log p(z)", r["latent_prior_bpd"]), ("- entropy of q(z|x)", -r["latent_entropy_bpd"]),
                ("total (upper bound)", r["latent_bpd_bound"]), ("standard error (total)", r["latent_bpd_se"]),
                ("latent bound, bits per latent dim", r["latent_bits_per_latent_dim"])]
        for name, value in rows:
            print(f"  {name:<36} {value:>9.4f}")
    if "prompts" in metrics:
        _print_prompts(args.run, r)


def _clip(path: Path, cfg):
    """The EMA CLIP model of the run at ``path``, checked to be a CLIP on this run's data."""
    from genlab.run import RunDir

    if not RunDir(path).exists():
        raise ConfigError(f"--clip {path} is not a run directory (no config.json); pass a run of genlab train clip.")
    clip_cfg, clip, _, _ = RunDir(path).load()
    if clip_cfg.family != "clip" or clip_cfg.data.name != cfg.data.name:
        raise ConfigError(f"--clip {path} is a {clip_cfg.family} run on {clip_cfg.data.name}; the CLIP score needs a run of "
                          f"genlab train clip on {cfg.data.name}.")
    return clip.eval()


def _print_prompts(run: Path, r: dict) -> None:
    from genlab.metrics.text import GROUPS

    print(f"text alignment of {run} (step {r['step']}, {r['weights']} weights): one sample per test caption, {r['sampler']} "
          f"{r['steps']} steps, guidance {r['prompt_guidance']:g}, {r['nfe']} network evaluations each")
    clip = "clip_run" in r  # CLIP score of the samples / of the real images with their captions
    print(f"  {'prompts':<22} {'n':>5} {'class':>7} {'thickness':>10} {'size':>7} {'position':>9} {'all':>7}"
          + (f" {'CLIP score (real)':>18}" if clip else ""))
    for g in GROUPS:
        if f"prompt_{g}_n" in r:
            cells = " ".join(f"{r[f'prompt_{g}_{k}']:>{w}.3f}" for k, w in (("class", 7), ("thickness", 10), ("size", 7),
                                                                               ("position", 9), ("all", 7)))
            score = f" {r[f'prompt_{g}_clip_score']:>10.2f} ({r[f'prompt_{g}_clip_score_real']:.2f})" if clip else ""
            print(f"  {g.replace('_', ' '):<22} {r[f'prompt_{g}_n']:>5} {cells}{score}")


def text_conditioning(family, guidance: float | None) -> dict:
    """What to record of the prompts of a text-conditioned run's samples (the class prompts in turn)."""
    from genlab.cli._sampling import text_protocol

    return text_protocol("class prompts in turn", guidance or 0.0) if "prompts" in family.sample_options else {}
