"""``python -m segmentor score`` and ``python -m segmentor evaluate``: argument parsers and runners."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from segmentor.config import DEFAULT_PRESET, PRESETS, EmerDiffConfig
from segmentor.evaluation.data import (
    LAYOUTS,
    folder_samples,
    pair_by_stem,
    read_label_map,
    read_stem_list,
    scene_samples,
)
from segmentor.evaluation.metrics import DEFAULT_IGNORE, EvaluationError, SetScores
from segmentor.evaluation.run import evaluate, segmentor_config_record
from segmentor.loading import DEFAULT_MODEL, ModelLoadError


def add_score_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Score predicted label maps against ground truth (both <stem>.png, matched by stem)."
    parser.add_argument("--pred", type=Path, required=True, help="folder of predicted label maps <stem>.png")
    parser.add_argument("--gt", type=Path, required=True, help="folder of ground-truth label maps <stem>.png")
    parser.add_argument("--ignore", type=int, default=DEFAULT_IGNORE,
                        help="ground-truth id left out of every score (default: %(default)s)")
    parser.add_argument("--out", type=Path, required=True, help="JSON report to write")


def run_score(args: argparse.Namespace) -> int:
    try:
        scores = SetScores(ignore=args.ignore)
        names = []
        for stem, pred_path, gt_path in pair_by_stem(args.pred, args.gt):
            pred, gt = read_label_map(pred_path), read_label_map(gt_path)
            if pred.shape != gt.shape:
                raise EvaluationError(f"{pred_path} is {pred.shape[1]}x{pred.shape[0]} but {gt_path} is "
                                      f"{gt.shape[1]}x{gt.shape[0]}")
            try:
                scores.add(pred, gt)
            except EvaluationError as error:
                raise EvaluationError(f"{gt_path}: {error}") from error
            names.append(stem)
        report = {**scores.summary(with_dataset_miou=False), "images": len(names),
                  "per_image": [{"name": name, "miou": s.miou, "boundary_f1": s.boundary.f1,
                                 "pixel_accuracy": s.pixel_accuracy} for name, s in zip(names, scores.images,
                                                                                         strict=True)]}
    except EvaluationError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    _write_report(args.out, report)
    print(json.dumps({k: v for k, v in report.items() if k != "per_image"}, indent=2))
    return 0


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Segment images with EmerDiff and score them against ground truth, beside the "
                          "bilinear-upsampling baseline and the ground-truth-mask oracle.")
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help="hub id, local diffusers folder, or 'bundled' (default: %(default)s)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--scenes", type=int, help="evaluate this many synthetic scenes (seeds SEED, SEED+1, ...)")
    source.add_argument("--images", type=Path, help="image folder (use with --gt and --dataset)")
    parser.add_argument("--gt", type=Path, help="ground-truth label folder, for --images")
    parser.add_argument("--dataset", choices=sorted(LAYOUTS), default="folder",
                        help="file naming and label mapping of --images/--gt (default: %(default)s)")
    parser.add_argument("--stems", type=Path, help="text file of image stems to evaluate (one per line)")
    parser.add_argument("--seed", type=int, default=0, help="first scene seed; also seeds dataset-level k-means")
    parser.add_argument("--size", type=int, help="scene side in pixels (default: the model's native size)")
    parser.add_argument("--k", type=int, help="number of k-means masks (default: the config's num_segments)")
    parser.add_argument("--ignore", type=int, default=DEFAULT_IGNORE,
                        help="ground-truth id left out of every score (default: %(default)s)")
    parser.add_argument("--limit", type=int, help="evaluate at most this many images")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                        help="override an EmerDiffConfig field, e.g. --set modulation_strength=5 (repeatable)")
    parser.add_argument("--preset", default=DEFAULT_PRESET, choices=sorted(PRESETS),
                        help="settings --set starts from: paper (the full method) or fast (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"])
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--out", type=Path, required=True, help="JSON report to write")


def run_evaluate(args: argparse.Namespace) -> int:
    from segmentor.emerdiff import EmerDiffSegmentor
    from segmentor.loading import load_model

    try:
        config = build_config(args.overrides, preset=args.preset, k=args.k, device=args.device, dtype=args.dtype)
        if args.images is not None and args.gt is None:
            raise EvaluationError("--images needs --gt (the ground-truth label folder)")
        for name in ("scenes", "limit"):
            if getattr(args, name) is not None and getattr(args, name) < 1:
                raise EvaluationError(f"--{name} must be at least 1")
        model = load_model(args.model, device=args.device, dtype=args.dtype)
        segmentor = EmerDiffSegmentor(model, config)
        if args.scenes is not None:
            count = min(args.scenes, args.limit or args.scenes)
            total, samples = count, scene_samples(count, args.seed, args.size or model.native_size)
            source = {"scenes": count, "first_seed": args.seed, "size": args.size or model.native_size,
                      "ground_truth": "class_map (instance_map under instance_gt)"}
        else:
            stems = read_stem_list(args.stems) if args.stems else None
            keys, samples = folder_samples(args.images, args.gt, LAYOUTS[args.dataset], args.ignore, stems, args.limit)
            total = len(keys)
            source = {"images": str(args.images), "gt": str(args.gt), "dataset": args.dataset}
        report = evaluate(segmentor, samples, ignore=args.ignore, seed=args.seed, total=total,
                          progress=not args.no_progress)
    except (EvaluationError, ModelLoadError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    report = {"model": args.model, "model_identity": model.identity,
              "config": {**segmentor_config_record(segmentor), "preset": args.preset, "source": source,
                         "ignore": args.ignore,
                         "kmeans_seed": args.seed},
              **report}
    _write_report(args.out, report)
    print(json.dumps({key: report[key] for key in ("emerdiff", "baseline", "oracle_emerdiff", "oracle_baseline",
                                                   "paired", "images")}, indent=2))
    return 0


def build_config(overrides: list[str], preset: str = DEFAULT_PRESET, **settings) -> EmerDiffConfig:
    """The preset's EmerDiffConfig with ``FIELD=VALUE`` strings (typed by the field's default) and keyword
    settings on top."""
    fields = {f.name: f for f in dataclasses.fields(EmerDiffConfig)}
    values = {}
    for item in overrides:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or name not in fields:
            raise EvaluationError(f"--set {item!r}: expected FIELD=VALUE with FIELD one of {', '.join(fields)}")
        values[name] = _parse_value(name, text.strip(), fields[name].default)
    if settings.get("k") is not None:
        values["num_segments"] = settings["k"]
    for name in ("device", "dtype"):
        if settings.get(name) is not None:
            values[name] = settings[name]
    try:
        return EmerDiffConfig.preset(preset, **values)
    except (TypeError, ValueError) as error:
        raise EvaluationError(str(error)) from error


def _parse_value(name: str, text: str, default: object) -> object:
    if text.lower() == "none":
        return None
    try:
        if isinstance(default, bool):
            if text.lower() not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                raise ValueError(text)
            return text.lower() in ("true", "1", "yes", "on")
        if isinstance(default, int) or (default is None and name in ("working_size", "batch_size")):
            return int(text)
        if isinstance(default, float):
            return float(text)
    except ValueError as error:
        raise EvaluationError(f"--set {name}={text}: not a valid {type(default).__name__}") from error
    return text


def _write_report(path: Path, report: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
