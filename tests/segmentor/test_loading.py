from __future__ import annotations

import shutil

import pytest
import torch

from segmentor import ModelLoadError, load_model


def test_local_folder_loads_with_a_stable_identity(tiny_model_dir, tmp_path):
    first = load_model(str(tiny_model_dir))
    copy = shutil.copytree(tiny_model_dir, tmp_path / "copy")
    assert load_model(str(copy)).identity == first.identity
    assert first.device.type == "cpu" and first.dtype == torch.float32
    assert first.native_size == 64 and first.size_multiple == 16


def test_identity_changes_with_the_weights(tiny_model_dir, tmp_path):
    copy = shutil.copytree(tiny_model_dir, tmp_path / "changed")
    weights = copy / "unet" / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert load_model(str(copy)).identity != load_model(str(tiny_model_dir)).identity


def test_missing_hub_weights_fail_fast_with_instructions(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="local diffusers folder") as caught:
        load_model("someone/not-cached-anywhere")
    assert "HF_HOME" in str(caught.value)


def test_folder_without_the_diffusers_layout_is_named(tmp_path):
    with pytest.raises(ModelLoadError, match="has no tokenizer/ folder"):
        load_model(str(tmp_path))
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(str(tmp_path / "nope"))


def test_unavailable_device_and_dtype_are_refused(tiny_model_dir):
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match="CUDA is not available"):
            load_model(str(tiny_model_dir), device="cuda")
    with pytest.raises(ModelLoadError, match="unknown dtype"):
        load_model(str(tiny_model_dir), dtype="float64")
