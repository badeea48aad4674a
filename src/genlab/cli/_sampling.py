"""The sampling flags of ``genlab sample``, ``eval`` and ``upscale``: defined once, checked once.

What a flag may do is read from the run's declared capabilities (genlab.family) and from the
sampler registry (genlab.diffusion.sampling), never from a list of family names.
"""

from __future__ import annotations

from typing import Any

from genlab.cli._common import either, names_with
from genlab.errors import ConfigError


def add_step_flags(p) -> None:
    from genlab.diffusion.sampling import SAMPLERS

    defaults = ", ".join(f"{s.default_steps} for {name}" for name, s in SAMPLERS.items() if s.default_steps)
    p.add_argument("--steps", type=int, default=None,
                   help=f"sampling steps (default: all T for ancestral, {defaults}; rbm and dbn runs: Gibbs steps)")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM eta: 0 deterministic, 1 like ancestral (default 0)")
    spaced = [name for name, s in SAMPLERS.items() if "spacing" in s.options]
    p.add_argument("--spacing", default="uniform",
                   help=f"timesteps of {either(spaced, 'and')}: uniform (default) or quadratic (denser at low noise)")


def sampler_help(default: str) -> str:
    from genlab.diffusion.sampling import sampler_help as registry_help

    return f"diffusion runs (default {default}): {registry_help()}"


def check_sampler(args) -> None:
    """The diffusion-sampler flags, checked against the registry (wrong whatever the run)."""
    from genlab.diffusion.grids import SPACINGS
    from genlab.diffusion.sampling import SAMPLERS

    if args.sampler not in SAMPLERS:
        raise ConfigError(f"unknown sampler {args.sampler!r}; choose one of {', '.join(SAMPLERS)}.")
    if args.steps is not None and not 1 <= args.steps <= 10**6:
        raise ConfigError(f"--steps must be at least 1, not {args.steps}.")
    options = SAMPLERS[args.sampler].options
    if args.eta != 0 and "eta" not in options:
        raise ConfigError(f"--eta applies to the ddim sampler only, not to {args.sampler}; drop --eta.")
    if args.spacing not in SPACINGS:
        raise ConfigError(f"unknown --spacing {args.spacing!r}; choose uniform or quadratic.")
    if args.spacing != "uniform" and "spacing" not in options:
        spaced = [name for name, s in SAMPLERS.items() if "spacing" in s.options]
        raise ConfigError(f"--spacing applies to {either(spaced, 'and')}; {args.sampler} uses its own noise levels.")


def known_sampler(args) -> None:
    """A --sampler names a diffusion sampler: said before the run is read."""
    if args.sampler is not None:
        check_sampler(args)


def require_sampler(family, cfg, run) -> None:
    """A run whose family draws samples (every family but the noise-conditional classifier)."""
    if not family.sampler_names:
        raise ConfigError(f"{run} is a {cfg.family} run, which does not draw images; {family.how_to_use(str(run))}.")


def check_sampling_args(args, cfg, family, default_sampler: str) -> None:
    """Diffusion runs: the sampler flags, checked (default ``default_sampler``). Others: which flags apply."""
    from genlab.evaluate import is_diffusion

    interpolate, reconstruct = getattr(args, "interpolate", None), getattr(args, "reconstruct", False)
    if is_diffusion(family):
        if args.sampler is None:
            args.sampler = default_sampler
        check_sampler(args)
        if interpolate is not None or reconstruct:
            latent = either(names_with(lambda c: c.latent), "and")
            raise ConfigError(f"--interpolate and --reconstruct apply to {latent} runs; a diffusion run samples (genlab sample RUN).")
        return
    gibbs = "steps" in family.sample_options
    bad = next((flag for flag, given in (("--sampler", args.sampler is not None), ("--eta", args.eta != 0),
                                         ("--spacing", args.spacing != "uniform"),
                                         ("--compile", getattr(args, "compile", False)),
                                         ("--steps", args.steps is not None and not gibbs))
                if given), None)
    if bad:
        chains = either([n for n in names_with(lambda c: "steps" in c.sample_options and "sampler" not in c.sample_options)], "and")
        raise ConfigError(f"{bad} applies to diffusion runs (and --steps also to {chains} runs, as Gibbs steps); "
                          f"a {cfg.family} run draws a sample with its {family.sampler_names[0]}: drop {bad}.")
    if args.steps is not None and args.steps < 1:
        raise ConfigError(f"--steps must be at least 1, not {args.steps}.")
    latent = either(names_with(lambda c: c.latent), "or")
    if interpolate is not None and not family.latent:
        raise ConfigError(f"--interpolate walks the latent space of an {latent} run; a {cfg.family} run has none to walk.")
    if getattr(args, "pixel_noise", False) and "pixel_noise" not in family.sample_options:
        raise ConfigError(f"--pixel-noise draws pixels from a VAE's decoder distribution; a {cfg.family} run has none.")
    if getattr(args, "slerp", False) and interpolate is None:
        raise ConfigError("--slerp is a way to --interpolate; add --interpolate A,B.")
    if reconstruct and not family.latent:
        raise ConfigError(f"--reconstruct encodes and decodes with an {latent} run; a {cfg.family} run has no encoder.")


def text_protocol(prompt: str | list[str], guidance: float) -> dict:
    """What the samples of a text-conditioned run record about their prompts and guidance."""
    return {"prompt": prompt, "guidance": guidance, "guidance_type": "classifier-free" if guidance else None}


def parse_class(text: str | None, n: int, num_classes: int) -> list[int]:
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


def conditioning(args, cfg, family) -> dict:
    """The SamplingSpec fields of --class, --guidance and --classifier, checked.

    Returns ``labels`` ([n] int64 or None), ``guidance``, ``classifier`` (the classifier's network or
    None) and ``conditioning`` (what to record with the samples).
    """
    import torch

    from genlab.evaluate import is_diffusion
    from genlab.run import load_classifier

    none: dict[str, Any] = {"labels": None, "guidance": None, "classifier": None, "prompts": None, "conditioning": {}}
    prompt = getattr(args, "prompt", None)
    if prompt is not None and "prompts" not in family.sample_options:
        raise ConfigError(f"--prompt conditions a text-conditioned run ({either(names_with(lambda c: 'prompts' in c.sample_options))}); "
                          f"a {cfg.family} run takes no text: drop --prompt.")
    if "prompts" in family.sample_options:
        if args.class_ is not None or args.classifier is not None:
            raise ConfigError(f"a {cfg.family} run is conditioned on text: say the class in --prompt (e.g. --prompt 'a 3') "
                              f"instead of --class or --classifier.")
        w = args.guidance if args.guidance is not None else 0.0
        if w < 0:
            raise ConfigError(f"--guidance must be at least 0, not {w:g}.")
        said: str | list[str] = "class prompts in turn" if prompt is None else prompt[0] if len(prompt) == 1 else prompt
        return {**none, "prompts": None if prompt is None else tuple(prompt), "guidance": w,
                "conditioning": text_protocol(said, w)}
    classifier = None
    if args.classifier is not None:
        _, clf = load_classifier(args.classifier, cfg, weights="ema", device=next(family.parameters()).device)
        classifier = clf.net
    conditional = bool(getattr(family, "num_classes", 0))
    if "guidance" not in family.sample_options and (args.guidance is not None or classifier is not None):
        raise ConfigError(f"--guidance and --classifier guide diffusion runs; a {cfg.family} run has no guidance.")
    if not conditional and classifier is None:
        if args.class_ is not None:
            raise ConfigError(f"{args.run} is an unconditional model, so --class needs a classifier to guide it; "
                              "pass --classifier RUN (genlab train classifier) or train with --class-conditional.")
        if args.guidance is not None:
            raise ConfigError(f"{args.run} is an unconditional model, so --guidance needs --classifier RUN or a model "
                              "trained with --class-conditional.")
        return none
    labels = torch.as_tensor(parse_class(args.class_, args.n, cfg.data.num_classes))
    asked = "all" if args.class_ in (None, "all") else int(args.class_)
    if not is_diffusion(family):  # a conditional GAN: the class goes to the generator, nothing guides it
        return {**none, "labels": labels, "conditioning": {"class": asked}}
    guidance = args.guidance if args.guidance is not None else (1.0 if classifier is not None else 0.0)
    protocol = {"class": asked, "guidance": guidance,
                "guidance_type": "classifier" if classifier is not None else "classifier-free",
                "classifier": str(args.classifier) if classifier is not None else None}
    return {**none, "labels": labels, "guidance": guidance, "classifier": classifier, "conditioning": protocol}
