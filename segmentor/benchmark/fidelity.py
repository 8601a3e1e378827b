"""How faithful cheaper settings are to the full method: same images, label maps compared, cost side by side.

For every image each candidate and the full method (``paper``) segment it in turn (interleaved, so
machine noise hits them alike). Both start from the same coarse masks (the features and k-means do
not depend on the lift's settings), so the comparison is direct:

- ``pixel_agreement``: fraction of pixels given to the same coarse mask by both;
- ``miou``: per-image mIoU of the candidate's label map against the full method's (Hungarian matched).

Beside them: the FLOP ratio (counted on this model at this size, ``segmentor.benchmark.flops``) and
the CPU/GPU time ratio. ``python -m segmentor.benchmark.fidelity --model bundled --scenes 20``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from segmentor.benchmark.flops import segmentation_flops
from segmentor.benchmark.sd_architecture import SD15_RANDOM, random_sd15
from segmentor.config import PRESETS, EmerDiffConfig
from segmentor.emerdiff import EmerDiffSegmentor
from segmentor.evaluation.metrics import per_image_miou
from segmentor.loading import DiffusionModel, load_model
from segmentor.result import Segmentation
from segmentor.toy.scenes import generate_scene

# Each candidate for the fast preset on its own, then the preset: overrides of the full method's config.
CANDIDATES: dict[str, dict[str, object]] = {
    "4 steps after t_m (step_stride=4)": {"step_stride": 4},
    "one-sided difference (I+ - I_ref)": {"difference": "one_sided"},
    "4 steps + one-sided": {"step_stride": 4, "difference": "one_sided"},
    "shared attention maps": {"shared_attention_maps": True},
    "fast preset: 1 step after t_m (step_stride=15, the x0 prediction)": PRESETS["fast"],
}


def coarse_winners(segmentation: Segmentation) -> np.ndarray:
    """The label map in coarse-mask ids (those of ``coarse_labels``) instead of segment ids."""
    to_coarse = np.array([segmentation.coarse_labels[segment.low_res_mask][0] for segment in segmentation.segments])
    return to_coarse[segmentation.label_map]


def agreement(full: Segmentation, other: Segmentation) -> dict[str, float]:
    """Pixel agreement (same coarse mask wins) and mIoU of ``other`` against ``full``, one image."""
    if not np.array_equal(full.coarse_labels, other.coarse_labels):
        raise ValueError("the two segmentations start from different coarse masks: compare lift settings only")
    return {"pixel_agreement": float((coarse_winners(full) == coarse_winners(other)).mean()),
            "miou": per_image_miou(other.label_map, full.label_map, ignore=None)}


def compare(model: DiffusionModel, images: Sequence[np.ndarray], base: EmerDiffConfig,
            candidates: dict[str, dict[str, object]]) -> dict:
    """Segment every image with ``base`` and with each candidate; agreement, FLOP and time ratios."""
    full = EmerDiffSegmentor(model, base)
    others = {name: EmerDiffSegmentor(model, dataclasses.replace(base, **changes))
              for name, changes in candidates.items()}
    everyone = {"paper": full, **others}
    for segmentor in everyone.values():
        segmentor.segment(images[0])  # warm-up: one-off allocations stay out of the timings
    seconds = {name: 0.0 for name in everyone}
    scores: dict[str, list[dict[str, float]]] = {name: [] for name in others}
    for image in images:
        results = {}
        for name, segmentor in everyone.items():
            started = time.perf_counter()
            results[name] = segmentor.segment(image)
            seconds[name] += time.perf_counter() - started
        for name in others:
            scores[name].append(agreement(results["paper"], results[name]))
    shape = images[0].shape[:2]
    flops = {name: segmentation_flops(segmentor, shape, base.num_segments)["total"]
             for name, segmentor in everyone.items()}
    rows = {name: {"overrides": candidates[name], "fingerprint": others[name].fingerprint(),
                   "flop_ratio": flops[name] / flops["paper"], "time_ratio": seconds[name] / seconds["paper"],
                   **_summary(scores[name])}
            for name in others}
    return {"device": str(model.device), "dtype": str(model.dtype).removeprefix("torch."), "model": model.reference,
            "images": len(images), "image_shape": list(shape), "num_segments": base.num_segments,
            "paper": {"fingerprint": full.fingerprint(), "flops_per_image": flops["paper"],
                      "seconds_per_image": seconds["paper"] / len(images)},
            "candidates": rows}


def candidate_flops(model: DiffusionModel, base: EmerDiffConfig, candidates: dict[str, dict[str, object]],
                    size: int) -> dict:
    """FLOPs of one size x size image under ``base`` and each candidate, and each one's ratio to ``base``."""
    def total(config: EmerDiffConfig) -> int:
        return segmentation_flops(EmerDiffSegmentor(model, config), (size, size), base.num_segments)["total"]

    full = total(base)
    rows = {}
    for name, changes in candidates.items():
        flops = total(dataclasses.replace(base, **changes))
        rows[name] = {"overrides": changes, "flops_per_image": flops, "flop_ratio": flops / full}
    return {"model": model.reference, "device": str(model.device), "size": size, "num_segments": base.num_segments,
            "paper": {"flops_per_image": full}, "candidates": rows}


def _summary(scores: list[dict[str, float]]) -> dict[str, float]:
    summary = {}
    for key in ("pixel_agreement", "miou"):
        values = [score[key] for score in scores]
        summary[key] = statistics.mean(values)
        summary[f"{key}_min"] = min(values)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m segmentor.benchmark.fidelity", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="bundled", help="hub id, local diffusers folder, or 'bundled'")
    parser.add_argument("--scenes", type=int, default=10, help="synthetic scenes (seeds SEED, SEED+1, ...)")
    parser.add_argument("--size", type=int, help="scene side in pixels (default: the model's native size)")
    parser.add_argument("--k", type=int, default=8, help="number of k-means masks")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"])
    parser.add_argument("--flops-only", action="store_true",
                        help="only count each candidate's FLOPs (no segmentation); sd15-random counts on 'meta'")
    parser.add_argument("--out", type=Path, help="also write the JSON report here")
    args = parser.parse_args(argv)
    if args.scenes < 1:
        parser.error("--scenes must be at least 1")
    if args.model == SD15_RANDOM:
        model = random_sd15("meta" if args.device == "auto" else args.device, args.dtype)
    else:
        model = load_model(args.model, device=args.device, dtype=args.dtype)
    size = args.size or model.native_size
    base = EmerDiffConfig(num_segments=args.k, seed=args.seed, device=args.device, dtype=args.dtype)
    if args.flops_only:
        report = candidate_flops(model, base, CANDIDATES, size)
    else:
        images = [generate_scene(seed=args.seed + i, size=size).image for i in range(args.scenes)]
        report = compare(model, images, base, CANDIDATES)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
