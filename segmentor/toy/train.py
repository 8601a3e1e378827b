"""Train the small SD-layout model from scratch on synthetic scenes: first the VAE, then the U-Net.

Reproducible: one seed fixes the initial weights, the scene stream, the VAE posterior samples, the
diffusion timesteps and the noise; deterministic algorithms are enforced while training. A time cap
(``minutes``) can end a phase early, which makes the result depend on the machine's speed: give steps
only when the weights must be reproducible.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

from segmentor.toy.architecture import (
    SD_SCHEDULER_CONFIG,
    ToyModelSpec,
    build_text_encoder,
    build_tokenizer,
    build_unet,
    build_vae,
    save_model_folder,
)
from segmentor.toy.batches import SceneStream
from segmentor.toy.quality import denoising_loss, image_grid, reconstruction_psnr, sample_images

logger = logging.getLogger(__name__)

_VAE_TIME_SHARE = 0.3  # of a ``minutes`` cap, the part the VAE phase may use; the U-Net gets the rest
_WARMUP_STEPS = 50


class TrainingError(ValueError):
    """A training request that cannot run (bad step counts, batch sizes or time cap)."""


@dataclass(frozen=True)
class TrainingPlan:
    vae_steps: int = 500
    unet_steps: int = 2500
    vae_batch: int = 8
    unet_batch: int = 16
    vae_lr: float = 1e-3
    unet_lr: float = 3e-4
    kl_weight: float = 1e-4  # per latent element, against per-pixel reconstruction losses
    seed: int = 0
    minutes: float | None = None
    log_every: int = 50
    held_out_scenes: int = 64  # scenes 0..n-1 measure the result; training never draws them
    samples: int = 16
    sample_steps: int = 50

    def validate(self) -> None:
        for name in ("vae_steps", "unet_steps", "vae_batch", "unet_batch", "log_every", "held_out_scenes",
                     "samples", "sample_steps"):
            if getattr(self, name) < 1:
                raise TrainingError(f"training plan: {name} must be at least 1, got {getattr(self, name)}")
        if self.minutes is not None and self.minutes <= 0:
            raise TrainingError(f"training plan: minutes must be positive, got {self.minutes}")


@dataclass(frozen=True)
class PhaseResult:
    steps: int
    seconds: float
    final_loss: float  # mean over the last ``log_every`` steps


def empty_prompt_embedding(tokenizer: CLIPTokenizer, text_encoder: CLIPTextModel) -> torch.Tensor:
    """The 1×tokens×width conditioning every image is trained and segmented with."""
    tokens = tokenizer("", padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                       return_tensors="pt").input_ids
    with torch.no_grad():
        return text_encoder(tokens)[0]


def train_model(out_dir: Path, spec: ToyModelSpec | None = None, plan: TrainingPlan | None = None) -> dict:
    """Train VAE then U-Net, save the diffusers folder plus ``samples.png`` and ``training_report.json``."""
    spec, plan = spec or ToyModelSpec(), plan or TrainingPlan()
    plan.validate()
    started = time.monotonic()
    deadline = None if plan.minutes is None else started + 60 * plan.minutes
    with _deterministic():
        torch.manual_seed(plan.seed)
        tokenizer = build_tokenizer(spec)
        text_encoder = build_text_encoder(spec, len(tokenizer)).eval().requires_grad_(False)
        vae, unet = build_vae(spec), build_unet(spec)
        stream = SceneStream(plan.seed, spec.image_size)
        generator = torch.Generator().manual_seed(plan.seed)

        vae_deadline = None if deadline is None else started + 60 * plan.minutes * _VAE_TIME_SHARE
        vae_result = _train_vae(vae, stream, generator, plan, vae_deadline)
        vae.eval().requires_grad_(False)
        vae.register_to_config(scaling_factor=_unit_variance_scale(vae, stream))
        context = empty_prompt_embedding(tokenizer, text_encoder)
        unet_result = _train_unet(unet, vae, context, stream, generator, plan, deadline)
        unet.eval()

        held_out = range(plan.held_out_scenes)
        report = {
            "spec": asdict(spec), "plan": asdict(plan),
            "parameters": {"vae": _count(vae), "unet": _count(unet), "text_encoder": _count(text_encoder)},
            "vae": asdict(vae_result), "unet": asdict(unet_result),
            "scaling_factor": vae.config.scaling_factor,
            "held_out_scene_seeds": [0, plan.held_out_scenes - 1],
            "held_out_vae_psnr_db": reconstruction_psnr(vae, held_out, spec.image_size),
            "held_out_epsilon_mse": denoising_loss(unet, vae, context, held_out, spec.image_size),
            "minutes": (time.monotonic() - started) / 60,
        }
        samples = sample_images(unet, vae, context, count=plan.samples, steps=plan.sample_steps, seed=plan.seed)

    parts = {"tokenizer": tokenizer, "text_encoder": text_encoder, "vae": vae, "unet": unet,
             "scheduler": DDIMScheduler(**SD_SCHEDULER_CONFIG)}
    save_model_folder(parts, out_dir, spec)
    cv2.imwrite(str(out_dir / "samples.png"), cv2.cvtColor(image_grid(samples, columns=8), cv2.COLOR_RGB2BGR))
    (out_dir / "training_report.json").write_text(json.dumps(report, indent=2) + "\n")
    logger.info("saved %s: VAE PSNR %.2f dB, held-out epsilon MSE %s", out_dir, report["held_out_vae_psnr_db"],
                {t: round(v, 4) for t, v in report["held_out_epsilon_mse"].items()})
    return report


def _train_vae(vae: AutoencoderKL, stream: SceneStream, generator: torch.Generator, plan: TrainingPlan,
               deadline: float | None) -> PhaseResult:
    optimiser = torch.optim.AdamW(vae.parameters(), lr=plan.vae_lr, weight_decay=0.0)

    def step() -> torch.Tensor:
        images = stream.next_batch(plan.vae_batch)
        posterior = vae.encode(images).latent_dist
        decoded = vae.decode(posterior.sample(generator)).sample
        kl_per_element = posterior.kl().mean() / posterior.mean[0].numel()
        return F.l1_loss(decoded, images) + F.mse_loss(decoded, images) + plan.kl_weight * kl_per_element

    vae.train()
    return _optimise("vae", vae, optimiser, step, plan.vae_steps, plan, deadline)


def _train_unet(unet: UNet2DConditionModel, vae: AutoencoderKL, context: torch.Tensor, stream: SceneStream,
                generator: torch.Generator, plan: TrainingPlan, deadline: float | None) -> PhaseResult:
    optimiser = torch.optim.AdamW(unet.parameters(), lr=plan.unet_lr, weight_decay=1e-2)
    scheduler = DDIMScheduler(**SD_SCHEDULER_CONFIG)
    batch_context = context.expand(plan.unet_batch, -1, -1)

    def step() -> torch.Tensor:
        with torch.no_grad():
            # Posterior mean, as the segmentor encodes: the U-Net learns exactly the latents it will see.
            latents = vae.encode(stream.next_batch(plan.unet_batch)).latent_dist.mean * vae.config.scaling_factor
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (plan.unet_batch,), generator=generator)
        noise = torch.randn(latents.shape, generator=generator)
        noisy = scheduler.add_noise(latents, noise, timesteps)
        return F.mse_loss(unet(noisy, timesteps, batch_context).sample, noise)

    unet.train()
    return _optimise("unet", unet, optimiser, step, plan.unet_steps, plan, deadline)


def _optimise(name: str, model: torch.nn.Module, optimiser: torch.optim.Optimizer,
              step: Callable[[], torch.Tensor], steps: int, plan: TrainingPlan,
              deadline: float | None) -> PhaseResult:
    """Run ``steps`` optimiser steps of ``step()``'s loss with warm-up then cosine decay to a tenth."""
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda i: _lr_factor(i, steps))
    started = time.monotonic()
    recent: list[float] = []
    done = 0
    while done < steps and (deadline is None or time.monotonic() < deadline):
        loss = step()
        if not math.isfinite(loss.item()):
            raise TrainingError(f"{name} loss became {loss.item()} at step {done}; lower the learning rate")
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        schedule.step()
        done += 1
        recent = [*recent[-(plan.log_every - 1):], loss.item()]
        if done % plan.log_every == 0 or done == steps:
            logger.info("%s step %d/%d loss %.4f lr %.2e %.0f s", name, done, steps, sum(recent) / len(recent),
                        schedule.get_last_lr()[0], time.monotonic() - started)
    if done < steps:
        logger.info("%s stopped by the time cap after %d of %d steps", name, done, steps)
    return PhaseResult(steps=done, seconds=time.monotonic() - started, final_loss=sum(recent) / len(recent))


def _lr_factor(step: int, steps: int) -> float:
    if step < _WARMUP_STEPS:
        return (step + 1) / _WARMUP_STEPS
    progress = (step - _WARMUP_STEPS) / max(steps - _WARMUP_STEPS, 1)
    return 0.1 + 0.45 * (1 + math.cos(math.pi * min(progress, 1.0)))


@torch.no_grad()
def _unit_variance_scale(vae: AutoencoderKL, stream: SceneStream) -> float:
    """SD's ``scaling_factor`` convention: scaled latents of training images have unit standard deviation."""
    latents = vae.encode(stream.next_batch(64)).latent_dist.mean
    return float(1.0 / latents.std())


def _count(model: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


@contextlib.contextmanager
def _deterministic() -> Iterator[None]:
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)
