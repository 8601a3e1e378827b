"""``python -m segmentor evaluate-labels``: how well label learning labels new segments after N annotated images.

The first N images of a set are "annotated" with their ground truth: each connected piece of each class
becomes a Label Studio brush region (``converters.labelstudio.regions_from_label_map``) and goes through
``segmentor.labelling.examples_from_regions`` — the function the backend's webhook uses — onto that
image's EmerDiff feature grid. A fixed set of later images is segmented and every segment labelled by
the classifier (``LabelClassifier``, prototypes or k-NN). Scores, against the ground truth:

- pixel accuracy (background dominates it), class-mean accuracy (mean per-class recall) and per-class recall
  of the labelled label map;
- region accuracy: a segment is right when its label is the class most of its pixels have;
- at the backend's threshold: the share of segments labelled (the rest keep the default label) and the
  region accuracy of those.

Beside it: the majority class (the class with most annotated pixels, for every segment), the nearest
class by a region's mean colour and size (standardised, nearest class mean: what a colour picker would
do), and the ceiling (each segment labelled with its own majority class: the best any labelling of these
segments can do).

With ``--clip``, the zero-shot point (0 annotations, labels from the class names; ``segmentor.evaluation.zero_shot``):
per CLIP mode, per-pixel CLIP against the same grid pooled in EmerDiff's and in the bilinear baseline's segments.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from converters.labelstudio import region_to_mask, regions_from_label_map
from segmentor.evaluation.data import LAYOUTS, Sample, folder_samples, read_stem_list
from segmentor.evaluation.label_scores import LabelScores, SegmentedImage, region_majority
from segmentor.evaluation.metrics import DEFAULT_IGNORE, EvaluationError
from segmentor.evaluation.zero_shot import format_rows as format_zero_shot_rows
from segmentor.evaluation.zero_shot import read_class_words, zero_shot_report
from segmentor.labelling import (
    DEFAULT_THRESHOLD,
    METHODS,
    LabelClassifier,
    examples_from_regions,
    label_segments,
    segment_embeddings,
)

DEFAULT_COUNTS = (1, 5, 20, 50)
THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)
CONTROL = "label"


def annotation_regions(gt: np.ndarray, class_names: Sequence[str], ignore: int | None) -> list[dict]:
    """The ground truth as an annotator would draw it: one brush region per connected piece of each class."""
    pieces = np.zeros(gt.shape, np.int32)  # 0 = ignore
    labels: dict[int, str] = {}
    for class_id in np.unique(gt):
        if class_id == ignore or not 0 <= class_id < len(class_names):
            continue
        count, components = cv2.connectedComponents((gt == class_id).astype(np.uint8), connectivity=4)
        for component in range(1, count):
            piece = len(labels) + 1
            pieces[components == component] = piece
            labels[piece] = class_names[int(class_id)]
    regions = regions_from_label_map(pieces, kind="brush", label=class_names[0], labels=labels,
                                     from_name=CONTROL, to_name="image", min_area=1)
    return [region for region in regions if region["id"] != "s0"]  # s0: the ignore-label pixels


def colour_size_features(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The baseline's description of a region: mean RGB (0-1) and log of its share of the image."""
    return np.array([*(image[mask].mean(axis=0) / 255.0), np.log(mask.mean())], np.float64)


def evaluate_labels(images: Sequence[SegmentedImage], test: Sequence[SegmentedImage], class_names: Sequence[str],
                    counts: Sequence[int] = DEFAULT_COUNTS, methods: Sequence[str] = METHODS,
                    thresholds: Sequence[float] = THRESHOLDS, ignore: int | None = DEFAULT_IGNORE) -> dict:
    """Scores for each N in ``counts`` (the first N of ``images`` annotated) and each classifier method, on
    every image of ``test``; per threshold, the share of segments labelled and their region accuracy."""
    labels_of = {CONTROL: tuple(class_names)}
    annotated = [examples_from_regions(annotation_regions(image.gt, class_names, ignore), image.features, labels_of,
                                       image.gt.shape) for image in images]
    majorities = [region_majority(image.label_map, image.gt, ignore) for image in test]
    ceiling = LabelScores(len(class_names), ignore)
    for image, majority in zip(test, majorities, strict=True):
        ceiling.add(image, majority, majority)
    report = {"ceiling": ceiling.summary(class_names), "runs": []}
    for count in counts:
        if count > len(images):
            raise EvaluationError(f"N={count} needs {count} annotated images, only {len(images)} were given")
        examples = [example for per_image in annotated[:count] for example in per_image]
        run: dict = {"annotated_images": count, "examples": len(examples)}
        for method in methods:
            run[method] = _learnt_scores(LabelClassifier(examples, method), test, majorities, class_names,
                                         thresholds, ignore)
        majority_class = _majority_class(images[:count], class_names, ignore)
        colour_classifier = _colour_classifier(images[:count], class_names, ignore)
        majority_scores, colour = LabelScores(len(class_names), ignore), LabelScores(len(class_names), ignore)
        for image, majority in zip(test, majorities, strict=True):
            majority_scores.add(image, dict.fromkeys(majority, majority_class), majority)
            colour.add(image, {segment: colour_classifier(image.image, image.label_map == segment)
                               for segment in np.unique(image.label_map).tolist()}, majority)
        run |= {"majority_class": majority_scores.summary(class_names), "colour_size": colour.summary(class_names)}
        report["runs"].append(run)
    return report


def _learnt_scores(classifier: LabelClassifier, test: Sequence[SegmentedImage], majorities: Sequence[dict[int, int]],
                   class_names: Sequence[str], thresholds: Sequence[float], ignore: int | None) -> dict:
    scores = LabelScores(len(class_names), ignore)
    confidences, right = [], []
    for image, majority in zip(test, majorities, strict=True):
        guesses = label_segments(classifier, segment_embeddings(image.features, image.label_map), class_names,
                                 class_names[0], 0.0)
        classes = {segment: class_names.index(guess.label) for segment, guess in guesses.items()}
        scores.add(image, classes, majority)
        for segment, guess in guesses.items():
            if segment in majority:
                confidences.append(guess.confidence)
                right.append(majority[segment] == classes[segment])
    confidences, right = np.array(confidences), np.array(right, bool)
    at = {f"{t:g}": {"labelled": float((confidences >= t).mean()) if len(confidences) else 0.0,
                     "region_accuracy": float(right[confidences >= t].mean()) if (confidences >= t).any() else None}
          for t in thresholds}
    return scores.summary(class_names) | {"at_threshold": at}


def _majority_class(images: Sequence[SegmentedImage], class_names: Sequence[str], ignore: int | None) -> int:
    totals = np.zeros(len(class_names), np.int64)
    for image in images:
        valid = image.gt[(image.gt != ignore) & (image.gt < len(class_names))] if ignore is not None else image.gt
        totals += np.bincount(valid.ravel(), minlength=len(class_names))[: len(class_names)]
    return int(totals.argmax())


def _colour_classifier(images: Sequence[SegmentedImage], class_names: Sequence[str],
                       ignore: int | None) -> Callable[[np.ndarray, np.ndarray], int]:
    """Nearest class mean of standardised colour+size features of the annotated regions."""
    rows, owners = [], []
    for image in images:
        for region in annotation_regions(image.gt, class_names, ignore):
            mask = region_to_mask(region)
            rows.append(colour_size_features(image.image, mask))
            owners.append(class_names.index(region["value"]["brushlabels"][0]))
    rows, owners = np.array(rows), np.array(owners)
    mean, scale = rows.mean(axis=0), rows.std(axis=0) + 1e-6
    classes = np.unique(owners)
    centres = np.stack([((rows[owners == k] - mean) / scale).mean(axis=0) for k in classes])

    def classify(image: np.ndarray, mask: np.ndarray) -> int:
        distances = np.linalg.norm(centres - (colour_size_features(image, mask) - mean) / scale, axis=1)
        return int(classes[distances.argmin()])

    return classify


def segment_all(segmentor, samples, total: int, progress: bool = True) -> list[SegmentedImage]:
    """Each sample segmented once (its label map and feature grid kept)."""
    segmented = []
    for sample in tqdm(samples, total=total, desc="segment", unit="image", disable=not progress):
        result = segmentor.segment(sample.image)
        segmented.append(SegmentedImage(sample.name, sample.image, sample.gt, result.label_map, result.features,
                                        result.baseline_label_map()))
    return segmented


def save_segmented(path: Path, segmented: Sequence[SegmentedImage]) -> None:
    arrays = {f"{k}_{field}": getattr(image, field) for k, image in enumerate(segmented)
              for field in ("image", "gt", "label_map", "features", "baseline_map")
              if getattr(image, field) is not None}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, names=np.array([image.name for image in segmented]), **arrays)


def load_segmented(path: Path) -> list[SegmentedImage]:
    with np.load(path, allow_pickle=False) as stored:
        return [SegmentedImage(str(name), *(stored[f"{k}_{field}"] for field in ("image", "gt", "label_map",
                                                                               "features")),
                               stored.get(f"{k}_baseline_map"))
                for k, name in enumerate(stored["names"])]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Label learning: annotate the first N images with their ground truth, label the "
                          "segments of held-out images, score beside the majority-class and colour+size baselines.")
    parser.add_argument("--model", default="bundled", help="hub id, local diffusers folder, or 'bundled'")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--scenes", type=int, help="held-out synthetic scenes to label (after the annotated ones)")
    source.add_argument("--images", type=Path, help="image folder (use with --gt and --dataset)")
    parser.add_argument("--scene-classes", choices=("shape", "colour"), default="shape",
                        help="scene classes: the object's shape, or its colour family (default: %(default)s)")
    parser.add_argument("--gt", type=Path, help="ground-truth label folder, for --images")
    parser.add_argument("--dataset", choices=sorted(LAYOUTS), default="folder")
    parser.add_argument("--stems", type=Path, help="text file of image stems (annotated first, in this order)")
    parser.add_argument("--test", type=int, default=50, help="held-out images for --images (default: %(default)s)")
    parser.add_argument("--counts", default=",".join(map(str, DEFAULT_COUNTS)),
                        help="numbers of annotated images, comma-separated (default: %(default)s)")
    parser.add_argument("--k", type=int, default=6, help="segments per image (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="first scene seed and segmentor seed")
    parser.add_argument("--size", type=int, help="scene side in pixels (default: the model's native size)")
    parser.add_argument("--ignore", type=int, default=DEFAULT_IGNORE)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"])
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--segmentations", type=Path,
                        help="an .npz of the segmentations: read when it exists (same arguments!), else written")
    parser.add_argument("--clip", help="add the zero-shot point: a CLIP ('bundled', a folder or a cached hub id)")
    parser.add_argument("--clip-modes", default="all",
                        help="dense CLIP modes to compare, comma-separated, or 'all' (default: %(default)s)")
    parser.add_argument("--clip-templates", default="default",
                        help="prompt template set of segmentor.zeroshot.text (default: %(default)s)")
    parser.add_argument("--class-names", type=Path,
                        help="the classes by id, one a line, 'name' or 'name: word, word' (zero-shot synonyms); "
                             "replaces the dataset's names")
    parser.add_argument("--out", type=Path, required=True, help="JSON report to write")


def run(args: argparse.Namespace) -> int:
    from segmentor.config import EmerDiffConfig
    from segmentor.emerdiff import EmerDiffSegmentor
    from segmentor.loading import ModelLoadError, load_model
    from segmentor.toy.scenes import CLASS_NAMES, COLOUR_CLASS_NAMES

    try:
        counts = sorted({int(c) for c in args.counts.split(",") if c.strip()})
        if not counts or counts[0] < 1:
            raise EvaluationError("--counts must be positive integers")
        model = load_model(args.model, device=args.device, dtype=args.dtype)
        segmentor = EmerDiffSegmentor(model, EmerDiffConfig(num_segments=args.k, seed=args.seed, device=args.device,
                                                            dtype=args.dtype))
        annotated, held_out = counts[-1], (args.scenes if args.scenes is not None else args.test)
        if args.scenes is not None:
            size = args.size or model.native_size
            class_names = COLOUR_CLASS_NAMES if args.scene_classes == "colour" else CLASS_NAMES
            samples = _scene_samples(annotated + held_out, args.seed, size, args.scene_classes)
            source = {"scenes": annotated + held_out, "first_seed": args.seed, "size": size,
                      "classes": args.scene_classes}
        else:
            if args.gt is None:
                raise EvaluationError("--images needs --gt")
            stems = read_stem_list(args.stems) if args.stems else None
            _, samples = folder_samples(args.images, args.gt, LAYOUTS[args.dataset], args.ignore, stems,
                                        annotated + held_out)
            class_names = _dataset_classes(args.dataset)
            source = {"images": str(args.images), "gt": str(args.gt), "dataset": args.dataset}
        if args.class_names is not None:  # the file names the classes (id = line order): ADE20K, Pascal Context
            class_names = tuple(read_class_words(args.class_names))
        zero_shot_setup = _zero_shot_setup(args, class_names)
        segment_seconds = None
        if args.segmentations is not None and args.segmentations.exists():
            segmented = load_segmented(args.segmentations)
        else:
            started = time.perf_counter()
            segmented = segment_all(segmentor, samples, annotated + held_out, progress=not args.no_progress)
            segment_seconds = (time.perf_counter() - started) / max(len(segmented), 1)
            if args.segmentations is not None:
                save_segmented(args.segmentations, segmented)
        if len(segmented) <= annotated:
            raise EvaluationError(f"{len(segmented)} images: need more than the {annotated} annotated ones")
        report = evaluate_labels(segmented[:annotated], segmented[annotated:], class_names, counts,
                                 ignore=args.ignore)
        if zero_shot_setup is not None:
            clip, words, modes, templates = zero_shot_setup
            report["zero_shot"] = {"clip": args.clip, **zero_shot_report(segmented[annotated:], words, clip, modes,
                                                                          templates, args.ignore)}
    except (EvaluationError, ModelLoadError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    report = {"model": args.model, "k": args.k, "source": source, "test_images": len(segmented) - annotated,
              "classes": list(class_names), "segment_seconds_per_image": segment_seconds, **report}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(format_table(report))
    return 0


def format_table(report: dict) -> str:
    """A markdown table of the report (what docs/QUALITY.md shows)."""
    default = f"{DEFAULT_THRESHOLD:g}"
    lines = ["| N | examples | labels by | pixel acc. | class-mean acc. | region acc. | labelled at "
             f"{default} (their region acc.) |", "|---|---|---|---|---|---|---|"]
    for run in report["runs"]:
        names = [(f"learnt: {method}", method) for method in METHODS if method in run]
        for name, key in (*names, ("majority class", "majority_class"), ("mean colour + size", "colour_size")):
            scores = run[key]
            at = scores.get("at_threshold", {}).get(default)
            extra = f"{at['labelled']:.2f} ({at['region_accuracy'] or 0:.2f})" if at else ""
            lines.append(f"| {run['annotated_images']} | {run['examples']} | {name} | "
                         f"{scores['pixel_accuracy']:.3f} | {scores['class_mean_accuracy']:.3f} | "
                         f"{scores['region_accuracy']:.3f} | {extra} |")
    if "zero_shot" in report:
        lines.extend(format_zero_shot_rows(report["zero_shot"]))
    ceiling = report["ceiling"]
    lines.append(f"| — | | ceiling (segment = its majority class) | {ceiling['pixel_accuracy']:.3f} | "
                 f"{ceiling['class_mean_accuracy']:.3f} | {ceiling['region_accuracy']:.3f} | |")
    return "\n".join(lines)


def _zero_shot_setup(args: argparse.Namespace, class_names: Sequence[str]) -> tuple | None:
    """(clip, words per class, modes, templates) for ``--clip``, checked before any segmenting; else None."""
    from segmentor.zeroshot import MODES, load_clip
    from segmentor.zeroshot.text import TEMPLATE_SETS

    if args.clip is None:
        return None
    modes = MODES if args.clip_modes == "all" else tuple(m.strip() for m in args.clip_modes.split(",") if m.strip())
    unknown = [mode for mode in modes if mode not in MODES]
    if unknown or not modes:
        raise EvaluationError(f"--clip-modes: unknown {', '.join(unknown) or 'empty list'}; use {', '.join(MODES)}")
    if args.clip_templates not in TEMPLATE_SETS:
        raise EvaluationError(f"--clip-templates: unknown set {args.clip_templates!r}; use "
                              f"{', '.join(TEMPLATE_SETS)}")
    words = read_class_words(args.class_names) if args.class_names else {name: (name,) for name in class_names}
    return load_clip(args.clip, device=args.device, dtype=args.dtype), words, modes, TEMPLATE_SETS[args.clip_templates]


def _scene_samples(count: int, seed: int, size: int, classes: str):
    from segmentor.toy.scenes import generate_scene

    for scene_seed in range(seed, seed + count):
        scene = generate_scene(scene_seed, size, classes)
        yield Sample(f"scene_{scene_seed:07d}", scene.image, scene.class_map.astype(np.int64))


def _dataset_classes(dataset: str) -> tuple[str, ...]:
    from segmentor.evaluation.data import CITYSCAPES19_CLASSES, COCOSTUFF27_CLASSES

    if dataset == "cocostuff27":
        return COCOSTUFF27_CLASSES
    if dataset == "cityscapes":
        return CITYSCAPES19_CLASSES
    if dataset == "cityscapes27":
        return tuple(f"class{k}" for k in range(27))
    return tuple(f"class{k}" for k in range(256))
