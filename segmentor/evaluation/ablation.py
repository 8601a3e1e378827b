"""Ablations of EmerDiff's settings on synthetic scenes, printed as a markdown table.

``python -m segmentor.evaluation.ablation --model bundled --scenes 100`` evaluates the default configuration and then
one setting at a time (lambda, t_m, K, attention injection, blur sigma, steps after t_m), each on the same
scenes, through ``segmentor.evaluation.run.evaluate``. Every row reports EmerDiff against the bilinear
baseline of the same coarse masks, and the same for the ground-truth-mask oracle.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

from segmentor import stages
from segmentor.config import EmerDiffConfig
from segmentor.emerdiff import EmerDiffSegmentor
from segmentor.evaluation.cli import build_config
from segmentor.evaluation.data import scene_samples
from segmentor.evaluation.metrics import EvaluationError
from segmentor.evaluation.run import evaluate
from segmentor.loading import ModelLoadError, load_model

# Values tried for each setting (the default is always among the rows). K suits 64-px models with an 8x8
# grid; pass --vary num_segments=10,20,30,40 for Stable Diffusion at 512 px.
ABLATIONS: dict[str, tuple] = {
    "modulation_strength": (2.5, 5.0, 10.0, 20.0, 40.0),  # lambda [paper: 10]
    "modulation_timestep": (81, 181, 281, 381, 481),  # t_m [paper: 281; favours 281-481]
    "num_segments": (4, 6, 8, 12),  # K
    "attention_injection": (True, False),
    "blur_sigma": (0.0, 1.5, 3.0, 6.0),
    "step_stride": (1, 2, 4, 15),  # 15, 8, 4 and 1 DDIM steps after t_m = 281
}
_COLUMNS = ("setting", "EmerDiff mIoU", "baseline mIoU", "Δ mIoU (± s.e.)", "won", "oracle EmerDiff",
            "oracle baseline", "oracle Δ (± s.e.)", "oracle won", "EmerDiff BF1", "baseline BF1")

log = logging.getLogger(__name__)


def variants(base: EmerDiffConfig, grid: dict[str, tuple]) -> list[tuple[str, EmerDiffConfig]]:
    """The default configuration, then each setting of ``grid`` changed alone."""
    rows = [("default", base)]
    for name, values in grid.items():
        for value in values:
            if value != getattr(base, name):
                rows.append((f"{name}={value}", dataclasses.replace(base, **{name: value})))
    return rows


def run_ablation(model, base: EmerDiffConfig, grid: dict[str, tuple], scenes: int, seed: int,
                 size: int | None = None) -> list[dict]:
    """One evaluate report (summary only) per variant, on scenes ``seed .. seed+scenes-1``."""
    results = []
    for label, config in variants(base, grid):
        log.info("ablation %s", label)
        report = evaluate(EmerDiffSegmentor(model, config), scene_samples(scenes, seed, size or model.native_size),
                          seed=seed, total=scenes)
        steps = len(stages.denoising_steps(model, config.modulation_timestep, config.num_inference_steps,
                                           config.step_stride))
        report.pop("per_image")
        report.pop("notes")
        results.append({"setting": label, "steps_after_t_m": steps, "config": dataclasses.asdict(config),
                        **report})
    return results


def markdown_table(results: list[dict]) -> str:
    lines = ["| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
    for result in results:
        plain, oracle = (result["paired"][pair]["per_image_miou"] for pair in
                         ("emerdiff_minus_baseline", "oracle_emerdiff_minus_oracle_baseline"))
        cells = [
            f"{result['setting']} ({result['steps_after_t_m']} steps)" if "stride" in result["setting"]
            else result["setting"],
            _number(result["emerdiff"]["per_image_miou"]), _number(result["baseline"]["per_image_miou"]),
            _difference(plain), f"{plain['won']:.0%}",
            _number(result["oracle_emerdiff"]["per_image_miou"]), _number(result["oracle_baseline"]["per_image_miou"]),
            _difference(oracle), f"{oracle['won']:.0%}",
            _number(result["emerdiff"]["boundary_f1"]), _number(result["baseline"]["boundary_f1"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m segmentor.evaluation.ablation", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="bundled", help="hub id, local diffusers folder, or 'bundled'")
    parser.add_argument("--scenes", type=int, default=100, help="scenes per variant (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=1000, help="first scene seed (default: %(default)s; the toy "
                        "models train on seeds from 1,000,000 up, so lower seeds are held-out scenes)")
    parser.add_argument("--size", type=int, help="scene side (default: the model's native size)")
    parser.add_argument("--k", type=int, help="K of the default row (default: the config's num_segments)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                        help="change the default row, e.g. --set step_stride=4 (repeatable)")
    parser.add_argument("--vary", action="append", default=[], metavar="FIELD=V1,V2,...",
                        help="ablate only these settings, with these values (repeatable; default: all of "
                             + ", ".join(ABLATIONS) + ")")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"])
    parser.add_argument("--out", type=Path, help="also write every report as JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        base = build_config(args.overrides, k=args.k, device=args.device, dtype=args.dtype)
        grid = _grid(args.vary) if args.vary else ABLATIONS
        model = load_model(args.model, device=args.device, dtype=args.dtype)
        results = run_ablation(model, base, grid, args.scenes, args.seed, args.size)
    except (EvaluationError, ModelLoadError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"model": args.model, "scenes": args.scenes, "first_seed": args.seed,
                                        "results": results}, indent=2) + "\n")
    print(markdown_table(results))
    return 0


def _grid(items: list[str]) -> dict[str, tuple]:
    grid = {}
    for item in items:
        name, _, values = item.partition("=")
        # Each value goes through the same typed parsing as --set.
        parsed = [getattr(build_config([f"{name}={value}"]), name.strip()) for value in values.split(",") if value]
        if not parsed:
            raise EvaluationError(f"--vary {item!r}: expected FIELD=V1,V2,...")
        grid[name.strip()] = tuple(parsed)
    return grid


def _number(value: float) -> str:
    return f"{value:.3f}"


def _difference(paired: dict) -> str:
    sem = paired["sem"]
    return f"{paired['mean']:+.3f}" + (f" ± {sem:.3f}" if sem is not None else "")


if __name__ == "__main__":
    sys.exit(main())
