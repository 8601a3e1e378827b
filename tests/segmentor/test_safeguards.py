"""Failure modes the segmentor must survive or refuse clearly: out of memory, NaN, vanished masks, mismatches.

Out-of-memory and NaN are injected into the real tiny model's VAE or U-Net (the only way to make them
happen on a CPU); everything around them is the real code path.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segmentor import EmerDiffConfig, EmerDiffSegmentor, load_model
from segmentor.assign import assign_labels
from segmentor.chunking import BatchBudget, OutOfMemoryError, run_in_chunks
from tests.segmentor.conftest import scene_image


def _count_unet_calls(model, into: list[int]):
    return model.unet.register_forward_pre_hook(lambda _m, args: into.append(args[0].shape[0]))


def test_decode_out_of_memory_halves_the_decode_batch_without_redoing_the_unet(tiny_model, monkeypatch):
    config = EmerDiffConfig(num_segments=4, batch_size=8)
    expected = EmerDiffSegmentor(tiny_model, config).segment(scene_image(30))
    decode = tiny_model.vae.decode

    def decode_at_most_two(latents, *args, **kwargs):
        if latents.shape[0] > 2:
            raise torch.cuda.OutOfMemoryError("injected: decode batch too large")
        return decode(latents, *args, **kwargs)

    monkeypatch.setattr(tiny_model.vae, "decode", decode_at_most_two)
    segmentor = EmerDiffSegmentor(tiny_model, config)
    passes: list[int] = []
    handle = _count_unet_calls(tiny_model, passes)
    try:
        result = segmentor.segment(scene_image(30))
    finally:
        handle.remove()
    np.testing.assert_array_equal(result.label_map, expected.label_map)
    assert [s.score for s in result.segments] == pytest.approx([s.score for s in expected.segments], rel=1e-5)
    # Every U-Net sample-pass ran once: the decode failure did not send the chunk back through the U-Net.
    assert sum(passes) == result.counters["unet_sample_passes"] == expected.counters["unet_sample_passes"]
    assert result.counters == expected.counters
    assert segmentor.chunk_sizes(8) == [8]  # the U-Net budget was not touched


def test_unet_out_of_memory_redoes_the_chunk_smaller_and_counts_only_the_redone_work(tiny_model, monkeypatch):
    config = EmerDiffConfig(num_segments=4, batch_size=8)
    expected = EmerDiffSegmentor(tiny_model, config).segment(scene_image(31))
    forward = tiny_model.unet.forward
    failures = []

    def forward_at_most_four(sample, timestep, *args, **kwargs):
        # Fails only after the first step of a large chunk has run (and been counted): that work is redone.
        if sample.shape[0] > 4 and int(timestep) < 281:
            failures.append(sample.shape[0])
            raise torch.cuda.OutOfMemoryError("injected: U-Net batch too large")
        return forward(sample, timestep, *args, **kwargs)

    monkeypatch.setattr(tiny_model.unet, "forward", forward_at_most_four)
    segmentor = EmerDiffSegmentor(tiny_model, config)
    result = segmentor.segment(scene_image(31))
    assert failures, "the injected out-of-memory never triggered"
    np.testing.assert_array_equal(result.label_map, expected.label_map)
    assert result.counters == expected.counters == segmentor.expected_counters(4)
    assert segmentor.chunk_sizes(8) == [4, 4]


def test_out_of_memory_at_the_smallest_chunk_is_a_clear_error():
    budget = BatchBudget(4, step=2, what="modulated runs")

    def always_out_of_memory(_chunk):
        raise torch.cuda.OutOfMemoryError("injected")

    with pytest.raises(OutOfMemoryError, match="even with 2 modulated runs per call"):
        run_in_chunks(list(range(6)), budget, always_out_of_memory)


def test_nan_response_maps_are_an_error_not_a_label_map(tiny_model, monkeypatch):
    decode = tiny_model.vae.decode

    def decode_nan(latents, *args, **kwargs):
        output = decode(latents, *args, **kwargs)
        output.sample[:, :, 0, 0] = float("nan")
        return output

    monkeypatch.setattr(tiny_model.vae, "decode", decode_nan)
    with pytest.raises(FloatingPointError, match=r"hold NaN or inf .*float32"):
        EmerDiffSegmentor(tiny_model, EmerDiffConfig(num_segments=3)).segment(scene_image(32))


def test_every_mask_vanishing_is_refused(tiny_segmentor):
    with pytest.raises(ValueError, match="every coarse mask vanishes"):
        tiny_segmentor.modulation_masks(np.zeros((2, 8, 8), dtype=bool), (16, 16))


def test_scores_after_min_area_come_from_the_final_assignment(tiny_model):
    segmentor = EmerDiffSegmentor(tiny_model, EmerDiffConfig(min_segment_area=20))
    # Three maps: mask 2 wins a 2x2 corner only, so it is too small and hands its pixels on.
    maps = torch.zeros((3, 8, 8))
    maps[0, :, :4], maps[1, :, 4:] = 1.0, 1.0
    maps[0, :, 4:], maps[1, :, :4] = 0.2, 0.5
    maps[2, :2, :2] = 3.0
    labels, margin = assign_labels(maps, (8, 8))
    assert (labels == 2).sum() == 4
    final_labels, final_margin = segmentor._drop_small_segments(labels, margin, maps, frozenset())
    expected_labels, expected_margin = assign_labels(maps, (8, 8), exclude=frozenset({2}))
    np.testing.assert_array_equal(final_labels, expected_labels)
    np.testing.assert_array_equal(final_margin, expected_margin)
    assert final_margin[0, 0] == pytest.approx(0.5)  # 1.0 over 0.5, not 3.0 over 1.0


def test_min_area_segment_scores_are_their_pixels_final_margins(tiny_model):
    image = scene_image(9)
    unfiltered = EmerDiffSegmentor(tiny_model, EmerDiffConfig(num_segments=8)).segment(image)
    threshold = int(np.median([s.area for s in unfiltered.segments])) + 1
    filtered = EmerDiffSegmentor(tiny_model, EmerDiffConfig(num_segments=8, min_segment_area=threshold)).segment(image)
    assert len(filtered.segments) < len(unfiltered.segments)
    for segment in filtered.segments:
        assert 0.0 <= segment.score <= 1.0


@pytest.mark.parametrize(("setting", "message"), [
    ({"dtype": "float16"}, "dtype float16 but the model is loaded in float32"),
    ({"device": "cuda"}, "device cuda but the model is on cpu"),
])
def test_config_disagreeing_with_the_loaded_model_is_refused(tiny_model, setting, message):
    with pytest.raises(ValueError, match=message):
        EmerDiffSegmentor(tiny_model, EmerDiffConfig(**setting))


def test_float16_keeps_a_force_upcast_vae_in_float32(tiny_model_dir):
    model = load_model(str(tiny_model_dir), dtype="float16")
    assert model.vae.config.force_upcast
    assert model.unet.dtype == torch.float16 and model.vae.dtype == torch.float32
    result = EmerDiffSegmentor(model, EmerDiffConfig(num_segments=3, dtype="float16")).segment(scene_image(33))
    assert result.label_map.shape == (64, 64) and len(result.segments) >= 1


def test_baseline_upsamples_every_coarse_mask_not_only_emerdiffs_winners(tiny_model):
    image = scene_image(34)
    result = EmerDiffSegmentor(tiny_model, EmerDiffConfig(num_segments=6, min_segment_area=900)).segment(image)
    coarse = int(result.coarse_labels.max()) + 1
    assert len(result.segments) < coarse  # EmerDiff dropped some masks...
    baseline = result.baseline_label_map()
    expected, _ = assign_labels(np.stack([result.coarse_labels == i for i in range(coarse)]).astype(np.float32),
                                image.shape[:2])
    np.testing.assert_array_equal(baseline, expected)  # ...the baseline keeps every one of them
    assert len(np.unique(baseline)) > len(result.segments)
    assert result.coarse_embeddings().shape == (coarse, result.features.shape[-1])
