"""Train the small CLIP from scratch on synthetic scenes, so zero-shot labelling runs offline on trained weights.

Each step draws fresh colour scenes (an object's word is its colour family) and shape scenes (its shape)
and classifies against the text embeddings of the words, each wrapped in a template drawn at random:

- dense: every patch token of the model's ordinary forward (final layer norm, visual projection) against
  the words of its scene's kind, with the class shares inside the patch as soft targets ("background"
  included); at the native size and, for a few scenes, upsampled by :data:`LARGE_FACTOR` with position
  embeddings interpolated, because ``segmentor.zeroshot.dense`` reads images at twice the training size.
  This is what makes patch features text-aligned: stock CLIP gets that from web-scale data, this model
  from the scenes' ground truth. The last block's rebuilt forms (MaskCLIP etc.) are never trained.
- global: a square crop around one object, resized to the model's size, its pooled (CLS) embedding
  against the words: CLIP's image-text objective, in its classification form.

Reproducible like ``segmentor.toy.train``: one seed fixes weights, scenes, crops and templates; a
``minutes`` cap makes the result machine-dependent.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from transformers import CLIPModel, CLIPTokenizer

from segmentor.toy.batches import TRAIN_SEED_BASE
from segmentor.toy.clip_architecture import (
    BACKGROUND_WORD,
    COLOUR_WORDS,
    IMAGE_MEAN,
    IMAGE_STD,
    SHAPE_WORDS,
    TRAINING_TEMPLATES,
    ToyClipSpec,
    build_clip,
    build_clip_tokenizer,
    save_clip_folder,
)
from segmentor.toy.scenes import generate_scene
from segmentor.toy.train import TrainingError, _count, _deterministic, _optimise
from segmentor.zeroshot.dense import SHORT_SIDE_FACTOR

logger = logging.getLogger(__name__)

WORDS: tuple[str, ...] = (BACKGROUND_WORD, *COLOUR_WORDS, *SHAPE_WORDS)
# Scene kind -> the word of each class id of that kind's class map (segmentor.toy.scenes' class order).
KIND_WORDS: dict[str, tuple[str, ...]] = {"colour": (BACKGROUND_WORD, *COLOUR_WORDS),
                                          "shape": (BACKGROUND_WORD, *SHAPE_WORDS)}
# segmentor.zeroshot.dense reads an image at SHORT_SIDE_FACTOR x the tower's size (a finer grid); train there too.
LARGE_FACTOR = SHORT_SIDE_FACTOR
_CLIP_SEED_OFFSET = TRAIN_SEED_BASE // 2  # scene seeds apart from the diffusion trainer's, still >= the base


@dataclass(frozen=True)
class ClipTrainingPlan:
    steps: int = 500
    scenes_per_kind: int = 16  # per step, of each kind (colour, shape)
    large_per_kind: int = 4  # of those, upsampled by LARGE_FACTOR too (each costs ~5 native ones)
    lr: float = 1e-3
    weight_decay: float = 0.05
    global_weight: float = 0.5
    seed: int = 0
    minutes: float | None = None
    log_every: int = 50
    held_out_scenes: int = 64  # scenes 0..n-1 of each kind measure the result

    def validate(self) -> None:
        for name in ("steps", "scenes_per_kind", "log_every", "held_out_scenes"):
            if getattr(self, name) < 1:
                raise TrainingError(f"training plan: {name} must be at least 1, got {getattr(self, name)}")
        if self.minutes is not None and self.minutes <= 0:
            raise TrainingError(f"training plan: minutes must be positive, got {self.minutes}")


@dataclass
class SceneBatch:
    pixels: torch.Tensor  # N×3×S×S, CLIP-normalised
    shares: torch.Tensor  # N×C×g×g class shares per patch, C = len(KIND_WORDS[kind])
    crops: torch.Tensor  # N×3×S×S, one object per scene
    crop_words: torch.Tensor  # N, index into KIND_WORDS[kind]
    large: torch.Tensor  # M×3×(fS)×(fS): the first M scenes upsampled as segmentor.zeroshot.dense does
    large_shares: torch.Tensor  # M×C×(fg)×(fg)


def normalise(images: np.ndarray, factor: int = 1) -> torch.Tensor:
    """N×H×W×3 uint8 RGB to CLIP's normalised N×3×fH×fW float tensor (bicubic, as the dense grid resizes)."""
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    if factor != 1:
        pixels = F.interpolate(pixels, scale_factor=factor, mode="bicubic", align_corners=False).clamp(0.0, 1.0)
    return (pixels - torch.tensor(IMAGE_MEAN)[:, None, None]) / torch.tensor(IMAGE_STD)[:, None, None]


def object_crop(image: np.ndarray, instance_map: np.ndarray, instance: int, rng: np.random.Generator) -> np.ndarray:
    """A square around one object with a random margin of surroundings, resized to the image's size."""
    size = image.shape[0]
    ys, xs = np.nonzero(instance_map == instance)
    side = max(np.ptp(ys), np.ptp(xs)) + 1 + 2 * int(rng.integers(1, 6))
    side = min(side, size)
    top = int(np.clip((ys.min() + ys.max() - side) // 2, 0, size - side))
    left = int(np.clip((xs.min() + xs.max() - side) // 2, 0, size - side))
    return cv2.resize(image[top:top + side, left:left + side], (size, size), interpolation=cv2.INTER_LINEAR)


def scene_batch(seeds: range, kind: str, spec: ToyClipSpec, rng: np.random.Generator, large: int = 0) -> SceneBatch:
    images, shares, crops, words = [], [], [], []
    classes = len(KIND_WORDS[kind])
    for seed in seeds:
        scene = generate_scene(seed, spec.image_size, kind)
        images.append(scene.image)
        one_hot = np.eye(classes, dtype=np.float32)[scene.class_map]  # H×W×C
        shares.append(torch.from_numpy(one_hot).permute(2, 0, 1))
        instance = int(rng.integers(1, scene.instance_map.max() + 1))
        crops.append(object_crop(scene.image, scene.instance_map, instance, rng))
        words.append(scene.instance_classes[instance])
    shares = torch.stack(shares)
    large_pixels = normalise(np.stack(images[:large]), LARGE_FACTOR) if large else torch.empty(0)
    return SceneBatch(normalise(np.stack(images)), F.avg_pool2d(shares, spec.patch_size), normalise(np.stack(crops)),
                      torch.tensor(words), large_pixels, F.avg_pool2d(shares[:large], spec.patch_size // LARGE_FACTOR))


def text_features(model: CLIPModel, tokenizer: CLIPTokenizer, texts: list[str]) -> torch.Tensor:
    tokens = tokenizer(texts, padding="max_length", truncation=True, return_tensors="pt")
    output = model.get_text_features(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask)
    features = output if isinstance(output, torch.Tensor) else output.pooler_output
    return F.normalize(features, dim=-1)


def image_features(model: CLIPModel, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled (N×D) and per-patch (N×D×g×g) embeddings of the ordinary forward, L2-normalised."""
    vision = model.vision_model(pixel_values=pixels, interpolate_pos_encoding=True)
    tokens = model.visual_projection(model.vision_model.post_layernorm(vision.last_hidden_state))
    pooled = model.visual_projection(vision.pooler_output)
    side = round((tokens.shape[1] - 1) ** 0.5)
    patches = tokens[:, 1:].reshape(len(tokens), side, side, -1).permute(0, 3, 1, 2)
    return F.normalize(pooled, dim=-1), F.normalize(patches, dim=1)


def _kind_losses(model: CLIPModel, batch: SceneBatch, text: torch.Tensor, scale: torch.Tensor) -> tuple:
    pooled, patches = image_features(model, torch.cat([batch.pixels, batch.crops]))
    count = len(batch.pixels)
    dense_logits = scale * torch.einsum("ndhw,cd->nchw", patches[:count], text)
    dense = -(batch.shares * F.log_softmax(dense_logits, dim=1)).sum(dim=1).mean()
    if len(batch.large):
        _, large = image_features(model, batch.large)
        large_logits = scale * torch.einsum("ndhw,cd->nchw", large, text)
        dense = dense + -(batch.large_shares * F.log_softmax(large_logits, dim=1)).sum(dim=1).mean()
    crop_logits = scale * pooled[count:] @ text.T
    return dense, F.cross_entropy(crop_logits, batch.crop_words)


def train_clip(out_dir: Path, spec: ToyClipSpec | None = None, plan: ClipTrainingPlan | None = None,
               command: str | None = None) -> dict:
    """Train, save a ``CLIPModel.from_pretrained``-loadable folder with ``training_report.json``; returns it."""
    spec, plan = spec or ToyClipSpec(), plan or ClipTrainingPlan()
    plan.validate()
    started = time.monotonic()
    deadline = None if plan.minutes is None else started + 60 * plan.minutes
    with _deterministic():
        torch.manual_seed(plan.seed)
        tokenizer = build_clip_tokenizer(spec)
        model = build_clip(spec, tokenizer)
        rng = np.random.default_rng(plan.seed)
        next_seed = TRAIN_SEED_BASE * (plan.seed + 1) + _CLIP_SEED_OFFSET
        optimiser = torch.optim.AdamW(model.parameters(), lr=plan.lr, weight_decay=plan.weight_decay)

        def step() -> torch.Tensor:
            nonlocal next_seed
            templates = rng.choice(TRAINING_TEMPLATES, size=len(WORDS))
            text = text_features(model, tokenizer, [t.format(w) for t, w in zip(templates, WORDS, strict=True)])
            scale = model.logit_scale.exp().clamp(max=100.0)
            loss = torch.zeros(())
            for kind, words in KIND_WORDS.items():
                seeds = range(next_seed, next_seed + plan.scenes_per_kind)
                next_seed += plan.scenes_per_kind
                dense, crops = _kind_losses(model, scene_batch(seeds, kind, spec, rng, plan.large_per_kind),
                                            text[[WORDS.index(w) for w in words]], scale)
                loss = loss + dense + plan.global_weight * crops
            return loss

        model.train()
        result = _optimise("clip", model, optimiser, step, plan.steps, plan, deadline)
        model.eval().requires_grad_(False)
        report = {
            "command": command, "spec": asdict(spec), "plan": asdict(plan), "parameters": _count(model),
            "training": asdict(result), "logit_scale": float(model.logit_scale.exp()),
            "held_out_scene_seeds": [0, plan.held_out_scenes - 1],
            "held_out": held_out_accuracy(model, tokenizer, spec, range(plan.held_out_scenes)),
            "minutes": (time.monotonic() - started) / 60,
        }
    save_clip_folder(model, tokenizer, spec, out_dir)
    (out_dir / "training_report.json").write_text(json.dumps(report, indent=2) + "\n")
    logger.info("saved %s: held-out %s", out_dir, report["held_out"])
    return report


@torch.no_grad()
def held_out_accuracy(model: CLIPModel, tokenizer: CLIPTokenizer, spec: ToyClipSpec, seeds: range) -> dict:
    """Per kind: patch accuracy of the ordinary forward's patch tokens (patches whose majority class covers
    at least 3/4 of them), at the native and the large size, and the crops' accuracy; words wrapped in
    "a photo of a {}."."""
    results = {}
    rng = np.random.default_rng(0)
    for kind, words in KIND_WORDS.items():
        batch = scene_batch(seeds, kind, spec, rng, large=len(seeds))
        text = text_features(model, tokenizer, [f"a photo of a {word}." for word in words])
        pooled, patches = image_features(model, torch.cat([batch.pixels, batch.crops]))
        _, large = image_features(model, batch.large)
        crop_predicted = (pooled[len(seeds):] @ text.T).argmax(dim=1)
        results[kind] = {"patch_accuracy": _patch_accuracy(patches[: len(seeds)], batch.shares, text),
                         "large_patch_accuracy": _patch_accuracy(large, batch.large_shares, text),
                         "crop_accuracy": float((crop_predicted == batch.crop_words).float().mean())}
    return results


def _patch_accuracy(patches: torch.Tensor, shares: torch.Tensor, text: torch.Tensor) -> float:
    predicted = torch.einsum("ndhw,cd->nchw", patches, text).argmax(dim=1)
    share, truth = shares.max(dim=1)
    clear = share >= 0.75
    return float((predicted == truth)[clear].float().mean())
