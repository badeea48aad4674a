"""Text alignment of samples drawn for prompts: is the image what its caption asked for?

A captioned test image (:mod:`genlab.data.captions`) gives a prompt with known meaning: its
class, and the attributes its template states (thickness and size only when they are not
"normal", since then the caption says nothing about them; the position whenever the template
has it). One sample is drawn per prompt, then judged by measurement, not by a model of text:

- **class**: the dataset's shipped feature network (FID's yardstick) classifies the sample;
- **attributes**: :func:`genlab.data.captions.measure_attributes` measures thickness, size and
  position of the sample against the asked class's terciles, as the captions were made.

With a CLIP run (:mod:`genlab.clip`) the **CLIP score** is measured too: 100 x max(cos, 0)
between the embeddings of each sample and of its prompt under genlab's contrastive model
(Hessel et al. 2021's CLIPScore without its 2.5 weight, torchmetrics' scale), beside the same
score of the real test images with their own captions, its ceiling under that CLIP.

Reported per group of prompts: the held-out templates (phrasings never trained on), the
held-out combinations (e.g. a thick 3 on the left, a triple no training image shows), and the
rest; each with the class accuracy, the accuracy of each stated attribute, and ``all``: the
fraction of samples right in class and in every attribute their prompt states.
"""

from __future__ import annotations

import torch

GROUPS = ("held_out_combination", "held_out_template", "seen")


def asked_attributes(templates: torch.Tensor, attributes: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What each caption states: ``{name: int64 [N]}`` with the value, or -1 where the caption says nothing of it."""
    from genlab.data.captions import ATTRIBUTES, PHRASES, template_says

    out = {}
    for a in ATTRIBUTES:
        says = torch.tensor([a in template_says(int(t)) for t in templates])
        worded = torch.tensor([PHRASES[a][int(v)] != "" for v in attributes[a]])
        out[a] = torch.where(says & worded, attributes[a], torch.full_like(attributes[a], -1))
    return out


def prompt_groups(test, n_per_group: int) -> dict[str, torch.Tensor]:
    """The indices (into ``test``) of the first ``n_per_group`` captions of each group of :data:`GROUPS`."""
    combo, template = test.held_out_combination, test.held_out_template
    masks = {"held_out_combination": combo, "held_out_template": template & ~combo, "seen": ~template & ~combo}
    return {g: torch.nonzero(masks[g]).flatten()[:n_per_group] for g in GROUPS}


def alignment(samples: torch.Tensor, classes: torch.Tensor, asked: dict[str, torch.Tensor], fnet, thresholds) -> dict:
    """Class accuracy, each stated attribute's accuracy and ``all`` for uint8 ``samples`` drawn for their prompts."""
    from genlab.data.captions import measure_attributes

    _, logits = fnet.extract(samples)
    class_right = logits.argmax(1) == classes
    measured = measure_attributes(samples, classes, thresholds)
    everything = class_right.clone()
    out: dict[str, float | int] = {"n": len(samples), "class": class_right.float().mean().item()}
    for a, want in asked.items():
        stated = want >= 0
        right = measured[a] == want
        everything &= right | ~stated
        out[f"{a}_n"] = int(stated.sum())
        out[a] = right[stated].float().mean().item() if stated.any() else float("nan")
    out["all"] = everything.float().mean().item()
    return out


@torch.no_grad()
def clip_score(clip, images: torch.Tensor, prompts: list[str] | tuple[str, ...], batch_size: int = 500) -> torch.Tensor:
    """100 x max(cos, 0) of each uint8 image and its prompt under the contrastive model ``clip``: float [N]."""
    if len(images) != len(prompts):
        raise ValueError(f"{len(images)} images for {len(prompts)} prompts")
    scores = []
    for start in range(0, len(images), batch_size):
        u = clip.encode_image(images[start : start + batch_size])
        v = clip.encode_prompts(list(prompts[start : start + batch_size]))
        scores.append(100 * (u * v).sum(-1).clamp(min=0).cpu())
    return torch.cat(scores) if scores else torch.zeros(0)
