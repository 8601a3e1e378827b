"""A small transformers ``CLIPModel`` and its tokenizer, built from configs alone, with no hub access.

The tokenizer is CLIP's byte-level BPE: every byte is a token (so any text tokenizes), plus merges that
make each word of :data:`VOCABULARY` one token, so the tiny text tower never has to spell. The folder it
is saved to loads with ``CLIPModel.from_pretrained`` / ``CLIPTokenizer.from_pretrained`` like any CLIP.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

from segmentor.toy.architecture import _byte_level_vocab

COLOUR_WORDS: tuple[str, ...] = ("red", "green", "blue")
SHAPE_WORDS: tuple[str, ...] = ("disc", "box", "triangle", "ring", "ellipse")
BACKGROUND_WORD = "background"
# Caption wrappers the trainer draws from (one per word per step), so a label's embedding does not hinge
# on one phrasing; words of the product's usual prompt templates are single tokens too.
TRAINING_TEMPLATES: tuple[str, ...] = (
    "{}", "{}.", "a {}.", "the {}.", "a photo of a {}.", "a photo of the {}.", "a {} in the scene.",
    "there is a {} in the scene.", "a picture of a {}.", "an image of a {}.", "itap of a {}.",
    "a good photo of a {}.", "a close-up photo of a {}.", "this is a {}.",
)
_TEMPLATE_WORDS = ("a", "an", "the", "photo", "of", "in", "scene", "there", "is", "picture", "image", "itap",
                   "good", "close", "up", "this", "bad", "small", "large", "big", "object", "shape", "thing")
VOCABULARY: tuple[str, ...] = (BACKGROUND_WORD, *COLOUR_WORDS, *SHAPE_WORDS, *_TEMPLATE_WORDS)

# OpenAI CLIP's normalisation, written into preprocessor_config.json and used in training.
IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)
IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class ToyClipSpec:
    image_size: int = 64
    patch_size: int = 8  # an 8x8 patch grid at 64 px, as coarse as the diffusion model's 8x8 feature grid
    vision_width: int = 96
    vision_layers: int = 4
    vision_heads: int = 4
    text_width: int = 64
    text_layers: int = 2
    text_heads: int = 2
    context_tokens: int = 16
    projection_dim: int = 64


TINY_CLIP_TEST_SPEC = ToyClipSpec(image_size=32, patch_size=8, vision_width=32, vision_layers=2, vision_heads=2,
                                  text_width=32, text_layers=1, text_heads=2, projection_dim=32)


def _bpe(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """CLIP's BPE of one lower-case word: repeatedly merge the best-ranked adjacent pair."""
    pieces = [*word[:-1], word[-1] + "</w>"]
    while len(pieces) > 1:
        pairs = [(ranks.get((a, b)), i) for i, (a, b) in enumerate(itertools.pairwise(pieces))]
        known = [(rank, i) for rank, i in pairs if rank is not None]
        if not known:
            break
        _, i = min(known)
        pieces = [*pieces[:i], pieces[i] + pieces[i + 1], *pieces[i + 2:]]
    return pieces


def word_merges(words: tuple[str, ...]) -> list[tuple[str, str]]:
    """Merges that turn each word into one token; a merge added later never changes an earlier word's pieces
    (it ranks below every merge that word used), so each word is checked once."""
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    for word in words:
        while len(pieces := _bpe(word, ranks)) > 1:
            pair = (pieces[0], pieces[1])
            ranks[pair] = len(merges)
            merges.append(pair)
    return merges


def build_clip_tokenizer(spec: ToyClipSpec) -> CLIPTokenizer:
    vocab = {token: i for i, token in enumerate(t for t in _byte_level_vocab() if not t.startswith("<|"))}
    merges = word_merges(VOCABULARY)
    for first, second in merges:
        vocab.setdefault(first + second, len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=spec.context_tokens)


def build_clip(spec: ToyClipSpec, tokenizer: CLIPTokenizer) -> CLIPModel:
    bos, eos = tokenizer.convert_tokens_to_ids(["<|startoftext|>", "<|endoftext|>"])
    text = {"vocab_size": len(tokenizer), "hidden_size": spec.text_width, "intermediate_size": 4 * spec.text_width,
            "num_hidden_layers": spec.text_layers, "num_attention_heads": spec.text_heads,
            "max_position_embeddings": spec.context_tokens, "bos_token_id": bos, "eos_token_id": eos,
            "pad_token_id": eos}
    vision = {"image_size": spec.image_size, "patch_size": spec.patch_size, "hidden_size": spec.vision_width,
              "intermediate_size": 4 * spec.vision_width, "num_hidden_layers": spec.vision_layers,
              "num_attention_heads": spec.vision_heads}
    return CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=spec.projection_dim))


def image_processor(spec: ToyClipSpec) -> CLIPImageProcessor:
    side = {"shortest_edge": spec.image_size}
    return CLIPImageProcessor(size=side, crop_size={"height": spec.image_size, "width": spec.image_size},
                              image_mean=list(IMAGE_MEAN), image_std=list(IMAGE_STD))


def save_clip_folder(model: CLIPModel, tokenizer: CLIPTokenizer, spec: ToyClipSpec, folder: Path) -> None:
    """One folder, as the hub's CLIP repositories are: weights, config, tokenizer and preprocessor config."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    image_processor(spec).save_pretrained(folder)
    (folder / "toy_clip_spec.json").write_text(json.dumps(asdict(spec), indent=2) + "\n")
