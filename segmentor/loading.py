"""Turn a model reference (hub id, local diffusers folder, or ``bundled``) into ready components."""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from huggingface_hub import snapshot_download
from huggingface_hub.errors import HfHubHTTPError
from transformers import CLIPTextModel, CLIPTokenizer

BUNDLED_MODEL_DIR = Path(__file__).resolve().parent / "bundled"
DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# Bytes read from each end of a weights file for its identity: enough to tell trained weights apart
# without reading gigabytes of SD at every start.
_IDENTITY_SAMPLE_BYTES = 1 << 20
_COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
# Only what the method uses, in safetensors: SD repositories also hold full checkpoints and .bin copies.
_HUB_FILES = ["model_index.json", "*/*.json", "*/*.txt", "unet/diffusion_pytorch_model.safetensors",
              "vae/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"]


class ModelLoadError(RuntimeError):
    """The model reference cannot be turned into weights on this machine."""


@dataclass
class DiffusionModel:
    vae: AutoencoderKL
    unet: UNet2DConditionModel
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    scheduler: DDIMScheduler
    device: torch.device
    dtype: torch.dtype
    reference: str
    identity: str

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def size_multiple(self) -> int:
        """Image sides must be multiples of this so every U-Net level has whole latent cells."""
        return self.vae_scale_factor * 2 ** (len(self.unet.config.block_out_channels) - 1)

    @property
    def native_size(self) -> int:
        sample_size = self.unet.config.sample_size
        side = sample_size if isinstance(sample_size, int) else max(sample_size)
        return side * self.vae_scale_factor


def resolve_device(device: str | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        raise ModelLoadError(f"unknown device {device!r}") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} asked for, but CUDA is not available on this machine")
    return resolved


def resolve_dtype(dtype: str | None, device: torch.device) -> torch.dtype:
    if dtype in (None, "auto"):
        # fp16 keeps more mantissa than bf16: the difference maps are small differences of images.
        return torch.float16 if device.type == "cuda" else torch.float32
    if dtype not in _DTYPES:
        raise ModelLoadError(f"unknown dtype {dtype!r}; use one of auto, {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


def load_model(reference: str, device: str | None = None, dtype: str | None = None) -> DiffusionModel:
    """Load VAE, U-Net, text encoder, tokenizer and a DDIM scheduler from a reference.

    ``bundled`` is the small model shipped in ``segmentor/bundled``; an existing folder is read as a
    diffusers layout; anything else is a Hugging Face hub id, taken from the local cache first.
    """
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    if reference == "bundled":
        if not (BUNDLED_MODEL_DIR / "unet").is_dir():
            raise ModelLoadError(f"the bundled model is missing from {BUNDLED_MODEL_DIR}; retrain it with "
                                 "`python -m segmentor.toy train --out segmentor/bundled`")
        folder = BUNDLED_MODEL_DIR
    elif Path(reference).expanduser().is_dir():
        folder = Path(reference).expanduser().resolve()
    elif Path(reference).expanduser().exists() or reference.startswith((".", "/", "~")):
        raise ModelLoadError(f"model folder {reference!r} does not exist or is not a folder")
    else:
        folder = _hub_snapshot(reference)
    parts = _load_parts(folder, torch_dtype)
    for module in (parts["vae"], parts["unet"], parts["text_encoder"]):
        module.to(torch_device).eval().requires_grad_(False)
    return DiffusionModel(device=torch_device, dtype=torch_dtype, reference=reference,
                          identity=_folder_identity(folder), **parts)


def honour_force_upcast(vae: AutoencoderKL, dtype: torch.dtype) -> None:
    """Keep the VAE in float32 when the model runs in float16 and the VAE's config asks for it.

    SD's VAE overflows in float16 (diffusers' pipelines upcast it for the same reason); the U-Net stays in
    float16 and stages.encode/decode convert at the boundary.
    """
    if dtype == torch.float16 and vae.config.get("force_upcast", False):
        vae.to(torch.float32)


def _vae_dtype(folder: Path, dtype: torch.dtype) -> torch.dtype:
    """The dtype the VAE is loaded in: float32 under float16 when it asks for force_upcast (see above)."""
    upcast = dtype == torch.float16 and AutoencoderKL.load_config(folder, subfolder="vae").get("force_upcast", False)
    return torch.float32 if upcast else dtype


def _hub_snapshot(hub_id: str) -> Path:
    """The local snapshot of a hub model: from the cache, else downloaded once if the hub is reachable."""
    try:
        return Path(snapshot_download(hub_id, allow_patterns=_HUB_FILES, local_files_only=True))
    except (OSError, ValueError, HfHubHTTPError) as cache_error:
        if _offline():
            raise ModelLoadError(_missing_weights_message(hub_id, "offline mode (HF_HUB_OFFLINE)")) from cache_error
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        # The hub client retries unreachable hosts for ~30 s; a short probe fails fast instead.
        socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=5).close()
    except OSError as error:
        raise ModelLoadError(_missing_weights_message(hub_id, f"{endpoint.hostname} unreachable")) from error
    try:
        return Path(snapshot_download(hub_id, allow_patterns=_HUB_FILES))
    except (OSError, ValueError, HfHubHTTPError) as error:
        raise ModelLoadError(_missing_weights_message(hub_id, f"download failed: {error}")) from error


def _load_parts(folder: Path, dtype: torch.dtype) -> dict:
    source = str(folder)
    loaders = {
        "tokenizer": lambda: CLIPTokenizer.from_pretrained(source, subfolder="tokenizer"),
        "text_encoder": lambda: CLIPTextModel.from_pretrained(source, subfolder="text_encoder", dtype=dtype),
        "vae": lambda: AutoencoderKL.from_pretrained(source, subfolder="vae", torch_dtype=_vae_dtype(folder, dtype)),
        "unet": lambda: UNet2DConditionModel.from_pretrained(source, subfolder="unet", torch_dtype=dtype),
        "scheduler": lambda: DDIMScheduler.from_pretrained(source, subfolder="scheduler"),
    }
    parts = {}
    for name, load in loaders.items():
        if not (folder / name).is_dir():
            raise ModelLoadError(f"the model folder {source!r} has no {name}/ folder; a model folder needs the "
                                 f"diffusers layout: {', '.join(c + '/' for c in _COMPONENTS)}")
        try:
            parts[name] = load()
        except (OSError, ValueError) as error:
            raise ModelLoadError(f"cannot load {name}/ of the model folder {source!r}: {error}") from error
    return parts


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")


def _missing_weights_message(hub_id: str, reason: str) -> str:
    cache = os.environ.get("HF_HOME", str(Path("~/.cache/huggingface").expanduser()))
    return (f"cannot load {hub_id!r}: its weights are not in the Hugging Face cache ({cache}) and cannot be "
            f"downloaded ({reason}). Provide them in one of these ways: pass a local diffusers folder as the "
            "model (--model /models/sd15, or EMERDIFF_MODEL=/models/sd15); fill a cache on a connected machine "
            f"(`huggingface-cli download {hub_id}`) and point HF_HOME at it. Offline, `--model bundled` runs the "
            "small model shipped with this project.")


def _folder_identity(folder: Path) -> str:
    """A short hash of the components' configs and weight files (sizes and both ends), stable across copies."""
    root = folder.resolve()
    return files_identity(root, (p for component in _COMPONENTS for p in (root / component).rglob("*")))


def files_identity(root: Path, paths: Iterable[Path]) -> str:
    """A short hash of the model files among ``paths`` (names under ``root``, sizes and both ends)."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        if not path.is_file() or path.suffix not in (".json", ".txt", ".safetensors", ".bin"):
            continue
        digest.update(str(path.relative_to(root)).encode())
        size = path.stat().st_size
        digest.update(str(size).encode())
        with path.open("rb") as handle:
            digest.update(handle.read(_IDENTITY_SAMPLE_BYTES))
            if size > 2 * _IDENTITY_SAMPLE_BYTES:
                handle.seek(-_IDENTITY_SAMPLE_BYTES, os.SEEK_END)
            digest.update(handle.read())
    return digest.hexdigest()[:12]
