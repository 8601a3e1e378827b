"""FLOP counts: the CPU attention kernel counts, the counter follows the real code path, the fast budget holds."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from segmentor import EmerDiffConfig, EmerDiffSegmentor
from segmentor.benchmark.flops import segmentation_flops, stripe_masks
from tests.segmentor.conftest import scene_image


def test_cpu_attention_kernel_is_counted():
    # Equal head widths for Q, K and V: the shapes that take the fused CPU kernel (others fall back to matmuls).
    query, key, value = torch.ones(1, 2, 16, 8), torch.ones(1, 2, 32, 8), torch.ones(1, 2, 32, 8)
    with FlopCounterMode(display=False) as counter:
        F.scaled_dot_product_attention(query, key, value)
    # QK^T and weights x V: 2 * 16 * 32 * 8 each, per head; two heads.
    assert counter.get_total_flops() == 2 * 2 * (2 * 16 * 32 * 8)


def test_stripe_masks_cover_the_grid_disjointly():
    masks = stripe_masks(5, (4, 6))
    assert masks.shape == (5, 4, 6) and (masks.sum(axis=0) == 1).all() and masks.any(axis=(1, 2)).all()
    with pytest.raises(ValueError, match="between 1 and the 24 cells"):
        stripe_masks(25, (4, 6))


@pytest.mark.parametrize("changes", [{}, {"difference": "one_sided", "shared_attention_maps": True, "batch_size": 3}])
def test_counted_flops_are_those_of_a_real_segmentation(tiny_model, changes):
    """segmentation_flops (stripe masks) equals a FlopCounterMode around segment() with as many masks."""
    # One step after t_m keeps it quick; the counter follows whatever the configuration runs.
    segmentor = EmerDiffSegmentor(tiny_model, EmerDiffConfig(num_segments=4, step_stride=15, **changes))
    image = scene_image(0)
    with FlopCounterMode(display=False) as counter:
        result = segmentor.segment(image)
    masks = int(result.coarse_labels.max()) + 1
    assert segmentation_flops(segmentor, image.shape[:2], masks)["total"] == counter.get_total_flops()


def test_fast_preset_needs_at_most_a_quarter_of_the_paper_flops(tiny_model):
    """Counted around whole segmentations of one image, not timed; K = 4 (the ratio falls as K grows)."""
    image = scene_image(1)
    flops = {}
    for preset in ("paper", "fast"):
        with FlopCounterMode(display=False) as counter:
            EmerDiffSegmentor(tiny_model, EmerDiffConfig.preset(preset, num_segments=4)).segment(image)
        flops[preset] = counter.get_total_flops()
    assert flops["fast"] <= flops["paper"] / 4


@pytest.mark.slow
def test_fast_preset_needs_at_most_a_quarter_on_stable_diffusion_15(tmp_path):
    """SD 1.5's architecture at 512 px, K = 20, counted on the meta device by the CLI a GPU user runs."""
    completed = subprocess.run(
        [sys.executable, "-m", "segmentor", "flops", "--model", "sd15-random", "--size", "512", "--k", "20",
         "--preset", "fast", "--batch-size", "64"], capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout)
    assert report["device"] == "meta"
    assert report["counters"] == {"unet_sample_passes": 1 + 1 * 41, "vae_decodes": 40, "vae_encodes": 1}
    assert report["paper"]["counters"] == {"unet_sample_passes": 616, "vae_decodes": 40, "vae_encodes": 1}
    assert report["ratio_to_paper"] <= 0.25
    # One U-Net pass of SD 1.5 at 512 px is about 0.8 TFLOP with attention counted.
    assert 0.7e12 < report["calls"]["unet_pass"] < 0.9e12
