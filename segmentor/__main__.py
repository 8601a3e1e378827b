"""Command line: ``python -m segmentor {segment,bench,score,evaluate} ...``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from segmentor.config import DEFAULT_PRESET, PRESETS, EmerDiffConfig
from segmentor.evaluation import labels as evaluate_labels
from segmentor.evaluation.cli import add_evaluate_arguments, add_score_arguments, run_evaluate, run_score
from segmentor.loading import DEFAULT_MODEL, ModelLoadError, load_model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m segmentor", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    segment = commands.add_parser("segment", help="segment image files into a folder")
    segment.add_argument("images", nargs="+", type=Path)
    _add_model_arguments(segment)
    segment.add_argument("--out", type=Path, required=True, help="output folder")
    segment.add_argument("--label", default="Object", help="label of every segment in coco.json / predictions.json")
    segment.add_argument("--image-url-prefix", default="",
                         help="prefix of data.image in predictions.json, e.g. /data/local-files/?d=")
    segment.add_argument("--document-root", type=Path,
                         help="write image paths relative to this folder (Label Studio local storage root)")

    bench = commands.add_parser("bench", help="time batched vs reference vs the bare compute floor")
    _add_model_arguments(bench, default_k=8)
    bench.add_argument("--size", type=int, help="image side in pixels (default: the model's native size)")
    bench.add_argument("--repeats", type=int, default=3)
    bench.add_argument("--no-reference", action="store_true", help="skip the (slow) reference implementation")
    bench.add_argument("--out", type=Path, help="also write the JSON report here")

    flops = commands.add_parser("flops", help="count one image's FLOPs, the preset's beside the full method's "
                                "(on the segmentor's code path; sd15-random on the meta device)")
    _add_model_arguments(flops)
    flops.add_argument("--size", type=int, help="image side in pixels (default: the model's native size)")

    doctor = commands.add_parser("doctor", help="check the device, memory and weights; smoke-test float16 vs float32")
    doctor.add_argument("--model", default=DEFAULT_MODEL,
                        help="whose weights and memory to check (default: %(default)s)")
    doctor.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    doctor.add_argument("--size", type=int, help="image side in pixels (default: the model's native size)")
    doctor.add_argument("--k", type=int, default=EmerDiffConfig().num_segments, help="number of k-means masks")
    doctor.add_argument("--clip", default=os.environ.get("EMERDIFF_CLIP_MODEL") or None,
                        help="also report the memory of this CLIP (zero-shot labels; default: EMERDIFF_CLIP_MODEL)")
    doctor.add_argument("--available-gib", type=float,
                        help="judge the memory estimate against this many GiB instead of what is available now "
                             "(e.g. for another machine)")

    add_score_arguments(commands.add_parser("score", help="score predicted label maps against ground truth"))
    add_evaluate_arguments(commands.add_parser(
        "evaluate", help="segment and score: EmerDiff, the bilinear baseline and the oracle pair"))
    evaluate_labels.add_arguments(commands.add_parser(
        "evaluate-labels", help="label learning: annotate N images, label held-out segments, score"))

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        commands_by_name = {"segment": _segment, "bench": _bench, "flops": _flops, "doctor": _doctor,
                            "score": run_score, "evaluate": run_evaluate, "evaluate-labels": evaluate_labels.run}
        return commands_by_name[args.command](args)
    except ModelLoadError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _add_model_arguments(parser: argparse.ArgumentParser, default_k: int | None = None) -> None:
    defaults = EmerDiffConfig()
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help="hub id, local diffusers folder, or 'bundled' (default: %(default)s)")
    parser.add_argument("--preset", default=DEFAULT_PRESET, choices=sorted(PRESETS),
                        help="paper: the full method; fast: under a quarter of its FLOPs (default: %(default)s)")
    parser.add_argument("--k", type=int, default=default_k or defaults.num_segments, help="number of k-means masks")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"])
    parser.add_argument("--working-size", type=int, help="long side of the working image (default: model native)")
    parser.add_argument("--batch-size", type=int, help="modulated runs per U-Net call (default: memory-aware)")
    parser.add_argument("--min-area", type=int, default=defaults.min_segment_area,
                        help="segments smaller than this many pixels go to their runner-up mask")


def _config(args: argparse.Namespace) -> EmerDiffConfig:
    return EmerDiffConfig.preset(args.preset, num_segments=args.k, seed=args.seed, device=args.device,
                                 dtype=args.dtype, batch_size=args.batch_size, min_segment_area=args.min_area,
                                 working_size=getattr(args, "working_size", None) or getattr(args, "size", None))


def _load(args: argparse.Namespace):
    if args.model == "sd15-random":
        from segmentor.benchmark.sd_architecture import random_sd15

        return random_sd15(args.device, args.dtype)
    return load_model(args.model, device=args.device, dtype=args.dtype)


def _segment(args: argparse.Namespace) -> int:
    from segmentor.batch import TaskFormat, segment_files
    from segmentor.emerdiff import EmerDiffSegmentor

    segmentor = EmerDiffSegmentor(_load(args), _config(args))
    task_format = TaskFormat(label=args.label, image_url_prefix=args.image_url_prefix,
                             document_root=args.document_root)
    failures = segment_files(args.images, segmentor, args.out, task_format)
    print(f"wrote {args.out}/coco.json, predictions.json and label_config.xml; "
          f"{len(args.images) - failures} segmented, {failures} failed", file=sys.stderr)
    return 1 if failures else 0


def _bench(args: argparse.Namespace) -> int:
    from segmentor.benchmark.bench import run_benchmark
    from segmentor.toy.scenes import generate_scene

    model = _load(args)
    size = args.size or model.native_size
    image = generate_scene(seed=args.seed, size=size).image
    report = run_benchmark(model, image, _config(args), repeats=args.repeats, with_reference=not args.no_reference)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from segmentor.doctor import run_doctor

    available = None if args.available_gib is None else int(args.available_gib * 2**30)
    report = run_doctor(args.model, args.device, args.size, args.k, available, args.clip)
    print("\n".join(report.lines))
    return report.exit_status


def _flops(args: argparse.Namespace) -> int:
    from segmentor.benchmark.flops import flops_report

    if args.model == "sd15-random" and args.device == "auto":
        args.device = "meta"  # counting needs only shapes: SD 1.5 at 512 px in seconds, no weights in memory
    model = _load(args)
    report = flops_report(model, _config(args), args.size or model.native_size)
    print(json.dumps({"model": args.model, "preset": args.preset, **report}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
