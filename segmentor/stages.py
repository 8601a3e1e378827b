"""The steps of the method that the batched and the reference implementations share (spec steps 1-6)."""

from __future__ import annotations

import re
from contextlib import contextmanager

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from sklearn.cluster import KMeans

from segmentor.images import ImageError
from segmentor.loading import DiffusionModel


def check_image(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        description = f"{image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray) else type(image)
        raise ImageError(f"expected a uint8 (H, W, 3) RGB array (see segmentor.images.load_image), got {description}")
    if min(image.shape[:2]) < 1:
        raise ImageError(f"empty image of shape {image.shape}")
    return image


def working_shape(height: int, width: int, long_side: int, multiple: int) -> tuple[int, int]:
    """Scale so the long side is about ``long_side``, each side a whole multiple of ``multiple``."""
    scale = long_side / max(height, width)
    return (max(multiple, round(height * scale / multiple) * multiple),
            max(multiple, round(width * scale / multiple) * multiple))


def to_model_input(image: np.ndarray, shape: tuple[int, int], model: DiffusionModel) -> torch.Tensor:
    height, width = shape
    shrinking = height * width < image.shape[0] * image.shape[1]
    resized = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)
    x = torch.from_numpy(resized).permute(2, 0, 1)[None].float() / 127.5 - 1.0
    return x.to(model.device, model.dtype)


def encode(model: DiffusionModel, x: torch.Tensor) -> torch.Tensor:
    # The posterior mean, not a sample: the same image must always give the same latent.
    latent = model.vae.encode(x.to(model.vae.dtype)).latent_dist.mean
    shift = getattr(model.vae.config, "shift_factor", None) or 0.0
    return ((latent - shift) * model.vae.config.scaling_factor).to(model.dtype)


def decode(model: DiffusionModel, latents: torch.Tensor) -> torch.Tensor:
    """Images in the VAE's dtype (float32 where the VAE asks for ``force_upcast``)."""
    shift = getattr(model.vae.config, "shift_factor", None) or 0.0
    return model.vae.decode((latents / model.vae.config.scaling_factor + shift).to(model.vae.dtype)).sample


def empty_prompt_embedding(model: DiffusionModel) -> torch.Tensor:
    tokens = model.tokenizer("", padding="max_length", max_length=model.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids.to(model.device)
    return model.text_encoder(tokens)[0].to(model.dtype)


def seeded_noise(like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    # Drawn on the CPU so a seed gives the same noise on every device.
    return torch.randn(like.shape, generator=generator, dtype=torch.float32).to(like.device, like.dtype)


def add_noise(model: DiffusionModel, latents: torch.Tensor, noise: torch.Tensor, timestep: int) -> torch.Tensor:
    return model.scheduler.add_noise(latents, noise, torch.tensor([timestep], device=latents.device))


def denoising_steps(model: DiffusionModel, start: int, num_inference_steps: int, stride: int) -> list[tuple[int, int]]:
    """(t, t_prev) pairs of the DDIM grid from ``start`` down to the end, every ``stride``-th step."""
    model.scheduler.set_timesteps(num_inference_steps)
    grid = [int(t) for t in model.scheduler.timesteps]
    if start not in grid:
        raise ValueError(f"modulation_timestep {start} is not on the {num_inference_steps}-step DDIM grid "
                         f"({', '.join(map(str, grid[-8:]))}, ...); pick a value on the grid")
    kept = grid[grid.index(start)::stride]
    return list(zip(kept, [*kept[1:], -1], strict=True))


def ddim_step(model: DiffusionModel, output: torch.Tensor, t: int, t_prev: int, x: torch.Tensor,
              eta: float = 0.0, noise: torch.Tensor | None = None) -> torch.Tensor:
    """One DDIM update from t to t_prev (t_prev < 0: the clean end). eta = 0 is deterministic; eta = 1
    with ``noise`` is DDPM's posterior sample (``DDIMScheduler.step(eta=1, variance_noise=noise)``)."""
    scheduler = model.scheduler
    alpha = scheduler.alphas_cumprod[t].to(x.device, torch.float32)
    alpha_prev = (scheduler.alphas_cumprod[t_prev] if t_prev >= 0 else scheduler.final_alpha_cumprod)
    alpha_prev = alpha_prev.to(x.device, torch.float32)
    return _ddim_update(scheduler, output, x, alpha, alpha_prev, eta, noise)


def ddim_invert(model: DiffusionModel, latents: torch.Tensor, text: torch.Tensor, start: int,
                num_inference_steps: int) -> tuple[torch.Tensor, int]:
    """Deterministic DDIM inversion of the clean latent up the grid to ``start`` (as diffusers'
    DDIMInverseScheduler). Returns the latent at ``start`` and the U-Net passes it took."""
    scheduler = model.scheduler
    ascending = [t for t, _ in reversed(denoising_steps(model, start, num_inference_steps, 1))]
    x = latents
    for t in ascending:
        output = model.unet(x, torch.tensor(t, device=x.device), encoder_hidden_states=text).sample
        source = t - scheduler.config.num_train_timesteps // num_inference_steps
        alpha_source = scheduler.alphas_cumprod[source] if source >= 0 else scheduler.final_alpha_cumprod
        x = _ddim_update(scheduler, output, x, alpha_source.to(x.device, torch.float32),
                         scheduler.alphas_cumprod[t].to(x.device, torch.float32), 0.0, None)
    return x, len(ascending)


def _ddim_update(scheduler, output: torch.Tensor, x: torch.Tensor, alpha: torch.Tensor, alpha_prev: torch.Tensor,
                 eta: float, noise: torch.Tensor | None) -> torch.Tensor:
    x32, out32 = x.float(), output.float()
    if scheduler.config.prediction_type == "v_prediction":
        x0 = alpha.sqrt() * x32 - (1 - alpha).sqrt() * out32
        eps = alpha.sqrt() * out32 + (1 - alpha).sqrt() * x32
    elif scheduler.config.prediction_type == "epsilon":
        x0 = (x32 - (1 - alpha).sqrt() * out32) / alpha.sqrt()
        eps = out32
    else:
        raise ValueError(f"unsupported prediction_type {scheduler.config.prediction_type!r}")
    if eta == 0:
        return (alpha_prev.sqrt() * x0 + (1 - alpha_prev).sqrt() * eps).to(x.dtype)
    sigma = eta * ((1 - alpha_prev) / (1 - alpha) * (1 - alpha / alpha_prev)).sqrt()
    x_prev = alpha_prev.sqrt() * x0 + (1 - alpha_prev - sigma**2).sqrt() * eps + sigma * noise.float()
    return x_prev.to(x.dtype)


def sampler_noise(like: torch.Tensor, steps: int, seed: int) -> list[torch.Tensor]:
    """The per-step noise of the DDPM sampler: seeded, batch 1, broadcast over every run."""
    generator = torch.Generator().manual_seed(seed)
    return [seeded_noise(like[:1], generator) for _ in range(steps)]


def attention_module(model: DiffusionModel, layer: str) -> torch.nn.Module:
    if f"{layer}.processor" not in model.unet.attn_processors:
        known = ", ".join(sorted(name.removesuffix(".processor") for name in model.unet.attn_processors))
        raise ValueError(f"the U-Net has no attention layer {layer!r}; its attention layers are: {known}")
    return model.unet.get_submodule(layer)


def layer_grid(model: DiffusionModel, layer: str, latent_shape: tuple[int, int]) -> tuple[int, int]:
    """Token grid of an attention layer, from its block's resolution level."""
    levels = len(model.unet.config.block_out_channels)
    match = re.match(r"(down|up)_blocks\.(\d+)\.|mid_block\.", layer)
    if match is None:
        raise ValueError(f"cannot tell the resolution of layer {layer!r}")
    if match.group(1) == "down":
        downscale = 2 ** int(match.group(2))
    elif match.group(1) == "up":
        downscale = 2 ** (levels - 1 - int(match.group(2)))
    else:
        downscale = 2 ** (levels - 1)
    return latent_shape[0] // downscale, latent_shape[1] // downscale


@contextmanager
def captured_queries(model: DiffusionModel, layer: str):
    """Collect the ``to_q`` output of one attention layer while the block is active."""
    captured: list[torch.Tensor] = []
    handle = attention_module(model, layer).to_q.register_forward_hook(
        lambda _module, _inputs, output: captured.append(output.detach()))
    try:
        yield captured
    finally:
        handle.remove()


def low_resolution_features(model: DiffusionModel, layer: str, latents: torch.Tensor, text: torch.Tensor,
                            timestep: int, noise: torch.Tensor) -> np.ndarray:
    """Step 3: the query vectors of ``layer`` at ``timestep``, as (tokens, channels) float32."""
    noisy = add_noise(model, latents, noise, timestep)
    with captured_queries(model, layer) as captured:
        model.unet(noisy, torch.tensor(timestep, device=noisy.device), encoder_hidden_states=text)
    return captured[0][0].float().cpu().numpy()


def kmeans_labels(features: np.ndarray, num_clusters: int, restarts: int, seed: int) -> np.ndarray:
    """Step 4: k-means++ labels, renumbered 0..n-1 by first appearance in raster order."""
    distinct = len(np.unique(features.round(decimals=6), axis=0))
    kmeans = KMeans(n_clusters=min(num_clusters, distinct), init="k-means++", n_init=restarts, random_state=seed)
    return renumber(kmeans.fit_predict(features.astype(np.float64)))


def renumber(labels: np.ndarray) -> np.ndarray:
    _, first_seen = np.unique(labels, return_index=True)
    order = labels[np.sort(first_seen)]
    mapping = np.zeros(labels.max() + 1, dtype=np.int64)
    mapping[order] = np.arange(len(order))
    return mapping[labels]


def masks_on_grid(masks: np.ndarray, grid: tuple[int, int], device: torch.device) -> torch.Tensor:
    """(n, h, w) coarse masks resized (nearest) to another layer's grid, as float32."""
    tensor = torch.as_tensor(masks, dtype=torch.float32, device=device)[:, None]
    if tuple(tensor.shape[-2:]) != tuple(grid):
        tensor = F.interpolate(tensor, size=grid, mode="nearest-exact")
    return tensor[:, 0]


@contextmanager
def attention_processors(model: DiffusionModel, processors: dict):
    """Install processors for the duration of a run, then put the previous ones back."""
    previous = model.unet.attn_processors
    model.unet.set_attn_processor({**previous, **processors})
    try:
        yield
    finally:
        model.unet.set_attn_processor(previous)
