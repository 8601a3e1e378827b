"""load_clip: folders, the cache-only hub, identities, normalisation from the preprocessor config."""

from __future__ import annotations

import json
import shutil

import pytest

from segmentor import ModelLoadError
from segmentor.zeroshot import load_clip
from segmentor.zeroshot.loading import CLIP_MEAN
from tests.zeroshot.tiny_clip import build_tiny_clip


def test_a_folder_loads_in_eval_mode_with_clips_defaults(tiny_clip):
    assert not tiny_clip.model.training
    assert tiny_clip.patch_size == 8 and tiny_clip.image_mean == CLIP_MEAN
    assert len(tiny_clip.identity) == 12


def test_identity_follows_the_weights_and_normalisation_the_preprocessor(tiny_clip, tiny_clip_dir, tmp_path):
    same = shutil.copytree(tiny_clip_dir, tmp_path / "copy")
    assert load_clip(str(same), device="cpu").identity == tiny_clip.identity
    other = load_clip(str(build_tiny_clip(tmp_path / "other", seed=1)), device="cpu")
    assert other.identity != tiny_clip.identity
    (same / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5] * 3, "image_std": [0.25] * 3}))
    reloaded = load_clip(str(same), device="cpu")
    assert reloaded.image_mean == (0.5,) * 3 and reloaded.image_std == (0.25,) * 3
    assert reloaded.identity != tiny_clip.identity


def test_a_hub_id_outside_the_cache_fails_with_what_to_do():
    with pytest.raises(ModelLoadError, match=r"not in the Hugging Face cache.*huggingface-cli download"):
        load_clip("openai/clip-vit-base-patch16", device="cpu")


def test_missing_or_wrong_folders_fail_clearly(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_clip(str(tmp_path / "nowhere"), device="cpu")
    with pytest.raises(ModelLoadError, match=r"no config\.json"):
        load_clip(str(tmp_path), device="cpu")
