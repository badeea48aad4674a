#!/usr/bin/env bash
# The default digits run's README figures, to compare two versions of genlab bit for bit:
#   benchmarks/digits_figures.sh OUT [SRC]   (SRC: a checkout whose src/ to use instead of the installed genlab)
# Trains `genlab train --data digits` into OUT/run, then writes every sampler's FID/KID/precision/recall of
# 1000 samples at seed 0 (OUT/fid.jsonl), the test bound (OUT/bpd.json) and 64 DDIM samples (OUT/samples.npz).
# Compare two OUTs with: cmp A/run/checkpoints/step_0000800.safetensors B/run/checkpoints/step_0000800.safetensors
set -euo pipefail
OUT=$(realpath -m "$1"); mkdir -p "$OUT"
[ $# -ge 2 ] && export PYTHONPATH="$(realpath "$2")/src"
G="python -m genlab"
$G train --data digits --out "$OUT/run" --no-progress > "$OUT/train.log"
: > "$OUT/fid.jsonl"
for spec in "ancestral 20" "ddim 50" "dpmpp-2m 20" "euler 50" "heun 20" "langevin 100" "pc 100" "ancestral 1000"; do
  set -- $spec
  $G eval "$OUT/run" --metrics fid,kid,pr --n 1000 --sampler "$1" --steps "$2" --seed 0 --json --no-progress >> "$OUT/fid.jsonl"
done
$G eval "$OUT/run" --metrics bpd --split test --seed 0 --json --no-progress > "$OUT/bpd.json"
$G sample "$OUT/run" --n 64 --sampler ddim --steps 50 --seed 0 --out "$OUT/grid.png" --npz "$OUT/samples.npz" --no-progress
