"""EmerDiff, batched: k-means on low-resolution U-Net queries, then modulated denoising lifts each mask.

The steps follow the project's spec (method.md). All 2K modulated runs go through the U-Net in chunks
whose size adapts to memory; their queries and keys come from the reference run, so they are never
computed in the modulated runs at all.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from segmentor import stages
from segmentor.assign import assign_labels, bounding_box, difference_maps, gaussian_blur
from segmentor.attention import InjectionState, install_state
from segmentor.chunking import BatchBudget, run_in_chunks
from segmentor.config import EmerDiffConfig
from segmentor.loading import DiffusionModel, resolve_dtype
from segmentor.result import Segment, Segmentation
from segmentor.runlog import RunLog

# Largest batch of modulated runs tried on a GPU before out-of-memory halving takes over.
_MAX_GPU_BATCH = 64
# On the CPU a larger batch buys no speed and only costs memory.
_CPU_BATCH = 16


class EmerDiffSegmentor:
    """Segments images with one loaded model and one configuration. Not thread-safe: serialise calls."""

    def __init__(self, model: DiffusionModel, config: EmerDiffConfig | None = None) -> None:
        self.model = model
        self.config = config or EmerDiffConfig()
        _check_model_matches(model, self.config)
        stages.attention_module(model, self.config.feature_layer)
        stages.attention_module(model, self.config.modulation_layer)
        self._layers = [name.removesuffix(".processor") for name in model.unet.attn_processors]
        start = self.config.batch_size or (_MAX_GPU_BATCH if model.device.type == "cuda" else _CPU_BATCH)
        # Modulated runs per mask: +lambda and -lambda (symmetric), or +lambda alone against the reference.
        self._signs = (1.0, -1.0) if self.config.difference == "symmetric" else (1.0,)
        # Whole sign groups, so that the +lambda and -lambda runs of a mask always share a chunk; the decoder
        # has its own budget so that running out of memory while decoding never redoes the U-Net work.
        self._unet_budget = BatchBudget(start, step=len(self._signs), what="modulated runs")
        self._decode_budget = BatchBudget(start, step=len(self._signs), what="decoded images")
        with torch.inference_mode():
            self._text = stages.empty_prompt_embedding(model)
        self._log = RunLog(model.device)

    @property
    def text_embedding(self) -> torch.Tensor:
        """The empty-prompt conditioning, (1, tokens, width), computed once per segmentor."""
        return self._text

    def fingerprint(self) -> str:
        """Identifies the weights and every setting that changes the output."""
        parts = f"{self.model.identity}:{self.model.dtype}:{self.config.output_fingerprint()}"
        return hashlib.sha256(parts.encode()).hexdigest()[:12]

    def working_shape(self, height: int, width: int) -> tuple[int, int]:
        long_side = self.config.working_size or self.model.native_size
        return stages.working_shape(height, width, long_side, self.model.size_multiple)

    def latent_shape(self, image_shape: tuple[int, ...]) -> tuple[int, int]:
        height, width = self.working_shape(*image_shape[:2])
        return height // self.model.vae_scale_factor, width // self.model.vae_scale_factor

    def feature_grid(self, image_shape: tuple[int, ...]) -> tuple[int, int]:
        """The (h, w) grid of the coarse masks for an image of this (H, W[, C]) shape."""
        return stages.layer_grid(self.model, self.config.feature_layer, self.latent_shape(image_shape))

    def denoising_steps(self) -> list[tuple[int, int]]:
        config = self.config
        return stages.denoising_steps(self.model, config.modulation_timestep, config.num_inference_steps,
                                      config.step_stride)

    def expected_counters(self, num_masks: int) -> dict[str, int]:
        """Network calls a segmentation with this many coarse masks makes: 1 + S(1 + 2K) U-Net passes and 2K
        decodes (symmetric), or 1 + S(1 + K) passes and K + 1 decodes, the reference image's included (one-sided)."""
        steps, runs = len(self.denoising_steps()), len(self._signs) * num_masks
        inversion = 0
        if self.config.noising == "inversion":
            inversion = len(stages.denoising_steps(self.model, self.config.modulation_timestep,
                                                   self.config.num_inference_steps, 1))
        reference_decodes = 1 if len(self._signs) == 1 else 0
        return {"unet_sample_passes": 1 + inversion + steps * (1 + runs), "vae_decodes": runs + reference_decodes,
                "vae_encodes": 1}

    def chunk_sizes(self, runs: int) -> list[int]:
        """Batch sizes the modulated runs go through the U-Net in (as of the current memory budget)."""
        return self._unet_budget.chunks(runs)

    @torch.inference_mode()
    def segment(self, image: np.ndarray, low_res_masks: np.ndarray | None = None) -> Segmentation:
        """Segment a uint8 (H, W, 3) RGB image; ``low_res_masks`` (n, h, w) replace the k-means masks."""
        stages.check_image(image)
        self._log = log = RunLog(self.model.device)
        config, model = self.config, self.model
        height, width = image.shape[:2]
        generator = torch.Generator().manual_seed(config.seed)
        with log.stage("encode"):
            x = stages.to_model_input(image, self.working_shape(height, width), model)
            latents = stages.encode(model, x)
            log.count("vae_encodes")
        feature_noise = stages.seeded_noise(latents, generator)
        modulation_noise = stages.seeded_noise(latents, generator)
        with log.stage("features"):
            features = stages.low_resolution_features(model, config.feature_layer, latents, self._text,
                                                      config.feature_timestep, feature_noise)
            log.count("unet_sample_passes")
        grid = self.feature_grid(image.shape)
        with log.stage("kmeans"):
            coarse = self._coarse_labels(features, grid, low_res_masks)
        masks = np.stack([coarse == i for i in range(coarse.max() + 1)])
        on_modulation_grid, vanished = self.modulation_masks(masks, tuple(latents.shape[-2:]))
        noisy = self._noised(latents, modulation_noise)
        maps = self.response_maps(noisy, on_modulation_grid, vanished)
        with log.stage("assign"):
            labels, margin = assign_labels(maps, (height, width), exclude=vanished)
            labels, margin = self._drop_small_segments(labels, margin, maps, vanished)
            segmentation = self._segmentation(labels, margin, masks, features.reshape(*grid, -1), coarse)
        segmentation.timings, segmentation.counters = log.finish()
        return segmentation

    def _coarse_labels(self, features: np.ndarray, grid: tuple[int, int], given: np.ndarray | None) -> np.ndarray:
        if given is None:
            config = self.config
            labels = stages.kmeans_labels(features, config.num_segments, config.kmeans_restarts, config.seed)
            return labels.reshape(grid)
        given = np.asarray(given)
        if given.ndim != 3 or tuple(given.shape[1:]) != tuple(grid):
            raise ValueError(f"low_res_masks must have shape (n, {grid[0]}, {grid[1]}) for this image, "
                             f"got {given.shape}")
        given = given.astype(bool)
        if not given.any(axis=0).all():
            raise ValueError("low_res_masks must cover every cell of the feature grid")
        first_mask = np.argmax(given, axis=0)
        return stages.renumber(first_mask.ravel()).reshape(grid)

    def _noised(self, latents: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Step 5: z0 taken to t_m, by forward noising or by DDIM inversion (``config.noising``)."""
        config = self.config
        if config.noising == "forward":
            return stages.add_noise(self.model, latents, noise, config.modulation_timestep)
        with self._log.stage("inversion"):
            noisy, passes = stages.ddim_invert(self.model, latents, self._text, config.modulation_timestep,
                                               config.num_inference_steps)
            self._log.count("unet_sample_passes", passes)
        return noisy

    def step_noise(self, like: torch.Tensor, steps: int) -> list[torch.Tensor | None]:
        """Per-step noise of the sampler: None for DDIM; for DDPM seeded (seed + 1) and shared by all runs."""
        if self.config.sampler == "ddim":
            return [None] * steps
        return stages.sampler_noise(like, steps, self.config.seed + 1)

    def step(self, output: torch.Tensor, t: int, t_prev: int, x: torch.Tensor,
             noise: torch.Tensor | None) -> torch.Tensor:
        """One sampler update (``config.sampler``): DDIM eta = 0, or DDPM (eta = 1) with the step's noise."""
        eta = 0.0 if self.config.sampler == "ddim" else 1.0
        return stages.ddim_step(self.model, output, t, t_prev, x, eta=eta, noise=noise)

    def modulation_masks(self, masks: np.ndarray, latent_shape: tuple[int, int]) -> tuple[torch.Tensor, frozenset]:
        """The coarse masks on the modulation layer's grid, and the ones that vanish there."""
        grid = stages.layer_grid(self.model, self.config.modulation_layer, latent_shape)
        on_grid = stages.masks_on_grid(masks, grid, self.model.device)
        # A mask that vanishes on the modulation grid changes nothing and must never win a pixel.
        vanished = frozenset(np.flatnonzero(on_grid.flatten(1).sum(1).cpu().numpy() == 0).tolist())
        if len(vanished) == masks.shape[0]:
            raise ValueError(f"every coarse mask vanishes on the {grid[0]}x{grid[1]} grid of the modulation layer "
                             f"{self.config.modulation_layer}: nothing to modulate (the image is too small for it)")
        return on_grid, vanished

    def response_maps(self, noisy: torch.Tensor, masks: torch.Tensor, vanished: frozenset[int]) -> torch.Tensor:
        """Steps 6-9: blurred |I+ - I-| per mask at the working size, (n, H, W)."""
        maps = torch.zeros((masks.shape[0], *self._pixel_shape(noisy)), device=noisy.device)
        self._fill_difference_maps(maps, noisy, self.denoising_steps(), masks, vanished)
        # On the meta device (FLOP counting) there are no values to check.
        broken = [] if maps.is_meta else np.flatnonzero((~torch.isfinite(maps)).flatten(1).any(1).cpu().numpy())
        if len(broken):
            raise FloatingPointError(
                f"the response maps of {len(broken)} of {maps.shape[0]} masks hold NaN or inf ({self.model.dtype} "
                "overflowed in the U-Net or VAE); segment in float32 (--dtype float32 / EMERDIFF_DTYPE=float32)")
        with self._log.stage("blur"):
            return gaussian_blur(maps, self.config.blur_sigma * max(maps.shape[-2:]) / 512)

    def _fill_difference_maps(self, maps: torch.Tensor, noisy: torch.Tensor, steps: list[tuple[int, int]],
                              masks: torch.Tensor, vanished: frozenset[int]) -> None:
        """The modulated runs in memory-sized chunks, each chunk holding whole +/- pairs (symmetric) or
        + runs compared with the reference run's image (one-sided)."""
        state = InjectionState(modulation_layer=self.config.modulation_layer,
                               shared_maps=self.config.shared_attention_maps)
        signs = self._signs
        runs = [(index, sign) for index in range(masks.shape[0]) if index not in vanished for sign in signs]
        baseline: torch.Tensor | None = None  # the reference run's image, for one-sided differences

        def run_chunk(chunk: list[tuple[int, float]]) -> None:
            with self._log.attempt():
                maps[[index for index, _ in chunk[::len(signs)]]] = self._chunk_maps(
                    noisy, steps, state, masks, chunk, baseline)

        with stages.attention_processors(self.model, install_state(self._layers, state)):
            with self._log.stage("reference_run"):
                reference = self.denoise(noisy, steps, state, record=True)
            if len(signs) == 1:
                # The reference run is computed anyway (its Q and K are injected): its image stands in for I-.
                with self._log.stage("decode"):
                    baseline = stages.decode(self.model, reference)
                    self._log.count("vae_decodes")
            run_in_chunks(runs, self._unet_budget, run_chunk)

    def denoise(self, noisy: torch.Tensor, steps: list[tuple[int, int]], state: InjectionState, *,
                record: bool = False, offsets: torch.Tensor | None = None) -> torch.Tensor:
        """DDIM from the noisy latent to the end; offsets (batch, tokens, 1) modulate the first step."""
        batch = 1 if offsets is None else offsets.shape[0]
        x = noisy.expand(batch, -1, -1, -1)
        text = self._text.expand(batch, -1, -1)
        state.record, state.inject = record, not record and self.config.attention_injection
        for step, ((t, t_prev), noise) in enumerate(zip(steps, self.step_noise(noisy, len(steps)), strict=True)):
            state.step = step
            state.offset = offsets if step == 0 else None
            output = self.model.unet(x, torch.tensor(t, device=x.device), encoder_hidden_states=text).sample
            x = self.step(output, t, t_prev, x, noise)
            self._log.count("unet_sample_passes", batch)
        state.offset = None
        return x

    def _chunk_maps(self, noisy: torch.Tensor, steps: list[tuple[int, int]], state: InjectionState,
                    masks: torch.Tensor, chunk: list[tuple[int, float]], baseline: torch.Tensor | None) -> torch.Tensor:
        indices = torch.tensor([index for index, _ in chunk], device=masks.device)
        signs = torch.tensor([sign for _, sign in chunk], device=masks.device)
        offsets = (signs[:, None] * self.modulation_strength(state.output_rms) * masks[indices].flatten(1))[..., None]
        with self._log.stage("modulated_runs"):
            latents = self.denoise(noisy, steps, state, offsets=offsets)
        return self._decode_differences(latents, baseline)

    def _decode_differences(self, latents: torch.Tensor, baseline: torch.Tensor | None) -> torch.Tensor:
        """|I+ - I-| of consecutive (+, -) latent pairs, or |I+ - baseline| of each latent (one-sided),
        decoded in sub-batches that fit in memory."""
        pieces: list[torch.Tensor] = []

        def decode_pairs(rows: range) -> None:
            with self._log.attempt():
                with self._log.stage("decode"):
                    images = stages.decode(self.model, latents[rows.start:rows.stop])
                    self._log.count("vae_decodes", len(rows))
                with self._log.stage("difference_maps"):
                    if baseline is None:
                        pieces.append(difference_maps(images[0::2], images[1::2]))
                    else:
                        pieces.append(difference_maps(images, baseline.expand_as(images)))

        run_in_chunks(range(latents.shape[0]), self._decode_budget, decode_pairs)
        return torch.cat(pieces)

    def modulation_strength(self, output_rms: float | torch.Tensor | None) -> float | torch.Tensor:
        """lambda as added to the layer output: absolute, or relative to the layer's activation RMS."""
        if not self.config.modulation_relative:
            return self.config.modulation_strength
        return self.config.modulation_strength * output_rms

    def _pixel_shape(self, noisy: torch.Tensor) -> tuple[int, int]:
        factor = self.model.vae_scale_factor
        return noisy.shape[-2] * factor, noisy.shape[-1] * factor

    def _drop_small_segments(self, labels: np.ndarray, margin: np.ndarray, maps: torch.Tensor,
                             vanished: frozenset[int]) -> tuple[np.ndarray, np.ndarray]:
        """Segments under min_segment_area hand their pixels to the runner-up; margins follow the new labels."""
        if self.config.min_segment_area <= 0:
            return labels, margin
        areas = np.bincount(labels.ravel(), minlength=maps.shape[0])
        small = {int(i) for i in np.flatnonzero(areas < self.config.min_segment_area)}
        keep_one = {int(np.argmax(areas))}  # an image with only tiny segments keeps its largest
        exclude = frozenset((small - keep_one) | vanished)
        if exclude == vanished:
            return labels, margin
        return assign_labels(maps, labels.shape, exclude=exclude)

    def _segmentation(self, labels: np.ndarray, margin: np.ndarray, masks: np.ndarray, features: np.ndarray,
                      coarse: np.ndarray) -> Segmentation:
        """Renumber the winning masks 0..n-1 and describe each as a Segment."""
        present = np.unique(labels)
        lookup = np.full(masks.shape[0], -1, dtype=np.int64)
        lookup[present] = np.arange(len(present))
        label_map = lookup[labels].astype(np.int32)
        areas = np.bincount(label_map.ravel(), minlength=len(present))
        scores = np.bincount(label_map.ravel(), weights=margin.ravel(), minlength=len(present)) / areas
        segments = [
            Segment(id=new_id, area=int(areas[new_id]), bbox=bounding_box(label_map == new_id),
                    score=float(scores[new_id]), embedding=features[masks[old_id]].mean(axis=0).astype(np.float32),
                    low_res_mask=masks[old_id].copy())
            for new_id, old_id in enumerate(present)
        ]
        return Segmentation(label_map=label_map, segments=segments, low_res_labels=lookup[coarse].astype(np.int32),
                            features=features.astype(np.float32, copy=False),
                            coarse_labels=coarse.astype(np.int32))


def _check_model_matches(model: DiffusionModel, config: EmerDiffConfig) -> None:
    """A config that names a device or dtype must agree with the loaded model: the model is not moved."""
    problems = []
    if config.dtype != "auto" and resolve_dtype(config.dtype, model.device) != model.dtype:
        problems.append(f"dtype {config.dtype} but the model is loaded in {str(model.dtype).removeprefix('torch.')}")
    if config.device != "auto":
        wanted = torch.device(config.device)
        if wanted.type != model.device.type or (wanted.index is not None and wanted.index != (model.device.index or 0)):
            problems.append(f"device {config.device} but the model is on {model.device}")
    if problems:
        raise ValueError("EmerDiffConfig asks for " + " and ".join(problems)
                         + "; load the model with the same device and dtype (load_model(..., device=, dtype=))")
