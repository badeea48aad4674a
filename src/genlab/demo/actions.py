"""What the browser demo does, without the browser: :class:`Demo` over a set of runs (``genlab serve``).

Every action takes plain values (names, numbers, uint8 arrays) and returns an image as an
``H x W x 3`` uint8 array with a one-line account of what was done (network evaluations counted
with a forward hook, wall time). What a run can do is read from its family's declared
capabilities (:mod:`genlab.family`) and the sampler registry, never from a list of family names.
A user's mistake is a :class:`~genlab.errors.GenlabError` in one sentence; the page shows it.

The page itself (Gradio) is :mod:`genlab.demo.app`; this module imports no web library, so it is
tested directly as well as through the page.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genlab.errors import ConfigError, GenlabError, RunError, render

Progress = Callable[[float, str], None]
RESAMPLE_DEMO = 3  # RePaint's r in the page: a third of the paper's 10, for seconds rather than a minute
MAX_IMAGES = 64  # samples one click may ask for (the page is for looking, genlab sample for volume)


@dataclass
class Loaded:
    path: Path
    cfg: Any
    family: Any
    step: int


def to_rgb_grid(x: torch.Tensor, levels: int, nrow: int | None = None, scale: int = 0) -> np.ndarray:
    """uint8 images ``[N, C, H, W]`` (values 0..levels-1) as one ``H x W x 3`` uint8 grid, upscaled (nearest)
    so that small images are visible (``scale`` 0: to about 256 pixels a tile side, at most 8x)."""
    x = x.detach().cpu().float()
    if levels and levels != 256:
        x = x * (255.0 / (levels - 1))
    x = x.round().clamp(0, 255).to(torch.uint8)
    n, c, h, w = x.shape
    if c == 1:
        x = x.expand(n, 3, h, w)
    nrow = nrow or min(n, 8)
    rows = (n + nrow - 1) // nrow
    pad = 2
    grid = torch.full((3, rows * (h + pad) + pad, nrow * (w + pad) + pad), 255, dtype=torch.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        grid[:, pad + r * (h + pad): pad + r * (h + pad) + h, pad + col * (w + pad): pad + col * (w + pad) + w] = x[i]
    s = scale or max(1, min(8, 256 // max(h, w)))
    return grid.repeat_interleave(s, 1).repeat_interleave(s, 2).permute(1, 2, 0).contiguous().numpy()


def _message(e: GenlabError) -> str:
    from genlab.config import FLAGS

    return e.render(FLAGS)


class Demo:
    """The runs a demo serves, loaded once each (on first use), and what can be done with them."""

    def __init__(self, runs: list[str | Path], device: str = "cpu"):
        from genlab.run import RunDir

        if not runs:
            raise ConfigError("give at least one run directory (or exported folder) to serve.")
        self.device = device
        self.paths: dict[str, Path] = {}
        for run in map(Path, runs):
            RunDir(run).read_config()  # a folder that is not a run is said now, in one sentence
            self.paths[self.label(run)] = run
        self._loaded: dict[str, Loaded] = {}
        self._lock = threading.Lock()  # one model call at a time: two cores, and torch's threads are shared

    @staticmethod
    def label(path: Path) -> str:
        return str(path)

    @property
    def labels(self) -> list[str]:
        return list(self.paths)

    def load(self, label: str) -> Loaded:
        """The run ``label`` (one of :attr:`labels`, or a path typed into the page), loaded once."""
        from genlab.run import RunDir

        if label not in self.paths:
            path = Path(str(label).strip())
            if not str(label).strip():
                raise ConfigError("pick a run first.")
            RunDir(path).read_config()
            self.paths[label] = path
        if label not in self._loaded:
            cfg, family, _, step = RunDir(self.paths[label]).load(device=self.device)
            self._loaded[label] = Loaded(self.paths[label], cfg, family, step)
        return self._loaded[label]

    # ----- what a run offers ---------------------------------------------------------------
    def options(self, label: str) -> dict[str, Any]:
        """What the page shows for this run: its description and which controls apply."""
        from genlab.diffusion.sampling import SAMPLERS, default_steps
        from genlab.evaluate import is_diffusion

        run = self.load(label)
        fam, cfg = run.family, run.cfg
        diffusion = is_diffusion(fam)
        samplers = list(SAMPLERS) if diffusion else list(fam.sampler_names)
        default = "ddim" if diffusion else (samplers[0] if samplers else None)
        steps = default_steps("ddim", cfg.diffusion.timesteps) if diffusion else getattr(fam, "default_steps", None)
        translating = callable(getattr(fam, "translate", None))
        return {
            "family": cfg.family, "describe": fam.describe(cfg), "step": run.step, "data": cfg.data.name,
            "shape": tuple(cfg.data.shape), "samples": bool(fam.sampler_names) and not translating
            and not cfg.diffusion.super_resolution, "diffusion": diffusion, "samplers": samplers,
            "default_sampler": default, "default_steps": steps,
            "steps": diffusion or "steps" in fam.sample_options,
            "classes": int(getattr(fam, "num_classes", 0) or 0) if "labels" in fam.sample_options else 0,
            "guidance": "guidance" in fam.sample_options, "prompts": "prompts" in fam.sample_options,
            "path": "callback" in fam.sample_options and not cfg.diffusion.super_resolution,
            "inpaint": diffusion and "labels" in fam.sample_options and not cfg.diffusion.super_resolution,
            "upscale": bool(cfg.diffusion.super_resolution), "translate": translating,
        }

    def summary(self, label: str) -> str:
        o = self.options(label)
        can = [k for k in ("samples", "path", "inpaint", "upscale", "translate") if o[k]]
        extra = f"; {o['classes']} classes" if o["classes"] else "; text prompts" if o["prompts"] else ""
        return (f"**{label}**: {o['describe']} on {o['data']} ({'x'.join(map(str, o['shape']))}), step {o['step']}"
                f"{extra}. Here: {', '.join(can) or 'nothing to draw (this family draws no images)'}.")

    # ----- sampling ------------------------------------------------------------------------
    def _spec(self, run: Loaded, o: dict[str, Any], n: int, sampler: str | None, steps: int | None, seed: int,
              guidance: float, class_: str | None, prompt: str | None):
        """The SamplingSpec of a page's settings for ``run`` (its :meth:`options` ``o``), checked."""
        from genlab.evaluate import SamplingSpec

        fam = run.family
        if not 1 <= n <= MAX_IMAGES:
            raise ConfigError(f"ask for 1 to {MAX_IMAGES} images, not {n}.")
        if steps is not None and not 1 <= steps <= 10_000:
            raise ConfigError(f"steps must lie in 1..10000, not {steps}.")
        prompt = (prompt or "").strip() or None
        if prompt and "prompts" not in fam.sample_options:
            raise ConfigError(f"this {run.cfg.family} run is not text-conditioned, so it takes no prompt; clear the prompt.")
        labels = None
        if class_ not in (None, "", "all"):
            if not o["classes"]:
                raise ConfigError(f"this {run.cfg.family} run is not class-conditional; set the class to 'all'.")
            try:
                c = int(str(class_))
            except ValueError:
                raise ConfigError(f"the class must be an integer or 'all', not {class_!r}.") from None
            labels = torch.full((n,), c, dtype=torch.long)
        if guidance and "guidance" not in fam.sample_options:
            raise ConfigError(f"this {run.cfg.family} run has no guidance; set the guidance to 0.")
        if guidance and "prompts" not in fam.sample_options and not getattr(fam, "num_classes", 0):
            raise ConfigError("this run is unconditional, so there is nothing to guide towards; set the guidance to 0.")
        if guidance < 0:
            raise ConfigError(f"the guidance must be at least 0, not {guidance:g}.")
        if sampler is not None and "sampler" not in fam.sample_options:
            sampler = None  # a one-pass family: its own way of drawing
        return SamplingSpec(n=n, seed=int(seed), sampler=sampler, steps=steps if o["steps"] else None,
                            labels=labels, guidance=(guidance or None) if o["guidance"] else None,
                            prompts=(prompt,) if prompt else None, default_sampler="ddim")

    def generate(self, label: str, sampler: str | None = "ddim", steps: int | None = None, seed: int = 0, n: int = 16,
                 guidance: float = 0.0, class_: str | None = "all", prompt: str | None = None,
                 progress: Progress | None = None) -> tuple[np.ndarray, str]:
        """``n`` samples of the run as one grid, and what it cost (network evaluations per sample, seconds)."""
        from genlab.diffusion.sampling import check_sampler_options
        from genlab.evaluate import draw_samples

        run = self.load(label)
        o = self.options(label)
        if not o["samples"]:
            what = ("translates images: use the Translate tab" if o["translate"] else
                    "upscales images: use the Super-resolution tab" if o["upscale"] else "draws no images")
            raise ConfigError(f"this {run.cfg.family} run {what}.")
        if o["diffusion"]:
            try:
                check_sampler_options(sampler or "ddim", steps)
            except ValueError as e:
                raise ConfigError(f"{e}.") from None
        spec = self._spec(run, o, int(n), sampler, steps, seed, float(guidance or 0), class_, prompt)
        with self._lock:
            x, protocol = draw_samples(run.family, run.cfg, spec, run.step)
        steps_said = f", {protocol['steps']} steps" if protocol["steps"] is not None else ""
        return to_rgb_grid(x, run.cfg.data.levels), (
            f"{len(x)} samples, {protocol['sampler']}{steps_said}: {protocol['nfe']:g} network evaluations each, "
            f"{protocol['sampling_seconds']:.2f} s ({protocol['seconds_per_sample'] * 1e3:.0f} ms per sample), seed {spec.seed}")

    def denoising_path(self, label: str, sampler: str = "ddim", steps: int | None = 20, seed: int = 0, every: int = 0,
                       n: int = 4, guidance: float = 0.0, class_: str | None = "all", prompt: str | None = None,
                       progress: Progress | None = None) -> tuple[np.ndarray, str]:
        """x_t (odd rows) above the predicted x_0 (even rows) every ``every`` steps (0: about 8 columns), for
        ``n`` samples; the last column is the sample."""
        run = self.load(label)
        o = self.options(label)
        if not o["path"]:
            raise ConfigError(f"this {run.cfg.family} run has no denoising path; pick a diffusion run.")
        spec = self._spec(run, o, int(n), sampler, steps, seed, float(guidance or 0), class_, prompt)
        seen: list[dict] = []

        def keep(step: dict) -> None:
            seen.append(step)
            if progress:
                progress(len(seen) / max(1, total), f"step {len(seen)}")

        from genlab.diffusion.sampling import default_steps

        total = steps or default_steps(sampler, run.cfg.diffusion.timesteps)
        how: dict[str, Any] = {"sampler": sampler, "steps": steps, "callback": keep}
        if "prompts" in run.family.sample_options:
            how.update(prompts=spec.prompts, guidance=spec.guidance)
        else:
            how.update(labels=spec.labels, guidance=spec.guidance)
        with self._lock:
            t0 = time.perf_counter()
            x = run.family.sample(spec.n, seed=spec.seed, batch_size=spec.n, **how)
            seconds = time.perf_counter() - t0
        k = every or max(1, len(seen) // 8)
        shown = [s for i, s in enumerate(seen) if (len(seen) - 1 - i) % k == 0]
        cols = len(shown)
        tiles = []
        for i in range(spec.n):
            tiles += [s["x"][i] for s in shown]
            tiles += [(s["pred_x0"] if s["pred_x0"] is not None else s["x"])[i] for s in shown]
        grid = to_rgb_grid(torch.stack(tiles), run.cfg.data.levels, nrow=cols)
        ts = ", ".join(str(int(s["t"])) for s in shown)
        return grid, (f"{sampler}, {len(seen)} steps in {seconds:.2f} s for {len(x)} samples; per sample two rows, x_t above "
                      f"the predicted x_0, at t = {ts}")

    def compare(self, label: str, samplers: list[str], nfe: int = 20, seed: int = 0, n: int = 8,
                progress: Progress | None = None) -> list[tuple[np.ndarray, str]]:
        """Each sampler at (at most) ``nfe`` network evaluations per sample, from the same x_T (the same seed)."""
        from genlab.diffusion.sampling import SAMPLERS
        from genlab.evaluate import SamplingSpec, draw_samples

        run = self.load(label)
        if not self.options(label)["diffusion"]:
            raise ConfigError(f"this {run.cfg.family} run has no samplers to compare; pick a diffusion run.")
        if not samplers:
            raise ConfigError("tick at least one sampler to compare.")
        if not 1 <= int(nfe) <= 2000:
            raise ConfigError(f"the network evaluations must lie in 1..2000, not {nfe}.")
        out = []
        for j, name in enumerate(samplers):
            if name not in SAMPLERS:
                raise ConfigError(f"unknown sampler {name!r}; choose among {', '.join(SAMPLERS)}.")
            spec_ = SAMPLERS[name]
            steps = max((s for s in range(1, int(nfe) + 1) if spec_.nfe(s) <= int(nfe)), default=1)
            if progress:
                progress(j / len(samplers), name)
            with self._lock:
                x, protocol = draw_samples(run.family, run.cfg, SamplingSpec(n=int(n), seed=int(seed), sampler=name, steps=steps),
                                           run.step)
            out.append((to_rgb_grid(x, run.cfg.data.levels), f"{name}: {steps} steps, {protocol['nfe']:g} NFE, "
                        f"{protocol['sampling_seconds']:.2f} s"))
        return out

    # ----- editing ---------------------------------------------------------------------------
    def test_image(self, label: str, index: int) -> np.ndarray:
        """Test image ``index`` of the run's data, as the page shows it."""
        run = self.load(label)
        return to_rgb_grid(self._test(run, index)[None], run.cfg.data.levels, scale=1)[2:-2, 2:-2]

    def _test(self, run: Loaded, index: int) -> torch.Tensor:
        from genlab.evaluate import load_split

        ds = load_split(run.cfg, "test")
        if not 0 <= int(index) < len(ds):
            raise ConfigError(f"test image {index} does not exist; choose an index in 0..{len(ds) - 1}.")
        return ds.images[int(index)]

    def _image(self, run: Loaded, image: np.ndarray | None, index: int | None, size: tuple[int, int] | None = None) -> torch.Tensor:
        """A page image (``H x W [x 3|4]`` uint8) or test image ``index`` as the run's ``[C, H, W]`` uint8."""
        C, H, W = run.cfg.data.shape
        levels = run.cfg.data.levels
        if image is None:
            if index is None:
                raise ConfigError("upload or draw an image, or give a test image index.")
            return self._test(run, index)
        from PIL import Image

        a = np.asarray(image)
        if a.ndim == 3 and a.shape[2] == 4:
            a = a[..., :3]
        pil = Image.fromarray(a.astype(np.uint8))
        pil = pil.convert("L" if C == 1 else "RGB").resize(((size or (H, W))[1], (size or (H, W))[0]), Image.Resampling.BILINEAR)
        t = torch.from_numpy(np.asarray(pil).copy())
        t = t[None] if C == 1 else t.permute(2, 0, 1)
        return (t.float() * (levels - 1) / 255).round().to(torch.uint8) if levels != 256 else t

    def inpaint(self, label: str, image: np.ndarray | None, mask: np.ndarray | None, index: int | None = 0, seed: int = 0,
                steps: int = 50, n: int = 3, resample: int = RESAMPLE_DEMO,
                progress: Progress | None = None) -> tuple[np.ndarray, str]:
        """RePaint: keep the pixels outside ``mask`` (``H x W``, nonzero = to generate, drawn on the canvas) and
        generate the rest; the grid is input, mask, masked input, then ``n`` completions."""
        from genlab.diffusion.inpaint import JUMP_LENGTH, inpaint_images, repaint_network_calls

        run = self.load(label)
        if not self.options(label)["inpaint"]:
            raise ConfigError(f"this {run.cfg.family} run cannot inpaint; pick an unconditional or class-conditional pixel diffusion run.")
        C, H, W = run.cfg.data.shape
        x = self._image(run, image, index)[None]
        if mask is None or not np.asarray(mask).any():
            raise ConfigError("draw the region to generate on the image first (the mask is empty).")
        from PIL import Image

        m = np.asarray(mask)
        m = m.max(axis=2) if m.ndim == 3 else m
        m = np.asarray(Image.fromarray((m > 0).astype(np.uint8) * 255).resize((W, H), Image.Resampling.NEAREST)) > 0
        known = torch.from_numpy(~m).float()[None, None]
        if not 1 <= int(steps) <= run.cfg.diffusion.timesteps:
            raise ConfigError(f"steps must lie in 1..{run.cfg.diffusion.timesteps}, not {steps}.")
        with self._lock:
            t0 = time.perf_counter()
            out = inpaint_images(run.family, x, known, seed=int(seed), n=int(n), steps=int(steps), resample=resample,
                                 jump_length=min(JUMP_LENGTH, int(steps)))
            seconds = time.perf_counter() - t0
        levels = run.cfg.data.levels
        kb = known.expand(1, C, H, W).bool()
        masked = torch.where(kb, x, torch.full_like(x, (levels - 1) // 2))
        grid = to_rgb_grid(torch.cat([x, kb.to(torch.uint8) * (levels - 1), masked, out]), levels, nrow=3 + int(n))
        calls = repaint_network_calls(int(steps), min(JUMP_LENGTH, int(steps)), resample)
        return grid, (f"RePaint, {steps} steps, resample {resample}: {calls} network evaluations per completion, "
                      f"{seconds:.2f} s; input, mask (white = kept), masked input, {n} completions")

    def upscale(self, label: str, image: np.ndarray | None = None, index: int | None = 0, seed: int = 0,
                sampler: str = "ddim", steps: int | None = 50, progress: Progress | None = None) -> tuple[np.ndarray, str]:
        """Super-resolution: the low-resolution input (nearest), bicubic, the model, and the truth for a test image."""
        from genlab.diffusion.superres import bicubic, downsample, upscale

        run = self.load(label)
        f = run.cfg.diffusion.super_resolution
        if not f:
            raise ConfigError(f"this {run.cfg.family} run is not a super-resolution run; pick one trained with --super-res.")
        _, H, W = run.cfg.data.shape
        truth = self._image(run, image, index)[None]
        low = downsample(truth, f)
        with self._lock:
            t0 = time.perf_counter()
            out = upscale(run.family, low, seed=int(seed), sampler=sampler, steps=steps)
            seconds = time.perf_counter() - t0
        levels = run.cfg.data.levels
        nearest = low.repeat_interleave(f, 2).repeat_interleave(f, 3)
        grid = to_rgb_grid(torch.cat([nearest, bicubic(low, f, levels), out, truth]), levels, nrow=4)
        return grid, f"{W // f}x{H // f} -> {W}x{H} with {sampler} in {seconds:.2f} s; low resolution, bicubic, model, truth"

    def translate(self, label: str, image: np.ndarray | None = None, index: int | None = 0, direction: str = "a2b",
                  progress: Progress | None = None) -> tuple[np.ndarray, str]:
        """A translating run's round trip of an image of the input domain (uploaded, or test image ``index``):
        x, its translation, and the way back (a2b: x, G(x), F(G(x)); b2a: y, F(y), G(F(y)))."""
        from genlab.data.transforms import levels_to_pixels

        run = self.load(label)
        if not self.options(label)["translate"]:
            raise ConfigError(f"this {run.cfg.family} run does not translate; pick a CycleGAN run.")
        if direction not in ("a2b", "b2a"):
            raise ConfigError(f"the direction is a2b or b2a, not {direction!r}.")
        fam = run.family
        domain = fam.input_domain(direction)
        if image is not None:
            x, levels = self._picture(image, int(domain["channels"])), 256
        else:
            examples = fam.examples("a" if direction == "a2b" else "b", "test")
            i = int(index or 0)
            if not 0 <= i < len(examples):
                raise ConfigError(f"test image {i} does not exist; choose an index in 0..{len(examples) - 1}.")
            x, levels = examples[i:i + 1], int(domain["levels"])
        out_levels = int(fam.input_domain("b2a" if direction == "a2b" else "a2b")["levels"])
        with self._lock:
            t0 = time.perf_counter()
            result = fam.round_trip(x, direction, levels)
            seconds = time.perf_counter() - t0
        shown = [levels_to_pixels(result["inputs"], levels), levels_to_pixels(result["translations"], out_levels),
                 levels_to_pixels(result["reconstructions"], levels)]
        shown = [t.expand(-1, 3, -1, -1) if t.shape[1] == 1 else t for t in shown]
        return to_rgb_grid(torch.cat(shown), 256, nrow=3), (
            f"{direction} ({domain['name']} in): the input, its translation and the way back, in {seconds:.2f} s")

    @staticmethod
    def _picture(image: np.ndarray, channels: int) -> torch.Tensor:
        """A page image as uint8 ``[1, channels, H, W]`` at 256 levels, its own size (grey by Pillow's luma)."""
        from PIL import Image

        a = np.asarray(image).astype(np.uint8)
        pil = Image.fromarray(a[..., :3] if a.ndim == 3 else a).convert("L" if channels == 1 else "RGB")
        t = torch.from_numpy(np.asarray(pil).copy())
        return (t[None] if channels == 1 else t.permute(2, 0, 1))[None].contiguous()

    # ----- the report --------------------------------------------------------------------------
    def report(self, out_dir: str | Path) -> tuple[str, Path | None]:
        """The trilemma table (Markdown) of the served runs that were measured, and its chart (None if no row)."""
        from genlab.viz.report import collect_rows, write_report

        rows, skipped = [], []
        for label, path in self.paths.items():
            try:
                rows += collect_rows([path])
            except RunError as e:
                skipped.append(f"- {label}: {render(e.template)}")
        if not rows:
            return "No served run has measured figures yet (genlab eval RUN).\n\n" + "\n".join(skipped), None
        md, png = write_report(rows, Path(out_dir) / "report.md")
        return md.read_text().split("\n## Protocol")[0].split("\n", 2)[-1] + ("\n\nNot in the table:\n" + "\n".join(skipped) if skipped else ""), png
