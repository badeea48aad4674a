"""``genlab inpaint RUN``: fill in the masked part of an image with an unconditional diffusion run (RePaint)."""

from __future__ import annotations

import time
from pathlib import Path

from genlab.cli._common import add_run_flags, load, precision
from genlab.cli._images import image_arg, mask_arg
from genlab.errors import ConfigError


def add_parser(sub) -> None:
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

    add_run_flags(i)


def run(args) -> int:
    import torch

    from genlab.diffusion.inpaint import STEPS, _family_check, inpaint_images, repaint_network_calls
    from genlab.evaluate import autocast, is_diffusion
    from genlab.viz.grid import save_grid

    if args.n < 1 or (args.steps is not None and args.steps < 1) or args.resample < 1 or args.jump < 1:
        raise ConfigError("--n, --steps, --resample and --jump must be at least 1.")
    cfg, family, ckpt, step = load(args)
    if not is_diffusion(family):
        raise ConfigError(f"{args.run} is a {cfg.family} run; inpainting (RePaint) needs a diffusion run.")
    _family_check(family)
    T = cfg.diffusion.timesteps
    if args.steps is not None and args.steps > T:
        raise ConfigError(f"--steps must lie in 1..{T} (the run's timesteps), not {args.steps}.")
    steps = args.steps or min(STEPS, T)
    C, H, W = cfg.data.shape
    image, _ = image_arg(args.image, cfg, [(H, W)], f"{W}x{H} images")
    mask = mask_arg(args.mask, H, W, args.seed)
    t0 = time.perf_counter()
    with autocast(precision(args, cfg), family):
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
