"""Segment a list of image files into a folder: label maps, overlays, COCO and Label Studio tasks."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from converters.coco import CocoBuilder
from converters.labelstudio import regions_from_label_map
from converters.model_version import prediction_version, region_identity
from converters.overlay import overlay_image, write_png
from converters.polygons import DEFAULT_MAX_VERTICES, DEFAULT_TOLERANCE
from segmentor.emerdiff import EmerDiffSegmentor
from segmentor.images import ImageError, load_image

# The label config that predictions.json matches; printed in the README for importing.
LABEL_CONFIG_TEMPLATE = """<View>
  <Image name="{to_name}" value="$image"/>
  <PolygonLabels name="{from_name}" toName="{to_name}">
    <Label value="{label}"/>
  </PolygonLabels>
</View>
"""


@dataclass(frozen=True)
class TaskFormat:
    """How predictions.json names things, so it imports into a matching Label Studio project."""

    label: str = "Object"
    from_name: str = "label"
    to_name: str = "image"
    image_url_prefix: str = ""  # e.g. "/data/local-files/?d=" for Label Studio local storage
    document_root: Path | None = None  # image paths are written relative to this, after the prefix

    def image_reference(self, path: Path) -> str:
        if self.document_root is None:
            return self.image_url_prefix + path.name if self.image_url_prefix else path.resolve().as_posix()
        try:
            relative = path.resolve().relative_to(self.document_root.resolve())
        except ValueError as error:
            raise ImageError(f"{path}: not under the document root {self.document_root}") from error
        return self.image_url_prefix + relative.as_posix()


def segment_files(paths: Sequence[Path], segmentor: EmerDiffSegmentor, out_dir: Path,
                  task_format: TaskFormat = TaskFormat()) -> int:
    """Segment every file; a file that fails is reported and skipped. Returns how many failed."""
    _refuse_stem_collisions(paths)
    out_dir.mkdir(parents=True, exist_ok=True)
    coco = CocoBuilder([task_format.label])
    tasks, failures = [], 0
    version = backend_version(segmentor, task_format)
    for path in tqdm(paths, desc="segmenting", unit="image", file=sys.stderr, disable=len(paths) < 2):
        started = time.perf_counter()
        try:
            image = load_image(path)
            result = segmentor.segment(image)
        except (ImageError, ValueError) as error:
            failures += 1
            tqdm.write(f"{path}: FAILED: {error}", file=sys.stderr)
            continue
        height, width = result.label_map.shape
        dtype = np.uint8 if len(result.segments) <= 256 else np.uint16
        _write_label_map(out_dir / f"{path.stem}.labels.png", result.label_map.astype(dtype))
        write_png(out_dir / f"{path.stem}.overlay.png", overlay_image(image, result.label_map))
        image_id = coco.add_image(path.name, width, height)
        for segment in result.segments:
            coco.add_mask(image_id, task_format.label, result.mask(segment.id), score=segment.score)
        scores = {segment.id: segment.score for segment in result.segments}
        # The region options the version names, as the backend applies them.
        regions = regions_from_label_map(result.label_map, kind="polygon", label=task_format.label,
                                         from_name=task_format.from_name, to_name=task_format.to_name, scores=scores,
                                         min_area=segmentor.config.min_segment_area, tolerance=DEFAULT_TOLERANCE,
                                         max_vertices=DEFAULT_MAX_VERTICES)
        tasks.append({
            "data": {task_format.to_name: task_format.image_reference(path)},
            "predictions": [{"model_version": version, "score": float(np.mean(list(scores.values()))),
                             "result": regions}],
        })
        tqdm.write(f"{path.name}: {len(result.segments)} segments, {time.perf_counter() - started:.2f} s",
                   file=sys.stderr)
    coco.write(out_dir / "coco.json")
    _write_json(out_dir / "predictions.json", tasks)
    (out_dir / "label_config.xml").write_text(LABEL_CONFIG_TEMPLATE.format(**vars(task_format)))
    return failures


def backend_version(segmentor: EmerDiffSegmentor, task_format: TaskFormat) -> str:
    """The ``model_version`` the ML backend reports for label_config.xml with this segmentor's settings
    (and polygon defaults), so an imported predictions.json is never predicted again by the backend."""
    config = segmentor.config
    region = region_identity(
        from_name=task_format.from_name, to_name=task_format.to_name, kind="polygon", label=task_format.label,
        min_area=config.min_segment_area, segments=config.num_segments, tolerance=DEFAULT_TOLERANCE,
        max_vertices=DEFAULT_MAX_VERTICES,
    )
    return prediction_version({task_format.from_name: segmentor.fingerprint()}, [region])


def _refuse_stem_collisions(paths: Sequence[Path]) -> None:
    seen: dict[str, Path] = {}
    for path in paths:
        if path.stem in seen:
            raise ValueError(f"{seen[path.stem]} and {path} would write the same outputs ({path.stem}.*): "
                             "segment them into different --out folders")
        seen[path.stem] = path


def _write_label_map(path: Path, label_map: np.ndarray) -> None:
    if not cv2.imwrite(str(path), label_map):
        raise OSError(f"could not write {path}")


def _write_json(path: Path, payload: object) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(payload, indent=1) + "\n")
    os.replace(temporary, path)
