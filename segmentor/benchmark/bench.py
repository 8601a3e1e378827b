"""Side-by-side timing: batched EmerDiff, the plain reference, and the bare network compute floor.

All three run in one process on the same image and are interleaved over the repeats, so machine
noise hits them alike; the figures that matter are the ratios.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch

from segmentor import stages
from segmentor.benchmark.fidelity import agreement as agreement_with
from segmentor.benchmark.flops import call_flops, segmentation_flops
from segmentor.config import DEFAULT_PRESET, EmerDiffConfig
from segmentor.emerdiff import EmerDiffSegmentor
from segmentor.loading import DiffusionModel
from segmentor.reference import ReferenceSegmentor
from segmentor.result import Segmentation


def run_benchmark(model: DiffusionModel, image: np.ndarray, config: EmerDiffConfig, repeats: int = 3,
                  with_reference: bool = True) -> dict:
    batched = EmerDiffSegmentor(model, config)
    reference = ReferenceSegmentor(model, config)
    paper_config = config.with_preset(DEFAULT_PRESET)
    # A cheaper preset is timed beside the full method on the same image, so the ratio is like for like.
    paper = EmerDiffSegmentor(model, paper_config) if paper_config != config else None
    warm = batched.segment(image)  # first call pays one-off allocations and kernel selection
    paper_warm = paper.segment(image) if paper else None
    plan = _call_plan(batched, warm)
    seconds: dict[str, list[float]] = {"batched": [], "reference": [], "floor": [], "paper": []}
    stage_seconds: dict[str, list[dict]] = {"batched": [], "reference": []}
    agreement = None
    for _ in range(repeats):
        result = _timed(batched.segment, image, seconds["batched"])
        stage_seconds["batched"].append(result.timings)
        if with_reference:
            ref_result = _timed(reference.segment, image, seconds["reference"])
            stage_seconds["reference"].append(ref_result.timings)
            agreement = float((ref_result.label_map == result.label_map).mean())
        _timed(lambda: _floor(model, batched, plan), None, seconds["floor"])
        if paper:
            _timed(paper.segment, image, seconds["paper"])
    flops = segmentation_flops(batched, image.shape[:2], int(warm.coarse_labels.max()) + 1)
    report = {
        "device": str(model.device), "dtype": str(model.dtype).removeprefix("torch."), "model": model.reference,
        "image_shape": list(image.shape[:2]), "working_shape": list(batched.working_shape(*image.shape[:2])),
        "num_segments": config.num_segments, "segments_found": len(warm.segments), "repeats": repeats,
        "batch_size": plan["chunks"][0] if plan["chunks"] else 0,
        "unet_sample_passes_per_image": warm.counters["unet_sample_passes"],
        "vae_decodes_per_image": warm.counters["vae_decodes"],
        "seconds": {name: statistics.median(values) for name, values in seconds.items() if values},
        "stages_batched": _median_stages(stage_seconds["batched"]),
        "overhead_vs_floor": statistics.median(seconds["batched"]) / statistics.median(seconds["floor"]),
        "flops": {**call_flops(batched, image.shape[:2]), "per_image": flops["total"]},
    }
    if with_reference:
        report["stages_reference"] = _median_stages(stage_seconds["reference"])
        report["speedup_vs_reference"] = statistics.median(seconds["reference"]) / statistics.median(seconds["batched"])
        report["agreement_with_reference"] = agreement
    if paper:
        paper_flops = segmentation_flops(paper, image.shape[:2], int(paper_warm.coarse_labels.max()) + 1)["total"]
        report["vs_paper"] = {
            "time_ratio": statistics.median(seconds["batched"]) / statistics.median(seconds["paper"]),
            "flop_ratio": flops["total"] / paper_flops,
            **agreement_with(paper_warm, warm),
        }
    report["achieved_tflops_batched"] = flops["total"] / report["seconds"]["batched"] / 1e12
    return report


def _timed(function, argument, into: list[float] | None):
    _synchronize()
    started = time.perf_counter()
    result = function(argument) if argument is not None else function()
    _synchronize()
    if into is not None:
        into.append(time.perf_counter() - started)
    return result


def _synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _call_plan(segmentor: EmerDiffSegmentor, result: Segmentation) -> dict:
    """The U-Net and VAE calls a segmentation made: batch-1 passes, modulated chunks, reference decodes."""
    steps = len(segmentor.denoising_steps())
    # A one-sided difference also decodes the reference run's image.
    reference_decodes = 1 if segmentor.config.difference == "one_sided" else 0
    runs = result.counters["vae_decodes"] - reference_decodes
    return {"steps": steps, "chunks": segmentor.chunk_sizes(runs), "reference_decodes": reference_decodes,
            # The feature pass, any inversion passes and the reference run, all at batch 1.
            "single_passes": result.counters["unet_sample_passes"] - steps * runs,
            "latent_shape": segmentor.latent_shape(result.label_map.shape)}


@torch.inference_mode()
def _floor(model: DiffusionModel, segmentor: EmerDiffSegmentor, plan: dict) -> None:
    """The bare compute: the same U-Net sample-passes and VAE decodes at the same batch sizes."""
    shape = (model.unet.config.in_channels, *plan["latent_shape"])
    # The segmentor's cached embedding: re-encoding the prompt here would put extra work in the floor.
    text = segmentor.text_embedding
    t = torch.tensor(281, device=model.device)

    def passes(batch: int, count: int) -> torch.Tensor:
        x = torch.randn((batch, *shape), device=model.device, dtype=model.dtype)
        for _ in range(count):
            x = model.unet(x, t, encoder_hidden_states=text.expand(batch, -1, -1)).sample
        return x

    reference = passes(1, plan["single_passes"])
    if plan["reference_decodes"]:
        stages.decode(model, reference)
    for batch in plan["chunks"]:
        stages.decode(model, passes(batch, plan["steps"]))


def _median_stages(runs: list[dict]) -> dict[str, float]:
    return {name: statistics.median(run.get(name, 0.0) for run in runs) for name in runs[0]} if runs else {}

