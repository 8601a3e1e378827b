"""The small-CLIP trainer on a tiny model: it runs in seconds, saves a CLIPModel folder, and is reproducible."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import CLIPModel, CLIPTokenizer

from segmentor.toy.__main__ import main
from segmentor.toy.clip_architecture import (
    TINY_CLIP_TEST_SPEC,
    VOCABULARY,
    _bpe,
    build_clip_tokenizer,
    word_merges,
)
from segmentor.toy.clip_train import ClipTrainingPlan, train_clip
from segmentor.toy.train import TrainingError

SMOKE_PLAN = ClipTrainingPlan(steps=2, scenes_per_kind=2, large_per_kind=1, log_every=1, held_out_scenes=2)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("clip")
    return folder, train_clip(folder, TINY_CLIP_TEST_SPEC, SMOKE_PLAN, command="smoke")


def test_smoke_plan_saves_a_loadable_clip(trained: tuple[Path, dict]) -> None:
    folder, report = trained
    assert report["training"]["steps"] == 2 and math.isfinite(report["training"]["final_loss"])
    assert report["command"] == "smoke" and report["plan"]["seed"] == 0
    assert json.loads((folder / "training_report.json").read_text())["parameters"] == report["parameters"]
    model = CLIPModel.from_pretrained(folder)
    tokenizer = CLIPTokenizer.from_pretrained(folder)
    assert model.config.vision_config.patch_size == TINY_CLIP_TEST_SPEC.patch_size
    assert (folder / "preprocessor_config.json").is_file()
    features = model.get_text_features(**tokenizer(["a red disc"], return_tensors="pt"))
    assert features.pooler_output.shape[-1] == TINY_CLIP_TEST_SPEC.projection_dim


def test_training_is_reproducible(trained: tuple[Path, dict], tmp_path: Path) -> None:
    first, _ = trained
    train_clip(tmp_path, TINY_CLIP_TEST_SPEC, SMOKE_PLAN)
    weights, again = load_file(first / "model.safetensors"), load_file(tmp_path / "model.safetensors")
    assert all(torch.equal(weights[name], again[name]) for name in weights)
    train_clip(tmp_path / "other", TINY_CLIP_TEST_SPEC, replace(SMOKE_PLAN, seed=1))
    other = load_file(tmp_path / "other" / "model.safetensors")
    assert not all(torch.equal(weights[name], other[name]) for name in weights)


def test_every_caption_word_is_one_token() -> None:
    tokenizer = build_clip_tokenizer(TINY_CLIP_TEST_SPEC)
    for word in VOCABULARY:
        assert len(tokenizer(word, add_special_tokens=False).input_ids) == 1, word
    # Any other text still tokenizes, byte by byte.
    assert len(tokenizer("sky", add_special_tokens=False).input_ids) == 3


@pytest.mark.parametrize("words", [("red", "green", "reed", "tree"), ("tree", "reed", "green", "red")])
def test_word_merges_make_words_whole_in_any_order(words: tuple[str, ...]) -> None:
    # Overlapping words ("re" in all four) make a later word's first merges collide with earlier ones.
    merges = word_merges(words)
    assert len(set(merges)) == len(merges)
    ranks = {pair: rank for rank, pair in enumerate(merges)}
    for word in words:
        assert _bpe(word, ranks) == [word + "</w>"]


def test_bad_plan_is_refused_before_writing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(TrainingError, match="steps must be at least 1"):
        train_clip(tmp_path / "model", TINY_CLIP_TEST_SPEC, replace(SMOKE_PLAN, steps=0))
    assert main(["train-clip", "--out", str(tmp_path / "model"), "--steps", "0"]) == 2
    assert "steps must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "model").exists()
