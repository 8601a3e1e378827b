"""FLOPs of one segmentation, counted with ``torch.utils.flop_counter`` on the segmentor's own code path.

The lift (reference run, modulated runs, decodes, difference maps, blur) is the segmentor's real code,
run on ``num_masks`` stripe masks: whatever a configuration changes there (fewer steps, one-sided
differences, shared attention maps) shows in the count without a cost model of our own. On the
``meta`` device nothing is computed, only shapes propagate, so SD 1.5 at 512 px counts in seconds.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

from segmentor import stages
from segmentor.config import DEFAULT_PRESET, EmerDiffConfig
from segmentor.emerdiff import EmerDiffSegmentor
from segmentor.loading import DiffusionModel

_CPU_FLASH_ATTENTION = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu


def _register_cpu_attention() -> None:
    """torch counts the CUDA attention kernels but not the CPU one: attention would count as free."""
    if _CPU_FLASH_ATTENTION in flop_counter.flop_registry:
        return

    @flop_counter.register_flop_formula(_CPU_FLASH_ATTENTION)
    def _cpu_flash_attention_flops(query_shape, key_shape, value_shape, *_args, out_shape=None, **_kwargs) -> int:
        return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


_register_cpu_attention()


def stripe_masks(num_masks: int, grid: tuple[int, int]) -> np.ndarray:
    """``num_masks`` disjoint, non-empty (n, h, w) masks covering the grid (the count ignores content)."""
    cells = grid[0] * grid[1]
    if not 1 <= num_masks <= cells:
        raise ValueError(f"num_masks must be between 1 and the {cells} cells of the {grid[0]}x{grid[1]} grid")
    owner = np.repeat(np.arange(num_masks), [len(part) for part in np.array_split(np.arange(cells), num_masks)])
    return np.stack([(owner == i).reshape(grid) for i in range(num_masks)])


@torch.inference_mode()
def segmentation_flops(segmentor: EmerDiffSegmentor, image_shape: tuple[int, int], num_masks: int) -> dict[str, int]:
    """FLOPs per stage of segmenting an (H, W) image with ``num_masks`` coarse masks, and their total."""
    model = segmentor.model
    working = segmentor.working_shape(*image_shape)
    latent_shape = segmentor.latent_shape(image_shape)
    x = torch.zeros((1, 3, *working), device=model.device, dtype=model.dtype)
    latents = torch.zeros((1, model.unet.config.in_channels, *latent_shape), device=model.device, dtype=model.dtype)
    grid = stages.layer_grid(model, segmentor.config.modulation_layer, latent_shape)
    masks = stages.masks_on_grid(stripe_masks(num_masks, grid), grid, model.device)
    counts = {}
    with FlopCounterMode(display=False) as counter:
        stages.encode(model, x)
    counts["encode"] = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter:
        model.unet(latents, torch.tensor(segmentor.config.feature_timestep, device=model.device),
                   encoder_hidden_states=segmentor.text_embedding)
    counts["features"] = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter:
        segmentor.response_maps(latents, masks, frozenset())
    counts["lift"] = counter.get_total_flops()
    counts["total"] = sum(counts.values())
    return counts


@torch.inference_mode()
def call_flops(segmentor: EmerDiffSegmentor, image_shape: tuple[int, int]) -> dict[str, int]:
    """FLOPs of one bare U-Net pass and one VAE decode at this image's working size (stock processors)."""
    model = segmentor.model
    latents = torch.zeros((1, model.unet.config.in_channels, *segmentor.latent_shape(image_shape)),
                          device=model.device, dtype=model.dtype)
    counts = {}
    with FlopCounterMode(display=False) as counter:
        model.unet(latents, torch.tensor(281, device=model.device), encoder_hidden_states=segmentor.text_embedding)
    counts["unet_pass"] = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter:
        stages.decode(model, latents)
    counts["vae_decode"] = counter.get_total_flops()
    return counts


def flops_report(model: DiffusionModel, config: EmerDiffConfig, size: int) -> dict:
    """FLOPs of one size x size image under ``config`` beside the full method's (``paper``), and their ratio."""
    shape = (size, size)
    segmentor = EmerDiffSegmentor(model, config)
    paper = EmerDiffSegmentor(model, config.with_preset(DEFAULT_PRESET))
    counted = segmentation_flops(segmentor, shape, config.num_segments)
    full = segmentation_flops(paper, shape, config.num_segments)
    return {"size": size, "working_shape": list(segmentor.working_shape(*shape)), "k": config.num_segments,
            "device": str(model.device), "calls": call_flops(segmentor, shape),
            "counters": segmentor.expected_counters(config.num_segments), "flops": counted,
            "paper": {"counters": paper.expected_counters(config.num_segments), "flops": full},
            "ratio_to_paper": counted["total"] / full["total"]}
