"""CLIP's patch tokens in its text space: the last vision block rebuilt, the rest of the tower stock.

Everything before the last block is transformers' own ``CLIPVisionModel`` (embeddings with position
embeddings interpolated to the image's grid, ``pre_layrnorm``, the first L-1 encoder layers). The last block
is rebuilt per mode, then ``post_layernorm`` and ``visual_projection`` take every patch token (the CLS token
is dropped) into the space of the text embeddings, L2-normalised. Each mode follows its authors' code
(read for issue 21's follow-up; docs/LABELS.md lists the files):

- ``maskclip`` (Zhou et al., ECCV 2022; chongzhou96/MaskCLIP ``mmseg/models/backbones/vit.py``): attention
  replaced by its value path ``out_proj(v_proj(ln1(x)))`` (each token attends to itself only); residual and
  FFN kept. The EmerDiff paper's Table 3 baseline.
- ``sclip`` (Wang et al., 2024; wangf3014/SCLIP ``clip/model.py``): ``softmax(q q^T s) + softmax(k k^T s)``;
  residual and FFN kept.
- ``clearclip`` (Lan et al., 2024; mc-lan/ClearCLIP ``open_clip/transformer.py``, ``model_type='ClearCLIP'``
  with ``ignore_residual=True``): ``softmax(q q^T s)``; no residual, no FFN.
- ``naclip`` (Hajimiri et al., 2025; sinahmr/NACLIP ``clip/model.py``, ``arch='reduced'``): ``softmax(k k^T s
  + w)``, ``w = exp(-d^2 / (2 sigma^2))`` of the patch distance ``d`` (sigma 5 patches), none for CLS; no
  residual, no FFN (its published numbers add PAMR post-refinement, which we do not).

``s`` is the stock attention scale ``head_dim ** -0.5`` in every mode, as in all four sources. Deliberately
unlike the sources: one pass over the whole image at a short side of 2 x the tower's size (448 px for
ViT-B/16; the sources resize to a short side of 336 (SCLIP, NACLIP) or 448 (ClearCLIP) and SCLIP and
ClearCLIP slide 224/448 px windows over it), no PAMR, no key smoothing or prompt denoising (MaskCLIP), no
area threshold (SCLIP); the probability threshold is the label config's ``emerdiff-zero-shot-threshold``.

The whole image is used, never centre-cropped (CLIPImageProcessor's default crop would break the alignment
of the grid with the image that pooling in segments needs): it is resized, aspect kept, so that both sides
are multiples of the patch size, so grid cell (i, j) covers the same fraction of the image as the mask
cells ``segmentor.labelling.pool_features`` weighs it with.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from transformers.models.clip.modeling_clip import CLIPEncoderLayer

from segmentor.zeroshot.loading import ClipModel

MODES = ("maskclip", "sclip", "clearclip", "naclip")
# SCLIP: the best mode on the bundled models in every comparison (docs/QUALITY.md, "Zero-shot labels": class-mean
# accuracy 0.466 in EmerDiff segments vs maskclip 0.328, per pixel 0.858 vs 0.733), and ahead of MaskCLIP in its
# authors' ViT-B/16 numbers (ADE 16.1 vs 11.9, PC59 34.2 vs 26.4). `maskclip` stays for reproducing the paper.
DEFAULT_MODE = "sclip"
# Softmax scale on cosines for the segment probabilities: each source's default (MaskCLIP: CLIP's own trained
# scale, 100, as maskclip_head.py's refinement uses it; SCLIP clip_segmentor.py and NACLIP naclip.py 40; ClearCLIP
# clearclip_segmentor.py 50). SCLIP's VOC-21 config raises its scale to 65; we keep the defaults.
LOGIT_SCALES = {"maskclip": 100.0, "sclip": 40.0, "clearclip": 50.0, "naclip": 40.0}
NACLIP_SIGMA = 5.0  # patches (NACLIP's Gaussian neighbourhood)
# The short side the image is resized to, as a multiple of the tower's training size (MaskCLIP: ~512 for a
# 224 model): 448 px for ViT-B/16 gives a 28x28 grid (about 3 s on 2 CPU cores, docs/zero-shot.md).
SHORT_SIDE_FACTOR = 2
# Most patches per image: a panorama keeps its aspect but shrinks so attention stays affordable.
MAX_PATCHES = 64 * 64
# "plain" is the stock block, written the same way: the yardstick that proves the rebuild (tests).
_ALL_MODES = (*MODES, "plain")


def dense_grid(clip: ClipModel, image: np.ndarray, mode: str = DEFAULT_MODE,
               short_side: int | None = None) -> np.ndarray:
    """The (gh, gw, D) float32 grid of L2-normalised patch embeddings of an (H, W, 3) uint8 image."""
    if mode not in MODES:
        raise ValueError(f"unknown CLIP mode {mode!r}; use one of {', '.join(MODES)}")
    return _grid(clip, image, mode, short_side)


def grid_shape(clip: ClipModel, height: int, width: int, short_side: int | None = None) -> tuple[int, int]:
    """The (gh, gw) patch grid an image of ``height`` x ``width`` gets: aspect kept, whole image."""
    patch = clip.patch_size
    short = short_side or SHORT_SIDE_FACTOR * clip.image_size
    scale = short / min(height, width)
    rows, cols = max(1, round(height * scale / patch)), max(1, round(width * scale / patch))
    if rows * cols > MAX_PATCHES:
        shrink = (MAX_PATCHES / (rows * cols)) ** 0.5
        rows, cols = max(1, int(rows * shrink)), max(1, int(cols * shrink))
    return rows, cols


def pixel_values(clip: ClipModel, image: np.ndarray, short_side: int | None = None) -> torch.Tensor:
    """The whole image resized to the grid's size (no crop) and normalised with the model's mean/std."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be an (H, W, 3) uint8 array, got {image.dtype} {image.shape}")
    rows, cols = grid_shape(clip, image.shape[0], image.shape[1], short_side)
    pixels = torch.from_numpy(np.array(image, dtype=np.float32)).permute(2, 0, 1)[None] / 255.0
    pixels = F.interpolate(pixels, size=(rows * clip.patch_size, cols * clip.patch_size), mode="bicubic",
                           antialias=True, align_corners=False).clamp_(0.0, 1.0)
    mean = torch.tensor(clip.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(clip.image_std).view(1, 3, 1, 1)
    return ((pixels - mean) / std).to(clip.device, clip.dtype)


def _grid(clip: ClipModel, image: np.ndarray, mode: str, short_side: int | None) -> np.ndarray:
    pixels = pixel_values(clip, image, short_side)
    rows, cols = pixels.shape[2] // clip.patch_size, pixels.shape[3] // clip.patch_size
    vision = clip.model.vision_model
    with torch.inference_mode():
        hidden = last_block_input(clip, pixels)
        tokens = rebuilt_block(vision.encoder.layers[-1], hidden, mode, (rows, cols))
        patches = clip.model.visual_projection(vision.post_layernorm(tokens[:, 1:]))
        patches = F.normalize(patches.float(), dim=-1)
    return patches[0].reshape(rows, cols, -1).cpu().numpy().astype(np.float32)


def last_block_input(clip: ClipModel, pixels: torch.Tensor) -> torch.Tensor:
    """The stock tower up to the last block: (1, 1 + gh*gw, C) tokens, position embeddings interpolated."""
    vision = clip.model.vision_model
    hidden = vision.embeddings(pixels, interpolate_pos_encoding=True)
    hidden = vision.pre_layrnorm(hidden)
    for layer in vision.encoder.layers[:-1]:
        hidden = layer(hidden, None)
    return hidden


def rebuilt_block(layer: CLIPEncoderLayer, hidden: torch.Tensor, mode: str, grid: tuple[int, int]) -> torch.Tensor:
    """The last encoder layer applied to ``hidden`` (1 CLS + gh*gw patch tokens) as ``mode`` rebuilds it."""
    if mode not in _ALL_MODES:
        raise ValueError(f"unknown block mode {mode!r}")
    attention = layer.self_attn
    normed = layer.layer_norm1(hidden)
    if mode == "maskclip":
        mixed = attention.out_proj(attention.v_proj(normed))
    else:
        mixed = attention.out_proj(_attend(attention, normed, mode, grid))
    if mode in ("clearclip", "naclip"):
        return mixed  # no residual, no FFN: the attention output alone
    hidden = hidden + mixed
    return hidden + layer.mlp(layer.layer_norm2(hidden))


def _attend(attention: torch.nn.Module, normed: torch.Tensor, mode: str, grid: tuple[int, int]) -> torch.Tensor:
    batch, tokens, width = normed.shape
    heads = attention.num_heads

    def split(projection: torch.nn.Linear) -> torch.Tensor:
        return projection(normed).view(batch, tokens, heads, -1).transpose(1, 2)

    queries, keys, values = split(attention.q_proj), split(attention.k_proj), split(attention.v_proj)
    scale = attention.scale

    def softmax(first: torch.Tensor, second: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        # float32 logits: half precision overflows exp() on similarity matrices of long token sequences.
        logits = (first.float() @ second.float().transpose(-1, -2)) * scale
        if bias is not None:
            logits = logits + bias
        return logits.softmax(dim=-1)

    if mode == "plain":
        weights = softmax(queries, keys)
    elif mode == "sclip":
        weights = softmax(queries, queries) + softmax(keys, keys)
    elif mode == "clearclip":
        weights = softmax(queries, queries)
    else:  # naclip
        weights = softmax(keys, keys, _neighbourhood(tokens, grid, normed.device))
    mixed = weights.to(values.dtype) @ values
    return mixed.transpose(1, 2).reshape(batch, tokens, width)


def _neighbourhood(tokens: int, grid: tuple[int, int], device: torch.device) -> torch.Tensor:
    """NACLIP's (tokens, tokens) logit bias: a Gaussian of the distance between patches; CLS gets none."""
    rows, cols = grid
    ys, xs = torch.meshgrid(torch.arange(rows, dtype=torch.float32), torch.arange(cols, dtype=torch.float32),
                            indexing="ij")
    points = torch.stack([ys.ravel(), xs.ravel()], dim=1)
    distances = torch.cdist(points, points).square()
    bias = torch.zeros(tokens, tokens)
    bias[1:, 1:] = torch.exp(-distances / (2 * NACLIP_SIGMA**2))
    return bias.to(device)
