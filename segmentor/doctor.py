"""``python -m segmentor doctor``: is this machine ready to segment, and does the device path compute right?

Reports the device and dtype, whether the weights are on disk (nothing is downloaded), an estimate of the
memory one segmentation at the asked size and K needs beside the memory a process can get, then runs a
short smoke segmentation on a tiny random model on that device in float32 and in float16 and compares the
two (label agreement, response-map error). The first command to run on a new GPU machine; on the CPU it runs
in CI.

Each check ends in a finding: OK, WARNING (it will run, but not as configured: exit status 0) or PROBLEM.
The exit status is the sum of the PROBLEM findings' codes, so a script can tell which made it non-zero:
:data:`EXIT_DEVICE_PATH` (1: float16 disagrees with float32 or is not finite) and :data:`EXIT_MEMORY` (4: one
segmentation cannot fit). 2 stays the CLI's "unusable arguments or model" status.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from huggingface_hub import snapshot_download
from transformers import CLIPTextConfig, CLIPTextModel

from segmentor import stages
from segmentor.config import EmerDiffConfig
from segmentor.emerdiff import _CPU_BATCH, _MAX_GPU_BATCH, EmerDiffSegmentor
from segmentor.loading import BUNDLED_MODEL_DIR, DiffusionModel, load_model, resolve_device, resolve_dtype
from segmentor.zeroshot.loading import find_clip
from segmentor.zeroshot.memory import clip_memory

_SMOKE_K = 4
# float16 against float32 on the tiny model: maps within this relative error, labels this similar.
_MAX_MAP_ERROR = 0.05
_MIN_AGREEMENT = 0.95


EXIT_DEVICE_PATH = 1
EXIT_MEMORY = 4
_EXIT_CODES = {"device path": EXIT_DEVICE_PATH, "memory": EXIT_MEMORY}


@dataclass(frozen=True)
class Finding:
    """The verdict of one check: ``level`` is OK, WARNING or PROBLEM; ``check`` a key of the exit codes."""

    check: str
    level: str
    message: str

    def line(self) -> str:
        return f"{self.level}: {self.check}: {self.message}"


@dataclass
class DoctorReport:
    lines: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def exit_status(self) -> int:
        """0 unless a check found a PROBLEM; then the sum of those checks' codes (one bit each)."""
        return sum({_EXIT_CODES[f.check] for f in self.findings if f.level == "PROBLEM"})

    def summary(self) -> str:
        problems = [f"{f.check} ({_EXIT_CODES[f.check]})" for f in self.findings if f.level == "PROBLEM"]
        warnings = [f.check for f in self.findings if f.level == "WARNING"]
        verdict = (f"exit status {self.exit_status}: PROBLEM in " + ", ".join(problems) if problems
                   else "exit status 0: ready")
        return f"doctor: {verdict}" + (f"; WARNING in {', '.join(warnings)}" if warnings else "")


def run_doctor(model_reference: str, device: str, size: int | None, k: int,
               available: int | None = None, clip: str | None = None) -> DoctorReport:
    """Every check's lines and findings; ``available`` (bytes) replaces the memory measured now, to judge the
    fit on another machine (and in tests, which must not depend on this machine's load)."""
    torch_device = resolve_device(device)
    dtype = resolve_dtype("auto", torch_device)
    lines = [f"torch {torch.__version__}; device {torch_device}" + _device_name(torch_device),
             f"dtype: {str(dtype).removeprefix('torch.')} (auto on this device)"]
    folder = find_weights(model_reference)
    lines.append(f"weights of {model_reference!r}: " + (f"found in {folder}" if folder else
                 "NOT found on disk (load_model would download them, or fail offline)"))
    unet, vae, text_encoder = _architecture(folder)
    side = size or unet.config.sample_size * 2 ** (len(vae.config.block_out_channels) - 1)
    need = memory_estimate(unet, vae, text_encoder, side, k, dtype, first_chunk(torch_device))
    measured, total = available_memory(torch_device)
    given = available is not None
    free = available if given else measured
    lines.append(f"memory at {side} px, K={k} ({'its config' if folder else 'SD 1.5 architecture assumed'}): "
                 f"weights {_gib(need['weights'])}, recorded Q/K {_gib(need['recorded_qk'])}, "
                 f"about {_gib(need['per_run'])} per modulated run; with {need['chunk']} runs per call about "
                 f"{_gib(need['total'])}; " + (f"available {_gib(free)} (given; measured {_gib(measured)})" if given
                                               else f"available {_gib(free)} of {_gib(total)}"))
    if clip is not None:  # zero-shot labels (EMERDIFF_CLIP_MODEL): CLIP beside the diffusion model
        lines.append(clip_line(clip, dtype))
    memory = judge_memory(need, free, torch_device.type)
    smoke_lines, smoke_ok = smoke_test(torch_device)
    smoke = Finding("device path", "OK", "float16 agrees with float32 on this device") if smoke_ok else Finding(
        "device path", "PROBLEM", "float16 disagrees with float32 or is not finite")
    report = DoctorReport([*lines, memory.line(), *smoke_lines, smoke.line()], [memory, smoke])
    report.lines.append(report.summary())
    return report


def clip_line(reference: str, dtype: torch.dtype) -> str:
    """CLIP's weights on disk and its memory (segmentor.zeroshot.memory: an estimate, not counted above)."""
    folder = find_clip(reference)
    need = clip_memory(folder, dtype)
    where = f"found in {folder}" if folder else "NOT found on disk (the backend reads CLIP from the cache only)"
    shapes = "its config" if folder else "ViT-B/16 assumed"
    # MiB, not GiB: a CLIP is small beside the diffusion model (ViT-B/16 about 570 MiB, the bundled toy < 1 MiB).
    return (f"CLIP {reference!r} for zero-shot labels: {where}; memory ({shapes}): weights {_mib(need['weights'])}, "
            f"about {_mib(need['grid'])} per dense grid ({need['tokens']} tokens); add both to the figures above")


def first_chunk(device: torch.device) -> int:
    """Modulated runs per U-Net call the segmentor tries first on ``device`` (its default batch size)."""
    return _MAX_GPU_BATCH if device.type == "cuda" else _CPU_BATCH


def judge_memory(need: dict[str, int], available: int, device_type: str) -> Finding:
    """Whether one segmentation fits ``available`` bytes, from :func:`memory_estimate`'s figures.

    On a GPU the segmentor halves its chunk on out-of-memory (segmentor/chunking.py), down to one +/- pair:
    not fitting the first chunk is only slower (WARNING); not fitting the smallest cannot run (PROBLEM). On
    the CPU nothing halves: an allocation past the available memory is refused, swaps or wakes the
    out-of-memory killer, so not fitting the first chunk is a PROBLEM; a smaller --batch-size may help.
    """
    chunk, total, minimum = need["chunk"], _gib(need["total"]), _gib(need["minimum"])
    if need["total"] <= available:
        return Finding("memory", "OK", f"fits: about {total} of {_gib(available)} available")
    if device_type == "cuda" and need["minimum"] <= available:
        return Finding("memory", "WARNING", f"does not fit at {chunk} runs per call ({total}), but will run: "
                       f"the segmentor halves the chunk on out-of-memory, down to 2 runs per call ({minimum})")
    if device_type == "cuda":
        return Finding("memory", "PROBLEM", f"cannot run: even 2 runs per call need about {minimum}, "
                       f"{_gib(available)} available")
    hint = (f"; with --batch-size 2 about {minimum} would fit" if need["minimum"] <= available
            else f"; even 2 runs per call need about {minimum}")
    return Finding("memory", "PROBLEM", f"does not fit at {chunk} runs per call: about {total}, "
                   f"{_gib(available)} available (on the CPU the chunk is not halved on out-of-memory){hint}")


def find_weights(reference: str) -> Path | None:
    """The local folder holding the model's weights, or None; never downloads."""
    if reference == "bundled":
        return BUNDLED_MODEL_DIR if (BUNDLED_MODEL_DIR / "unet").is_dir() else None
    path = Path(reference).expanduser()
    if path.is_dir():
        return path
    try:
        return Path(snapshot_download(reference, local_files_only=True, allow_patterns=["*/*.json"]))
    except Exception:  # any hub error means: not in the local cache
        return None


def _architecture(folder: Path | None) -> tuple[UNet2DConditionModel, AutoencoderKL, CLIPTextModel]:
    """U-Net, VAE and text encoder on the meta device (shapes only): from the model's configs, else SD 1.5's."""
    if folder is None:
        from segmentor.benchmark.sd_architecture import random_sd15

        model = random_sd15("meta", "float32")
        return model.unet, model.vae, model.text_encoder
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder, subfolder="unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder, subfolder="vae"))
        text_encoder = CLIPTextModel(CLIPTextConfig.from_pretrained(folder, subfolder="text_encoder"))
    return unet, vae, text_encoder


@torch.inference_mode()
def memory_estimate(unet: UNet2DConditionModel, vae: AutoencoderKL, text_encoder: CLIPTextModel, side: int, k: int,
                    dtype: torch.dtype, first: int = _MAX_GPU_BATCH) -> dict[str, int]:
    """Bytes: weights, the reference run's recorded Q/K, per modulated run, and totals at the first chunk
    (``first`` runs per call, at most the 2K runs there are) and at 2.

    Shapes come from one U-Net pass and one decode on the meta device. A run's working memory is taken as
    its U-Net skip tensors plus four times its largest activation (a rough bound, not a measurement:
    ``bench`` on the GPU gives the real peak).
    """
    size = torch.finfo(dtype).bits // 8
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    # Shapes do not depend on the dtype: the pass runs in the meta modules' own dtype, bytes use ``size``.
    latent = torch.zeros((1, unet.config.in_channels, side // factor, side // factor), device="meta", dtype=unet.dtype)
    text = torch.zeros((1, 77, unet.config.cross_attention_dim), device="meta", dtype=unet.dtype)
    qk, outputs, skips = [], [], []
    hooks = [module.register_forward_hook(lambda _m, _i, out, into=qk: into.append(out.numel()))
             for name, module in unet.named_modules() if name.endswith((".to_q", ".to_k"))]
    hooks += [module.register_forward_hook(lambda _m, _i, out: outputs.append(_numel(out)))
              for module in unet.modules()]
    hooks += [block.register_forward_hook(lambda _m, _i, out: skips.append(sum(t.numel() for t in out[1])))
              for block in unet.down_blocks]
    unet(latent, torch.tensor(281), encoder_hidden_states=text)
    for hook in hooks:
        hook.remove()
    decoded = []
    hooks = [module.register_forward_hook(lambda _m, _i, out: decoded.append(_numel(out))) for module in vae.modules()]
    vae.decode(latent.to(vae.dtype))
    for hook in hooks:
        hook.remove()
    steps = 15  # t_m = 281 on the 50-step grid
    # The VAE stays in float32 where it asks for force_upcast (SD's does): count it at 4 bytes.
    weights = (sum(p.numel() for p in (*unet.parameters(), *text_encoder.parameters())) * size
               + sum(p.numel() for p in vae.parameters()) * 4)
    per_run = (sum(skips) + 4 * max(outputs)) * size
    per_decode = 4 * max(decoded) * 4
    chunk = min(first, 2 * k)
    base = weights + sum(qk) * size * steps
    return {"weights": weights, "recorded_qk": sum(qk) * size * steps, "per_run": per_run,
            "chunk": chunk, "total": base + chunk * (per_run + per_decode),
            "minimum": base + 2 * (per_run + per_decode)}


def _numel(output) -> int:
    if isinstance(output, torch.Tensor):
        return output.numel()
    tensor = getattr(output, "sample", None)
    if isinstance(tensor, torch.Tensor):
        return tensor.numel()
    if isinstance(output, tuple):
        return max((_numel(item) for item in output), default=0)
    return 0


def available_memory(device: torch.device) -> tuple[int, int]:
    """(available, total) bytes of the device's memory: what a new allocation can get.

    On the CPU that is psutil's ``available``: MemAvailable of /proc/meminfo on Linux (free memory plus the
    page cache and other memory the kernel hands back on demand), the like elsewhere. Not MemFree
    (``SC_AVPHYS_PAGES``): on a machine that has read files, MemFree leaves out gigabytes a process can have.
    """
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)
    memory = psutil.virtual_memory()
    return memory.available, memory.total


def smoke_test(device: torch.device) -> tuple[list[str], bool]:
    """Segment a scene with a tiny random model on ``device`` in float32 and float16; compare the two."""
    from segmentor.toy.architecture import TINY_TEST_SPEC, build_model_folder
    from segmentor.toy.scenes import generate_scene

    image = generate_scene(seed=0, size=64).image
    with tempfile.TemporaryDirectory() as folder:
        build_model_folder(TINY_TEST_SPEC, Path(folder), seed=0)
        runs = {name: _smoke_run(load_model(folder, device=str(device), dtype=name), image)
                for name in ("float32", "float16")}
    (labels32, maps32), (labels16, maps16) = runs["float32"], runs["float16"]
    finite = bool(np.isfinite(maps16).all() and np.isfinite(maps32).all())
    error = float(np.abs(maps16 - maps32).max() / max(np.abs(maps32).max(), 1e-12)) if finite else math.inf
    agreement = float((labels16 == labels32).mean())
    ok = finite and error <= _MAX_MAP_ERROR and agreement >= _MIN_AGREEMENT
    return [f"smoke segmentation (tiny random model, 64 px, K={_SMOKE_K}) on {device}: float32 and float16 ran; "
            f"float16 vs float32: label agreement {agreement:.1%}, response-map error {error:.2%} of the peak "
            f"(limits {_MIN_AGREEMENT:.0%}, {_MAX_MAP_ERROR:.0%})"], ok


def _smoke_run(model: DiffusionModel, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The label map of a segmentation on the given (k-means-free) stripe masks, and their response maps."""
    config = EmerDiffConfig(num_segments=_SMOKE_K, dtype=str(model.dtype).removeprefix("torch."))
    segmentor = EmerDiffSegmentor(model, config)
    grid = segmentor.feature_grid(image.shape)
    # Fixed masks: k-means on float16 features may pick other clusters, which is not what is compared here.
    masks = np.stack([np.arange(grid[1])[None].repeat(grid[0], 0) * _SMOKE_K // grid[1] == i for i in range(_SMOKE_K)])
    try:
        labels = segmentor.segment(image, low_res_masks=masks).label_map
        with torch.inference_mode():
            latents = stages.encode(model, stages.to_model_input(image, segmentor.working_shape(*image.shape[:2]),
                                                                 model))
            noise = stages.seeded_noise(latents, torch.Generator().manual_seed(0))
            noisy = stages.add_noise(model, latents, noise, config.modulation_timestep)
            maps = segmentor.response_maps(noisy, stages.masks_on_grid(masks, grid, model.device), frozenset())
    except FloatingPointError:
        return np.full(image.shape[:2], -1), np.full(1, math.nan)
    return labels, maps.float().cpu().numpy()


def _device_name(device: torch.device) -> str:
    if device.type != "cuda":
        return f" ({os.cpu_count()} CPU cores)"
    properties = torch.cuda.get_device_properties(device)
    return f" ({properties.name}, compute capability {properties.major}.{properties.minor})"


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"
