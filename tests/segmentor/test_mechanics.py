"""The mechanics of the method on a tiny random model: each test can fail if a step is wrong."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor2_0

from segmentor import EmerDiffConfig, EmerDiffSegmentor, stages
from segmentor.attention import InjectionState, install_state
from segmentor.reference import ReferenceSegmentor
from tests.segmentor.conftest import scene_image


def _noisy_latent(segmentor: EmerDiffSegmentor, image: np.ndarray) -> torch.Tensor:
    model = segmentor.model
    x = stages.to_model_input(image, segmentor.working_shape(*image.shape[:2]), model)
    latents = stages.encode(model, x)
    noise = stages.seeded_noise(latents, torch.Generator().manual_seed(3))
    return stages.add_noise(model, latents, noise, segmentor.config.modulation_timestep)


def _steps(segmentor: EmerDiffSegmentor) -> list[tuple[int, int]]:
    config = segmentor.config
    return stages.denoising_steps(segmentor.model, config.modulation_timestep, config.num_inference_steps, 1)


def test_features_have_the_layer_grid_shape(tiny_segmentor):
    image = scene_image(0)
    model = tiny_segmentor.model
    layer = stages.attention_module(model, tiny_segmentor.config.feature_layer)
    x = stages.to_model_input(image, tiny_segmentor.working_shape(64, 64), model)
    latents = stages.encode(model, x)
    features = stages.low_resolution_features(model, tiny_segmentor.config.feature_layer, latents,
                                              tiny_segmentor.text_embedding, 1, torch.zeros_like(latents))
    grid = tiny_segmentor.feature_grid(image.shape)
    # 64 px, VAE factor 4 -> 16x16 latent; up_blocks.1 of a three-level U-Net runs at half that.
    assert grid == (8, 8)
    assert features.shape == (grid[0] * grid[1], layer.to_q.out_features)


def test_defaults_are_the_papers_settings():
    """Every setting the paper states (and our faithful choices where it is silent), pinned one by one."""
    config = EmerDiffConfig()
    paper_layer = "up_blocks.1.attentions.0.transformer_blocks.0.attn2"
    assert config.feature_layer == paper_layer and config.modulation_layer == paper_layer
    assert config.feature_timestep == 1 and config.modulation_timestep == 281
    assert config.modulation_strength == 10.0 and config.modulation_relative is False
    assert config.num_inference_steps == 50 and config.step_stride == 1
    assert config.attention_injection is True
    assert config.sampler == "ddim" and config.noising == "forward" and config.difference == "symmetric"
    assert config.blur_sigma == 3.0 and config.working_size is None and config.min_segment_area == 0
    assert config.num_segments == 20
    assert EmerDiffConfig.preset("paper") == config


def test_timesteps_follow_the_50_step_grid(tiny_segmentor):
    steps = _steps(tiny_segmentor)
    assert [t for t, _ in steps] == list(range(281, 0, -20))
    assert len(steps) == 15 and steps[-1] == (1, -1)
    with pytest.raises(ValueError, match="not on the 50-step DDIM grid"):
        stages.denoising_steps(tiny_segmentor.model, 280, 50, 1)


def _run(segmentor, noisy, offsets, record=False):
    state = InjectionState(modulation_layer=segmentor.config.modulation_layer)
    processors = install_state(segmentor._layers, state)
    with stages.attention_processors(segmentor.model, processors), torch.inference_mode():
        reference = segmentor.denoise(noisy, _steps(segmentor), state, record=True)
        modulated = segmentor.denoise(noisy, _steps(segmentor), state, offsets=offsets)
    return reference, modulated


def test_zero_modulation_with_injection_reproduces_the_reference_run(tiny_segmentor):
    noisy = _noisy_latent(tiny_segmentor, scene_image(1))
    tokens = 8 * 8
    reference, modulated = _run(tiny_segmentor, noisy, torch.zeros(4, tokens, 1))
    assert modulated.shape[0] == 4
    torch.testing.assert_close(modulated, reference.expand_as(modulated), atol=1e-5, rtol=1e-5)


def test_nonzero_modulation_changes_the_output(tiny_segmentor):
    noisy = _noisy_latent(tiny_segmentor, scene_image(1))
    mask = torch.zeros(1, 64, 1)
    mask[0, :20] = 10.0
    reference, modulated = _run(tiny_segmentor, noisy, torch.cat([mask, -mask]))
    assert (modulated[0] - reference[0]).abs().max() > 1e-3
    assert (modulated[0] - modulated[1]).abs().max() > 1e-3


def test_injection_keeps_attention_maps_of_the_reference(tiny_segmentor):
    """With injection the modulated runs never compute their own queries or keys."""
    noisy = _noisy_latent(tiny_segmentor, scene_image(1))
    model = tiny_segmentor.model
    calls = []
    hooks = [model.unet.get_submodule(layer).to_q.register_forward_hook(lambda *_: calls.append(1))
             for layer in tiny_segmentor._layers]
    try:
        state = InjectionState(modulation_layer=tiny_segmentor.config.modulation_layer)
        processors = install_state(tiny_segmentor._layers, state)
        with stages.attention_processors(model, processors), torch.inference_mode():
            tiny_segmentor.denoise(noisy, _steps(tiny_segmentor), state, record=True)
            recorded_calls = len(calls)
            tiny_segmentor.denoise(noisy, _steps(tiny_segmentor), state, offsets=torch.ones(2, 64, 1))
    finally:
        for hook in hooks:
            hook.remove()
    assert recorded_calls == 15 * len(tiny_segmentor._layers)
    assert len(calls) == recorded_calls


def test_lambda_zero_gives_zero_difference_maps(tiny_model):
    segmentor = EmerDiffSegmentor(tiny_model, EmerDiffConfig(num_segments=4, modulation_strength=0.0))
    result = segmentor.segment(scene_image(2))
    # Every response is zero, so no pixel has a margin over its runner-up.
    assert all(segment.score == 0.0 for segment in result.segments)
    noisy = _noisy_latent(segmentor, scene_image(2))
    masks = torch.ones(2, 8, 8)
    with torch.inference_mode():
        maps = segmentor.response_maps(noisy, masks, frozenset())
    assert maps.abs().max() < 1e-5


def test_processors_are_restored_after_a_segmentation(tiny_segmentor):
    tiny_segmentor.segment(scene_image(3))
    assert all(isinstance(p, AttnProcessor2_0) for p in tiny_segmentor.model.unet.attn_processors.values())


@pytest.mark.slow
@pytest.mark.parametrize("seed", [4, 5])
def test_batched_and_reference_implementations_agree(tiny_model, seed):
    config = EmerDiffConfig(num_segments=5, batch_size=4)
    image = scene_image(seed, 64, 96)
    batched = EmerDiffSegmentor(tiny_model, config).segment(image)
    reference = ReferenceSegmentor(tiny_model, config).segment(image)
    np.testing.assert_array_equal(batched.label_map, reference.label_map)
    np.testing.assert_allclose([s.score for s in batched.segments], [s.score for s in reference.segments],
                               rtol=1e-4, atol=1e-6)
    assert batched.counters == reference.counters


def test_same_seed_gives_bit_identical_label_maps(tiny_model):
    image = scene_image(6)
    first = EmerDiffSegmentor(tiny_model, EmerDiffConfig(num_segments=5, seed=11)).segment(image)
    second = EmerDiffSegmentor(tiny_model, EmerDiffConfig(num_segments=5, seed=11)).segment(image)
    assert np.array_equal(first.label_map, second.label_map)
    assert [s.score for s in first.segments] == [s.score for s in second.segments]


def test_counters_count_every_network_pass(tiny_segmentor):
    result = tiny_segmentor.segment(scene_image(7))
    coarse_masks = int(result.low_res_labels.max()) + 1
    assert result.counters == tiny_segmentor.expected_counters(coarse_masks)
    assert result.counters["unet_sample_passes"] == 1 + 15 + 2 * coarse_masks * 15


def test_given_low_resolution_masks_are_lifted(tiny_segmentor):
    image = scene_image(8)
    masks = np.zeros((2, 8, 8), dtype=bool)
    masks[0, :, :4] = True
    masks[1, :, 4:] = True
    result = tiny_segmentor.segment(image, low_res_masks=masks)
    assert len(result.segments) <= 2
    assert np.array_equal(result.low_res_labels, np.where(masks[0], 0, 1))
    baseline = result.baseline_label_map()
    # Bilinear upsampling of two half-planes splits the image down the middle.
    assert (baseline[:, :30] == 0).all() and (baseline[:, 34:] == 1).all()
    with pytest.raises(ValueError, match=r"shape \(n, 8, 8\)"):
        tiny_segmentor.segment(image, low_res_masks=np.ones((2, 4, 4), dtype=bool))
    with pytest.raises(ValueError, match="cover every cell"):
        tiny_segmentor.segment(image, low_res_masks=masks[:1])


def test_minimum_segment_area_hands_small_segments_to_the_runner_up(tiny_model):
    image = scene_image(9)
    unfiltered = EmerDiffSegmentor(tiny_model, EmerDiffConfig(num_segments=8)).segment(image)
    threshold = int(np.median([s.area for s in unfiltered.segments])) + 1
    filtered = EmerDiffSegmentor(tiny_model, EmerDiffConfig(num_segments=8, min_segment_area=threshold)).segment(image)
    assert len(filtered.segments) < len(unfiltered.segments)
    assert all(s.area >= threshold for s in filtered.segments)
    assert filtered.label_map.shape == image.shape[:2]


def test_segments_describe_the_label_map(tiny_segmentor):
    image = scene_image(10, 50, 70)
    result = tiny_segmentor.segment(image)
    assert result.label_map.shape == (50, 70) and result.label_map.dtype == np.int32
    assert sorted(np.unique(result.label_map)) == [s.id for s in result.segments]
    for segment in result.segments:
        mask = result.mask(segment.id)
        assert segment.area == mask.sum()
        x, y, w, h = segment.bbox
        assert mask[y:y + h, x:x + w].sum() == segment.area
        assert 0.0 <= segment.score <= 1.0
        assert segment.embedding.shape == (tiny_segmentor.model.unet.get_submodule(
            tiny_segmentor.config.feature_layer).to_q.out_features,)
        assert segment.low_res_mask.shape == tiny_segmentor.feature_grid(image.shape) == (6, 8)


def test_fingerprint_tracks_output_changing_settings(tiny_model):
    base = EmerDiffSegmentor(tiny_model, EmerDiffConfig(num_segments=4))
    same = EmerDiffSegmentor(tiny_model, EmerDiffConfig(num_segments=4, batch_size=2))
    assert base.fingerprint() == same.fingerprint()
    for change in ({"num_segments": 5}, {"seed": 1}, {"modulation_strength": 5.0}, {"attention_injection": False}):
        other = EmerDiffSegmentor(tiny_model, dataclasses.replace(base.config, **change))
        assert other.fingerprint() != base.fingerprint(), change


def test_injection_off_changes_the_result(tiny_model):
    image = scene_image(12)
    on = EmerDiffSegmentor(tiny_model, EmerDiffConfig(num_segments=5)).segment(image)
    off = EmerDiffSegmentor(tiny_model, EmerDiffConfig(num_segments=5, attention_injection=False)).segment(image)
    assert on.counters == off.counters
    assert not np.array_equal(on.label_map, off.label_map) or [s.score for s in on.segments] != [
        s.score for s in off.segments]


@pytest.mark.parametrize("bad", [{"num_segments": 0}, {"modulation_timestep": 0}, {"dtype": "float64"},
                                 {"blur_sigma": -1.0}, {"batch_size": 0}])
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="invalid EmerDiffConfig"):
        EmerDiffConfig(**bad)


def test_unknown_layer_is_named(tiny_model):
    layer = "up_blocks.9.attentions.0.transformer_blocks.0.attn2"
    with pytest.raises(ValueError, match=r"no attention layer 'up_blocks\.9"):
        EmerDiffSegmentor(tiny_model, EmerDiffConfig(feature_layer=layer))


@pytest.mark.slow
def test_relative_modulation_agrees_between_implementations(tiny_model):
    config = EmerDiffConfig(num_segments=4, modulation_relative=True, modulation_strength=2.0)
    image = scene_image(13)
    batched = EmerDiffSegmentor(tiny_model, config).segment(image)
    reference = ReferenceSegmentor(tiny_model, config).segment(image)
    absolute = EmerDiffSegmentor(tiny_model, dataclasses.replace(config, modulation_relative=False)).segment(image)
    np.testing.assert_array_equal(batched.label_map, reference.label_map)
    assert [s.score for s in batched.segments] != [s.score for s in absolute.segments]
