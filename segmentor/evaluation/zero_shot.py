"""The zero-shot point of ``evaluate-labels`` (0 annotations): CLIP labels from the class names alone.

The EmerDiff paper's Table 3 comparison, per CLIP mode (``segmentor.zeroshot.dense.MODES``):

- ``pixels``: per-pixel CLIP argmax (the dense grid bilinearly upsampled to the image, each pixel its best
  class): what the dense CLIP method gives without any masks;
- ``emerdiff_segments``: the same grid pooled inside each EmerDiff segment and the segment classified
  (``segmentor.zeroshot.classify_segments``, what the backend does), every segment labelled;
- ``bilinear_segments``: the same, pooled in the bilinear baseline's segments (``baseline_label_map``).

Scores are ``segmentor.evaluation.labels``' (pixel, class-mean and region accuracy). Each class's words
are its name unless a class-name file gives synonyms. Timings (seconds, this machine) ride along.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from segmentor.evaluation.label_scores import LabelScores, region_majority
from segmentor.evaluation.metrics import EvaluationError
from segmentor.zeroshot import ClipModel, classify_pixels, classify_segments, dense_grid, label_embeddings
from segmentor.zeroshot.dense import LOGIT_SCALES

KINDS = ("pixels", "emerdiff_segments", "bilinear_segments")


def read_class_words(path: Path) -> dict[str, tuple[str, ...]]:
    """A class-name file: one class per line in id order, ``name`` or ``name: word, word`` (synonyms)."""
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as error:
        raise EvaluationError(f"cannot read class names {path}: {error}") from error
    classes: dict[str, tuple[str, ...]] = {}
    for number, line in enumerate(lines, 1):
        if not line or line.startswith("#"):
            continue
        name, _, rest = line.partition(":")
        words = tuple(word.strip() for word in rest.split(",") if word.strip()) or (name.strip(),)
        if not name.strip() or name.strip() in classes:
            raise EvaluationError(f"{path}:{number}: empty or repeated class name {name.strip()!r}")
        classes[name.strip()] = words
    if not classes:
        raise EvaluationError(f"{path} names no classes")
    return classes


def zero_shot_report(test: Sequence, class_words: Mapping[str, Sequence[str]], clip: ClipModel,
                     modes: Sequence[str], templates: Sequence[str], ignore: int | None) -> dict:
    """Per mode, scores of the three labellings of ``test`` (SegmentedImage with ``baseline_map``)."""
    class_names = list(class_words)
    started = time.perf_counter()
    embeddings = label_embeddings(clip, class_words, templates)
    report: dict = {"templates": list(templates), "words": {k: list(v) for k, v in class_words.items()},
                    "text_seconds": time.perf_counter() - started, "modes": {}}
    for mode in modes:
        scores = {kind: LabelScores(len(class_names), ignore) for kind in KINDS}
        grid_seconds = 0.0
        for image in test:
            started = time.perf_counter()
            grid = dense_grid(clip, image.image, mode)
            grid_seconds += time.perf_counter() - started
            scale = LOGIT_SCALES[mode]
            pixels = pixel_classes(grid, embeddings, scale, image.gt.shape)
            present = {k: k for k in np.unique(pixels).tolist()}  # a pixel's "segment" is its class
            scores["pixels"].add(dataclasses.replace(image, label_map=pixels), present,
                                 region_majority(pixels, image.gt, ignore))
            for kind, segments in (("emerdiff_segments", image.label_map), ("bilinear_segments", image.baseline_map)):
                if segments is None:
                    raise EvaluationError("the bilinear baseline's segments are missing (an old --segmentations "
                                          "file?): segment again")
                labelled = classify_segments(grid, segments, embeddings, logit_scale=scale, threshold=0.0,
                                             fallback=None)
                classes = {segment: class_names.index(label) for segment, (label, _) in labelled.items()}
                scores[kind].add(dataclasses.replace(image, label_map=segments), classes,
                                 region_majority(segments, image.gt, ignore))
        report["modes"][mode] = {kind: score.summary(class_names) for kind, score in scores.items()}
        report["modes"][mode]["grid_seconds_per_image"] = grid_seconds / max(len(test), 1)
    return report


def pixel_classes(grid: np.ndarray, embeddings: Mapping[str, np.ndarray], logit_scale: float,
                  shape: tuple[int, int]) -> np.ndarray:
    """(H, W) class index per pixel: the grid upsampled bilinearly (as MaskCLIP upsamples), then argmax."""
    cells = torch.from_numpy(np.ascontiguousarray(grid)).permute(2, 0, 1)[None]
    upsampled = F.interpolate(cells, size=shape, mode="bilinear", align_corners=False)[0].permute(1, 2, 0)
    return classify_pixels(upsampled.numpy(), embeddings, logit_scale).astype(np.int32)


def format_rows(report: dict) -> list[str]:
    """Table rows (the learning-curve table's columns) for the zero-shot point."""
    rows = []
    for mode, kinds in report["modes"].items():
        for kind in KINDS:
            scores = kinds[kind]
            rows.append(f"| 0 | 0 | zero-shot {mode}: {kind.replace('_', ' ')} | {scores['pixel_accuracy']:.3f} | "
                        f"{scores['class_mean_accuracy']:.3f} | {scores['region_accuracy']:.3f} | |")
    return rows
