"""Tree-merged K against directly computed K on the synthetic scenes, for each linkage of the merge tree.

Per scene: one segmentation at a fine K, cut to each coarser K by the merge tree, and a segmentation run
directly at that K. Scored per image (Hungarian-matched mIoU) against the ground-truth class map, and the
two K-segment maps against each other (their agreement). Run:

    python -m segmentor.evaluation.granularity --model bundled --scenes 20 --fine-k 12 --ks 2 3 4 6 8
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence

import numpy as np
import torch

from segmentor.config import EmerDiffConfig
from segmentor.emerdiff import EmerDiffSegmentor
from segmentor.evaluation.data import scene_samples
from segmentor.evaluation.metrics import per_image_miou
from segmentor.loading import load_model
from segmentor.merge_tree import LINKAGES, MergeTree


def measure(
    model_reference: str, scenes: int, seed: int, size: int, fine_k: int, ks: Sequence[int]
) -> dict:
    model = load_model(model_reference, device="cpu")
    base = EmerDiffConfig(num_segments=fine_k, seed=seed, device="cpu")
    segmentors = {k: EmerDiffSegmentor(model, dataclasses.replace(base, num_segments=k)) for k in {fine_k, *ks}}
    rows: dict[str, dict[int, list[float]]] = {
        name: {k: [] for k in ks}
        for name in ("direct", *(f"tree_{linkage}" for linkage in LINKAGES),
                     *(f"agreement_{linkage}" for linkage in LINKAGES))
    }
    for sample in scene_samples(scenes, seed, size):
        fine = segmentors[fine_k].segment(sample.image)
        embeddings = np.stack([segment.embedding for segment in fine.segments])
        trees = {linkage: MergeTree.build(fine.label_map, embeddings, linkage) for linkage in LINKAGES}
        for k in ks:
            direct = segmentors[k].segment(sample.image).label_map
            rows["direct"][k].append(per_image_miou(direct, sample.gt))
            for linkage, tree in trees.items():
                merged = tree.cut(fine.label_map, k)
                rows[f"tree_{linkage}"][k].append(per_image_miou(merged, sample.gt))
                rows[f"agreement_{linkage}"][k].append(per_image_miou(merged, direct, ignore=None))
    return {
        "model": model_reference, "scenes": scenes, "seed": seed, "size": size, "fine_k": fine_k,
        "per_image_miou": {
            name: {str(k): {"mean": float(np.mean(values)),
                            "sem": float(np.std(values, ddof=1) / np.sqrt(len(values))) if len(values) > 1 else None}
                   for k, values in by_k.items()}
            for name, by_k in rows.items()
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bundled")
    parser.add_argument("--scenes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=5000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--fine-k", type=int, default=12)
    parser.add_argument("--ks", type=int, nargs="+", default=[2, 3, 4, 6, 8])
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    report = measure(args.model, args.scenes, args.seed, args.size, args.fine_k, args.ks)
    json.dump(report, sys.stdout, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
