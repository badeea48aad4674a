"""Run directories: what ``genlab train`` writes and ``genlab sample`` / ``eval`` read.

A run directory holds ``config.json`` (everything needed to rebuild the model),
``checkpoints/step_*.safetensors``, ``samples/*.png`` and ``metrics.jsonl``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from genlab.config import FAMILY_CLASSES, RunConfig, from_dict
from genlab.errors import GenlabError, RunError
from genlab.training.checkpoint import latest_checkpoint, load_checkpoint, load_into


def append_metrics(run_dir: str | Path, record: dict) -> None:
    """Append one JSON line to ``RUN/metrics.jsonl`` (training logs and evaluations alike)."""
    with open(Path(run_dir) / "metrics.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


def read_run_config(run_dir: str | Path) -> RunConfig:
    run_dir = Path(run_dir)
    path = run_dir / "config.json"
    if not run_dir.is_dir():
        raise RunError(f"{run_dir} is not a directory; pass a run directory written by genlab train.")
    if not path.is_file():
        raise RunError(f"{run_dir} is not a genlab run (no config.json); pass a run directory written by genlab train.")
    try:
        raw = json.loads(path.read_text())
        cfg = from_dict(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunError(f"{path} is not valid JSON ({e}); restore it from the checkpoint's metadata or retrain.") from None
    except GenlabError as e:
        raise RunError(f"{path} is not a valid genlab config: {e}") from None
    if not cfg.data.shape:
        raise RunError(f"{path} does not record the data shape; it was not written by genlab train.")
    return cfg


def family_class(name: str) -> type:
    """The class of family ``name`` (``config.FAMILY_CLASSES``), imported on demand."""
    import importlib

    if name not in FAMILY_CLASSES:
        raise RunError(f"unknown model family {name!r} in config.json; this genlab knows: {', '.join(FAMILY_CLASSES)}.")
    module, cls = FAMILY_CLASSES[name]
    return getattr(importlib.import_module(module), cls)


def build_family(cfg: RunConfig) -> torch.nn.Module:
    """The family ``cfg.family`` with fresh weights, built from the config alone."""
    return family_class(cfg.family).from_config(cfg)


def load_run(run_dir: str | Path, weights: str = "ema", checkpoint: str | Path | None = None,
             device: str | torch.device = "cpu"):
    """(config, family in eval mode with the chosen weights on ``device``, checkpoint path, step).

    ``weights`` is ``"ema"`` (the default: what sampling and evaluation use) or ``"model"``.
    """
    cfg = read_run_config(run_dir)
    family = build_family(cfg)
    path = Path(checkpoint) if checkpoint else latest_checkpoint(Path(run_dir))
    tensors, meta = load_checkpoint(path, prefix=f"{weights}.")
    load_into(family, tensors, f"{weights}.", path)
    return cfg, family.to(device).eval().requires_grad_(False), path, int(meta.get("step", 0))


def compile_network(net: torch.nn.Module) -> None:
    """Compile ``net``'s forward pass with ``torch.compile`` (inductor), in place, for sampling.

    Only ``forward`` is compiled, so hooks on the module (genlab's count of network
    evaluations) still run. Shapes are static: each batch shape compiles once (30-60 s for
    the MNIST U-Net on 2 CPU cores; inductor's on-disk cache makes the next time a few
    seconds), then every evaluation runs the fused kernels (``benchmarks/sample_latency.py
    --compile``). Dynamic shapes were 2x slower here. The values agree with eager execution
    to within bf16/fp32 rounding.
    """
    net.forward = torch.compile(net.forward, dynamic=False)


def load_classifier(run_dir: str | Path, model_cfg: RunConfig, weights: str = "ema", device: str | torch.device = "cpu"):
    """The EMA classifier of a ``genlab train classifier`` run, checked against the model it will guide.

    Returns (config, :class:`NoisyClassifier` in eval mode). The classifier must have been
    trained on the same data and the same noise schedule (T and beta schedule) as the model:
    it is called with the model's x_t and timestep index.
    """
    from genlab.errors import ConfigError

    cfg = read_run_config(run_dir)
    if cfg.family != "classifier":
        raise ConfigError(f"{run_dir} is a {cfg.family} run, not a classifier; pass a run written by genlab train classifier.")
    md, cd = model_cfg.diffusion, cfg.diffusion
    if cfg.data.name != model_cfg.data.name or tuple(cfg.data.shape) != tuple(model_cfg.data.shape):
        raise ConfigError(f"the classifier {run_dir} was trained on {cfg.data.name} but the model on {model_cfg.data.name}; "
                          f"train a classifier with --data {model_cfg.data.name}.")
    if (cd.timesteps, cd.schedule) != (md.timesteps, md.schedule):
        raise ConfigError(f"the classifier {run_dir} was trained on the {cd.schedule} schedule with T={cd.timesteps} but the model "
                          f"uses {md.schedule} with T={md.timesteps}; train it with --timesteps {md.timesteps} --schedule {md.schedule}.")
    _, family, _, _ = load_run(run_dir, weights=weights, device=device)
    return cfg, family
