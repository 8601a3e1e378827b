"""Command line of the converters; every bad input ends in one ``error: …`` line and exit status 2.

- ``ls2coco EXPORT.json --config CONFIG.xml --out COCO.json`` — a Label Studio JSON export → COCO;
  ``--predictions`` also writes the predictions as a ``COCO.loadRes`` detections list beside it.
- ``evaluate COCO.json RESULTS.json`` — COCOeval segm and bbox AP of the detections.
- ``coco2ls COCO.json --config CONFIG.xml --out TASKS.json`` — COCO → Label Studio tasks with predictions.
- ``ls2yolo EXPORT.json --config CONFIG.xml --out FOLDER`` — a Label Studio JSON export → a YOLO
  segmentation dataset: ``FOLDER/data.yaml`` and ``FOLDER/labels/<image>.txt`` (put the images in
  ``FOLDER/images/<image>``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from converters.coco import ENCODINGS, CocoError
from converters.coco2ls import DEFAULT_IMAGE_PREFIX, CocoFormatError, coco_to_label_studio_tasks
from converters.evaluate import EvaluationInputError, evaluate
from converters.images import ImageFolders
from converters.label_config import LabelConfigError
from converters.ls2coco import SELECTIONS, ExportFormatError, label_studio_export_to_coco
from converters.ls2yolo import YOLO_SELECTIONS, label_studio_export_to_yolo

EXIT_BAD_INPUT = 2
_BAD_INPUT = (
    CocoError,
    CocoFormatError,
    EvaluationInputError,
    ExportFormatError,
    LabelConfigError,
    OSError,
    UnicodeError,
)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except _BAD_INPUT as error:
        message = " ".join(str(error).split())  # one line, whatever the message held
        print(f"error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except RecursionError:
        # Only input nests (JSON arrays in arrays...): past Python's stack the file is refused, not traced.
        print("error: the input is nested too deeply to read", file=sys.stderr)
        return EXIT_BAD_INPUT


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m converters", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)

    ls2coco = commands.add_parser("ls2coco", help="Label Studio JSON export → COCO instance segmentation")
    ls2coco.add_argument("export", type=Path, help="Label Studio JSON export (a list of tasks)")
    ls2coco.add_argument("--config", type=Path, required=True, help="the project's label config XML file")
    ls2coco.add_argument("--out", type=Path, required=True, help="COCO JSON file to write")
    ls2coco.add_argument(
        "--annotations",
        choices=SELECTIONS,
        default="ground-truth",
        help="which annotations of a task: its ground truth else its latest (default), the latest, or all",
    )
    ls2coco.add_argument(
        "--encoding",
        choices=ENCODINGS,
        default="auto",
        help="segmentation as polygons, RLE, or auto (RLE only for brush masks with holes)",
    )
    ls2coco.add_argument(
        "--predictions",
        action="store_true",
        help="also write each task's latest prediction as a COCO.loadRes detections list, OUT with "
        "the suffix .results.json",
    )
    ls2coco.add_argument("--model-version", help="with --predictions: only predictions of this model version")
    ls2coco.add_argument("--document-root", type=Path, help="Label Studio's LOCAL_FILES_DOCUMENT_ROOT")
    ls2coco.add_argument("--media-root", type=Path, help="Label Studio's media folder (holds upload/)")
    ls2coco.add_argument(
        "--keep-unannotated",
        action="store_true",
        help="keep tasks nobody annotated as images without annotations (default: leave them out)",
    )
    ls2coco.set_defaults(run=_ls2coco)

    evaluation = commands.add_parser("evaluate", help="COCOeval segm and bbox AP of detections")
    evaluation.add_argument("dataset", type=Path, help="COCO dataset (ground truth)")
    evaluation.add_argument("results", type=Path, help="detections list (COCO.loadRes format)")
    evaluation.set_defaults(run=_evaluate)

    coco2ls = commands.add_parser("coco2ls", help="COCO → Label Studio tasks with predictions")
    coco2ls.add_argument("coco", type=Path, help="COCO dataset")
    coco2ls.add_argument("--config", type=Path, required=True, help="the project's label config XML file")
    coco2ls.add_argument("--out", type=Path, required=True, help="Label Studio tasks JSON file to write")
    coco2ls.add_argument(
        "--image-prefix",
        default=DEFAULT_IMAGE_PREFIX,
        help=f"put before each file_name to make the task's image URL (default {DEFAULT_IMAGE_PREFIX!r})",
    )
    coco2ls.add_argument("--model-version", default="coco", help="model_version of the predictions")
    coco2ls.set_defaults(run=_coco2ls)

    ls2yolo = commands.add_parser("ls2yolo", help="Label Studio JSON export → YOLO segmentation labels")
    ls2yolo.add_argument("export", type=Path, help="Label Studio JSON export (a list of tasks)")
    ls2yolo.add_argument("--config", type=Path, required=True, help="the project's label config XML file")
    ls2yolo.add_argument("--out", type=Path, required=True, help="dataset folder: data.yaml and labels/ go there")
    ls2yolo.add_argument(
        "--annotations",
        choices=YOLO_SELECTIONS,
        default="ground-truth",
        help="which annotation of a task: its ground truth else its latest (default), or the latest",
    )
    ls2yolo.add_argument("--document-root", type=Path, help="Label Studio's LOCAL_FILES_DOCUMENT_ROOT")
    ls2yolo.add_argument("--media-root", type=Path, help="Label Studio's media folder (holds upload/)")
    ls2yolo.add_argument(
        "--keep-unannotated",
        action="store_true",
        help="keep tasks nobody annotated as images with empty label files (default: leave them out)",
    )
    ls2yolo.set_defaults(run=_ls2yolo)
    return parser


def _ls2coco(args: argparse.Namespace) -> int:
    converted = label_studio_export_to_coco(
        _read_json(args.export),
        _read_text(args.config),
        annotations=args.annotations,
        encoding=args.encoding,
        predictions=args.predictions,
        model_version=args.model_version,
        folders=ImageFolders(args.document_root, args.media_root),
        keep_unannotated=args.keep_unannotated,
    )
    dataset = converted.dataset
    _write_json(args.out, dataset)
    print(
        f"wrote {args.out}: {len(dataset['images'])} images, {len(dataset['annotations'])} annotations, "
        f"{len(dataset['categories'])} categories"
    )
    if converted.results is not None:
        results_path = args.out.with_name(f"{args.out.stem}.results.json")
        _write_json(results_path, converted.results)
        print(f"wrote {results_path}: {len(converted.results)} detections")
    if converted.skipped:
        counts = ", ".join(f"{kind} {count}" for kind, count in sorted(converted.skipped.items()))
        print(f"skipped (no COCO counterpart): {counts}")
    if converted.unannotated:
        print(f"left out {len(converted.unannotated)} unannotated tasks (--keep-unannotated keeps them)")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    for evaluation in evaluate(_read_json(args.dataset), _read_json(args.results)):
        print(
            f"{evaluation.iou_type}: AP {evaluation.ap:.3f}  AP50 {evaluation.stats[1]:.3f}  "
            f"AP75 {evaluation.stats[2]:.3f}"
        )
        print(evaluation.summary, end="")
    return 0


def _coco2ls(args: argparse.Namespace) -> int:
    tasks = coco_to_label_studio_tasks(
        _read_json(args.coco),
        _read_text(args.config),
        image_prefix=args.image_prefix,
        model_version=args.model_version,
    )
    _write_json(args.out, tasks)
    regions = sum(len(task["predictions"][0]["result"]) for task in tasks)
    print(f"wrote {args.out}: {len(tasks)} tasks, {regions} regions")
    return 0


def _ls2yolo(args: argparse.Namespace) -> int:
    converted = label_studio_export_to_yolo(
        _read_json(args.export),
        _read_text(args.config),
        annotations=args.annotations,
        folders=ImageFolders(args.document_root, args.media_root),
        keep_unannotated=args.keep_unannotated,
        dataset_path=str(args.out.resolve()),
    )
    root = args.out.resolve()
    for relative, text in converted.labels.items():
        path = (root / relative).resolve()
        if not path.is_relative_to(root):  # names are relative without '..' (converters.images); kept so
            raise ExportFormatError(f"label file {relative!r} would be written outside {root}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    (root / "data.yaml").write_text(converted.data_yaml, encoding="utf-8")
    lines = sum(text.count("\n") for text in converted.labels.values())
    print(
        f"wrote {root}: data.yaml, {len(converted.labels)} label files, {lines} polygons, "
        f"{len(converted.names)} classes"
    )
    if converted.skipped:
        counts = ", ".join(f"{kind} {count}" for kind, count in sorted(converted.skipped.items()))
        print(f"skipped (no YOLO counterpart): {counts}")
    if converted.unannotated:
        print(f"left out {len(converted.unannotated)} unannotated tasks (--keep-unannotated keeps them)")
    return 0


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ExportFormatError(f"cannot read {path}: {error}") from error


def _read_json(path: Path) -> object:
    try:
        return json.loads(_read_text(path))
    except RecursionError as error:
        raise ExportFormatError(f"{path} is nested too deeply to read (arrays or objects in each other)") from error
    except json.JSONDecodeError as error:
        raise ExportFormatError(
            f"{path} is not valid JSON (truncated or corrupt?): {error.msg} at line {error.lineno}, "
            f"column {error.colno}"
        ) from error


def _write_json(path: Path, document: object) -> None:
    path.write_text(json.dumps(document), encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
