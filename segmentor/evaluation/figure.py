"""The figure of docs/QUALITY.md: scenes with ground truth, the bilinear baseline and EmerDiff, side by side.

``python -m segmentor.evaluation.figure --model bundled --seed 1000 --count 4 --out docs/figures/bundled-examples.png``
Columns: image | ground truth | baseline | EmerDiff | oracle baseline | oracle EmerDiff (each an overlay).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from converters.overlay import overlay_image, write_png
from segmentor.config import EmerDiffConfig
from segmentor.emerdiff import EmerDiffSegmentor
from segmentor.evaluation.data import scene_samples
from segmentor.evaluation.run import oracle_masks
from segmentor.loading import load_model

COLUMNS = ("image", "ground truth", "baseline", "EmerDiff", "oracle baseline", "oracle EmerDiff")


def figure_rows(segmentor: EmerDiffSegmentor, count: int, seed: int) -> list[np.ndarray]:
    rows = []
    for sample in scene_samples(count, seed, segmentor.model.native_size):
        result = segmentor.segment(sample.image)
        masks, _ = oracle_masks(sample.gt, segmentor.feature_grid(sample.image.shape), ignore=None)
        oracle = segmentor.segment(sample.image, low_res_masks=masks)
        maps = [sample.gt, result.baseline_label_map(), result.label_map, oracle.baseline_label_map(), oracle.label_map]
        rows.append(np.hstack([sample.image, *(overlay_image(sample.image, m.astype(np.int32)) for m in maps)]))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m segmentor.evaluation.figure", description=__doc__)
    parser.add_argument("--model", default="bundled")
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--count", type=int, default=4)
    parser.add_argument("--k", type=int, default=6)
    parser.add_argument("--scale", type=int, default=3, help="nearest-neighbour magnification")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    segmentor = EmerDiffSegmentor(load_model(args.model), EmerDiffConfig(num_segments=args.k))
    grid = np.vstack(figure_rows(segmentor, args.count, args.seed))
    grid = cv2.resize(grid, None, fx=args.scale, fy=args.scale, interpolation=cv2.INTER_NEAREST)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_png(args.out, grid)
    print(f"wrote {args.out}: columns {', '.join(COLUMNS)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
