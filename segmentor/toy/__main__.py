"""Command line: ``python -m segmentor.toy {train,train-clip,scenes} ...``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

from segmentor.toy.clip_train import ClipTrainingPlan, train_clip
from segmentor.toy.scenes import SceneError, write_scenes
from segmentor.toy.train import TrainingError, TrainingPlan, train_model


def main(argv: list[str] | None = None) -> int:
    defaults = TrainingPlan()
    parser = argparse.ArgumentParser(prog="python -m segmentor.toy", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train the small SD-layout model from scratch on synthetic scenes")
    train.add_argument("--out", type=Path, required=True, help="diffusers model folder to write")
    train.add_argument("--minutes", type=float, help="wall-clock cap (makes the result machine-dependent)")
    train.add_argument("--vae-steps", type=int, default=defaults.vae_steps)
    train.add_argument("--unet-steps", type=int, default=defaults.unet_steps)
    train.add_argument("--seed", type=int, default=defaults.seed)
    train.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: %(default)s)")

    clip_defaults = ClipTrainingPlan()
    clip = commands.add_parser("train-clip", help="train the small CLIP from scratch on synthetic scenes")
    clip.add_argument("--out", type=Path, required=True, help="CLIPModel folder to write")
    clip.add_argument("--minutes", type=float, help="wall-clock cap (makes the result machine-dependent)")
    clip.add_argument("--steps", type=int, default=clip_defaults.steps)
    clip.add_argument("--seed", type=int, default=clip_defaults.seed)
    clip.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: %(default)s)")

    scenes = commands.add_parser("scenes", help="write synthetic scenes with ground truth (gt/, gt_instances/)")
    scenes.add_argument("--count", type=int, required=True)
    scenes.add_argument("--seed", type=int, required=True, help="seed of the first scene; the rest count up")
    scenes.add_argument("--out", type=Path, required=True, help="image folder; ground truth goes to OUT/gt")
    scenes.add_argument("--size", type=int, default=64, help="image side in pixels (default: %(default)s)")

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        commands_run = {"train": _train, "train-clip": _train_clip, "scenes": _scenes}
        return commands_run[args.command](args)
    except (SceneError, TrainingError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _train(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    plan = TrainingPlan(vae_steps=args.vae_steps, unet_steps=args.unet_steps, seed=args.seed, minutes=args.minutes)
    report = train_model(args.out, plan=plan)
    print(json.dumps(report, indent=2))
    return 0


def _train_clip(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    plan = ClipTrainingPlan(steps=args.steps, seed=args.seed, minutes=args.minutes)
    command = (f"python -m segmentor.toy train-clip --out {args.out} --steps {args.steps} --seed {args.seed}"
               + (f" --minutes {args.minutes:g}" if args.minutes is not None else "") + f" --threads {args.threads}")
    report = train_clip(args.out, plan=plan, command=command)
    print(json.dumps(report, indent=2))
    return 0


def _scenes(args: argparse.Namespace) -> int:
    paths = write_scenes(args.out, args.count, args.seed, args.size)
    print(f"wrote {len(paths)} scenes to {args.out} (class maps in {args.out / 'gt'}, "
          f"instance maps in {args.out / 'gt_instances'})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
