"""A tiny random transformers ``CLIPModel`` folder, built offline in about a second.

32 wide, 2 layers, 4 heads, patch 8 (a 4x4 position grid at 32 px), projection 16, with a byte-level
tokenizer written in memory (every byte a token, no merges): the production loader reads it like any
``CLIPModel.save_pretrained`` folder.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

from segmentor.toy.architecture import _byte_level_vocab  # the project's byte-level alphabet, not a copy

SEED = 0


def tiny_tokenizer() -> CLIPTokenizer:
    return CLIPTokenizer(vocab=_byte_level_vocab(), merges=[], model_max_length=77)


def build_tiny_clip(folder: Path, seed: int = SEED) -> Path:
    """Write the tiny CLIP (weights from ``seed``) and its tokenizer to ``folder``; the folder."""
    tokenizer = tiny_tokenizer()
    config = CLIPConfig(
        text_config={"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4,
                     "vocab_size": len(tokenizer), "max_position_embeddings": 77,
                     "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
                     "pad_token_id": tokenizer.pad_token_id},
        vision_config={"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4,
                       "patch_size": 8, "image_size": 32},
        projection_dim=16,
    )
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
