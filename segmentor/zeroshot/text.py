"""Text embeddings of the labels' words: prompt templates ensembled, several words (synonyms) per label.

Each word is put into every template, the prompts encoded by CLIP's text tower, L2-normalised, averaged
and normalised again (CLIP's prompt ensembling; MaskCLIP does the same over 85 templates). A label keeps
one row per word; it scores its best word (``segmentor.zeroshot.classify``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from segmentor.zeroshot.loading import ClipModel

# Eight templates, not MaskCLIP's 85: the text tower costs ~2.2 s per 80 prompts on 2 CPU cores
# (docs/zero-shot.md), so 20 labels with 85 templates take ~45 s cold; eight keep a new label config's first
# prediction to seconds. Chosen from OpenAI's ImageNet list and MaskCLIP's scene templates: plain photos and
# scene wording (segments are parts of scenes), no art/origami/video-game styles.
TEMPLATES = (
    "a photo of a {}.",
    "a photo of the {}.",
    "a photo of a small {}.",
    "a photo of a large {}.",
    "a close-up photo of the {}.",
    "a cropped photo of the {}.",
    "there is a {} in the scene.",
    "a photo of a {} in the scene.",
)
# Named sets for EMERDIFF_CLIP_TEMPLATES: "plain" is the bare word, for a CLIP trained on short captions
# (such as the bundled one) where photo wording is out of its vocabulary.
TEMPLATE_SETS: dict[str, tuple[str, ...]] = {"default": TEMPLATES, "plain": ("{}",)}
_BATCH = 256  # prompts per text-tower call


def label_embeddings(clip: ClipModel, words: Mapping[str, Sequence[str]],
                     templates: Sequence[str] = TEMPLATES) -> dict[str, np.ndarray]:
    """Label -> (n_words, D) float32, one L2-normalised template-ensembled embedding per word."""
    unique = list(dict.fromkeys(word for label_words in words.values() for word in label_words))
    vectors = dict(zip(unique, word_embeddings(clip, unique, templates), strict=True)) if unique else {}
    embeddings = {}
    for label, label_words in words.items():
        if not label_words:
            raise ValueError(f"label {label!r} has no words to embed")
        embeddings[label] = np.stack([vectors[word] for word in label_words])
    return embeddings


def word_embeddings(clip: ClipModel, words: Sequence[str], templates: Sequence[str] = TEMPLATES) -> np.ndarray:
    """(len(words), D) float32: each word's prompts encoded, normalised, averaged, normalised."""
    if not templates or any("{}" not in template for template in templates):
        raise ValueError("every template must hold one '{}' for the word")
    prompts = [template.format(word) for word in words for template in templates]
    encoded = torch.cat([_encode(clip, prompts[start:start + _BATCH]) for start in range(0, len(prompts), _BATCH)])
    per_word = F.normalize(encoded.float(), dim=-1).view(len(words), len(templates), -1).mean(dim=1)
    return F.normalize(per_word, dim=-1).cpu().numpy().astype(np.float32)


def _encode(clip: ClipModel, prompts: Sequence[str]) -> torch.Tensor:
    tokens = clip.tokenizer(list(prompts), padding=True, truncation=True, return_tensors="pt").to(clip.device)
    with torch.inference_mode():
        output = clip.model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
    # transformers 5 returns an output object whose pooler_output is the projected vector; 4.x a tensor.
    return output if isinstance(output, torch.Tensor) else output.pooler_output
