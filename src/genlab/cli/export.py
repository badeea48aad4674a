"""``genlab export RUN DIR``: an inference-only folder (config, EMA weights, model card) that genlab samples from."""

from __future__ import annotations

from pathlib import Path

from genlab.cli._common import add_debug


def add_parser(sub) -> None:
    e = sub.add_parser("export", help="write an inference-only folder: config.json, EMA model.safetensors, model card",
                       description="Write DIR with the run's config.json, its EMA weights alone as model.safetensors "
                                   "(no optimiser or RNG state) and a model card README.md (YAML front matter: family, "
                                   "dataset, parameters, training steps and time; the figures measured on the run with "
                                   "their protocol). genlab sample DIR and genlab serve DIR read it like a run.")
    e.add_argument("run", type=Path, help="run directory written by genlab train")
    e.add_argument("dir", type=Path, help="folder to create (must not exist, or be empty)")
    e.add_argument("--weights", choices=("ema", "model"), default="ema", help="which weights to export (default ema)")
    add_debug(e)


def run(args) -> int:
    from genlab.export import CARD, export_run

    done = export_run(args.run, args.dir, weights=args.weights)
    print(f"genlab: exported {args.run} (step {done['step']}, {done['parameters'] / 1e6:.2f}M parameters, "
          f"{args.weights} weights, {done['figures']} measured figure row(s) in the card) -> {done['dir']} "
          f"({done['bytes'] / 1e6:.1f} MB: config.json, model.safetensors, {CARD}); sample it with: "
          f"genlab sample {done['dir']}")
    return 0
