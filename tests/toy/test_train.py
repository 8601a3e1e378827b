"""The toy trainer on tiny models: it runs, saves a loadable diffusers folder, and is reproducible."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import cv2
import pytest
import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from safetensors.torch import load_file
from transformers import CLIPTextModel, CLIPTokenizer

from segmentor.toy.__main__ import main
from segmentor.toy.architecture import TINY_TEST_SPEC
from segmentor.toy.train import TrainingError, TrainingPlan, train_model

SMOKE_PLAN = TrainingPlan(vae_steps=3, unet_steps=3, vae_batch=2, unet_batch=2, log_every=1, held_out_scenes=4,
                          samples=2, sample_steps=3)
WEIGHT_FILES = ("vae/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.safetensors",
                "text_encoder/model.safetensors")


def _weights(folder: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {name: load_file(folder / name) for name in WEIGHT_FILES}


def _same_weights(first: dict, second: dict) -> bool:
    return all(torch.equal(first[f][k], second[f][k]) for f in WEIGHT_FILES for k in first[f])


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("trained")
    return folder, train_model(folder, TINY_TEST_SPEC, SMOKE_PLAN)


@pytest.mark.slow
def test_training_reports_finite_losses(trained: tuple[Path, dict]) -> None:
    _, report = trained
    assert report["vae"]["steps"] == report["unet"]["steps"] == 3
    for value in (report["vae"]["final_loss"], report["unet"]["final_loss"], report["held_out_vae_psnr_db"],
                  report["scaling_factor"], *report["held_out_epsilon_mse"].values()):
        assert math.isfinite(value)
    assert report["scaling_factor"] > 0


@pytest.mark.slow
def test_trained_folder_loads_with_from_pretrained(trained: tuple[Path, dict]) -> None:
    folder, report = trained
    vae = AutoencoderKL.from_pretrained(folder / "vae")
    unet = UNet2DConditionModel.from_pretrained(folder / "unet")
    CLIPTextModel.from_pretrained(folder / "text_encoder")
    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    DDIMScheduler.from_pretrained(folder / "scheduler")
    assert vae.config.scaling_factor == pytest.approx(report["scaling_factor"])
    assert unet.config.cross_attention_dim == TINY_TEST_SPEC.text_width
    assert tokenizer.model_max_length == TINY_TEST_SPEC.context_tokens
    assert json.loads((folder / "training_report.json").read_text())["plan"]["seed"] == 0
    samples = cv2.imread(str(folder / "samples.png"))
    side = TINY_TEST_SPEC.image_size
    assert samples.shape == (side, 8 * side, 3)  # two samples in a grid eight wide


@pytest.mark.slow
def test_training_is_reproducible(trained: tuple[Path, dict], tmp_path: Path) -> None:
    first_folder, first_report = trained
    train_model(tmp_path / "again", TINY_TEST_SPEC, SMOKE_PLAN)
    assert _same_weights(_weights(first_folder), _weights(tmp_path / "again"))
    report = json.loads((tmp_path / "again" / "training_report.json").read_text())
    assert report["unet"]["final_loss"] == first_report["unet"]["final_loss"]


@pytest.mark.slow
def test_another_seed_trains_other_weights(trained: tuple[Path, dict], tmp_path: Path) -> None:
    first_folder, _ = trained
    plan = replace(SMOKE_PLAN, seed=1)
    train_model(tmp_path / "other", TINY_TEST_SPEC, plan)
    assert not _same_weights(_weights(first_folder), _weights(tmp_path / "other"))


@pytest.mark.parametrize(("field", "value", "message"), [
    ("vae_steps", 0, "vae_steps must be at least 1"),
    ("unet_batch", -2, "unet_batch must be at least 1"),
    ("minutes", 0.0, "minutes must be positive"),
])
def test_bad_plans_raise_training_error(tmp_path: Path, field: str, value: float, message: str) -> None:
    plan = replace(SMOKE_PLAN, **{field: value})
    with pytest.raises(TrainingError, match=message):
        train_model(tmp_path, TINY_TEST_SPEC, plan)
    assert not any(tmp_path.iterdir())


def test_train_command_rejects_a_bad_plan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--out", str(tmp_path / "model"), "--vae-steps", "0"]) == 2
    assert "vae_steps must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "model").exists()
