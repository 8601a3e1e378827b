"""Command line: ``python -m converters ls2coco EXPORT.json --config LABEL_CONFIG.xml --out COCO.json``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from converters.coco import ExportFormatError, label_studio_export_to_coco
from converters.label_config import LabelConfigError

EXIT_BAD_INPUT = 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m converters", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    ls2coco = commands.add_parser(
        "ls2coco",
        help="Label Studio JSON export → COCO instance segmentation (polygon and brush regions)",
    )
    ls2coco.add_argument("export", type=Path, help="Label Studio JSON export (a list of tasks)")
    ls2coco.add_argument("--config", type=Path, required=True, help="the project's label config XML file")
    ls2coco.add_argument("--out", type=Path, required=True, help="COCO JSON file to write")
    ls2coco.add_argument(
        "--predictions",
        action="store_true",
        help="convert the tasks' predictions instead of their annotations",
    )
    args = parser.parse_args(argv)
    try:
        coco = label_studio_export_to_coco(
            _read_json(args.export), _read_text(args.config), predictions=args.predictions
        )
        args.out.write_text(json.dumps(coco), encoding="utf-8")
    except (ExportFormatError, LabelConfigError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(
        f"wrote {args.out}: {len(coco['images'])} images, {len(coco['annotations'])} annotations, "
        f"{len(coco['categories'])} categories"
    )
    return 0


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ExportFormatError(f"cannot read {path}: {error}") from error


def _read_json(path: Path) -> object:
    try:
        return json.loads(_read_text(path))
    except json.JSONDecodeError as error:
        raise ExportFormatError(
            f"{path} is not valid JSON (truncated or corrupt?): {error.msg} at line {error.lineno}, "
            f"column {error.colno}"
        ) from error


if __name__ == "__main__":
    sys.exit(main())
