"""One typed configuration for a run: frozen dataclasses, JSON in and out.

Defaults live here only. Precedence, lowest first: the dataclass defaults, the preset
for the dataset (``PRESETS``: the settings we recommend for it), a ``--config`` file
(JSON or TOML, same nesting as ``config.json``), then command-line flags. The CLI
derives its ``train`` flags from the ``flag``/``help`` metadata of these fields.
The resolved config is written to ``RUN/config.json`` and is all that is needed to
rebuild the model.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from genlab.errors import ConfigError


def _opt(default, flag=None, help="", **kw):
    return field(default=default, metadata={"flag": flag, "help": help, **kw})


@dataclass(frozen=True)
class DataConfig:
    name: str = _opt("digits", "--data", "dataset: digits (default, bundled with scikit-learn), mnist, fashion-mnist, cifar10, folder, toy2d")
    root: str | None = _opt(None, "--data-dir", "folder holding the dataset's files (default: $GENLAB_DATA, then the cache directory)")
    variant: str | None = _opt(None, "--variant", "toy2d density: moons, 8gaussians, swissroll, checkerboard")
    # Filled in from the dataset when training starts, so a run describes itself:
    shape: tuple[int, ...] = _opt((), None, "example shape (C, H, W), or (D,) for points")
    levels: int = _opt(0, None, "grey levels K per channel (0: continuous data)")
    num_classes: int = _opt(0, None, "number of classes in the labels")


@dataclass(frozen=True)
class ModelConfig:
    channels: tuple[int, ...] = _opt((32, 64), "--channels", "U-Net width of each resolution level, comma-separated (e.g. 32,64,64)")
    num_res_blocks: int = _opt(2, "--res-blocks", "ResNet blocks per level")
    attn_resolutions: tuple[int, ...] = _opt((4,), "--attn", "resolutions (pixels) with self-attention, comma-separated; empty for none")
    dropout: float = _opt(0.1, "--dropout", "dropout rate in the ResNet blocks")
    norm_groups: int = _opt(32, "--norm-groups", "GroupNorm groups (capped to divide each width)")
    head_dim: int = _opt(32, "--head-dim", "channels per attention head")
    hidden: int = _opt(128, "--hidden", "hidden width of the MLP used for toy2d")
    depth: int = _opt(3, "--depth", "residual layers of the MLP used for toy2d")
    # class conditioning (Ho & Salimans 2021): a label embedding added to the time embedding
    class_conditional: bool = _opt(False, "--class-conditional", "train a class-conditional model on the dataset's labels (true/false; a bare flag means true)")
    cond_drop_prob: float = _opt(0.1, "--cond-drop", "probability that a training label is replaced by the null label, so one network also learns p(x) for classifier-free guidance")


@dataclass(frozen=True)
class DiffusionConfig:
    timesteps: int = _opt(1000, "--timesteps", "number of diffusion steps T")
    schedule: str = _opt("linear", "--schedule", "beta schedule: linear, cosine, quadratic, sigmoid")
    parameterization: str = _opt("eps", "--prediction", "what the network predicts: eps, x0, v")
    variance: str = _opt("fixed_small", "--variance", "reverse variance: fixed_small (posterior beta-tilde), fixed_large (beta) or learned_range (learned between them; needs --loss hybrid or vlb)")
    loss: str = _opt("simple", "--loss", "training loss: simple (L_simple), hybrid (L_simple + lambda L_vlb, for --variance learned_range) or vlb (the variational bound)")
    # added with the training objectives; the defaults reproduce the runs made before them
    vlb_weight: float = _opt(0.001, "--vlb-weight", "lambda of --loss hybrid: L_simple + lambda L_vlb (Nichol & Dhariwal use 0.001)")
    timestep_sampler: str = _opt("uniform", "--timestep-sampler", "how training draws t: uniform, or loss-second-moment (importance sampling, p_t ~ sqrt(E[L_t^2]); meant for --loss vlb)")
    weighting: str = _opt("none", "--weighting", "weight of L_simple over t: none, p2 (1/(1+SNR)^gamma) or min-snr (min(SNR, gamma)/SNR), as eps-prediction weights")
    weighting_gamma: float | None = _opt(None, "--weighting-gamma", "gamma of --weighting (default: 1 for p2, 5 for min-snr)")
    super_resolution: int = _opt(0, "--super-res", "train a super-resolution model for this upscaling factor (e.g. 2: 14x14 -> 28x28), "
                                 "conditioned on the area-downsampled image; use it with genlab upscale (0: an ordinary model)")


@dataclass(frozen=True)
class TrainConfig:
    steps: int = _opt(2000, "--steps", "optimiser steps")
    batch_size: int = _opt(128, "--batch-size", "images per step, over all processes (the global batch)")
    lr: float = _opt(1e-3, "--lr", "peak learning rate (AdamW)")
    warmup: int = _opt(100, "--warmup", "linear learning-rate warm-up steps")
    weight_decay: float = _opt(0.0, "--weight-decay", "AdamW weight decay")
    grad_clip: float = _opt(1.0, "--grad-clip", "clip the gradient norm to this (0: off)")
    ema_decay: float = _opt(0.999, "--ema-decay", "EMA decay per step (warmed up as min(decay, (1+n)/(10+n)))")
    seed: int = _opt(0, "--seed", "seed for initialisation, data order and noise")
    mixed_precision: str = _opt("bf16", "--mixed-precision", "no (fp32) or bf16 (autocast)")
    log_every: int = _opt(50, "--log-every", "steps between lines of metrics.jsonl")
    sample_every: int = _opt(1000, "--sample-every", "steps between sample grids (0: only at the end)")
    checkpoint_every: int = _opt(500, "--checkpoint-every", "steps between checkpoints (one is always written at the end)")
    keep_checkpoints: int = _opt(2, "--keep-checkpoints", "how many recent checkpoints to keep")
    grid_sampler: str = _opt("ddim", "--grid-sampler", "sampler for the sample grids: ancestral or ddim")
    grid_steps: int = _opt(100, "--grid-steps", "sampling steps for the sample grids")
    eval_bpd: bool = _opt(True, "--eval-bpd", "compute the test-split bits/dim at the end (true/false)")
    eval_limit: int | None = _opt(None, "--eval-limit", "test images for the final bits/dim (default: all)")
    eval_t_samples: int | None = _opt(None, "--eval-t-samples", "estimate the final bound from this many timesteps per image (stratified, unbiased) instead of all T")


@dataclass(frozen=True)
class RunConfig:
    family: str = "ddpm"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


SECTIONS = {"data": DataConfig, "model": ModelConfig, "diffusion": DiffusionConfig, "train": TrainConfig}

# Recommended settings per dataset, applied over the dataclass defaults. Measured on a
# 2-core CPU; see README "Recommended settings".
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # the 3-minute default: one ResBlock per level and no dropout keep a step cheap enough for
    # ~1000 steps plus the full 1000-step bound on the 360 test images on 2 CPU cores
    "digits": {"model": {"num_res_blocks": 1, "dropout": 0.0}, "train": {"steps": 800}},
    # MNIST / Fashion-MNIST: the recipe for ~20 minutes of a 2-core CPU (about 190 images/s in bf16):
    # one ResBlock per level and attention only at 7x7 are 2x cheaper per step than (14, 7) x 2 blocks
    "mnist": {
        "model": {"channels": (32, 64, 64), "num_res_blocks": 1, "attn_resolutions": (7,), "dropout": 0.0},
        "train": {"batch_size": 64, "lr": 1e-3, "steps": 3500, "sample_every": 1000, "checkpoint_every": 500,
                  "log_every": 100, "grid_steps": 50, "eval_limit": 1000, "eval_t_samples": 100},
    },
    "cifar10": {
        "model": {"channels": (64, 128, 128), "num_res_blocks": 2, "attn_resolutions": (8,), "dropout": 0.1},
        "train": {"batch_size": 64, "lr": 2e-4, "steps": 20000, "sample_every": 2000, "checkpoint_every": 1000,
                  "log_every": 100, "grid_steps": 50, "eval_limit": 1000, "eval_t_samples": 100},
    },
    "toy2d": {
        "model": {"hidden": 128, "depth": 3, "dropout": 0.0},
        "diffusion": {"timesteps": 200},
        "train": {"batch_size": 256, "lr": 1e-3, "steps": 3000, "sample_every": 0, "grid_steps": 50},
    },
}
PRESETS["fashion-mnist"] = PRESETS["mnist"]
PRESETS["folder"] = PRESETS["cifar10"]
PRESETS["cifar10-jpeg"] = PRESETS["cifar10"]


def _coerce(cls, name: str, value):
    """Convert a JSON/TOML/CLI value to the type of field ``name`` of ``cls``."""
    f = {f.name: f for f in fields(cls)}[name]
    typ = str(f.type)
    try:
        if value is None:
            return None
        if "tuple" in typ:
            if isinstance(value, str):
                return tuple(int(v) for v in value.replace(" ", "").split(",") if v)
            return tuple(int(v) for v in value)
        if typ.startswith("bool"):
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                return value.lower() in ("true", "1", "yes")
            return bool(value)
        if typ.startswith("int"):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if typ.startswith("float"):
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        flag = f.metadata.get("flag") or name
        kinds = {"tuple": "comma-separated integers", "bool": "true or false", "int": "an integer", "float": "a number"}
        kind = next((v for k, v in kinds.items() if typ.startswith(k)), "text")
        raise ConfigError(f"{flag} must be {kind}, not {value!r}; see genlab train --help.") from None


def merge(base: RunConfig, overrides: dict) -> RunConfig:
    """A new RunConfig with ``overrides`` ({section: {field: value}}) applied, types coerced."""
    sections = {}
    for key, value in overrides.items():
        if key == "family":
            continue
        if key not in SECTIONS:
            raise ConfigError(f"unknown config section {key!r}; use {', '.join(SECTIONS)}.")
        if not isinstance(value, dict):
            raise ConfigError(f"config section {key!r} must be a table of settings.")
        cls = SECTIONS[key]
        known = {f.name for f in fields(cls)}
        for name in value:
            if name not in known:
                raise ConfigError(f"unknown setting {key}.{name}; known: {', '.join(sorted(known))}.")
        sections[key] = dataclasses.replace(getattr(base, key), **{n: _coerce(cls, n, v) for n, v in value.items()})
    return dataclasses.replace(base, family=overrides.get("family", base.family), **sections)


def read_config_file(path: str | os.PathLike) -> dict:
    """Read a JSON or TOML config file (by extension) into nested dicts."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass a JSON or TOML file to --config.")
    text = path.read_bytes()
    try:
        if path.suffix.lower() == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib
            return tomllib.loads(text.decode())
        return json.loads(text)
    except Exception as e:  # noqa: BLE001 - any parse error is the user's file
        raise ConfigError(f"config file {path} could not be parsed ({e}); fix it or pass another file.") from None


def resolve(data_name: str | None = None, file_overrides: dict | None = None, cli_overrides: dict | None = None) -> RunConfig:
    """Dataclass defaults < dataset preset < config file < CLI flags."""
    file_overrides = file_overrides or {}
    cli_overrides = cli_overrides or {}
    name = (
        cli_overrides.get("data", {}).get("name")
        or file_overrides.get("data", {}).get("name")
        or data_name
        or DataConfig().name
    )
    cfg = merge(RunConfig(), PRESETS.get(name, {}))
    cfg = merge(cfg, file_overrides)
    cfg = merge(cfg, cli_overrides)
    validate(cfg)
    return cfg


def validate(cfg: RunConfig) -> None:
    """Range-check settings that would otherwise fail deep inside training."""
    from genlab.diffusion import PARAMETERIZATIONS, SAMPLERS, SCHEDULES, VARIANCES
    from genlab.diffusion.process import LOSSES, WEIGHTINGS
    from genlab.diffusion.timesteps import TIMESTEP_SAMPLERS

    d, t, m = cfg.diffusion, cfg.train, cfg.model
    checks = [
        (d.schedule in SCHEDULES, f"unknown schedule {d.schedule!r}; choose one of {', '.join(SCHEDULES)}."),
        (d.parameterization in PARAMETERIZATIONS, f"unknown prediction {d.parameterization!r}; choose one of {', '.join(PARAMETERIZATIONS)}."),
        (d.variance in VARIANCES, f"unknown variance {d.variance!r}; choose one of {', '.join(VARIANCES)}."),
        (d.loss in LOSSES, f"unknown loss {d.loss!r}; choose one of {', '.join(LOSSES)}."),
        (d.loss == "simple" or cfg.data.name != "toy2d",
         f"--loss {d.loss} needs images with discrete levels, and toy2d is continuous; use --loss simple."),
        (d.variance != "learned_range" or cfg.data.name != "toy2d",
         "--variance learned_range is trained by the bound, which needs images with discrete levels, and toy2d is continuous; use --variance fixed_small or fixed_large."),
        (d.loss != "hybrid" or d.variance == "learned_range",
         "--loss hybrid trains a learned variance with the bound; add --variance learned_range, or use --loss simple."),
        (d.variance != "learned_range" or d.loss != "simple",
         "--variance learned_range is trained only by the variational bound; add --loss hybrid (or --loss vlb)."),
        (d.weighting in WEIGHTINGS, f"unknown weighting {d.weighting!r}; choose one of {', '.join(WEIGHTINGS)}."),
        (d.weighting == "none" or d.loss != "vlb",
         f"--weighting {d.weighting} weights L_simple, which --loss vlb does not use; use --loss simple or hybrid, or --weighting none."),
        (d.weighting_gamma is None or d.weighting_gamma >= 0, f"--weighting-gamma must be at least 0, not {d.weighting_gamma}."),
        (d.weighting_gamma is None or d.weighting_gamma > 0 or d.weighting != "min-snr",
         "--weighting-gamma must be positive for min-snr (min(SNR, 0) would zero the loss)."),
        (d.vlb_weight > 0, f"--vlb-weight must be positive, not {d.vlb_weight}."),
        (d.timestep_sampler in TIMESTEP_SAMPLERS,
         f"unknown timestep sampler {d.timestep_sampler!r}; choose one of {', '.join(TIMESTEP_SAMPLERS)}."),
        (d.timesteps >= 2, f"--timesteps must be at least 2, not {d.timesteps}."),
        (t.steps >= 1, f"--steps must be at least 1, not {t.steps}."),
        (t.batch_size >= 1, f"--batch-size must be at least 1, not {t.batch_size}."),
        (t.lr > 0, f"--lr must be positive, not {t.lr}."),
        (t.mixed_precision in ("no", "bf16", "fp16"), f"--mixed-precision must be no, bf16 or fp16, not {t.mixed_precision!r}."),
        (t.grid_sampler in SAMPLERS, f"unknown --grid-sampler {t.grid_sampler!r}; choose one of {', '.join(SAMPLERS)}."),
        (0 <= t.ema_decay < 1, f"--ema-decay must lie in [0, 1), not {t.ema_decay}."),
        (len(m.channels) >= 1 and all(c > 0 for c in m.channels), f"--channels needs at least one positive width, not {m.channels}."),
        (0 <= m.dropout < 1, f"--dropout must lie in [0, 1), not {m.dropout}."),
        (0 <= m.cond_drop_prob <= 1, f"--cond-drop must lie in [0, 1], not {m.cond_drop_prob}."),
        (d.super_resolution == 0 or d.super_resolution >= 2, f"--super-res must be 0 (off) or a factor of at least 2, not {d.super_resolution}."),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def from_dict(d: dict) -> RunConfig:
    """Rebuild a RunConfig from ``config.json`` contents."""
    return merge(RunConfig(), d)
