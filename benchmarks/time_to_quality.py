"""Time to quality on MNIST: genlab's recommended recipe against the diffusers-style recipe.

    python benchmarks/time_to_quality.py --data-dir ../shared/data/mnist [--peer-python PY]
        [--peer-minutes 20] [--genlab-steps 850]

genlab: ``genlab train --data mnist`` (the MNIST preset: widths 32,64,64, one ResBlock per
level, attention at 7x7, batch 64, lr 1e-3, bf16) for ``--genlab-steps`` steps, sized to fit
5 minutes of this CPU (the training time is measured and printed). diffusers: its
train_unconditional example's defaults at the benchmark's widths (32,64,64, two ResBlocks
per level, attention at 14 and 7, batch 16, lr 1e-4, fp32; ``peer_diffusers.py ttq``) for
``--peer-minutes``. Both are then measured the same way with genlab's yardsticks, in fp32:
the variational bound on the first 500 MNIST test images (50 stratified timesteps each),
and FID, KID, precision and recall of 1,000 samples from genlab's ancestral sampler with
20 respaced steps against the 60,000 training images under genlab's MNIST feature network.

The peer's environment needs diffusers and genlab's dependencies (genlab itself is put on
its path from ``src/``): see ``train_throughput.py``'s docstring, plus
``pip install accelerate torchmetrics scipy scikit-learn matplotlib``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from train_throughput import DEFAULT_PEER_PYTHON, HERE

ROOT = HERE.parent


def genlab(*argv: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "genlab", *argv], capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"genlab {' '.join(argv)} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout


def quality(run: Path, samples: Path) -> dict:
    return json.loads(genlab("eval", str(run), "--samples", str(samples), "--metrics", "fid,kid,pr", "--json", "--no-progress"))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True, help="folder with the MNIST IDX files")
    p.add_argument("--peer-python", default=DEFAULT_PEER_PYTHON)
    p.add_argument("--peer-minutes", type=float, default=20.0)
    p.add_argument("--genlab-steps", type=int, default=850)
    p.add_argument("--out", default=None, help="keep the runs here (default: a temporary folder)")
    args = p.parse_args()
    if not Path(args.peer_python).exists():
        raise SystemExit(f"no Python for the peer at {args.peer_python}; see this script's docstring, or pass --peer-python PATH.")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.out or tmp)
        work.mkdir(parents=True, exist_ok=True)
        run = work / "genlab-mnist"
        t0 = time.perf_counter()
        genlab("train", "--data", "mnist", "--data-dir", args.data_dir, "--steps", str(args.genlab_steps),
               "--sample-every", "0", "--eval-bpd", "false", "--no-progress", "--out", str(run))
        wall = time.perf_counter() - t0
        recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        train_s = max(r["time_s"] for r in recs if "time_s" in r)
        bpd = json.loads(genlab("eval", str(run), "--metric", "bpd", "--limit", "500", "--t-samples", "50",
                                "--mixed-precision", "no", "--json", "--no-progress"))
        genlab("sample", str(run), "--n", "1000", "--sampler", "ancestral", "--steps", "20", "--batch-size", "250",
               "--mixed-precision", "no", "--npz", str(work / "genlab-samples.npz"), "--out", str(work / "genlab-grid.png"))
        ours = {**quality(run, work / "genlab-samples.npz"), "train_seconds": train_s, "wall_seconds": wall,
                "train_steps": args.genlab_steps, "batch": 64, "bpd": bpd["bpd"], "bpd_se": bpd.get("bpd_se")}

        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        proc = subprocess.run([args.peer_python, str(HERE / "peer_diffusers.py"), "ttq", "--minutes", str(args.peer_minutes),
                               "--data-dir", args.data_dir, "--out", str(work / "diffusers"), "--head-dim", "32"],
                              capture_output=True, text=True, env=env)
        if proc.returncode:
            raise SystemExit(f"the peer's run failed:\n{proc.stderr[-3000:]}")
        trained = json.loads(proc.stdout.strip().splitlines()[-1])
        peer = {**quality(run, Path(trained["samples"])), **trained, "train_steps": trained["steps"]}

    print("MNIST, time to quality (bits/dim: bound on 500 test images, 50 timesteps each, fp32; FID/KID/P/R: "
          "1000 samples, ancestral 20 steps, against the 60k training images, genlab's MNIST feature network)")
    print(f"  {'recipe':36s} {'train min':>9s} {'steps':>6s} {'batch':>5s} {'bits/dim':>16s} {'FID':>7s} {'KID':>7s} "
          f"{'prec':>5s} {'recall':>6s}")
    for name, r in (("genlab MNIST preset (bf16)", ours), ("diffusers train_unconditional (fp32)", peer)):
        print(f"  {name:36s} {r['train_seconds'] / 60:9.1f} {r['train_steps']:6d} {r['batch']:5d} {r['bpd']:8.4f} +- {r['bpd_se']:.4f} "
              f"{r['fid']:7.3f} {r['kid']:7.4f} {r['precision']:5.3f} {r['recall']:6.3f}")
    better = ours["bpd"] <= peer["bpd"] and ours["fid"] <= peer["fid"]
    print(f"  genlab reaches {'both' if better else 'not both'} of the peer's bits/dim and FID in "
          f"{ours['train_seconds'] / 60:.1f} min against its {peer['train_seconds'] / 60:.1f} min (goal: <= 5 min vs 20)")


if __name__ == "__main__":
    main()
