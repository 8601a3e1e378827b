"""Evidence that a trained toy model learned something: VAE PSNR, held-out denoising loss, DDIM samples."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

from segmentor.toy.architecture import SD_SCHEDULER_CONFIG
from segmentor.toy.batches import scene_batch, to_uint8_images

PROBE_TIMESTEPS = (51, 281, 501, 801)  # 281 is EmerDiff's t_m; the others bracket it


def psnr(reference: np.ndarray, estimate: np.ndarray) -> float:
    mse = np.mean((reference.astype(np.float64) - estimate.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


@torch.no_grad()
def reconstruction_psnr(vae: AutoencoderKL, seeds: Sequence[int], size: int) -> float:
    """Mean PSNR (dB, uint8 scale) of VAE round trips (posterior mean) of the given scenes."""
    images = scene_batch(seeds, size)
    decoded = vae.decode(vae.encode(images).latent_dist.mean).sample
    originals, round_trips = to_uint8_images(images), to_uint8_images(decoded)
    return float(np.mean([psnr(a, b) for a, b in zip(originals, round_trips, strict=True)]))


@torch.no_grad()
def denoising_loss(unet: UNet2DConditionModel, vae: AutoencoderKL, context: torch.Tensor,
                   seeds: Sequence[int], size: int, seed: int = 0) -> dict[int, float]:
    """Held-out epsilon MSE at each of ``PROBE_TIMESTEPS`` (fixed noise); 1.0 is what predicting zero scores."""
    scheduler = DDIMScheduler(**SD_SCHEDULER_CONFIG)
    latents = vae.encode(scene_batch(seeds, size)).latent_dist.mean * vae.config.scaling_factor
    generator = torch.Generator().manual_seed(seed)
    losses = {}
    for timestep in PROBE_TIMESTEPS:
        noise = torch.randn(latents.shape, generator=generator)
        steps = torch.full((len(latents),), timestep)
        noisy = scheduler.add_noise(latents, noise, steps)
        predicted = unet(noisy, steps, context.expand(len(latents), -1, -1)).sample
        losses[timestep] = float(F.mse_loss(predicted, noise))
    return losses


@torch.no_grad()
def sample_images(unet: UNet2DConditionModel, vae: AutoencoderKL, context: torch.Tensor, count: int,
                  steps: int = 50, seed: int = 0) -> np.ndarray:
    """Generate ``count`` images from noise with deterministic DDIM (eta = 0); N×H×W×3 uint8."""
    scheduler = DDIMScheduler(**SD_SCHEDULER_CONFIG)
    scheduler.set_timesteps(steps)
    side = unet.config.sample_size
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn((count, unet.config.in_channels, side, side), generator=generator)
    context = context.expand(count, -1, -1)
    for timestep in scheduler.timesteps:
        latents = scheduler.step(unet(latents, timestep, context).sample, timestep, latents).prev_sample
    return to_uint8_images(vae.decode(latents / vae.config.scaling_factor).sample)


def image_grid(images: np.ndarray, columns: int) -> np.ndarray:
    """Tile N×H×W×3 images row by row; missing cells stay black."""
    count, height, width, channels = images.shape
    rows = -(-count // columns)
    grid = np.zeros((rows * height, columns * width, channels), images.dtype)
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        grid[row * height:(row + 1) * height, column * width:(column + 1) * width] = image
    return grid
