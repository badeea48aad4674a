"""One typed configuration for a run: frozen dataclasses, JSON in and out.

Defaults live here only. Precedence, lowest first: the dataclass defaults, the preset
for the dataset (``PRESETS``: the settings we recommend for it), the family's own
``presets`` (declared on its class, :mod:`genlab.family`), a ``--config`` file (JSON or
TOML, same nesting as ``config.json``), then command-line flags. The CLI
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
from genlab.family import family_class, family_names
from genlab.tracking import TRACKERS


def _opt(default, flag=None, help="", **kw):
    return field(default=default, metadata={"flag": flag, "help": help, **kw})


@dataclass(frozen=True)
class DataConfig:
    name: str = _opt("digits", "--data", "dataset: digits (default, bundled with scikit-learn), mnist, fashion-mnist, cifar10, folder, toy2d")
    root: str | None = _opt(None, "--data-dir", "folder holding the dataset's files (default: $GENLAB_DATA, then the cache directory)")
    variant: str | None = _opt(None, "--variant", "toy2d density: moons, 8gaussians, swissroll, checkerboard")
    classes: str | None = _opt(None, "--classes", "keep only these classes of an image dataset, comma-separated names (e.g. horse for cifar10-jpeg)")
    # Filled in from the dataset when training starts, so a run describes itself:
    shape: tuple[int, ...] = _opt((), None, "example shape (C, H, W), or (D,) for points")
    levels: int = _opt(0, None, "grey levels K per channel (0: continuous data)")
    num_classes: int = _opt(0, None, "number of classes in the labels")

    def loader_options(self) -> dict:
        """The dataset options this section records (``variant``, ``classes``), as load_dataset takes them."""
        return {k: v for k, v in (("variant", self.variant), ("classes", self.classes)) if v}


@dataclass(frozen=True)
class ModelConfig:
    channels: tuple[int, ...] = _opt((32, 64), "--channels", "width of each resolution level, comma-separated (e.g. 32,64,64): of the U-Net, and of the autoencoders, VAEs and GANs")
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
    # the baseline families (issue 6): their convolutional networks take their widths from --channels
    latent_dim: int = _opt(16, "--latent-dim", "latent dimension of autoencoders and VAEs, and of the noise z of GAN generators")


@dataclass(frozen=True)
class VAEConfig:
    """Autoencoders (``genlab train ae``) and VAEs (``genlab train vae``)."""

    beta: float = _opt(1.0, "--beta", "weight of the KL term of the VAE objective: 1 is the ELBO, beta > 1 a beta-VAE")
    decoder: str = _opt("logistic", "--decoder", "VAE decoder likelihood over the K grey levels: logistic (discretised logistic) or gaussian (discretised Gaussian)")
    iwae_k: int = _opt(100, "--iwae-k", "importance samples k of the IWAE bound used for the VAE's test bits/dim")
    recon: str = _opt("mse", "--recon", "autoencoder reconstruction loss: mse or mae")
    noise: float = _opt(0.0, "--ae-noise", "denoising autoencoder: standard deviation of the Gaussian noise added to the input in [-1, 1] (0: a plain autoencoder)")


@dataclass(frozen=True)
class GANConfig:
    """Generative adversarial networks (``genlab train gan``)."""

    loss: str = _opt("ns", "--gan-loss", "ns (non-saturating generator loss), minimax (the original saturating log(1 - D(G(z)))) or wgan-gp (Wasserstein with gradient penalty)")
    d_steps: int = _opt(0, "--d-steps", "discriminator (critic) steps k per generator step, Algorithm 1 of Goodfellow et al. (0: 1, or 5 for wgan-gp)")
    gp_weight: float = _opt(10.0, "--gp-weight", "lambda of the WGAN-GP gradient penalty")
    d_lr: float | None = _opt(None, "--d-lr", "discriminator learning rate (default: --lr)")
    beta1: float | None = _opt(None, "--adam-beta1", "Adam beta1 of both players (default: 0.5, or 0 for wgan-gp)")
    monitor_every: int = _opt(0, "--monitor-every", "steps between mode-collapse monitor records (recall and per-class coverage of 1000 samples under the feature network; 0: at each sample grid)")


@dataclass(frozen=True)
class CycleGANConfig:
    """Unpaired image-to-image translation (``genlab train cyclegan``): --data is domain A, --data-b domain B."""

    data_b: str = _opt("digits", "--data-b", "domain B: any image dataset of --data (digits, mnist, fashion-mnist, cifar10, folder, ...); "
                       "domain A (--data) is resized to its size and channels")
    data_b_root: str | None = _opt(None, "--data-b-dir", "folder holding domain B's files (as --data-dir for --data; default: --data-dir)")
    data_b_classes: str | None = _opt(None, "--data-b-classes", "keep only these classes of domain B, comma-separated names (as --classes for --data)")
    loss: str = _opt("lsgan", "--cyclegan-loss", "adversarial loss: lsgan (least squares, as in the CycleGAN paper) or ns (non-saturating)")
    cycle_weight: float = _opt(10.0, "--cycle-weight", "lambda of the cycle-consistency losses |F(G(x)) - x|_1 + |G(F(y)) - y|_1")
    identity_weight: float = _opt(0.0, "--identity-weight", "identity loss |G(y) - y|_1 + |F(x) - x|_1 with weight this times lambda (the paper's 0.5; 0: off)")
    pool_size: int = _opt(50, "--pool-size", "generated images kept in each history buffer for the discriminators (0: none)")
    res_blocks: int = _opt(6, "--cyclegan-blocks", "residual blocks at the bottom of each generator (the paper: 6 for 128x128, 9 for 256x256)")
    # Filled in from domain A when training starts (data.shape and data.levels are then domain B's, the common size):
    source_shape: tuple[int, ...] = _opt((), None, "domain A's example shape (C, H, W) before resizing")
    source_levels: int = _opt(0, None, "domain A's grey levels")


@dataclass(frozen=True)
class EnergyConfig:
    """Restricted Boltzmann machines (``genlab train rbm``) and deep belief nets (``genlab train dbn``), on binarised images."""

    hidden_units: tuple[int, ...] = _opt((500,), "--rbm-hidden", "hidden units of the RBM, or of each RBM of a deep belief net, bottom first (comma-separated)")
    cd_k: int = _opt(1, "--cd-k", "Gibbs steps k of contrastive divergence CD-k")
    persistent: bool = _opt(False, "--persistent", "persistent contrastive divergence: negative chains carried across updates (true/false)")
    gibbs_steps: int = _opt(1000, "--gibbs-steps", "block Gibbs steps of the chains that draw samples")
    ais_betas: int = _opt(10000, "--ais-betas", "intermediate temperatures of annealed importance sampling for log Z")
    ais_chains: int = _opt(100, "--ais-chains", "AIS runs whose weights estimate Z")


@dataclass(frozen=True)
class TextConfig:
    """The contrastive image-text model (``genlab train clip``) and its text transformer."""

    embed_dim: int = _opt(64, "--embed-dim", "dimension of the joint image-text embedding of CLIP")
    width: int = _opt(64, "--text-width", "width of the text transformer's tokens")
    layers: int = _opt(2, "--text-layers", "transformer blocks of the text tower")
    heads: int = _opt(4, "--text-heads", "attention heads of each text block (must divide --text-width)")


@dataclass(frozen=True)
class LatentConfig:
    """Latent diffusion (``genlab train ldm``): its autoencoder stage and its text conditioning."""

    z_channels: int = _opt(4, "--z-channels", "channels of the autoencoder's spatial latent (4 at 1/4 of the image size: 28x28 -> 4x7x7)")
    ae_channels: tuple[int, ...] = _opt((32, 64, 64), "--ae-channels", "widths of the autoencoder's levels, comma-separated; the latent is 2^(levels-1) times smaller")
    ae_steps: int = _opt(0, "--ae-steps", "steps of the autoencoder stage before the diffusion stage starts (0: a third of --steps)")
    kl_weight: float = _opt(1e-3, "--kl-weight", "weight of the autoencoder's KL term against N(0, I) (a KL-regularised autoencoder, as Stable Diffusion's)")
    caption_drop: float = _opt(0.1, "--caption-drop", "probability that a training caption is replaced by the empty one, so one network also learns the unconditional model for classifier-free guidance")
    text_encoder: str = _opt("joint", "--text-encoder", "joint (a text transformer trained with the U-Net) or clip (the frozen text tower of the --clip run, as Stable Diffusion's frozen CLIP)")
    clip_run: str | None = _opt(None, "--clip", "with --text-encoder clip: the genlab train clip run whose text tower conditions the model")


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
    mixed_precision: str = _opt("auto", "--mixed-precision",
                                 "auto (bf16 where the CPU or GPU does it natively, else fp32), no (fp32) or bf16 (autocast)")
    log_every: int = _opt(50, "--log-every", "steps between lines of metrics.jsonl")
    sample_every: int = _opt(1000, "--sample-every", "steps between sample grids (0: only at the end)")
    checkpoint_every: int = _opt(500, "--checkpoint-every", "steps between checkpoints (one is always written at the end)")
    checkpoint_minutes: float = _opt(1.0, "--checkpoint-minutes",
                                     "also checkpoint when this many minutes passed since the last one, so a kill loses at most "
                                     "about that much work (0: by steps only)")
    max_minutes: float | None = _opt(None, "--max-minutes",
                                     "stop cleanly after M minutes of training, checkpoint written (--resume continues; 0: no limit)")
    log_with: str = _opt("none", "--log-with",
                         "also log to none, tensorboard (event files in RUN/logs) or wandb (offline unless WANDB_MODE says "
                         "otherwise): metrics.jsonl's numbers and the sample grids")
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
    vae: VAEConfig = field(default_factory=VAEConfig)
    gan: GANConfig = field(default_factory=GANConfig)
    energy: EnergyConfig = field(default_factory=EnergyConfig)
    text: TextConfig = field(default_factory=TextConfig)
    latent: LatentConfig = field(default_factory=LatentConfig)
    cyclegan: CycleGANConfig = field(default_factory=CycleGANConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


SECTIONS = {"data": DataConfig, "model": ModelConfig, "diffusion": DiffusionConfig, "train": TrainConfig,
            "vae": VAEConfig, "gan": GANConfig, "energy": EnergyConfig, "text": TextConfig,
            "latent": LatentConfig, "cyclegan": CycleGANConfig}

# What ``genlab train FAMILY`` trains: the registered families (genlab.family), none of them imported here
FAMILIES = family_names()

# each setting's command-line flag ({"train.lr": "--lr", ...}): how the CLI says the settings that library
# messages name as {section.field} (genlab.errors.render)
FLAGS = {f"{section}.{f.name}": f.metadata["flag"] for section, cls in SECTIONS.items()
         for f in fields(cls) if f.metadata.get("flag")}

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
# the captioned datasets (text conditioning) take the recipe of the images they caption
PRESETS["mnist-captions"] = PRESETS["fashion-mnist-captions"] = PRESETS["mnist"]
PRESETS["digits-captions"] = PRESETS["digits"]
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


def resolve(data_name: str | None = None, file_overrides: dict | None = None, cli_overrides: dict | None = None,
            family: str | None = None) -> RunConfig:
    """Dataclass defaults < dataset preset < family preset < config file < CLI flags."""
    file_overrides = file_overrides or {}
    cli_overrides = cli_overrides or {}
    name = (
        cli_overrides.get("data", {}).get("name")
        or file_overrides.get("data", {}).get("name")
        or data_name
        or DataConfig().name
    )
    cfg = merge(RunConfig(), PRESETS.get(name, {}))
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, name=name))  # resolve("mnist") is an MNIST run
    family = family or file_overrides.get("family") or cfg.family
    known = family_names()
    if family not in known:
        raise ConfigError(f"unknown family {family!r}; choose one of {', '.join(known)}.")
    presets = family_class(family).presets  # "*": every dataset, then the dataset's own entry
    base = name.removesuffix("-captions")
    alias = {"fashion-mnist": "mnist"}.get(base, base)
    for key in ("*", alias):
        cfg = merge(cfg, presets.get(key, {}))
    cfg = dataclasses.replace(cfg, family=family)
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
         f"{{diffusion.loss}} {d.loss} needs images with discrete levels, and toy2d is continuous; use {{diffusion.loss}} simple."),
        (d.variance != "learned_range" or cfg.data.name != "toy2d",
         "{{diffusion.variance}} learned_range is trained by the bound, which needs images with discrete levels, and toy2d is continuous; use {{diffusion.variance}} fixed_small or fixed_large."),
        (d.loss != "hybrid" or d.variance == "learned_range",
         "{{diffusion.loss}} hybrid trains a learned variance with the bound; add {{diffusion.variance}} learned_range, or use {{diffusion.loss}} simple."),
        (d.variance != "learned_range" or d.loss != "simple",
         "{{diffusion.variance}} learned_range is trained only by the variational bound; add {{diffusion.loss}} hybrid (or {{diffusion.loss}} vlb)."),
        (d.weighting in WEIGHTINGS, f"unknown weighting {d.weighting!r}; choose one of {', '.join(WEIGHTINGS)}."),
        (d.weighting == "none" or d.loss != "vlb",
         f"{{diffusion.weighting}} {d.weighting} weights L_simple, which {{diffusion.loss}} vlb does not use; use {{diffusion.loss}} simple or hybrid, or {{diffusion.weighting}} none."),
        (d.weighting_gamma is None or d.weighting_gamma >= 0, f"{{diffusion.weighting_gamma}} must be at least 0, not {d.weighting_gamma}."),
        (d.weighting_gamma is None or d.weighting_gamma > 0 or d.weighting != "min-snr",
         "{{diffusion.weighting_gamma}} must be positive for min-snr (min(SNR, 0) would zero the loss)."),
        (d.vlb_weight > 0, f"{{diffusion.vlb_weight}} must be positive, not {d.vlb_weight}."),
        (d.timestep_sampler in TIMESTEP_SAMPLERS,
         f"unknown timestep sampler {d.timestep_sampler!r}; choose one of {', '.join(TIMESTEP_SAMPLERS)}."),
        (d.timesteps >= 2, f"{{diffusion.timesteps}} must be at least 2, not {d.timesteps}."),
        (t.steps >= 1, f"{{train.steps}} must be at least 1, not {t.steps}."),
        (t.batch_size >= 1, f"{{train.batch_size}} must be at least 1, not {t.batch_size}."),
        (t.lr > 0, f"{{train.lr}} must be positive, not {t.lr}."),
        (t.mixed_precision in ("auto", "no", "bf16", "fp16"), f"{{train.mixed_precision}} must be auto, no, bf16 or fp16, not {t.mixed_precision!r}."),
        (t.checkpoint_minutes >= 0, f"{{train.checkpoint_minutes}} must be at least 0, not {t.checkpoint_minutes:g}."),
        (t.log_with in TRACKERS, f"unknown {{train.log_with}} {t.log_with!r}; choose one of {', '.join(TRACKERS)}."),
        (t.max_minutes is None or t.max_minutes >= 0, f"{{train.max_minutes}} must be at least 0, not {t.max_minutes}."),
        (t.grid_sampler in SAMPLERS, f"unknown {{train.grid_sampler}} {t.grid_sampler!r}; choose one of {', '.join(SAMPLERS)}."),
        (0 <= t.ema_decay < 1, f"{{train.ema_decay}} must lie in [0, 1), not {t.ema_decay}."),
        (len(m.channels) >= 1 and all(c > 0 for c in m.channels), f"{{model.channels}} needs at least one positive width, not {m.channels}."),
        (0 <= m.dropout < 1, f"{{model.dropout}} must lie in [0, 1), not {m.dropout}."),
        (0 <= m.cond_drop_prob <= 1, f"{{model.cond_drop_prob}} must lie in [0, 1], not {m.cond_drop_prob}."),
        (d.super_resolution == 0 or d.super_resolution >= 2, f"{{diffusion.super_resolution}} must be 0 (off) or a factor of at least 2, not {d.super_resolution}."),
        (m.latent_dim >= 1, f"{{model.latent_dim}} must be at least 1, not {m.latent_dim}."),
    ]
    v, g, e = cfg.vae, cfg.gan, cfg.energy
    checks += [
        (cfg.family in ("ddpm", "classifier", "gan") or cfg.data.name != "toy2d",
         f"the {cfg.family} family models images with discrete levels, and toy2d is continuous points; use ddpm or gan for toy2d."),
        (v.beta > 0, f"{{vae.beta}} must be positive, not {v.beta}."),
        (v.decoder in ("logistic", "gaussian"), f"unknown {{vae.decoder}} {v.decoder!r}; choose logistic or gaussian."),
        (v.iwae_k >= 1, f"{{vae.iwae_k}} must be at least 1, not {v.iwae_k}."),
        (v.recon in ("mse", "mae"), f"unknown {{vae.recon}} {v.recon!r}; choose mse or mae."),
        (v.noise >= 0, f"{{vae.noise}} must be at least 0, not {v.noise}."),
        (g.loss in ("ns", "minimax", "wgan-gp"), f"unknown {{gan.loss}} {g.loss!r}; choose ns, minimax or wgan-gp."),
        (g.d_steps >= 0, f"{{gan.d_steps}} must be at least 0, not {g.d_steps}."),
        (g.gp_weight >= 0, f"{{gan.gp_weight}} must be at least 0, not {g.gp_weight}."),
        (g.d_lr is None or g.d_lr > 0, f"{{gan.d_lr}} must be positive, not {g.d_lr}."),
        (g.beta1 is None or 0 <= g.beta1 < 1, f"{{gan.beta1}} must lie in [0, 1), not {g.beta1}."),
        (g.monitor_every >= 0, f"{{gan.monitor_every}} must be at least 0, not {g.monitor_every}."),
        (len(e.hidden_units) >= 1 and all(h > 0 for h in e.hidden_units), f"{{energy.hidden_units}} needs positive sizes, not {e.hidden_units}."),
        (cfg.family != "rbm" or len(e.hidden_units) == 1,
         f"an RBM has one hidden layer, not {len(e.hidden_units)}; pass one size to {{energy.hidden_units}}, or train a deep belief net (genlab train dbn)."),
        (e.cd_k >= 1, f"{{energy.cd_k}} must be at least 1, not {e.cd_k}."),
        (e.gibbs_steps >= 1, f"{{energy.gibbs_steps}} must be at least 1, not {e.gibbs_steps}."),
        (e.ais_betas >= 2, f"{{energy.ais_betas}} must be at least 2, not {e.ais_betas}."),
        (e.ais_chains >= 1, f"{{energy.ais_chains}} must be at least 1, not {e.ais_chains}."),
        (cfg.text.embed_dim >= 1 and cfg.text.width >= 1 and cfg.text.layers >= 1 and cfg.text.heads >= 1,
         f"the text settings must be at least 1, not {cfg.text}."),
        (cfg.latent.z_channels >= 1 and len(cfg.latent.ae_channels) >= 1 and all(c > 0 for c in cfg.latent.ae_channels),
         f"{{latent.z_channels}} and {{latent.ae_channels}} must be positive, not {cfg.latent.z_channels} and {cfg.latent.ae_channels}."),
        (cfg.latent.text_encoder in ("joint", "clip"), f"unknown {{latent.text_encoder}} {cfg.latent.text_encoder!r}; choose joint or clip."),
        (cfg.latent.text_encoder != "clip" or bool(cfg.latent.clip_run),
         "{{latent.text_encoder}} clip conditions on the text tower of a CLIP run; add {{latent.clip_run}} RUN (genlab train clip)."),
        (cfg.latent.ae_steps >= 0, f"{{latent.ae_steps}} must be at least 0, not {cfg.latent.ae_steps}."),
        (cfg.latent.kl_weight >= 0, f"{{latent.kl_weight}} must be at least 0, not {cfg.latent.kl_weight}."),
        (0 <= cfg.latent.caption_drop < 1, f"{{latent.caption_drop}} must lie in [0, 1), not {cfg.latent.caption_drop}."),
        (cfg.text.width % cfg.text.heads == 0,
         f"{{text.heads}} {cfg.text.heads} must divide {{text.width}} {cfg.text.width}; pick a width that is a multiple of it."),
    ]
    c = cfg.cyclegan
    checks += [
        (c.loss in ("lsgan", "ns"), f"unknown {{cyclegan.loss}} {c.loss!r}; choose lsgan or ns."),
        (c.data_b != "toy2d", "{{cyclegan.data_b}} must be an image dataset, and toy2d is points; choose digits, mnist, cifar10, folder, ..."),
        (c.cycle_weight >= 0, f"{{cyclegan.cycle_weight}} must be at least 0, not {c.cycle_weight}."),
        (c.identity_weight >= 0, f"{{cyclegan.identity_weight}} must be at least 0, not {c.identity_weight}."),
        (c.pool_size >= 0, f"{{cyclegan.pool_size}} must be at least 0, not {c.pool_size}."),
        (c.res_blocks >= 0, f"{{cyclegan.res_blocks}} must be at least 0, not {c.res_blocks}."),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def from_dict(d: dict) -> RunConfig:
    """Rebuild a RunConfig from ``config.json`` contents."""
    return merge(RunConfig(), d)
