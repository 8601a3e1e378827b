"""Turn a CLIP reference (``bundled``, a local folder, or a hub id in the local cache) into a ready model."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from huggingface_hub import snapshot_download
from huggingface_hub.errors import HfHubHTTPError
from transformers import CLIPModel, CLIPTokenizer, CLIPTokenizerFast

from segmentor.loading import ModelLoadError, files_identity, resolve_device, resolve_dtype

BUNDLED_CLIP_DIR = Path(__file__).resolve().parent.parent / "bundled_clip"
# OpenAI CLIP's normalisation (transformers' OPENAI_CLIP_MEAN/STD): the default of CLIPImageProcessor.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class ClipModel:
    model: CLIPModel  # eval mode, no gradients
    tokenizer: CLIPTokenizer | CLIPTokenizerFast
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    patch_size: int
    device: torch.device
    dtype: torch.dtype
    reference: str
    identity: str  # hash of the config, tokenizer and weight files: changes whenever the model does

    @property
    def image_size(self) -> int:
        """The side the vision tower was trained at (its position embeddings' grid times the patch)."""
        return int(self.model.config.vision_config.image_size)


def load_clip(reference: str, device: str = "auto", dtype: str = "auto") -> ClipModel:
    """Load a transformers ``CLIPModel`` and its tokenizer; :class:`ModelLoadError` says why not.

    ``bundled`` is the small CLIP shipped in ``segmentor/bundled_clip``; an existing folder is read as
    ``CLIPModel.save_pretrained`` output plus tokenizer files; anything else is a hub id, read from the local
    Hugging Face cache only (a server must not download hundreds of MB at start: pre-download it).
    """
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    if reference == "bundled":
        if not (BUNDLED_CLIP_DIR / "config.json").is_file():
            raise ModelLoadError(f"the bundled CLIP is missing from {BUNDLED_CLIP_DIR}; train it with the "
                                 "command in segmentor/bundled_clip's model card")
        folder = BUNDLED_CLIP_DIR
    elif Path(reference).expanduser().is_dir():
        folder = Path(reference).expanduser().resolve()
    elif Path(reference).expanduser().exists() or reference.startswith((".", "/", "~")):
        raise ModelLoadError(f"CLIP folder {reference!r} does not exist or is not a folder")
    else:
        folder = _cached_snapshot(reference)
    if not (folder / "config.json").is_file():
        raise ModelLoadError(f"the CLIP folder {str(folder)!r} has no config.json; it needs the layout of "
                             "CLIPModel.save_pretrained (config.json, model.safetensors) plus tokenizer files")
    try:
        model = CLIPModel.from_pretrained(str(folder), dtype=torch_dtype)
        tokenizer = CLIPTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError, TypeError) as error:
        raise ModelLoadError(f"cannot load CLIP from {str(folder)!r}: {error}") from error
    model.to(torch_device).eval().requires_grad_(False)
    mean, std = _normalisation(folder)
    return ClipModel(
        model=model, tokenizer=tokenizer, image_mean=mean, image_std=std,
        patch_size=int(model.config.vision_config.patch_size), device=torch_device, dtype=torch_dtype,
        reference=reference, identity=files_identity(folder, folder.iterdir()),
    )


def _normalisation(folder: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The image mean/std of the folder's preprocessor_config.json, else OpenAI CLIP's."""
    path = folder / "preprocessor_config.json"
    if not path.is_file():
        return CLIP_MEAN, CLIP_STD
    try:
        config = json.loads(path.read_text())
        mean = tuple(float(v) for v in config.get("image_mean", CLIP_MEAN))
        std = tuple(float(v) for v in config.get("image_std", CLIP_STD))
    except (OSError, ValueError, TypeError) as error:
        raise ModelLoadError(f"{path}: unreadable preprocessor config ({error})") from error
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ModelLoadError(f"{path}: image_mean/image_std must be 3 numbers each (std > 0)")
    return mean, std


def _cached_snapshot(hub_id: str) -> Path:
    """The hub model's snapshot in the local cache; never downloads (pre-download it, see the message)."""
    try:
        return Path(snapshot_download(hub_id, local_files_only=True))
    except (OSError, ValueError, HfHubHTTPError) as error:
        cache = os.environ.get("HF_HOME", str(Path("~/.cache/huggingface").expanduser()))
        raise ModelLoadError(
            f"cannot load CLIP {hub_id!r}: it is not in the Hugging Face cache ({cache}), and CLIP is read from "
            f"the cache only. Fill the cache on a connected machine (`huggingface-cli download {hub_id}`) and "
            "point HF_HOME at it, build the GPU image with the CLIP build argument, or give a local folder "
            "(CLIPModel.save_pretrained + tokenizer files); offline, `bundled` runs the small CLIP shipped "
            "with this project"
        ) from error


def find_clip(reference: str) -> Path | None:
    """The local folder of a CLIP reference, or None; never downloads (for ``doctor``)."""
    if reference == "bundled":
        return BUNDLED_CLIP_DIR if (BUNDLED_CLIP_DIR / "config.json").is_file() else None
    path = Path(reference).expanduser()
    if path.is_dir():
        return path
    try:
        return _cached_snapshot(reference)
    except ModelLoadError:
        return None
