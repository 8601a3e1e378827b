"""Side-by-side timing: batched EmerDiff, the plain reference, and the bare network compute floor.

All three run in one process on the same image and are interleaved over the repeats, so machine
noise hits them alike; the figures that matter are the ratios.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from segmentor import stages
from segmentor.config import EmerDiffConfig
from segmentor.emerdiff import EmerDiffSegmentor
from segmentor.loading import DiffusionModel
from segmentor.reference import ReferenceSegmentor
from segmentor.result import Segmentation


def run_benchmark(model: DiffusionModel, image: np.ndarray, config: EmerDiffConfig, repeats: int = 3,
                  with_reference: bool = True) -> dict:
    batched = EmerDiffSegmentor(model, config)
    reference = ReferenceSegmentor(model, config)
    warm = batched.segment(image)  # first call pays one-off allocations and kernel selection
    plan = _call_plan(batched, warm)
    seconds: dict[str, list[float]] = {"batched": [], "reference": [], "floor": []}
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
        "flops": network_flops(model, batched, image),
    }
    if with_reference:
        report["stages_reference"] = _median_stages(stage_seconds["reference"])
        report["speedup_vs_reference"] = statistics.median(seconds["reference"]) / statistics.median(seconds["batched"])
        report["agreement_with_reference"] = agreement
    report["flops"]["per_image"] = flops_per_image(report["flops"], warm.counters)
    report["achieved_tflops_batched"] = report["flops"]["per_image"] / report["seconds"]["batched"] / 1e12
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
    """The U-Net and VAE calls a segmentation made: batch sizes of the modulated chunks, steps per run."""
    runs = result.counters["vae_decodes"]
    steps = (result.counters["unet_sample_passes"] - 1) // (runs + 1)
    chunks = segmentor.chunk_sizes(runs)
    return {"steps": steps, "chunks": chunks, "latent_shape": segmentor.latent_shape(result.label_map.shape)}


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

    passes(1, 1 + plan["steps"])  # feature pass and reference run
    for batch in plan["chunks"]:
        stages.decode(model, passes(batch, plan["steps"]))


@torch.inference_mode()
def network_flops(model: DiffusionModel, segmentor: EmerDiffSegmentor, image: np.ndarray) -> dict[str, int]:
    """FLOPs of one VAE encode, one U-Net pass and one VAE decode at this image's working size."""
    x = stages.to_model_input(image, segmentor.working_shape(*image.shape[:2]), model)
    text = segmentor.text_embedding
    counts = {}
    with FlopCounterMode(display=False) as counter:
        latents = stages.encode(model, x)
    counts["vae_encode"] = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter:
        model.unet(latents, torch.tensor(281, device=model.device), encoder_hidden_states=text)
    counts["unet_pass"] = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter:
        stages.decode(model, latents)
    counts["vae_decode"] = counter.get_total_flops()
    return counts


def flops_per_image(flops: dict[str, int], counters: dict[str, int]) -> int:
    """Upper bound: the modulated runs skip their Q/K projections, which this still counts."""
    return (flops["unet_pass"] * counters["unet_sample_passes"] + flops["vae_decode"] * counters["vae_decodes"]
            + flops["vae_encode"] * counters["vae_encodes"])


def _median_stages(runs: list[dict]) -> dict[str, float]:
    return {name: statistics.median(run.get(name, 0.0) for run in runs) for name in runs[0]} if runs else {}

