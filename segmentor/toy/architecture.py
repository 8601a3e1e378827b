"""Small Stable-Diffusion-shaped models built from configs alone, with no hub access.

The U-Net keeps SD's block types, so layer names such as
``up_blocks.1.attentions.0.transformer_blocks.0.attn2`` address the same roles as in SD 1.5. It has
three resolution levels instead of four; with a factor-4 VAE that puts ``up_blocks.1`` at 1/8 of the
image side (8x8 at 64 px): a coarse grid whose cells span several pixels, as SD's 16x16 does at 512 px.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

# SD 1.x noise schedule, so DDIM timesteps (281, 261, ..., 1) mean the same noise levels as in SD.
SD_SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "epsilon",
}


@dataclass(frozen=True)
class ToyModelSpec:
    """Sizes of a small SD-layout model; ``image_size`` is its native working size in pixels."""

    image_size: int = 64
    vae_channels: tuple[int, ...] = (16, 32, 64)  # three blocks: downsampling factor 4; thin at full resolution
    latent_channels: int = 4
    unet_channels: tuple[int, ...] = (32, 64, 64)
    layers_per_block: int = 1
    attention_heads: int = 4
    text_width: int = 32
    text_layers: int = 2
    context_tokens: int = 8  # several tokens: with one, cross-attention is constant over space

    @property
    def vae_factor(self) -> int:
        return 2 ** (len(self.vae_channels) - 1)


TINY_TEST_SPEC = ToyModelSpec(
    image_size=64, vae_channels=(8, 16, 16), unet_channels=(16, 32, 32), attention_heads=2,
    text_width=16, text_layers=1,
)


def _byte_level_vocab() -> dict[str, int]:
    """CLIP's byte-level alphabet (GPT-2's byte-to-unicode table) without merges: every byte is a token."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    codepoints = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            codepoints.append(256 + extra)
            extra += 1
    chars = [chr(c) for c in codepoints]
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return vocab


def build_tokenizer(spec: ToyModelSpec) -> CLIPTokenizer:
    return CLIPTokenizer(vocab=_byte_level_vocab(), merges=[], model_max_length=spec.context_tokens)


def build_text_encoder(spec: ToyModelSpec, vocab_size: int) -> CLIPTextModel:
    config = CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=spec.text_width, intermediate_size=spec.text_width * 4,
        num_hidden_layers=spec.text_layers, num_attention_heads=2,
        max_position_embeddings=spec.context_tokens, bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
    )
    return CLIPTextModel(config)


def build_vae(spec: ToyModelSpec) -> AutoencoderKL:
    n = len(spec.vae_channels)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=spec.latent_channels,
        down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=spec.vae_channels, layers_per_block=1, norm_num_groups=8,
        sample_size=spec.image_size,
    )


def build_unet(spec: ToyModelSpec) -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=spec.image_size // spec.vae_factor,
        in_channels=spec.latent_channels, out_channels=spec.latent_channels,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=spec.unet_channels, layers_per_block=spec.layers_per_block,
        cross_attention_dim=spec.text_width, attention_head_dim=spec.attention_heads, norm_num_groups=8,
    )


def build_model_folder(spec: ToyModelSpec, folder: Path, seed: int = 0) -> Path:
    """Write a randomly initialised SD-layout model in the diffusers folder layout (safetensors)."""
    torch.manual_seed(seed)
    tokenizer = build_tokenizer(spec)
    parts = {
        "tokenizer": tokenizer,
        "text_encoder": build_text_encoder(spec, len(tokenizer)),
        "vae": build_vae(spec),
        "unet": build_unet(spec),
        "scheduler": DDIMScheduler(**SD_SCHEDULER_CONFIG),
    }
    save_model_folder(parts, folder, spec)
    return folder


def save_model_folder(parts: dict, folder: Path, spec: ToyModelSpec) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, part in parts.items():
        part.save_pretrained(folder / name)
    # model_index.json lets StableDiffusionPipeline.from_pretrained(folder) read the folder too.
    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": "0.42.1",
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "scheduler": ["diffusers", "DDIMScheduler"],
        "safety_checker": [None, None],
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    (folder / "toy_spec.json").write_text(json.dumps(asdict(spec), indent=2) + "\n")
