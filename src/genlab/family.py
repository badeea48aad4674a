"""The family contract: what every generative family declares and provides.

A family is an ``nn.Module`` that owns its objective and its sampling and is handed its
networks (DESIGN.md, "Interfaces"). It is one module plus its registration:

    @register_family("vae")
    class VAE(nn.Module):
        config_section = "vae"        # the RunConfig section of its own settings (None: none)
        has_likelihood = True         # bits_per_dim(images, seed=, batch_size=, progress=) -> {"bpd", ...}
        sampler_names = ("decoder",)  # how it draws a sample (a diffusion family: the sampler registry)
        ...

and one line in :data:`BUILTIN` (name -> module), so that ``genlab train vae`` finds the
module without importing every family at start-up (a package outside genlab registers
through the ``genlab.families`` entry-point group instead).

What the rest of genlab relies on (the Trainer, :mod:`genlab.evaluate`, the CLI) is
:class:`Family` below: declared capabilities instead of ``hasattr`` probes, so that a new
family is never a new branch in the CLI. ``tests/test_family_contract.py`` holds every
registered family to it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib import metadata
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch

from genlab.errors import ConfigError
from genlab.progress import progress_bar

# name -> the module whose import registers it, in the order ``genlab train --help`` lists them
BUILTIN: dict[str, str] = {
    "ddpm": "genlab.diffusion.model",
    "classifier": "genlab.diffusion.guidance",
    "ae": "genlab.vae.autoencoder",
    "vae": "genlab.vae.model",
    "gan": "genlab.gan.model",
    "cyclegan": "genlab.gan.cyclegan.model",
    "rbm": "genlab.energy.family",
    "dbn": "genlab.energy.family",
    "clip": "genlab.clip.model",
    "ldm": "genlab.latent.model",
}

# the options a family's ``sample`` may take beyond (n, seed, batch_size, progress); the CLI
# refuses a flag whose option the run's family does not declare
SAMPLE_OPTIONS = ("sampler", "steps", "eta", "spacing", "labels", "guidance", "classifier", "pixel_noise", "prompts",
                  "callback")
# "callback": ``callback(step)`` after each sampler step of each batch, ``step`` a dict with "i" (the step's
# index), "t" (its timestep), "start" (the batch's first sample) and "x", "pred_x0": x_t and the predicted
# x_0 of the batch as uint8 images (pred_x0 None where the sampler predicts none: Langevin); the demo's path


@runtime_checkable
class Family(Protocol):
    """What a registered family provides. Class attributes are its declared capabilities."""

    name: ClassVar[str]  # set by @register_family
    config_section: ClassVar[str | None]  # its own RunConfig section ("vae", "gan", "energy", "diffusion") or None
    has_likelihood: ClassVar[bool]  # bits_per_dim(images, seed=, batch_size=, progress=) -> dict with "bpd", "n"
    sampler_names: ClassVar[tuple[str, ...]]  # how a sample is drawn; () for a family that draws none, measured
    # instead by test_metrics(test_dataset, limit=, seed=) -> dict and describe_test_metrics(result) -> str, and
    # telling what its run is for with how_to_use(run_dir) -> str
    sample_options: ClassVar[frozenset[str]]  # which of SAMPLE_OPTIONS its sample() takes; "steps" without
    # "sampler" (a Markov chain's length, as an RBM's Gibbs steps) comes with a ``default_steps`` attribute
    custom_step: ClassVar[bool]  # optimizer_groups() and train_step(...) instead of one loss
    shardable: ClassVar[bool]  # forward(..., shard=(rows, B)): trains in several processes
    latent: ClassVar[bool]  # reconstruct(images) and interpolate(a, b, n, method=): an encoder and a decoder
    quality_after_training: ClassVar[bool]  # end training with FID/KID/PR of 1000 samples (cheap samplers)
    coverage_monitor: ClassVar[bool]  # log recall and class coverage during training, every ``monitor_every`` steps
    uses_text: ClassVar[bool]  # trains on captioned data: its labels are the captions' token ids [N, L]
    presets: ClassVar[dict[str, dict[str, dict[str, Any]]]]  # recommended settings: {"*" or dataset: {section: {...}}}

    uses_labels: bool  # the Trainer passes the data's labels to forward
    preview_count: int  # samples in a progress grid
    net: torch.nn.Module  # the module one network evaluation runs (genlab eval counts calls of it)

    @classmethod
    def from_config(cls, cfg: Any) -> Family: ...

    def forward(self, batch: torch.Tensor, generator: torch.Generator, labels: torch.Tensor | None = None) -> dict: ...

    def sample(self, n: int, seed: int = 0, batch_size: int = 256, progress: bool = False, **options: Any) -> torch.Tensor: ...

    @classmethod
    def describe(cls, cfg: Any) -> str:
        """What sets a run of this family apart, from its config alone: 'vae beta=4', 'rbm pcd-1' ..."""
        ...


# defaults of the declared capabilities: a family states only where it differs
DEFAULTS: dict[str, Any] = {
    "config_section": None, "has_likelihood": False, "sampler_names": (), "sample_options": frozenset(),
    "custom_step": False, "shardable": False, "latent": False, "quality_after_training": False,
    "coverage_monitor": False, "uses_text": False, "presets": {},
}
_REQUIRED = ("from_config", "forward", "sample", "describe")
_REGISTRY: dict[str, type] = {}


def register_family(name: str) -> Callable[[type], type]:
    """Class decorator: register ``cls`` as family ``name`` (``genlab train NAME``), its capabilities checked."""

    def wrap(cls: type) -> type:
        missing = [m for m in _REQUIRED if not callable(getattr(cls, m, None))]
        if missing:
            raise TypeError(f"family {name!r} ({cls.__qualname__}) lacks {', '.join(missing)}")
        for attr, default in DEFAULTS.items():
            if attr not in _declared(cls):
                setattr(cls, attr, default)
        bad = set(cls.sample_options) - set(SAMPLE_OPTIONS)  # type: ignore[attr-defined]
        if bad:
            raise TypeError(f"family {name!r} declares unknown sample options {sorted(bad)}; known: {SAMPLE_OPTIONS}")
        if cls.custom_step and not all(callable(getattr(cls, m, None)) for m in ("optimizer_groups", "train_step")):  # type: ignore[attr-defined]
            raise TypeError(f"family {name!r} declares custom_step but lacks optimizer_groups or train_step")
        if cls.has_likelihood and not callable(getattr(cls, "bits_per_dim", None)):  # type: ignore[attr-defined]
            raise TypeError(f"family {name!r} declares has_likelihood but lacks bits_per_dim")
        if not cls.sampler_names and not all(callable(getattr(cls, m, None)) for m in ("test_metrics", "describe_test_metrics", "how_to_use")):  # type: ignore[attr-defined]
            raise TypeError(f"family {name!r} draws no samples, so it needs test_metrics, describe_test_metrics and how_to_use")
        if cls.latent and not all(callable(getattr(cls, m, None)) for m in ("reconstruct", "interpolate")):  # type: ignore[attr-defined]
            raise TypeError(f"family {name!r} declares latent but lacks reconstruct or interpolate")
        options = cls.sample_options  # type: ignore[attr-defined]
        if "steps" in options and "sampler" not in options and not hasattr(cls, "default_steps"):
            raise TypeError(f"family {name!r} takes sampling steps but has no default_steps")
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise TypeError(f"family {name!r} is registered twice ({_REGISTRY[name].__qualname__}, {cls.__qualname__})")
        cls.name = name  # type: ignore[attr-defined]
        _REGISTRY[name] = cls
        return cls

    return wrap


def _declared(cls: type) -> set[str]:
    """Attributes set on ``cls`` or a base below ``nn.Module`` (an inherited capability counts)."""
    out: set[str] = set()
    for base in cls.__mro__:
        if base in (torch.nn.Module, object):
            continue
        out |= set(vars(base))
    return out


def _plugin_modules() -> dict[str, str]:
    """Families of other packages: the ``genlab.families`` entry points (name = module)."""
    try:
        return {ep.name: ep.value for ep in metadata.entry_points(group="genlab.families")}
    except Exception:  # noqa: BLE001 - a broken third-party install must not break genlab
        return {}


def family_names() -> tuple[str, ...]:
    """Every family ``genlab train`` knows, without importing any of them."""
    return tuple(dict.fromkeys([*BUILTIN, *_plugin_modules(), *_REGISTRY]))


def family_class(name: str) -> Any:
    """The class registered as ``name``, importing its module on first use.

    Typed ``Any``: a registered class is an ``nn.Module`` subclass satisfying :class:`Family`
    (its capabilities checked by :func:`register_family`), which ``type`` cannot say.
    """
    if name not in _REGISTRY:
        module = BUILTIN.get(name) or _plugin_modules().get(name)
        if module is None:
            raise ConfigError(f"unknown model family {name!r}; this genlab knows: {', '.join(family_names())}.")
        importlib.import_module(module)
        if name not in _REGISTRY:
            raise ConfigError(f"module {module} does not register the family {name!r}; reinstall genlab.")
    return _REGISTRY[name]


def batched_draw(n: int, batch_size: int, draw: Callable[[int, int], torch.Tensor], progress: bool = False,
                 desc: str = "sampling", shape: tuple[int, ...] = (), dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``torch.cat([draw(start, b) for each batch])`` on the CPU: the one loop every family samples with.

    ``draw(start, b)`` returns the samples ``start .. start+b-1``; a family that gives sample i
    the generator of (seed, i) (:func:`genlab.rng.per_sample_generators`) thereby returns the
    same images whatever ``batch_size``. Batches are drawn in order, so a generator shared by
    all of them (the draws of a likelihood estimate) sees the same stream as one loop would.
    ``n`` = 0 draws nothing and returns ``torch.zeros(0, *shape, dtype=dtype)``, what the
    batches would have been (``shape``: one sample's). ``progress`` counts images.
    """
    if n < 0 or batch_size < 1:
        raise ValueError(f"batched_draw needs n >= 0 and batch_size >= 1, not n={n}, batch_size={batch_size}")
    if n == 0:
        return torch.zeros(0, *shape, dtype=dtype)
    bar = progress_bar(total=n, desc=desc, unit="img", leave=False) if progress else None
    out = []
    try:
        for start in range(0, n, batch_size):
            b = min(batch_size, n - start)
            out.append(draw(start, b).cpu())
            if bar:
                bar.update(b)
    finally:
        if bar:
            bar.close()
    return torch.cat(out)


def step_images(callback: Callable[[dict], None] | None, start: int,
                to_images: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[dict], None] | None:
    """A sampler callback that hands ``callback`` its step with x_t and pred_x0 as images (``to_images``) and
    the batch's first sample index ``start`` (the "callback" sample option); None if ``callback`` is."""
    if callback is None:
        return None

    def hook(step: dict) -> None:
        x0 = step.get("pred_x0")  # None where a sampler predicts none (Langevin dynamics follows the score)
        callback({"i": step["i"], "t": step["t"], "start": start, "x": to_images(step["x"]).cpu(),
                  "pred_x0": None if x0 is None else to_images(x0).cpu()})

    return hook
