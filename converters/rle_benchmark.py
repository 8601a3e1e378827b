"""Side-by-side timing of Label Studio brush RLE: the SDK's encoder/decoder against :mod:`converters.brush`.

The encoder is the smart tools' brush path (``converters.labelstudio.brush_region``: the selected segments'
mask → one ``brushlabels`` region); the decoder is what label learning (webhooks) and ``ls2coco`` run on every
brush region. Masks: a smart-tool-like selection (a few overlapping ellipses) at ``--sizes``, and seeded
noise (every pixel its own run: the worst case) at ``--noise-sizes`` (the SDK takes minutes on large
noise). Each timing is the median and the best of ``--repeats`` runs; both implementations run one after the
other on the same mask in one process. Prints JSON. Run::

    python -m converters.rle_benchmark --sizes 1024 2048 --noise-sizes 512 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Sequence

import cv2
import numpy as np
from label_studio_sdk.converter.brush import decode_rle as sdk_decode_rle
from label_studio_sdk.converter.brush import mask2rle

from converters.brush import decode_rle, mask_to_rle
from converters.labelstudio import brush_region


def selection_mask(size: int, seed: int) -> np.ndarray:
    """A smart-tool-like selection: a few overlapping ellipses covering roughly a fifth of the image."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((size, size), np.uint8)
    for _ in range(5):
        centre = tuple(int(v) for v in rng.uniform(0.3, 0.7, 2) * size)
        axes = tuple(int(v) for v in rng.uniform(0.05, 0.2, 2) * size)
        cv2.ellipse(mask, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, thickness=-1)
    return mask != 0


def noise_mask(size: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((size, size)) < 0.5


def _seconds(call: Callable[[], object], repeats: int) -> dict[str, float]:
    """Median and best of ``repeats`` runs (the best is the least disturbed by other load on the machine)."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return {"median": statistics.median(times), "best": min(times)}


def measure(sizes: Sequence[int], noise_sizes: Sequence[int], repeats: int, seed: int) -> list[dict]:
    rows = []
    cases = [(size, "selection", selection_mask) for size in sizes]
    cases += [(size, "noise", noise_mask) for size in noise_sizes]
    for size, kind, make in cases:
        mask = make(size, seed)
        # What brush_region encodes: painted pixels as 255.
        painted = np.where(mask, 255, 0).astype(np.uint8)
        sdk_rle, our_rle = mask2rle(painted), mask_to_rle(painted)
        assert sdk_rle == our_rle, "the encoders disagree"
        row: dict = {"size": size, "mask": kind, "rle_bytes": len(our_rle)}
        # The smart tools' brush path: mask -> region (the SDK's encoder was called in the same place).
        timings = {
            "brush_region_sdk": lambda m=mask: mask2rle(np.where(m != 0, 255, 0).astype(np.uint8)),
            "brush_region_ours": lambda m=mask: brush_region(m, label="x", from_name="b", to_name="i", region_id="r"),
            "decode_sdk": lambda r=our_rle: sdk_decode_rle(r),
            "decode_ours": lambda r=our_rle: decode_rle(r),
        }
        row |= {f"{name}_s": _seconds(call, repeats) for name, call in timings.items()}
        for step in ("brush_region", "decode"):
            row[f"{step}_speedup"] = {
                stat: row[f"{step}_sdk_s"][stat] / row[f"{step}_ours_s"][stat] for stat in ("median", "best")
            }
        rows.append(row)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m converters.rle_benchmark", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048], help="square mask sides in pixels")
    parser.add_argument("--noise-sizes", type=int, nargs="*", default=[512], help="sides of the noise masks")
    parser.add_argument("--repeats", type=int, default=5, help="runs per timing (the median is kept)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.sizes, args.noise_sizes, args.repeats, args.seed), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
