"""``python -m segmentor doctor``: is this machine ready to segment, and does the device path compute right?

Reports the device and dtype, whether the weights are on disk (nothing is downloaded), an estimate of the
memory one segmentation at the asked size and K needs beside the memory free, then runs a short smoke
segmentation on a tiny random model on that device in float32 and in float16 and compares the two
(label agreement, response-map error). The first command to run on a new GPU machine; on the CPU it runs
in CI.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from huggingface_hub import snapshot_download
from transformers import CLIPTextConfig, CLIPTextModel

from segmentor import stages
from segmentor.config import EmerDiffConfig
from segmentor.emerdiff import EmerDiffSegmentor
from segmentor.loading import BUNDLED_MODEL_DIR, DiffusionModel, load_model, resolve_device, resolve_dtype

# Modulated runs per U-Net call tried first on a GPU (EmerDiffSegmentor halves it on out-of-memory).
_GPU_CHUNK = 64
_SMOKE_K = 4
# float16 against float32 on the tiny model: maps within this relative error, labels this similar.
_MAX_MAP_ERROR = 0.05
_MIN_AGREEMENT = 0.95


def run_doctor(model_reference: str, device: str, size: int | None, k: int) -> tuple[list[str], bool]:
    """The report's lines and whether every check passed."""
    torch_device = resolve_device(device)
    dtype = resolve_dtype("auto", torch_device)
    lines = [f"torch {torch.__version__}; device {torch_device}" + _device_name(torch_device),
             f"dtype: {str(dtype).removeprefix('torch.')} (auto on this device)"]
    folder = find_weights(model_reference)
    lines.append(f"weights of {model_reference!r}: " + (f"found in {folder}" if folder else
                 "NOT found on disk (load_model would download them, or fail offline)"))
    unet, vae, text_encoder = _architecture(folder)
    side = size or unet.config.sample_size * 2 ** (len(vae.config.block_out_channels) - 1)
    need = memory_estimate(unet, vae, text_encoder, side, k, dtype)
    free, total = free_memory(torch_device)
    lines.append(f"memory at {side} px, K={k} ({'its config' if folder else 'SD 1.5 architecture assumed'}): "
                 f"weights {_gib(need['weights'])}, recorded Q/K {_gib(need['recorded_qk'])}, "
                 f"about {_gib(need['per_run'])} per modulated run; with {need['chunk']} runs per call about "
                 f"{_gib(need['total'])}; free {_gib(free)} of {_gib(total)}")
    fits = need["total"] <= free
    if not fits:
        lines.append(f"  -> does not fit at {need['chunk']} runs per call; the segmentor halves the chunk on "
                     f"out-of-memory (about {_gib(need['minimum'])} at 2 runs per call)")
    smoke_lines, smoke_ok = smoke_test(torch_device)
    return lines + smoke_lines, smoke_ok and need["minimum"] <= free


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
                    dtype: torch.dtype) -> dict[str, int]:
    """Bytes: weights, the reference run's recorded Q/K, per modulated run, and totals at a GPU chunk and at 2.

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
    chunk = min(_GPU_CHUNK, 2 * k)
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


def free_memory(device: torch.device) -> tuple[int, int]:
    """(free, total) bytes of the device's memory."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)
    page = os.sysconf("SC_PAGE_SIZE")
    return os.sysconf("SC_AVPHYS_PAGES") * page, os.sysconf("SC_PHYS_PAGES") * page


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
            f"(limits {_MIN_AGREEMENT:.0%}, {_MAX_MAP_ERROR:.0%})",
            "OK: the device path works" if ok else "PROBLEM: float16 disagrees with float32 or is not finite"], ok


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
