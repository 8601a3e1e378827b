"""Throughput of the --ray path with 1, 2, ... actors on this machine, without Label Studio.

``python -m ml_backend.benchmarks.ray_actors --tasks 12 --actors 1 2`` segments toy scenes through
:class:`RayPool` (the job's own worker, settings from the service's environment variables, cache off)
and prints tasks/s per actor count and the ratio to one actor, as JSON. Each actor first segments one
task untimed, so model loading and first-call overheads stay out of the figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

from ml_backend.core.settings import Settings
from ml_backend.preannotate.workers import RayPool
from segmentor.toy.scenes import write_scenes

LABEL_CONFIG = (
    '<View><Image name="image" value="$image"/>'
    '<PolygonLabels name="outline" toName="image"><Label value="Object"/></PolygonLabels></View>'
)


def measure(settings: Settings, warm_up: list[dict], timed: list[dict], actors: int, cpus_per_actor: int) -> dict:
    pool = RayPool(settings, LABEL_CONFIG, 0, address=None, actors=actors, cpus_per_actor=cpus_per_actor)
    try:
        list(pool.run(warm_up[:actors]))  # one task per actor
        started = time.perf_counter()
        results = list(pool.run(timed))
        seconds = time.perf_counter() - started
    finally:
        pool.close()
    failures = sum("error" in prediction for _, prediction in results)
    return {"actors": actors, "tasks": len(results), "failures": failures, "seconds": round(seconds, 2),
            "tasks_per_s": round(len(results) / seconds, 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ml_backend.benchmarks.ray_actors", description=__doc__)
    parser.add_argument("--tasks", type=int, default=12, help="timed tasks per actor count")
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--cpus-per-actor", type=int, default=1)
    parser.add_argument("--seed", type=int, default=900, help="seed of the first toy scene")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        scenes = write_scenes(root / "scenes", args.tasks + max(args.actors), args.seed)
        settings = dataclasses.replace(Settings.from_env(), local_files_document_root=root, cache_dir=None)
        tasks = [{"id": index, "data": {"image": f"/data/local-files/?d=scenes/{path.name}"}}
                 for index, path in enumerate(scenes)]
        warm_up, timed = tasks[: max(args.actors)], tasks[max(args.actors):]
        rows = [measure(settings, warm_up, timed, actors, args.cpus_per_actor) for actors in args.actors]
    for row in rows:
        row["ratio_to_first"] = round(row["tasks_per_s"] / rows[0]["tasks_per_s"], 2)
    print(json.dumps({"model": settings.model, "device": settings.device, "results": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
