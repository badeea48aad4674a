"""``genlab upscale RUN``: super-resolve an image with a run trained with --super-res."""

from __future__ import annotations

import time
from pathlib import Path

from genlab.cli._common import add_run_flags, load, precision
from genlab.cli._images import image_arg
from genlab.cli._sampling import add_step_flags, check_sampler, sampler_help
from genlab.errors import ConfigError


def add_parser(sub) -> None:
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
    u.add_argument("--sampler", default="ddim", help=sampler_help("ddim"))
    add_step_flags(u)
    u.add_argument("--seed", type=int, default=0, help="seed; output i depends only on (seed, i)")
    u.add_argument("--batch-size", type=int, default=256, help="images per network call (does not change the images)")
    add_run_flags(u)


def run(args) -> int:
    import torch

    from genlab.diffusion.superres import bicubic, downsample, upscale
    from genlab.evaluate import autocast, load_split
    from genlab.metrics.psnr import psnr
    from genlab.run import RunDir
    from genlab.viz.grid import save_grid

    check_sampler(args)
    if args.image is None and args.psnr_test is None:
        raise ConfigError("say what to upscale: --image FILE (or test:INDEX), or --psnr-test N.")
    if (args.psnr_test is not None and args.psnr_test < 1) or args.batch_size < 1:
        raise ConfigError("--psnr-test and --batch-size must be at least 1.")
    cfg, family, ckpt, step = load(args)
    f = cfg.diffusion.super_resolution
    if not f:
        raise ConfigError(f"{args.run} is not a super-resolution run (trained without --super-res); "
                          f"train one with genlab train --super-res 2.")
    prec = precision(args, cfg)
    levels, (_, H, W) = cfg.data.levels, cfg.data.shape
    h, w = H // f, W // f
    progress = not args.no_progress

    def run_model(low):
        with autocast(prec, family):
            return upscale(family, low, seed=args.seed, sampler=args.sampler, steps=args.steps, eta=args.eta,
                           spacing=args.spacing, batch_size=args.batch_size, progress=progress)

    if args.image is not None:
        image, _ = image_arg(args.image, cfg, [(h, w), (H, W)], f"{w}x{h} (low-resolution) or {W}x{H} images")
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
        ds = load_split(cfg, "test")
        truth = ds.images[: args.psnr_test]
        low = downsample(truth, f)
        t0 = time.perf_counter()
        out = run_model(low)
        seconds = time.perf_counter() - t0
        model_db = psnr(out, truth, levels).mean().item()
        bicubic_db = psnr(bicubic(low, f, levels), truth, levels).mean().item()
        RunDir(args.run).append_metrics({"event": "eval", "metric": "psnr", "psnr": model_db, "psnr_bicubic": bicubic_db,
                                  "n": len(truth), "split": "test", "factor": f, "sampler": args.sampler,
                                  "steps": args.steps, "seed": args.seed, "data": cfg.data.name, "weights": args.weights,
                                  "step": step, "mixed_precision": prec, "seconds": seconds})
        print(f"PSNR on the first {len(truth)} {cfg.data.name} test images upscaled {f}x from {w}x{h} (mean over images, "
              f"[0, 1] scale): model {model_db:.2f} dB, bicubic {bicubic_db:.2f} dB ({args.sampler}, {seconds:.1f}s)")
    return 0
