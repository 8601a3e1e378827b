"""Added latency of zero-shot labels per image, as ratios to the segmentation time, on this machine.

For ``--scenes`` synthetic colour scenes: the EmerDiff segmentation (``segmentor.emerdiff``, the config's
defaults), CLIP's dense grid per mode (``segmentor.zeroshot.dense_grid``), and the label words' embeddings
through the backend's cache (``ml_backend.labels.zeroshot.ZeroShot.embeddings``): cold (empty cache: the
text tower runs), warm from memory (same process), warm from disk (a new process's first request). Prints
JSON. Run:

    python -m ml_backend.benchmarks.zero_shot --model bundled --clip bundled --scenes 8
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

from ml_backend.core.label_config import BACKGROUND_WORDS
from ml_backend.core.metrics import Metrics
from ml_backend.core.settings import Settings
from ml_backend.labels.zeroshot import ZeroShot
from segmentor.config import EmerDiffConfig
from segmentor.emerdiff import EmerDiffSegmentor
from segmentor.loading import load_model
from segmentor.toy.scenes import generate_scene
from segmentor.zeroshot import MODES, dense_grid, load_clip

# A colour project's labels as the label config gives them (the background label with its default words).
WORDS = {"Background": BACKGROUND_WORDS, "Red": ("red",), "Green": ("green",), "Blue": ("blue",)}


def measure(model: str, clip_reference: str, scenes: int, seed: int, templates: str) -> dict:
    loaded = load_model(model, device="cpu", dtype="float32")
    segmentor = EmerDiffSegmentor(loaded, EmerDiffConfig(seed=seed, device="cpu", dtype="float32"))
    clip = load_clip(clip_reference, device="cpu", dtype="float32")
    images = [generate_scene(scene, loaded.native_size, "colour").image
              for scene in range(seed, seed + scenes)]
    segment = _median_seconds(lambda image: segmentor.segment(image), images)
    grids = {mode: _median_seconds(lambda image, mode=mode: dense_grid(clip, image, mode), images) for mode in MODES}
    with tempfile.TemporaryDirectory() as cache:
        settings = dataclasses.replace(Settings(), cache_dir=Path(cache), clip_templates=templates)
        lock = threading.Lock()
        first = ZeroShot(clip, settings, Metrics(), lock)
        cold = _seconds(lambda: first.embeddings(WORDS))
        memory = _seconds(lambda: first.embeddings(WORDS))
        disk = _seconds(lambda: ZeroShot(clip, settings, Metrics(), lock).embeddings(WORDS))
    prompts = sum(len(words) for words in WORDS.values()) * len(first.templates)
    return {
        "model": model, "clip": clip_reference, "scenes": scenes, "image_side": images[0].shape[0],
        "torch_threads": torch.get_num_threads(), "segment_seconds": segment,
        "grid_seconds": grids, "grid_ratio": {mode: seconds / segment for mode, seconds in grids.items()},
        "text": {"words": sum(len(words) for words in WORDS.values()), "prompts": prompts,
                 "cold_seconds": cold, "warm_memory_seconds": memory, "warm_disk_seconds": disk,
                 "cold_ratio": cold / segment, "warm_memory_ratio": memory / segment,
                 "warm_disk_ratio": disk / segment},
    }


def _seconds(work) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def _median_seconds(work, images) -> float:
    work(images[0])  # warm-up: first-call allocations are not per-image cost
    return statistics.median(_seconds(lambda image=image: work(image)) for image in images)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ml_backend.benchmarks.zero_shot", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="bundled", help="diffusion model: hub id, folder or 'bundled'")
    parser.add_argument("--clip", default="bundled", help="CLIP: hub id in the cache, folder or 'bundled'")
    parser.add_argument("--scenes", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--templates", default="default", help="template set (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.scenes < 1:
        print("error: --scenes must be at least 1", file=sys.stderr)
        return 2
    print(json.dumps(measure(args.model, args.clip, args.scenes, args.seed, args.templates), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
