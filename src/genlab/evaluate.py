"""Drawing and measuring samples, and the likelihood: the library behind ``genlab sample`` and ``genlab eval``.

Usable from Python without the CLI::

    from genlab import RunDir
    from genlab.evaluate import SamplingSpec, draw_samples, measure_quality, measure_bpd
    cfg, family, _, step = RunDir("runs/digits").load()
    x, protocol = draw_samples(family, cfg, SamplingSpec(n=1000, sampler="ddim", steps=50))
    print(measure_quality(x, cfg)["fid"], measure_bpd(family, cfg, test_images)["bpd"])

Every figure comes with its protocol (sampler, steps, NFE counted with a forward hook, seed,
weights, precision, timing), which ``genlab eval`` appends to ``RUN/metrics.jsonl``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from genlab.config import RunConfig
from genlab.errors import ConfigError

PRECISIONS = ("no", "bf16")
QUALITY_AFTER_TRAINING = 1000  # samples a baseline family is measured with when its training ends


def is_diffusion(family) -> bool:
    """Whether ``family`` is sampled by the diffusion samplers (it declares the ``sampler`` option)."""
    return "sampler" in family.sample_options


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` is the first CUDA GPU if torch sees one, else the CPU; ValueError for anything unusable."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; choose auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device {name} is not supported; choose auto, cpu, cuda or cuda:N")
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise ValueError(f"device {name} needs a CUDA GPU that torch can see, and it sees {torch.cuda.device_count()}")
    return device


def default_precision(cfg: RunConfig, family) -> str:
    """Sampling's default precision: the run's training precision, but fp32 where bf16 is not native."""
    from genlab.precision import for_sampling

    return for_sampling(cfg.train.mixed_precision, next(family.parameters()).device)[0]


def autocast(precision: str, family):
    """bf16 autocast for sampling and evaluation on the family's device, or nothing (fp32)."""
    device = next(family.parameters()).device.type
    return torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16")


def load_split(cfg: RunConfig, split: str, root=None):
    """The run's dataset split (``root``: where its files are, if not where training found them)."""
    from genlab.data import load_dataset

    d = cfg.data
    return load_dataset(d.name, split, root=root if root is not None else d.root, **d.loader_options())


@dataclass(frozen=True)
class SamplingSpec:
    """How to draw ``n`` samples from a family. Options a family does not take stay at their defaults.

    ``sampler``/``steps``/``eta``/``spacing``: a diffusion sampler (None: ``default_sampler``);
    ``steps`` also sets the Gibbs steps of an RBM or DBN. ``labels`` [n], ``guidance`` and
    ``classifier`` (a noise-conditional classifier's network) condition a diffusion model or a
    conditional GAN; ``prompts`` (with ``guidance``) a text-conditioned latent diffusion model. ``conditioning`` is what to record about them in the protocol.
    Sample i depends only on (seed, i): ``batch_size`` never changes the images.
    """

    n: int = 64
    seed: int = 0
    batch_size: int = 256
    sampler: str | None = None
    steps: int | None = None
    eta: float = 0.0
    spacing: str = "uniform"
    labels: torch.Tensor | None = None
    guidance: float | None = None
    classifier: torch.nn.Module | None = None
    pixel_noise: bool = False
    prompts: tuple[str, ...] | None = None  # a text-conditioned model: one prompt for all samples, or one each
    weights: str = "ema"
    precision: str | None = None  # None: the run's training precision
    compiled: bool = False
    default_sampler: str = "ancestral"
    conditioning: dict[str, Any] = field(default_factory=dict)


def _steps(family, cfg: RunConfig, sampler: str, steps: int | None) -> int | None:
    """The number of steps a draw takes, for its protocol (None for a one-pass sampler)."""
    if is_diffusion(family):
        from genlab.diffusion.sampling import default_steps

        return steps if steps is not None else default_steps(sampler, cfg.diffusion.timesteps)
    if "steps" in family.sample_options:  # the length of an energy model's Gibbs chains
        return steps or family.default_steps
    return None


def draw_samples(family, cfg: RunConfig, spec: SamplingSpec, step: int = 0, progress: bool = False) -> tuple:
    """(``spec.n`` uint8 samples, their protocol: sampler settings, weights and the timed speed).

    Network evaluations per sample are counted with a forward hook on ``family.net``, not predicted
    from the settings.
    """
    if not family.sampler_names:
        raise ValueError(f"a {cfg.family} model does not draw samples")
    precision = spec.precision or default_precision(cfg, family)
    if is_diffusion(family):
        sampler = spec.sampler or spec.default_sampler
        how = {"sampler": sampler, "steps": spec.steps, "eta": spec.eta, "spacing": spec.spacing,
               "labels": spec.labels, "guidance": spec.guidance, "classifier": spec.classifier, "prompts": spec.prompts}
        how = {k: v for k, v in how.items() if k in family.sample_options}  # what this family's sample() takes
        from genlab.diffusion.sampling import SAMPLERS

        options = SAMPLERS[sampler].options if sampler in SAMPLERS else frozenset()
    else:
        sampler, how, options = family.sampler_names[0], {}, frozenset()
        if spec.labels is not None and "labels" in family.sample_options:
            how["labels"] = spec.labels
        if spec.pixel_noise and "pixel_noise" in family.sample_options:
            how["pixel_noise"] = True
    steps = _steps(family, cfg, sampler, spec.steps)
    if "steps" in family.sample_options and not is_diffusion(family):
        how["steps"] = steps
    rows = 0

    def count(module, inputs, output):
        nonlocal rows
        rows += inputs[0].shape[0]

    hook = family.net.register_forward_hook(count)
    try:
        t0 = time.perf_counter()
        with autocast(precision, family):
            x = family.sample(spec.n, seed=spec.seed, batch_size=spec.batch_size, progress=progress, **how)
        seconds = time.perf_counter() - t0
    finally:
        hook.remove()
    nfe = rows / spec.n
    return x, {"family": cfg.family, "sampler": sampler, "steps": steps, "eta": spec.eta if "eta" in options else None,
               "spacing": spec.spacing if "spacing" in options else None, "nfe": int(nfe) if nfe == int(nfe) else nfe,
               "seed": spec.seed, "weights": spec.weights, "step": step, "mixed_precision": precision,
               "sampling_seconds": seconds, "seconds_per_sample": seconds / spec.n, "batch_size": spec.batch_size,
               "threads": torch.get_num_threads(), "compiled": spec.compiled, **spec.conditioning}


def measure_quality(x: torch.Tensor, cfg: RunConfig, metrics=("fid", "kid", "pr"), labels: torch.Tensor | None = None,
                    ref_split: str = "train", data_dir=None, fnet=None, seed: int = 0, progress: bool = False) -> dict:
    """FID, KID, precision/recall (and class accuracy given ``labels``) of uint8 samples ``x``.

    Measured under the dataset's shipped feature network against the ``ref_split`` images; returns
    the figures with ``n``, ``ref_split``, ``ref_n``, ``feature_network`` and its ``feature_accuracy``.
    """
    from genlab.metrics.evaluate import evaluate_images, reference_features
    from genlab.metrics.features import load_feature_network

    fnet = fnet or load_feature_network(cfg.data.name)
    ref = load_split(cfg, ref_split, root=data_dir)
    real, _ = reference_features(fnet, ref.images, ref.labels, cfg.data.name, ref_split, progress=progress)
    out = evaluate_images(fnet, x, real, tuple(metrics), labels=labels, progress=progress, seed=seed)
    return {**out, "n": len(x), "ref_split": ref_split, "ref_n": len(real), "feature_accuracy": fnet.accuracy}


def measure_prompts(family, cfg: RunConfig, spec: SamplingSpec, n_per_group: int = 100, data_dir=None,
                    step: int = 0, progress: bool = False, clip=None) -> dict:
    """Text alignment of samples drawn for test captions (:mod:`genlab.metrics.text`), per group of prompts.

    One sample per caption of the first ``n_per_group`` held-out-combination, held-out-template and
    seen-template test captions, drawn with ``spec`` (its sampler, steps, guidance, seed); returns
    ``prompt_<group>_<measure>`` fields (class, thickness, size, position, all, n) and the timing;
    with a CLIP model ``clip`` also ``clip_score`` of the samples and ``clip_score_real`` of the test images.
    """
    from dataclasses import replace

    from genlab.data.captions import attribute_thresholds
    from genlab.metrics.features import load_feature_network
    from genlab.metrics.text import alignment, asked_attributes, clip_score, prompt_groups

    if "prompts" not in family.sample_options:
        raise ValueError(f"a {cfg.family} model takes no prompts")
    test = load_split(cfg, "test", root=data_dir)
    fnet = load_feature_network(cfg.data.name)
    thresholds = attribute_thresholds(cfg.data.name, root=data_dir if data_dir is not None else cfg.data.root)
    out: dict[str, Any] = {"prompt_n_per_group": n_per_group}
    seconds = 0.0
    for group, idx in prompt_groups(test, n_per_group).items():
        if not len(idx):
            continue
        prompts = tuple(test.captions[int(i)] for i in idx)
        x, protocol = draw_samples(family, cfg, replace(spec, n=len(idx), prompts=prompts), step, progress)
        seconds += protocol["sampling_seconds"]
        asked = asked_attributes(test.template[idx], {a: v[idx] for a, v in test.attributes.items()})
        for k, v in alignment(x, test.labels[idx], asked, fnet, thresholds).items():
            out[f"prompt_{group}_{k}"] = v
        if clip is not None:
            out[f"prompt_{group}_clip_score"] = clip_score(clip, x, prompts).mean().item()
            out[f"prompt_{group}_clip_score_real"] = clip_score(clip, test.images[idx], prompts).mean().item()
        out.update({k: protocol[k] for k in ("sampler", "steps", "nfe", "seed", "weights", "mixed_precision")})
    out["prompt_guidance"] = spec.guidance or 0.0
    out["prompt_seconds"] = seconds
    return out


def measure_bpd(family, cfg: RunConfig, images: torch.Tensor, progress: bool = False, batch_size: int | None = None,
                seed: int = 0, precision: str | None = None, **options) -> dict:
    """``family.bits_per_dim(images, ...)``, timed, under ``precision`` (default: the run's).

    A diffusion model's bound fills about 512 network inputs per call (``max_batch``) and records
    its T; ``options`` go to ``bits_per_dim`` (a diffusion model's ``t_samples``).
    """
    if not family.has_likelihood:
        raise ValueError(f"a {cfg.family} model has no likelihood to measure")
    t0 = time.perf_counter()
    precision = precision or default_precision(cfg, family)
    diffusion = is_diffusion(family)
    if diffusion:
        options["max_batch"] = 512
        batch_size = batch_size or max(1, min(len(images), 512))
    with autocast(precision, family):
        result = family.bits_per_dim(images, seed=seed, batch_size=batch_size, progress=progress, **options)
    result.update(seconds=time.perf_counter() - t0, mixed_precision=precision)
    if diffusion:
        result["timesteps"] = cfg.diffusion.timesteps
    return result


def measure_latent_bpd(family, cfg: RunConfig, images: torch.Tensor, fit_images: torch.Tensor, seed: int = 0,
                       batch_size: int | None = None, t_samples: int | None = None, precision: str | None = None,
                       progress: bool = False) -> dict:
    """A latent diffusion model's bound, latent bound + decoder (:mod:`genlab.latent.likelihood`), timed.

    The decoder's Gaussian scale is fitted on ``fit_images`` (training images); the bound is measured on ``images``.
    """
    if not callable(getattr(family, "latent_bound", None)):
        raise ValueError(f"a {cfg.family} model is not a latent diffusion model; its likelihood, if any, is bits/dim (bpd)")
    t0 = time.perf_counter()
    precision = precision or default_precision(cfg, family)
    with autocast(precision, family):
        sigma = family.decoder_sigma(fit_images, seed=seed)
        result = family.latent_bound(images, sigma, seed=seed, batch_size=batch_size or max(1, min(len(images), 64)),
                                     t_samples=t_samples, progress=progress)
    result.update(seconds=time.perf_counter() - t0, mixed_precision=precision, timesteps=cfg.diffusion.timesteps,
                  decoder_fit_n=len(fit_images))
    return result


def measure_bpd_ode(family, images: torch.Tensor, seed: int = 0, batch_size: int = 128, tol: float = 1e-5,
                    progress: bool = False, split: str = "test") -> dict:
    """The probability-flow ODE's bits/dim (always in float32: the adaptive RK45 solver needs it)."""
    t0 = time.perf_counter()
    r = family.ode_bits_per_dim(images, seed=seed, batch_size=batch_size, rtol=tol, atol=tol, progress=progress)
    return {"bpd_ode": r["bpd"], "bpd_ode_se": r["bpd_se"], "bpd_ode_n": r["n"], "bpd_ode_split": split,
            "ode_nfe": r["nfe"], "ode_solver": "RK45", "ode_rtol": tol, "ode_atol": tol,
            "ode_trace": "hutchinson-rademacher", "ode_dequantization": "uniform",
            "bpd_ode_seconds": time.perf_counter() - t0}


def describe_bpd(r: dict) -> str:
    """One line for a baseline family's likelihood: what bound or estimate it is."""
    if r.get("binarised"):
        return (f"bits/dim {r['bpd']:.4f} +- {r['bpd_se']:.4f} on binarised images (-log p(v) = {r['nll_nats']:.2f} "
                f"nats per image; log Z = {r['log_z']:.2f} +- {r['log_z_se']:.2f} by AIS, {r['ais_chains']} chains x "
                f"{r['ais_betas']} temperatures)")
    if "iwae_k" in r:
        return (f"bits/dim {r['bpd']:.4f} +- {r['bpd_se']:.4f} (IWAE bound, k = {r['iwae_k']}; ELBO {r['elbo_bpd']:.4f} = "
                f"reconstruction {r['recon_bpd']:.4f} + KL {r['kl_bpd']:.4f})")
    return f"bits/dim {r['bpd']:.4f}"


# ----- the samples file (genlab sample --npz, genlab eval --samples) ---------------------------


def write_samples_npz(path: str | Path, x: torch.Tensor, levels: int, protocol: dict, labels=None) -> None:
    """uint8 samples, their levels, protocol (JSON) and asked-for labels, written atomically."""
    import numpy as np

    from genlab.io import atomic_write

    extra = {} if labels is None else {"labels": labels.numpy().astype(np.int64)}

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, samples=x.numpy(), levels=np.array(levels), protocol=np.array(json.dumps(protocol)), **extra)

    atomic_write(Path(path), write)


def read_samples_npz(path: str | Path, cfg: RunConfig) -> tuple:
    """(uint8 samples, labels or None, protocol dict) from a samples file, checked against the run."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as z:
            samples = z["samples"]
            levels = int(z["levels"]) if "levels" in z else None
            labels = torch.from_numpy(z["labels"].astype(np.int64)) if "labels" in z else None
            protocol = json.loads(str(z["protocol"])) if "protocol" in z else {}
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist; write samples with genlab sample RUN --npz {path}.") from None
    except (OSError, ValueError, KeyError) as e:
        raise ConfigError(f"{path} is not a samples .npz ({e}); write one with genlab sample RUN --npz FILE.") from None
    shape = tuple(cfg.data.shape)
    if samples.dtype != np.uint8 or samples.ndim != 4 or tuple(samples.shape[1:]) != shape:
        raise ConfigError(f"{path} holds {samples.dtype} samples of shape {list(samples.shape[1:])}, but the run makes uint8 "
                          f"images of shape {list(shape)}; pass samples of this run's model.")
    if levels is not None and levels != cfg.data.levels:
        raise ConfigError(f"{path} holds samples with {levels} levels but {cfg.data.name} has {cfg.data.levels}; pass samples of this run's model.")
    return torch.from_numpy(samples), labels, protocol
