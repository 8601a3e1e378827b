"""The rebuilt last block against transformers' own forward, and the whole-image grid."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from segmentor.zeroshot import MODES, dense_grid
from segmentor.zeroshot.dense import (
    _neighbourhood,
    grid_shape,
    last_block_input,
    pixel_values,
    rebuilt_block,
)


def _image(height: int = 40, width: int = 72, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def tokens(tiny_clip):
    pixels = pixel_values(tiny_clip, _image())
    with torch.inference_mode():
        return pixels, last_block_input(tiny_clip, pixels), (pixels.shape[2] // 8, pixels.shape[3] // 8)


def _stock_attention(layer, hidden, mask=None):
    """transformers' own CLIPAttention on the layer's normalised input (with an additive mask)."""
    with torch.inference_mode():
        return layer.self_attn(layer.layer_norm1(hidden), attention_mask=mask)[0]


def _tied(layer, source: str, target: str):
    """A copy of ``layer`` whose ``target`` projection is its ``source`` one: q.k^T becomes q.q^T or k.k^T."""
    tied = copy.deepcopy(layer)
    getattr(tied.self_attn, target).load_state_dict(getattr(tied.self_attn, source).state_dict())
    return tied


def test_plain_block_reproduces_the_vision_tower(tiny_clip, tokens):
    pixels, hidden, grid = tokens
    layer = tiny_clip.model.vision_model.encoder.layers[-1]
    with torch.inference_mode():
        expected = tiny_clip.model.vision_model(pixel_values=pixels, interpolate_pos_encoding=True).last_hidden_state
        rebuilt = rebuilt_block(layer, hidden, "plain", grid)
    assert rebuilt.shape == expected.shape == (1, 1 + grid[0] * grid[1], 32)
    torch.testing.assert_close(rebuilt, expected, rtol=0, atol=1e-5)


def test_maskclip_is_the_layer_with_each_token_attending_to_itself(tiny_clip, tokens):
    _, hidden, grid = tokens
    layer = tiny_clip.model.vision_model.encoder.layers[-1]
    count = hidden.shape[1]
    identity = torch.full((count, count), -1e9)
    identity.fill_diagonal_(0.0)
    with torch.inference_mode():
        expected = layer(hidden, identity[None, None])  # transformers' layer: residual and FFN kept
        rebuilt = rebuilt_block(layer, hidden, "maskclip", grid)
    torch.testing.assert_close(rebuilt, expected, rtol=0, atol=1e-5)


def test_clearclip_is_query_query_attention_alone(tiny_clip, tokens):
    _, hidden, grid = tokens
    tied = _tied(tiny_clip.model.vision_model.encoder.layers[-1], "q_proj", "k_proj")
    with torch.inference_mode():
        rebuilt = rebuilt_block(tied, hidden, "clearclip", grid)
    torch.testing.assert_close(rebuilt, _stock_attention(tied, hidden), rtol=0, atol=1e-5)


def test_naclip_is_key_key_attention_with_a_gaussian_neighbourhood(tiny_clip, tokens):
    _, hidden, grid = tokens
    tied = _tied(tiny_clip.model.vision_model.encoder.layers[-1], "k_proj", "q_proj")
    bias = _neighbourhood(hidden.shape[1], grid, hidden.device)
    assert bias[0].abs().sum() == 0 and bias[1, 1] == 1.0  # CLS unbiased; a patch is its own nearest
    # NACLIP's gaussian_window (sinahmr/NACLIP clip/model.py): exp(-d^2 / (2 sigma^2)), sigma = 5 patches.
    columns = grid[1]
    assert bias[1, 2].item() == pytest.approx(math.exp(-1 / 50))  # the right-hand neighbour, distance 1
    assert bias[1, 2 + columns].item() == pytest.approx(math.exp(-2 / 50))  # the diagonal one, distance sqrt 2
    with torch.inference_mode():
        rebuilt = rebuilt_block(tied, hidden, "naclip", grid)
    torch.testing.assert_close(rebuilt, _stock_attention(tied, hidden, bias[None, None]), rtol=0, atol=1e-5)


def test_sclip_sums_query_query_and_key_key_attention_and_keeps_residual_and_ffn(tiny_clip, tokens):
    _, hidden, grid = tokens
    layer = tiny_clip.model.vision_model.encoder.layers[-1]
    queries = _stock_attention(_tied(layer, "q_proj", "k_proj"), hidden)
    keys = _stock_attention(_tied(layer, "k_proj", "q_proj"), hidden)
    with torch.inference_mode():
        mixed = queries + keys - layer.self_attn.out_proj.bias  # out_proj is affine: one bias, not two
        after = hidden + mixed
        expected = after + layer.mlp(layer.layer_norm2(after))
        rebuilt = rebuilt_block(layer, hidden, "sclip", grid)
    torch.testing.assert_close(rebuilt, expected, rtol=0, atol=1e-5)


def test_modes_differ_and_unknown_mode_is_refused(tiny_clip):
    grids = {mode: dense_grid(tiny_clip, _image(), mode) for mode in MODES}
    for first in MODES:
        for second in MODES:
            if first < second:
                assert not np.allclose(grids[first], grids[second], atol=1e-4), (first, second)
    with pytest.raises(ValueError, match="unknown CLIP mode"):
        dense_grid(tiny_clip, _image(), "plain")


@pytest.mark.parametrize("mode", MODES)
def test_grid_is_normalised_text_space_and_keeps_the_aspect(tiny_clip, mode):
    grid = dense_grid(tiny_clip, _image(40, 72), mode)
    # short side 2 x 32 = 64 px -> 8 patches; 72 * 64 / 40 = 115 px -> 14 patches: the whole image, no crop.
    assert grid.shape == (8, 14, tiny_clip.model.config.projection_dim)
    assert grid.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(grid, axis=-1), 1.0, atol=1e-5)


def test_grid_equals_the_projected_tokens_of_the_rebuilt_block(tiny_clip, tokens):
    """Patch (i, j) is token 1 + i * gw + j after post_layernorm and visual_projection (row-major, CLS dropped)."""
    _, hidden, grid = tokens
    vision = tiny_clip.model.vision_model
    with torch.inference_mode():
        out = rebuilt_block(vision.encoder.layers[-1], hidden, "maskclip", grid)
        projected = tiny_clip.model.visual_projection(vision.post_layernorm(out))[0]
    expected = torch.nn.functional.normalize(projected[1 + 2 * grid[1] + 5], dim=-1).numpy()
    np.testing.assert_allclose(dense_grid(tiny_clip, _image(), "maskclip")[2, 5], expected, atol=1e-5)


def test_whole_image_is_resized_never_cropped(tiny_clip):
    image = np.zeros((40, 72, 3), np.uint8)
    image[:10, -18:] = 255  # a white top-right corner: a crop to the centre would lose it
    pixels = pixel_values(tiny_clip, image)
    assert tuple(pixels.shape[2:]) == (64, 112)
    white = (1.0 - torch.tensor(tiny_clip.image_mean)) / torch.tensor(tiny_clip.image_std)
    torch.testing.assert_close(pixels[0, :, 2, -3], white, rtol=0, atol=1e-3)
    assert grid_shape(tiny_clip, 72, 40) == (14, 8)
    assert grid_shape(tiny_clip, 100, 100, short_side=16) == (2, 2)


def test_dense_grid_is_deterministic(tiny_clip):
    np.testing.assert_array_equal(dense_grid(tiny_clip, _image(), "sclip"), dense_grid(tiny_clip, _image(), "sclip"))


def test_bad_image_is_refused(tiny_clip):
    with pytest.raises(ValueError, match="uint8"):
        dense_grid(tiny_clip, np.zeros((8, 8), np.uint8))
