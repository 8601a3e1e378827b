"""What zero-shot labels add to a process's memory: CLIP's weights and one dense grid's working memory."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import CLIPConfig, CLIPModel

from segmentor.zeroshot.dense import MAX_PATCHES, SHORT_SIDE_FACTOR

# openai/clip-vit-base-patch16's shapes: what EMERDIFF_CLIP_MODEL names when its config is not on disk.
_B16 = {"vision_config": {"patch_size": 16}}


def clip_memory(folder: Path | None, dtype: torch.dtype) -> dict[str, int]:
    """Bytes: ``weights`` (both towers) and ``grid`` (the last block's float32 attention over a square image's
    tokens at the default short side, plus four activations of every token): an estimate, not a measurement."""
    config = CLIPConfig.from_pretrained(str(folder)) if folder is not None else CLIPConfig(**_B16)
    with torch.device("meta"):
        model = CLIPModel(config)
    size = torch.finfo(dtype).bits // 8
    vision = config.vision_config
    side = SHORT_SIDE_FACTOR * vision.image_size // vision.patch_size
    tokens = min(side * side, MAX_PATCHES) + 1
    attention = 2 * vision.num_attention_heads * tokens * tokens * 4  # two softmaxes (SCLIP), float32
    activations = 4 * tokens * max(vision.hidden_size, vision.intermediate_size) * size
    return {"weights": sum(p.numel() for p in model.parameters()) * size, "grid": attention + activations,
            "tokens": tokens}
