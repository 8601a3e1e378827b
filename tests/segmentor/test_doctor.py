"""`python -m segmentor doctor` on the CPU: the CI run of the command a GPU user runs first."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from segmentor.doctor import find_weights, memory_estimate
from segmentor.loading import BUNDLED_MODEL_DIR


@pytest.mark.slow
def test_doctor_reports_device_weights_memory_and_a_passing_float16_smoke_test():
    completed = subprocess.run(
        [sys.executable, "-m", "segmentor", "doctor", "--model", "nobody/not-a-model", "--device", "cpu",
         "--size", "64", "--k", "6"], capture_output=True, text=True, timeout=900, check=False,
        env={"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PATH": ""})
    assert completed.returncode == 0, completed.stderr[-2000:]
    report = completed.stdout
    assert "device cpu" in report and "dtype: float32" in report
    assert "'nobody/not-a-model': NOT found on disk" in report
    assert "memory at 64 px, K=6 (SD 1.5 architecture assumed)" in report
    assert "smoke segmentation (tiny random model, 64 px, K=4) on cpu: float32 and float16 ran" in report
    assert "OK: the device path works" in report


def test_weights_are_found_without_downloading():
    assert find_weights("bundled") == BUNDLED_MODEL_DIR
    assert find_weights(str(BUNDLED_MODEL_DIR)) == BUNDLED_MODEL_DIR
    assert find_weights("nobody/not-a-model") is None


def test_memory_estimate_grows_with_size_and_k():
    from segmentor.doctor import _architecture

    unet, vae, text_encoder = _architecture(BUNDLED_MODEL_DIR)
    small = memory_estimate(unet, vae, text_encoder, 64, 4, torch.float32)
    large = memory_estimate(unet, vae, text_encoder, 128, 4, torch.float32)
    more = memory_estimate(unet, vae, text_encoder, 64, 8, torch.float32)
    half = memory_estimate(unet, vae, text_encoder, 64, 4, torch.float16)
    assert large["recorded_qk"] > 3 * small["recorded_qk"] and large["per_run"] > 3 * small["per_run"]
    assert more["total"] > small["total"] and more["minimum"] == small["minimum"]
    assert half["recorded_qk"] * 2 == small["recorded_qk"]
    assert small["weights"] > 0 and small["minimum"] <= small["total"]
