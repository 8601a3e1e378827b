"""Every knob of EmerDiff in one place, each default marked with where it comes from.

[paper]: stated by Namekata et al., "EmerDiff" (ICLR 2024). [ours]: our choice where the paper is silent
or unconfirmed; see docs/method notes in the README.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

FEATURE_LAYER = "up_blocks.1.attentions.0.transformer_blocks.0.attn2"
MODULATION_LAYER = "up_blocks.1.attentions.0.transformer_blocks.0.attn2"
DIFFERENCES = ("symmetric", "one_sided")
SAMPLERS = ("ddim", "ddpm")
NOISINGS = ("forward", "inversion")


@dataclass(frozen=True)
class EmerDiffConfig:
    # Number of k-means clusters = coarse masks. [paper: tested 10-40; 20 is mid-range] ours: 20 default.
    num_segments: int = 20
    # Timestep of the single U-Net pass whose queries are the low-resolution features. [paper]
    feature_timestep: int = 1
    # Layer whose to_q output is clustered: first cross-attention layer of the first 16x16 up block. [paper]
    feature_layer: str = FEATURE_LAYER
    # k-means++ restarts; several for stability on a fixed seed. [ours]
    kmeans_restarts: int = 4
    # Noise level the modulated denoising starts from. [paper: 281; ablation favours 281-481]
    modulation_timestep: int = 281
    # Layer whose attention output gets +-lambda*mask, after to_out and before the residual add.
    # [paper: a cross-attention layer of the 16x16 up block; ours: the same layer as the features]
    modulation_layer: str = MODULATION_LAYER
    # Modulation strength. [paper: 10]
    modulation_strength: float = 10.0
    # Read modulation_strength in units of the RMS of the modulation layer's output at t_m in the
    # reference run, so one value means the same push on models of any activation scale. [ours; off =
    # the paper's absolute lambda]
    modulation_relative: bool = False
    # Inference grid: DDIM (eta = 0, deterministic) on 50 steps puts 281, 261, ..., 1 on the grid
    # (15 U-Net calls). [derived from the paper's t_f and t_m; sampler ours]
    num_inference_steps: int = 50
    # Keep only every n-th step of that grid after modulation_timestep (1 = all 15). [ours: 1, faithful]
    step_stride: int = 1
    # Sampler of the reference and modulated runs [paper: not stated]. "ddim": eta = 0, deterministic [ours].
    # "ddpm": eta = 1, the noise of each step seeded and shared by every run, so I+ and I- still see
    # identical noise and their difference measures only the modulation.
    sampler: str = "ddim"
    # How z0 reaches t_m [paper: forward noising; edit-friendly inversion allowed]. "forward": one seeded
    # noise draw [ours]. "inversion": deterministic DDIM inversion along the grid up to t_m (one U-Net
    # pass per step, no noise: the reference run then reconstructs the image).
    noising: str = "forward"
    # "symmetric": the response is |I+ - I-| over 2K modulated runs [paper]. "one_sided": |I+ - I_ref|,
    # the reference run's image standing in for I-: K runs and K + 1 decodes, but the second-order terms
    # the symmetric difference cancels stay in. [ours: off; measured in docs/PERFORMANCE.md]
    difference: str = "symmetric"
    # Compute each attention map softmax(QK^T) once per chunk of modulated runs (their injected Q and K are
    # the same) instead of once per run in the fused kernel. Same output to float rounding. [ours: off]
    shared_attention_maps: bool = False
    # Reuse the reference run's Q and K in every attention layer of the modulated runs. [paper]
    attention_injection: bool = True
    # Gaussian blur of the difference maps, in pixels at a 512-px working size, scaled with the working
    # size. [paper: blur used, sigma unconfirmed; ours: 3 px at 512]
    blur_sigma: float = 3.0
    # Long side of the working image; None = the model's native size (unet sample_size x VAE factor).
    # [ours: about 512 for SD 1.x/2-base]
    working_size: int | None = None
    # Seed of every random choice: forward-noise epsilons and k-means. [ours]
    seed: int = 0
    # Modulated runs per U-Net call; None = as many as fit (memory-aware, halves on out-of-memory). [ours]
    batch_size: int | None = None
    # "auto" = float16 on CUDA, float32 on CPU; or "float32", "float16", "bfloat16". [ours]
    dtype: str = "auto"
    # "auto" = CUDA when present, else CPU; or any torch device string. [ours]
    device: str = "auto"
    # Segments smaller than this many pixels (at the original size) hand their pixels to the runner-up
    # mask. [ours: 0 = keep everything]
    min_segment_area: int = 0

    def __post_init__(self) -> None:
        problems = []
        if self.num_segments < 1:
            problems.append("num_segments must be >= 1")
        if not 0 <= self.feature_timestep < 1000:
            problems.append("feature_timestep must be in [0, 999]")
        if not 0 < self.modulation_timestep < 1000:
            problems.append("modulation_timestep must be in [1, 999]")
        if self.num_inference_steps < 1 or self.step_stride < 1:
            problems.append("num_inference_steps and step_stride must be >= 1")
        if self.sampler not in SAMPLERS:
            problems.append(f"sampler must be one of {', '.join(SAMPLERS)}, not {self.sampler!r}")
        if self.noising not in NOISINGS:
            problems.append(f"noising must be one of {', '.join(NOISINGS)}, not {self.noising!r}")
        if self.difference not in DIFFERENCES:
            problems.append(f"difference must be one of {', '.join(DIFFERENCES)}, not {self.difference!r}")
        if self.blur_sigma < 0:
            problems.append("blur_sigma must be >= 0")
        if self.working_size is not None and self.working_size < 8:
            problems.append("working_size must be >= 8")
        if self.batch_size is not None and self.batch_size < 1:
            problems.append("batch_size must be >= 1")
        if self.dtype not in ("auto", "float32", "float16", "bfloat16"):
            problems.append(f"dtype must be auto, float32, float16 or bfloat16, not {self.dtype!r}")
        if self.min_segment_area < 0 or self.kmeans_restarts < 1:
            problems.append("min_segment_area must be >= 0 and kmeans_restarts >= 1")
        if problems:
            raise ValueError("invalid EmerDiffConfig: " + "; ".join(problems))

    @classmethod
    def preset(cls, name: str, **overrides: object) -> EmerDiffConfig:
        """The named preset (see ``PRESETS``) with ``overrides`` applied on top."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    def with_preset(self, name: str) -> EmerDiffConfig:
        """This config under another preset: the fields presets set take its values, the rest stay."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
        preset_fields = {field for values in PRESETS.values() for field in values}
        defaults = {field.name: field.default for field in dataclasses.fields(self) if field.name in preset_fields}
        return dataclasses.replace(self, **{**defaults, **PRESETS[name]})

    def output_fingerprint(self) -> str:
        """Short hash of every field that changes the segmentation (not batch size or device)."""
        fields = dataclasses.asdict(self)
        for runtime_only in ("batch_size", "device", "shared_attention_maps"):
            fields.pop(runtime_only)
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:10]


# Named settings a user picks by name (CLI --preset, EMERDIFF_PRESET, emerdiff-preset). "paper" is the
# defaults above. "fast" needs under a quarter of its FLOPs at any K on SD 1.5 (23 % at K = 20): one DDIM
# step from t_m to the end (the x0 prediction) instead of 15. Of the candidates that fit the budget it
# agreed best with "paper" on both small models; one-sided differences cost more agreement for their
# saving (docs/PERFORMANCE.md has every candidate's cost and agreement).
PRESETS: dict[str, dict[str, object]] = {
    "paper": {},
    "fast": {"step_stride": 15},
}
DEFAULT_PRESET = "paper"
