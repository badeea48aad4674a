"""``genlab sample RUN --translate SOURCE --out DIR``: a translating run's translations of a dataset or a folder.

A run can translate when its family has ``translate`` (and ``round_trip``, ``input_domain``): a
CycleGAN. SOURCE is a dataset name (its test split) or a folder of PNG/JPEG images of the input
domain. DIR gets ``translations.npz`` (inputs at the common size, translations, reconstructions,
uint8, with their levels) and ``grid.png`` (input | translation | reconstruction, side by side).
Everything is checked before anything is written.
"""

from __future__ import annotations

from pathlib import Path

from genlab.cli._common import either, names_with, precision
from genlab.errors import ConfigError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
PER_ROW = 4  # input | translation | reconstruction triples per grid row


def can_translate(family) -> bool:
    return callable(getattr(family, "translate", None))


def add_flags(s) -> None:
    s.add_argument("--translate", default=None, metavar="SOURCE",
                   help="translating runs (cyclegan): translate the first --n test images of the dataset SOURCE, or the "
                        "images of the folder SOURCE, and write DIR/translations.npz and DIR/grid.png (--out DIR)")
    s.add_argument("--direction", choices=("a2b", "b2a"), default="a2b",
                   help="with --translate: a2b (G, from --data to --data-b; default) or b2a (F)")


def read_source(spec: str, cfg, family, direction: str, n: int):
    """(uint8 images [n, C, h, w], their levels, labels or None, a description) of SOURCE, checked."""
    import torch

    from genlab.cli._images import read_picture
    from genlab.data import DATASETS, load_dataset

    domain = family.input_domain(direction)
    channels = int(domain["channels"])
    if spec in DATASETS:
        # the run's own domain of that name (the input's first): its files and classes
        order = ("a", "b") if direction == "a2b" else ("b", "a")
        source: tuple = next((family.sources[k] for k in order if family.sources.get(k, ("",))[0] == spec), (spec, None, {}))
        ds = load_dataset(spec, "test", root=source[1], **source[2])
        if not hasattr(ds, "images"):
            raise ConfigError(f"--translate {spec} holds points, not images; pass an image dataset or a folder of images.")
        if ds.images.shape[1] != channels:
            raise ConfigError(f"--translate {spec} has {ds.images.shape[1]}-channel images but the run's input domain "
                              f"({domain['name']}, --direction {direction}) has {channels}; pass images of that domain.")
        return ds.images[:n], ds.info.levels, ds.labels[:n], f"{min(n, len(ds))} {spec} test images"
    folder = Path(spec)
    if not folder.is_dir():
        raise ConfigError(f"--translate {spec} is neither a dataset ({', '.join(DATASETS)}) nor a folder of images; "
                          f"pass one of them.")
    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)[:n]
    if not files:
        raise ConfigError(f"--translate {spec} holds no PNG or JPEG images; pass a folder of images of the input domain.")
    pictures = [read_picture(f, channels, "image") for f in files]
    sizes = {tuple(p.shape[1:]) for p in pictures}
    if len(sizes) > 1:
        raise ConfigError(f"the images in {spec} have {len(sizes)} different sizes; pass a folder of images of one size.")
    return torch.stack(pictures), 256, None, f"{len(files)} images of {spec}"


def translate(args, cfg, family, step: int) -> int:
    """The --translate command (module docstring)."""
    import numpy as np
    import torch

    from genlab.data.transforms import levels_to_pixels
    from genlab.evaluate import autocast
    from genlab.io import atomic_write
    from genlab.viz.grid import save_grid

    if not can_translate(family):
        names = names_with(can_translate)
        raise ConfigError(f"{args.run} is a {cfg.family} run, which does not translate images; --translate needs a "
                          f"{either(names)} run (genlab train {names[0]} --data A --data-b B).")
    if args.interpolate is not None or args.reconstruct:
        raise ConfigError("--translate writes its own round trips; drop --interpolate and --reconstruct.")
    out = Path("translations") if args.out == Path("samples.png") else args.out  # the default of a grid file
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; --translate writes a folder (translations.npz and grid.png).")
    images, levels, labels, what = read_source(args.translate, cfg, family, args.direction, args.n)
    with autocast(precision(args, cfg), family):
        result = family.round_trip(images, args.direction, levels, batch_size=args.batch_size)
    out_levels = int(family.input_domain("b2a" if args.direction == "a2b" else "a2b")["levels"])
    shown = [levels_to_pixels(result["inputs"], levels), levels_to_pixels(result["translations"], out_levels),
             levels_to_pixels(result["reconstructions"], levels)]
    triples = torch.stack(shown, 1).flatten(0, 1)  # x0, G(x0), F(G(x0)), x1, ...
    err = ((result["reconstructions"].float() - result["inputs"].float()) / (levels - 1)).abs().mean().item()
    out.mkdir(parents=True, exist_ok=True)
    save_grid(triples, out / "grid.png", 256, nrow=3 * min(PER_ROW, len(images)))
    arrays = {k: v.numpy() for k, v in result.items()}
    extra = {} if labels is None else {"labels": labels.numpy().astype(np.int64)}

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays, levels=np.array(levels), translation_levels=np.array(out_levels),
                     direction=np.array(args.direction), step=np.array(step), **extra)

    atomic_write(out / "translations.npz", write)
    print(f"genlab: translated {what} {args.direction} with {args.run} (step {step}, {args.weights} weights; "
          f"cycle error {err:.4f} on [0, 1] pixels) -> {out / 'grid.png'} and {out / 'translations.npz'}")
    return 0


def evaluate(args, cfg, family, step: int) -> int:
    """``genlab eval`` of a translating run: :func:`genlab.gan.cyclegan.metrics.measure_translation` (--limit, --seed)."""
    import json

    from genlab.evaluate import autocast
    from genlab.gan.cyclegan.metrics import measure_translation
    from genlab.run import RunDir

    if args.metrics.strip().lower() not in ("bpd", "translation"):  # bpd: the command's default, not asked for
        raise ConfigError(f"a {cfg.family} run is measured by --metrics translation (class kept, FID and cycle error "
                          f"both ways); drop --metrics {args.metrics}.")
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be at least 1, not {args.limit}.")
    if args.ref_split not in ("train", "test"):
        raise ConfigError(f"unknown split {args.ref_split!r}; choose train or test.")
    prec = precision(args, cfg)
    with autocast(prec, family):
        result = measure_translation(family, n=args.limit, ref_split=args.ref_split, batch_size=args.batch_size or 256,
                                     seed=args.seed, progress=not (args.no_progress or args.json))
    record = {**result, "data": cfg.data.name, "data_b": cfg.cyclegan.data_b, "weights": args.weights, "step": step,
              "mixed_precision": prec}
    RunDir(args.run).append_metrics({"event": "eval", "metric": "translation", **record})
    if args.json:
        print(json.dumps(record))
        return 0
    a, b = cfg.data.name, cfg.cyclegan.data_b
    print(f"translation of {args.run} (step {step}, {args.weights} weights), test images of each domain; FID against "
          f"the output domain's {args.ref_split} split under its feature network")
    print(f"  {'':<18} {'model':>10} {'identity':>10}")
    for d, what in (("a2b", f"G: {a} -> {b}"), ("b2a", f"F: {b} -> {a}")):
        print(f"  {what} ({record[d + '_n']} images)")
        for key, label in (("class_kept", "class kept"), ("class_reached", "class reached"), ("fid", "FID")):
            if d + "_" + key in record:
                print(f"    {label:<16} {record[d + '_' + key]:>10.4f} {record[d + '_' + key + '_identity']:>10.4f}")
        print(f"    {'cycle error':<16} {record[d + '_cycle_error']:>10.4f} {0.0:>10.4f}")
    return 0
