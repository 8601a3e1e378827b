"""Latency of smart-tool answers on a cached image, through the real app's /predict.

One image (a synthetic scene, ``--size`` px) is segmented once by an automatic prediction; then
``--prompts`` seeded prompts (1-3 points with some negatives, or a rectangle) are timed end to end:
the request, the image read and hash, the cache read, the selection, the region conversion and its
validation. Prints p50/p95/max per region kind as JSON. Run:

    python -m ml_backend.benchmarks.smart_tools --model bundled --size 1024 --prompts 200
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ml_backend.core.settings import Settings
from ml_backend.service.app import create_app
from segmentor.toy.scenes import generate_scene

CONFIG = (
    '<View><Image name="image" value="$image"/>'
    '<{tag} name="out" toName="image"><Label value="Object"/></{tag}>'
    '<KeyPointLabels name="point" toName="image" smart="true"><Label value="Object" smart="true"/></KeyPointLabels>'
    '<RectangleLabels name="box" toName="image" smart="true"><Label value="Object"/></RectangleLabels></View>'
)
TAGS = {"polygon": "PolygonLabels", "brush": "BrushLabels"}


def prompts(count: int, seed: int) -> list[list[dict]]:
    """Seeded prompt sets: three in four are 1-3 points (a quarter of later points negative), the rest a box."""
    rng = np.random.default_rng(seed)
    sets = []
    for _ in range(count):
        if rng.random() < 0.75:
            points = [
                {"type": "keypointlabels", "is_positive": bool(index == 0 or rng.random() < 0.75),
                 "value": {"x": float(rng.uniform(1, 99)), "y": float(rng.uniform(1, 99)),
                           "keypointlabels": ["Object"]}}
                for index in range(int(rng.integers(1, 4)))
            ]
            sets.append(points)
        else:
            x, y = rng.uniform(0, 60, 2)
            width, height = rng.uniform(10, 40, 2)
            sets.append([{"type": "rectanglelabels", "value": {
                "x": float(x), "y": float(y), "width": float(width), "height": float(height),
                "rectanglelabels": ["Object"]}}])
    return sets


def measure(model: str, size: int, count: int, seed: int, num_segments: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        Image.fromarray(generate_scene(seed, size).image).save(root / "scene.png")
        settings = Settings(model=model, device="cpu", num_segments=num_segments, cache_dir=root / "cache",
                            data_dir=None, local_files_document_root=root, log_level="WARNING")
        client = create_app(settings).test_client()
        task = {"id": 1, "data": {"image": "/data/local-files/?d=scene.png"}}
        report: dict = {"model": model, "size": size, "prompts": count, "seed": seed, "num_segments": num_segments}
        for kind, tag in TAGS.items():
            config = CONFIG.format(tag=tag)

            def post(context: dict | None, config: str = config) -> dict:
                response = client.post("/predict", json={
                    "tasks": [task], "label_config": config, "project": "1.1", "params": {"context": context}})
                (result,) = response.json["results"]
                if "error" in result:
                    raise RuntimeError(result["error"])
                return result

            started = time.perf_counter()
            post(None)  # segments the image (the first time) and caches it
            report.setdefault("first_prediction_s", time.perf_counter() - started)
            times, regions = [], 0
            for prompt_set in prompts(count, seed):
                started = time.perf_counter()
                regions += len(post({"result": prompt_set})["result"])
                times.append((time.perf_counter() - started) * 1000)
            report[kind] = {
                "p50_ms": float(np.percentile(times, 50)), "p95_ms": float(np.percentile(times, 95)),
                "max_ms": float(np.max(times)), "regions": regions,
            }
        return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bundled")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--prompts", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--segments", type=int, default=20)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    json.dump(measure(args.model, args.size, args.prompts, args.seed, args.segments), sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
