"""``genlab features train | show | floor``: genlab's feature networks, the yardstick of FID/KID/precision/recall."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from genlab.errors import ConfigError


def add_parser(sub) -> None:
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


def run(args) -> int:
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

    from genlab.data import ImageDataset, load_dataset
    from genlab.metrics.evaluate import compare, reference_features
    from genlab.metrics.features import load_feature_network

    fnet = load_feature_network(args.data)
    progress = not (args.no_progress or args.json)
    test = load_dataset(args.data, "test", root=args.data_dir)
    train = load_dataset(args.data, "train", root=args.data_dir)
    assert isinstance(test, ImageDataset) and isinstance(train, ImageDataset)  # a feature network measures images
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
