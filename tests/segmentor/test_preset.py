"""The fast preset and each of its candidates, mechanically, on the tiny random model."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from segmentor import EmerDiffConfig, EmerDiffSegmentor, stages
from segmentor.assign import difference_maps
from segmentor.attention import InjectionState, install_state
from segmentor.benchmark.flops import stripe_masks
from segmentor.reference import ReferenceSegmentor
from tests.segmentor.conftest import scene_image


def _noisy_latent(segmentor: EmerDiffSegmentor, image: np.ndarray) -> torch.Tensor:
    model = segmentor.model
    latents = stages.encode(model, stages.to_model_input(image, segmentor.working_shape(*image.shape[:2]), model))
    noise = stages.seeded_noise(latents, torch.Generator().manual_seed(3))
    return stages.add_noise(model, latents, noise, segmentor.config.modulation_timestep)


def _stripes(segmentor: EmerDiffSegmentor, count: int) -> torch.Tensor:
    return torch.as_tensor(stripe_masks(count, (8, 8)), dtype=torch.float32)


def test_paper_preset_is_the_defaults_and_fast_differs_in_fingerprint(tiny_model):
    assert EmerDiffConfig.preset("paper") == EmerDiffConfig()
    fast = EmerDiffConfig.preset("fast", num_segments=3)
    assert (fast.step_stride, fast.difference, fast.num_segments) == (15, "symmetric", 3)
    assert fast.with_preset("paper") == EmerDiffConfig(num_segments=3)
    assert EmerDiffConfig(num_segments=3).with_preset("fast") == fast
    paper_segmentor = EmerDiffSegmentor(tiny_model, EmerDiffConfig(num_segments=3))
    assert EmerDiffSegmentor(tiny_model, fast).fingerprint() != paper_segmentor.fingerprint()
    with pytest.raises(ValueError, match="unknown preset 'turbo'; presets: paper, fast"):
        EmerDiffConfig.preset("turbo")
    with pytest.raises(ValueError, match="difference must be one of symmetric, one_sided"):
        EmerDiffConfig(difference="both")


def test_one_sided_difference_is_the_change_from_the_reference_image(tiny_model):
    """|I+ - I_ref| per mask, where I_ref is the decoded reference run: recomputed here one run at a time."""
    config = EmerDiffConfig(difference="one_sided", blur_sigma=0.0, step_stride=5)
    segmentor = EmerDiffSegmentor(tiny_model, config)
    noisy = _noisy_latent(segmentor, scene_image(1))
    masks = _stripes(segmentor, 3)
    with torch.inference_mode():
        maps = segmentor.response_maps(noisy, masks, frozenset())
        state = InjectionState(modulation_layer=config.modulation_layer)
        steps = segmentor.denoising_steps()
        with stages.attention_processors(tiny_model, install_state(segmentor._layers, state)):
            reference = stages.decode(tiny_model, segmentor.denoise(noisy, steps, state, record=True))
            strength = segmentor.modulation_strength(state.output_rms)
            expected = torch.cat([
                difference_maps(stages.decode(tiny_model, segmentor.denoise(
                    noisy, steps, state, offsets=strength * mask.flatten()[None, :, None])), reference)
                for mask in masks])
        symmetric = EmerDiffSegmentor(tiny_model, dataclasses.replace(config, difference="symmetric")).response_maps(
            noisy, masks, frozenset())
    torch.testing.assert_close(maps, expected, atol=1e-5, rtol=1e-4)
    assert (maps - symmetric).abs().max() > 1e-3 * symmetric.abs().max()


def test_shared_attention_maps_equal_per_run_attention_and_cost_less(tiny_model):
    # One step after t_m keeps it quick; sharing does not depend on the number of steps.
    config = EmerDiffConfig(num_segments=3, blur_sigma=0.0, batch_size=6, step_stride=15)
    per_run = EmerDiffSegmentor(tiny_model, config)
    shared = EmerDiffSegmentor(tiny_model, dataclasses.replace(config, shared_attention_maps=True))
    noisy = _noisy_latent(per_run, scene_image(2))
    masks = _stripes(per_run, 3)
    flops = {}
    with torch.inference_mode():
        for name, segmentor in (("per_run", per_run), ("shared", shared)):
            with FlopCounterMode(display=False) as counter:
                maps = segmentor.response_maps(noisy, masks, frozenset())
            flops[name] = (counter.get_total_flops(), maps)
    torch.testing.assert_close(flops["shared"][1], flops["per_run"][1], atol=1e-5, rtol=1e-4)
    # The one chunk of 6 runs computes each QK^T once instead of six times.
    assert flops["shared"][0] < flops["per_run"][0]
    image = scene_image(3)
    # Float rounding may flip a near-tie pixel, nothing more.
    assert (shared.segment(image).label_map == per_run.segment(image).label_map).mean() >= 0.99


def test_fast_preset_makes_the_calls_it_promises(tiny_model):
    result = EmerDiffSegmentor(tiny_model, EmerDiffConfig.preset("fast", num_segments=5)).segment(scene_image(4))
    masks = int(result.coarse_labels.max()) + 1
    # One feature pass; one step from t_m to the end for the reference run and each of the 2K modulated runs.
    assert result.counters == {"unet_sample_passes": 1 + 1 * (1 + 2 * masks), "vae_decodes": 2 * masks,
                               "vae_encodes": 1}
    one_sided = EmerDiffSegmentor(tiny_model, EmerDiffConfig(num_segments=5, step_stride=4, difference="one_sided"))
    result = one_sided.segment(scene_image(4))
    masks = int(result.coarse_labels.max()) + 1
    # 4 steps; one modulated run per mask; K decodes plus the reference run's image.
    assert result.counters == one_sided.expected_counters(masks) == {
        "unet_sample_passes": 1 + 4 * (1 + masks), "vae_decodes": masks + 1, "vae_encodes": 1}


@pytest.mark.slow
@pytest.mark.parametrize("changes", [{}, {"difference": "one_sided", "step_stride": 4}])
def test_batched_and_reference_implementations_agree_on_the_fast_candidates(tiny_model, changes):
    config = EmerDiffConfig.preset("fast", num_segments=5, batch_size=3, **changes)
    image = scene_image(5, 64, 96)
    batched = EmerDiffSegmentor(tiny_model, config).segment(image)
    reference = ReferenceSegmentor(tiny_model, config).segment(image)
    assert (batched.label_map == reference.label_map).mean() >= 0.995
    assert batched.counters == reference.counters
