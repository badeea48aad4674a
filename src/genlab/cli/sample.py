"""``genlab sample RUN``: draw images from a run's EMA weights (or reconstruct, interpolate, or translate)."""

from __future__ import annotations

from pathlib import Path

from genlab.cli._common import COMPILE_HELP, add_run_flags, load, precision
from genlab.cli._sampling import (
    add_step_flags,
    check_sampling_args,
    conditioning,
    known_sampler,
    require_sampler,
    sampler_help,
)
from genlab.cli._translate import add_flags as add_translate_flags
from genlab.cli._translate import translate
from genlab.errors import ConfigError


def add_parser(sub) -> None:
    s = sub.add_parser("sample", help="sample images from a run's EMA weights")
    s.add_argument("run", type=Path, help="run directory written by genlab train")
    s.add_argument("--n", type=int, default=64, help="number of samples (default 64)")
    s.add_argument("--sampler", default=None, help=sampler_help("ancestral"))
    add_step_flags(s)
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
    s.add_argument("--class", dest="class_", default=None, metavar="C",
                   help="class to sample, an integer, or 'all': sample i gets class i %% num_classes (the default for a "
                        "class-conditional model or with --classifier)")
    s.add_argument("--guidance", type=float, default=None, metavar="W",
                   help="classifier-free guidance weight w of a class-conditional model, eps = (1+w) eps(x,y) - w eps(x); "
                        "0 (default) is the plain conditional model. With --classifier: the classifier scale s (default 1)")
    s.add_argument("--prompt", action="append", default=None, metavar="TEXT",
                   help="text-conditioned runs (ldm): the caption to draw, e.g. 'a thick 3 on the left' (default: the "
                        "class prompts in turn); repeat it for a grid of --n samples per prompt, one row each; "
                        "--guidance W weighs it against the empty caption")
    s.add_argument("--classifier", type=Path, default=None, metavar="RUN",
                   help="guide with this noise-conditional classifier run (genlab train classifier), same data and schedule")
    s.add_argument("--compile", action="store_true", help=COMPILE_HELP)
    add_translate_flags(s)
    add_run_flags(s)


def run(args) -> int:
    from genlab.evaluate import SamplingSpec, draw_samples, write_samples_npz
    from genlab.run import compile_network
    from genlab.viz import save_samples

    if args.n < 1 or args.batch_size < 1:
        raise ConfigError("--n and --batch-size must be at least 1.")
    known_sampler(args)
    cfg, family, _, step = load(args)
    if args.translate is not None:  # a translating run's round trips (genlab.cli._translate)
        return translate(args, cfg, family, step)
    require_sampler(family, cfg, args.run)
    check_sampling_args(args, cfg, family, default_sampler="ancestral")
    if args.compile:
        compile_network(family.net)
    if args.interpolate is not None:
        return _interpolate(args, cfg, family, step)
    if args.reconstruct:
        return _reconstruct(args, cfg, family, step)
    cond = conditioning(args, cfg, family)
    n = args.n * (len(cond["prompts"]) if cond["prompts"] else 1)  # --n samples of each prompt
    if cond["prompts"]:
        cond["prompts"] = tuple(p for p in cond["prompts"] for _ in range(args.n))
    spec = SamplingSpec(n=n, seed=args.seed, batch_size=args.batch_size, sampler=args.sampler, steps=args.steps,
                        eta=args.eta, spacing=args.spacing, pixel_noise=args.pixel_noise, weights=args.weights,
                        precision=precision(args, cfg), compiled=args.compile, **cond)
    x, protocol = draw_samples(family, cfg, spec, step, progress=not args.no_progress)
    if cond["prompts"] and n > args.n:
        from genlab.viz.grid import save_grid

        save_grid(x, args.out, cfg.data.levels, nrow=args.n)  # a row per prompt
    else:
        save_samples(x, args.out, cfg.data.levels)
    if args.npz:
        write_samples_npz(args.npz, x, cfg.data.levels, protocol, labels=cond["labels"])
    steps = f", {protocol['steps']} steps" if protocol["steps"] is not None else ""
    print(f"genlab: {n} samples from {args.run} (step {step}, {args.weights} weights, {protocol['sampler']}"
          f"{steps}, {protocol['nfe']:g} network evaluations each) in {protocol['sampling_seconds']:.1f}s"
          f"{' (compiling included)' if protocol['compiled'] else ''} "
          f"-> {args.out}"
          + (f" and {args.npz}" if args.npz else ""))
    if cond["conditioning"]:
        c = cond["conditioning"]
        guided = f", {c['guidance_type']} guidance {c['guidance']:g}" if c.get("guidance_type") else ""
        print(f"genlab: prompt {c['prompt']!r}{guided}" if "prompt" in c else f"genlab: class {c['class']}{guided}")
    return 0


def _reconstruct(args, cfg, family, step: int) -> int:
    """The first ``--n`` test images (odd rows) above their reconstructions (even rows), 8 per row."""
    import torch

    from genlab.evaluate import autocast, load_split
    from genlab.viz.grid import save_grid

    if args.n > 8 and args.n % 8:
        raise ConfigError(f"--reconstruct shows 8 images per row: pass an --n of at most 8 or a multiple of 8, not {args.n}.")
    images = load_split(cfg, "test").images[: args.n]
    with autocast(precision(args, cfg), family):
        recon = family.reconstruct(images)
    rows = [t for i in range(0, len(images), 8) for t in (images[i:i + 8], recon[i:i + 8])]
    save_grid(torch.cat(rows), args.out, cfg.data.levels, nrow=min(8, len(images)))
    mse = ((images.float() - recon.float()) / (cfg.data.levels - 1)).pow(2).mean().item()
    print(f"genlab: {len(images)} test images and their reconstructions from {args.run} (step {step}, {args.weights} "
          f"weights; mean squared error {mse:.5f} on [0, 1] pixels) -> {args.out}")
    return 0


def _interpolate(args, cfg, family, step: int) -> int:
    """Decode the latent path between two test images (autoencoders and VAEs)."""
    import torch

    from genlab.evaluate import autocast, load_split
    from genlab.viz.grid import save_grid

    try:
        a, b = (int(v) for v in args.interpolate.split(","))
    except ValueError:
        raise ConfigError(f"--interpolate takes two test-image indices A,B, not {args.interpolate!r}.") from None
    test = load_split(cfg, "test")
    for i in (a, b):
        if not 0 <= i < len(test):
            raise ConfigError(f"test image {i} does not exist; choose indices in 0..{len(test) - 1}.")
    if args.n < 2:
        raise ConfigError(f"--n must be at least 2 for a path between two images, not {args.n}.")
    with autocast(precision(args, cfg), family):
        x = family.interpolate(test.images[a], test.images[b], args.n, method="slerp" if args.slerp else "linear")
    save_grid(torch.cat([test.images[a][None], x, test.images[b][None]]), args.out, cfg.data.levels, nrow=len(x) + 2)
    print(f"genlab: {args.n} decoded points ({'spherical' if args.slerp else 'linear'} path) between test images {a} "
          f"and {b} (shown at both ends) from {args.run} "
          f"(step {step}, {args.weights} weights) -> {args.out}")
    return 0
