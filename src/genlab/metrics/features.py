"""The feature network: genlab's yardstick for sample quality (no Inception weights here).

One small CNN classifier per dataset family, trained on the dataset's training split by
``genlab features train --data NAME``; its penultimate-layer activations (global average
pool of the last convolution stage, 128 numbers) are the features that FID, KID and
precision/recall compare. The trained weights ship inside the package
(``genlab/metrics/weights/NAME.safetensors``) with their metadata: the test accuracy,
the exact command that reproduced them, and a **version** that is a hash of the weights
themselves, so any change to the network changes the version and a figure computed with
one version is never silently compared with another.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from torch.nn import functional as F

from genlab.errors import ConfigError, RunError
from genlab.io import atomic_write
from genlab.precision import native_bf16
from genlab.progress import progress_bar

ARCH = "cnn-v1"  # bump when FeatureNet's code changes meaning
WEIGHTS_DIR = Path(__file__).parent / "weights"

# which shipped network measures which dataset; cifar10's is trained on the JPEG copy
NETWORK_FOR = {"digits": "digits", "mnist": "mnist", "fashion-mnist": "fashion-mnist",
               "cifar10": "cifar10", "cifar10-jpeg": "cifar10",
               # the captioned images are the same images shifted by 4 pixels at most: the MNIST network still
               # classifies 99.3-99.7% of the shifted test digits right (left, middle, right)
               "mnist-captions": "mnist", "fashion-mnist-captions": "fashion-mnist"}
# the dataset (as genlab.data names it) each network is trained and tested on
TRAIN_DATA = {"digits": "digits", "mnist": "mnist", "fashion-mnist": "fashion-mnist", "cifar10": "cifar10-jpeg"}


@dataclass(frozen=True)
class Recipe:
    """How a network is trained: architecture widths, epochs, augmentation, optimiser."""

    widths: tuple[int, ...] = (32, 64, 128)
    epochs: int = 4
    batch_size: int = 128
    lr: float = 0.05
    weight_decay: float = 5e-4
    shift: int = 2  # random translation by up to this many pixels (zero padding)
    flip: bool = False  # random horizontal flips
    label_smoothing: float = 0.1


RECIPES = {
    "digits": Recipe(epochs=40, batch_size=64, shift=1),
    "mnist": Recipe(epochs=4),
    "fashion-mnist": Recipe(epochs=8, flip=True),
    "cifar10": Recipe(epochs=12, shift=4, flip=True),
}
ACCURACY_GOALS = {"digits": 0.95, "mnist": 0.99, "fashion-mnist": 0.90, "cifar10": 0.75}


def network_name(data_name: str) -> str:
    """The feature network that measures dataset ``data_name``, or a clear error."""
    name = NETWORK_FOR.get(data_name)
    if name is None:
        raise ConfigError(f"genlab has no feature network for {data_name!r}, so FID, KID and precision/recall cannot be "
                          f"measured on it; they are measured on: {', '.join(NETWORK_FOR)}.")
    return name


class FeatureNet(nn.Module):
    """VGG-style classifier: per stage two 3x3 conv-BN-ReLU, 2x2 max-pool between stages,
    global average pool, linear head. ``features(x)`` is the pooled vector (``widths[-1]`` numbers).

    Input: uint8 images ``[N, C, H, W]`` with values ``0..levels-1`` (as genlab.data returns them).
    """

    def __init__(self, in_channels: int, levels: int, widths: tuple[int, ...] = (32, 64, 128), num_classes: int = 10):
        super().__init__()
        self.levels = int(levels)
        layers: list[nn.Module] = []
        c = in_channels
        for i, w in enumerate(widths):
            for _ in range(2):
                layers += [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
                c = w
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(c, num_classes)
        self.num_features = c  # what torchmetrics reads

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 levels -> float in [-1, 1] (the same map as the diffusion models use)."""
        return images.to(torch.float32) / (self.levels - 1) * 2 - 1

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@dataclass(frozen=True)
class FeatureNetwork:
    """A loaded, frozen feature network and what it records about itself."""

    name: str
    net: FeatureNet
    version: str
    accuracy: float
    command: str
    meta: dict

    @torch.no_grad()
    def extract(self, images: torch.Tensor, batch_size: int = 500, progress: bool = False,
                desc: str = "features") -> tuple[torch.Tensor, torch.Tensor]:
        """(features float64 ``[N, D]``, logits float32 ``[N, classes]``) of uint8 images, in fp32."""
        self.check_images(images)
        feats, logits = [], []
        bar = progress_bar(total=len(images), desc=desc, unit="img", disable=not progress)
        for start in range(0, len(images), batch_size):
            x = self.net.prepare(images[start : start + batch_size])
            f = self.net.features(x)
            feats.append(f.double())
            logits.append(self.net.head(f))
            bar.update(len(x))
        bar.close()
        D = self.net.num_features
        return (torch.cat(feats) if feats else torch.zeros(0, D, dtype=torch.float64),
                torch.cat(logits) if logits else torch.zeros(0, self.net.head.out_features))

    def check_images(self, images: torch.Tensor) -> None:
        shape = tuple(self.meta["shape"])
        if images.dtype != torch.uint8 or images.dim() != 4 or tuple(images.shape[1:]) != shape:
            raise ConfigError(f"the {self.name} feature network measures uint8 images of shape {list(shape)}, "
                              f"not {images.dtype} {list(images.shape[1:])}; pass samples of a {self.name} model.")
        top = int(images.max()) if images.numel() else 0
        if top >= self.net.levels:
            raise ConfigError(f"the images have values up to {top} but {self.name} has {self.net.levels} levels "
                              f"(0..{self.net.levels - 1}); pass images in the dataset's own levels.")


def weights_version(tensors: dict[str, torch.Tensor]) -> str:
    """A hash of the architecture tag and every weight: equal versions mean equal networks."""
    h = hashlib.sha256(ARCH.encode())
    for key in sorted(tensors):
        t = tensors[key].contiguous()
        h.update(key.encode())
        h.update(str(t.dtype).encode())
        h.update(json.dumps(list(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:12]


def weights_path(name: str) -> Path:
    return WEIGHTS_DIR / f"{name}.safetensors"


def load_feature_network(data_name: str, path: str | Path | None = None) -> FeatureNetwork:
    """The shipped feature network for ``data_name`` (or the one at ``path``), frozen, in eval mode."""
    name: str | None
    if path is None:
        name = network_name(data_name)
        path = weights_path(name)
    else:
        name = None
        path = Path(path)
    if not path.is_file():
        raise RunError(f"the feature network {path} is missing; reinstall genlab or run "
                       f"genlab features train --data {name or data_name} --out {path}.")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        info = json.loads(meta["genlab_features"])
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same advice
        raise RunError(f"{path} is not a genlab feature network ({e}); retrain it with genlab features train.") from None
    version = f"{info['name']}-{weights_version(tensors)}"
    if version != info["version"]:
        raise RunError(f"{path} says it is feature network {info['version']} but its weights hash to {version}: the file "
                       f"was changed; reinstall genlab or retrain it with: {info['command']}")
    net = FeatureNet(info["shape"][0], info["levels"], tuple(info["widths"]), info["num_classes"])
    missing, unexpected = net.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise RunError(f"{path} does not match the {ARCH} architecture (missing {missing[:2]}, unexpected "
                       f"{unexpected[:2]}); retrain it with: {info['command']}")
    net.eval().requires_grad_(False)
    return FeatureNetwork(info["name"], net, version, float(info["test_accuracy"]), info["command"], info)


def shipped_networks() -> list[FeatureNetwork]:
    return [load_feature_network(name) for name in TRAIN_DATA if weights_path(name).is_file()]


def _augment(x: torch.Tensor, recipe: Recipe, gen: torch.Generator) -> torch.Tensor:
    """Random translation by up to ``shift`` pixels (zero-padded) and optional horizontal flips."""
    B, _, H, W = x.shape
    if recipe.shift:
        s = recipe.shift
        padded = F.pad(x, (s, s, s, s), value=-1.0)
        dx = torch.randint(0, 2 * s + 1, (B,), generator=gen)
        dy = torch.randint(0, 2 * s + 1, (B,), generator=gen)
        rows = (dy[:, None] + torch.arange(H)[None]).view(B, 1, H, 1).expand(B, x.shape[1], H, W + 2 * s)
        x = padded.gather(2, rows)
        cols = (dx[:, None] + torch.arange(W)[None]).view(B, 1, 1, W).expand(B, x.shape[1], H, W)
        x = x.gather(3, cols)
    if recipe.flip:
        flip = torch.rand(B, generator=gen) < 0.5
        x = torch.where(flip.view(B, 1, 1, 1), x.flip(3), x)
    return x


@torch.no_grad()
def accuracy(net: FeatureNet, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500) -> float:
    net.eval()
    correct = 0
    for start in range(0, len(images), batch_size):
        logits = net(net.prepare(images[start : start + batch_size]))
        correct += int((logits.argmax(1) == labels[start : start + batch_size]).sum())
    return correct / max(1, len(images))


def train_feature_network(name: str, out: str | Path, root=None, seed: int = 0, epochs: int | None = None,
                          progress: bool = True, command: str = "", log=print) -> dict:
    """Train the feature network ``name`` on its dataset's training split and write it to ``out``.

    Deterministic for a given machine and thread count: the data order, augmentation and
    initialisation all come from ``seed``. Training runs under bf16 autocast where the CPU has
    native bf16 (8x faster on AMX CPUs; fp32 elsewhere, see ``genlab.precision``) with
    channels_last; the test accuracy is measured in fp32, as the
    features are extracted. Returns the recorded metadata.
    """
    from genlab.data import ImageDataset, load_dataset

    if name not in TRAIN_DATA:
        raise ConfigError(f"no feature network recipe for {name!r}; choose one of: {', '.join(TRAIN_DATA)}.")
    recipe = RECIPES[name]
    if epochs is not None:
        if epochs < 1:
            raise ConfigError(f"--epochs must be at least 1, not {epochs}.")
        recipe = Recipe(**{**recipe.__dict__, "epochs": epochs})
    data = TRAIN_DATA[name]
    train = load_dataset(data, "train", root=root)
    test = load_dataset(data, "test", root=root)
    assert isinstance(train, ImageDataset) and isinstance(test, ImageDataset)  # TRAIN_DATA are image datasets
    info = train.info
    images, labels = train.images, train.labels
    torch.manual_seed(seed)
    net = FeatureNet(info.channels, info.levels, recipe.widths, info.num_classes)
    net = net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # Module.to takes memory_format; the stubs omit it
    decay = [p for n, p in net.named_parameters() if p.dim() > 1]
    no_decay = [p for n, p in net.named_parameters() if p.dim() <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": recipe.weight_decay}, {"params": no_decay, "weight_decay": 0}],
                          lr=recipe.lr, momentum=0.9, nesterov=True)
    steps_per_epoch = math.ceil(len(images) / recipe.batch_size)
    total = recipe.epochs * steps_per_epoch
    warmup = max(1, total // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, total - warmup))))
    gen = torch.Generator().manual_seed(seed)
    bf16 = native_bf16("cpu")[0]
    t0 = time.perf_counter()
    bar = progress_bar(total=total, desc=f"features {name}", unit="step", disable=not progress)
    step = 0
    for epoch in range(recipe.epochs):
        net.train()
        order = torch.randperm(len(images), generator=gen)
        for start in range(0, len(images), recipe.batch_size):
            idx = order[start : start + recipe.batch_size]
            x = _augment(net.prepare(images[idx]), recipe, gen).contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = F.cross_entropy(net(x).float(), labels[idx], label_smoothing=recipe.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}", refresh=False)
    bar.close()
    seconds = time.perf_counter() - t0
    net = net.to(memory_format=torch.contiguous_format).eval()
    # shipped in float16 (half the size); the accuracy is that of the rounded weights
    tensors = {k: (v.half() if v.is_floating_point() else v).detach().contiguous().clone() for k, v in net.state_dict().items()}
    net.load_state_dict(tensors)
    acc = accuracy(net, test.images, test.labels)
    version = f"{name}-{weights_version(tensors)}"
    meta = {"name": name, "version": version, "arch": ARCH, "data": data, "shape": list(images.shape[1:]),
            "levels": info.levels, "num_classes": info.num_classes, "widths": list(recipe.widths),
            "recipe": recipe.__dict__ | {"widths": list(recipe.widths)}, "seed": seed,
            "test_accuracy": acc, "test_n": len(test.images), "train_n": len(images),
            "train_seconds": round(seconds, 1), "mixed_precision": "bf16" if bf16 else "no", "torch": torch.__version__, "threads": torch.get_num_threads(),
            "command": command or f"genlab features train --data {name}"}
    atomic_write(out, lambda tmp: save_file(tensors, tmp, metadata={"genlab_features": json.dumps(meta)}))
    goal = ACCURACY_GOALS[name]
    log(f"genlab: feature network {version}: test accuracy {acc:.4f} on {len(test.images)} {data} test images "
        f"(goal {goal:.2f}){'' if acc >= goal else ' -- BELOW GOAL'}; trained in {seconds:.0f}s -> {out}")
    return meta
