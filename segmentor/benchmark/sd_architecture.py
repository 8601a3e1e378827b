"""Stable Diffusion 1.5's architecture with random weights, built in memory: for timing and FLOP counts.

Real SD weights can't be downloaded here; compute cost depends only on the architecture, so a random
model of the same shape gives the same timings and FLOPs. Its segmentations mean nothing.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from segmentor.loading import DiffusionModel, honour_force_upcast, resolve_device, resolve_dtype
from segmentor.toy.architecture import SD_SCHEDULER_CONFIG, ToyModelSpec, build_tokenizer

SD15_RANDOM = "sd15-random"


def random_sd15(device: str | None = None, dtype: str | None = None, seed: int = 0) -> DiffusionModel:
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    torch.manual_seed(seed)
    # Built in place: on the meta device (FLOP counts) no weights are ever allocated.
    with torch.device(torch_device):
        unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768)  # every other default is SD 1.5's
        vae = AutoencoderKL(
            block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4, sample_size=512,
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        )
        tokenizer = build_tokenizer(ToyModelSpec(context_tokens=77))
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
            max_position_embeddings=77, bos_token_id=len(tokenizer) - 2, eos_token_id=len(tokenizer) - 1,
        ))
    for module in (unet, vae, text_encoder):
        module.to(torch_device, torch_dtype).eval().requires_grad_(False)
    honour_force_upcast(vae, torch_dtype)
    return DiffusionModel(vae=vae, unet=unet, text_encoder=text_encoder, tokenizer=tokenizer,
                          scheduler=DDIMScheduler(**SD_SCHEDULER_CONFIG), device=torch_device, dtype=torch_dtype,
                          reference=SD15_RANDOM, identity=f"{SD15_RANDOM}-seed{seed}")
