"""`python -m segmentor doctor` on the CPU: the CI run of the command a GPU user runs first.

Nothing here asserts on this machine's live memory: the verdicts take the figures as arguments (or
`--available-gib`); the reading itself is compared with /proc/meminfo.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from segmentor.doctor import (
    EXIT_DEVICE_PATH,
    EXIT_MEMORY,
    DoctorReport,
    Finding,
    available_memory,
    find_weights,
    judge_memory,
    memory_estimate,
)
from segmentor.loading import BUNDLED_MODEL_DIR

GIB = 2**30


@pytest.mark.slow
def test_doctor_names_the_finding_that_made_its_exit_status_non_zero():
    # --available-gib stands in for this machine's memory, so the verdict does not hang on the load here:
    # SD 1.5's float32 weights alone (about 4 GiB) do not fit in 2 GiB, and on the CPU nothing halves.
    completed = subprocess.run(
        [sys.executable, "-m", "segmentor", "doctor", "--model", "nobody/not-a-model", "--device", "cpu",
         "--size", "64", "--k", "10", "--available-gib", "2"], capture_output=True, text=True, timeout=900, check=False,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    report = completed.stdout
    assert completed.returncode == EXIT_MEMORY, completed.stderr[-2000:]
    assert "device cpu" in report and "dtype: float32" in report
    assert "'nobody/not-a-model': NOT found on disk" in report
    assert "memory at 64 px, K=10 (SD 1.5 architecture assumed)" in report
    assert "with 16 runs per call" in report and "available 2.00 GiB (given; measured" in report
    assert "PROBLEM: memory: does not fit at 16 runs per call" in report
    assert "smoke segmentation (tiny random model, 64 px, K=4) on cpu: float32 and float16 ran" in report
    assert "OK: device path" in report
    assert report.rstrip().endswith("doctor: exit status 4: PROBLEM in memory (4)")


def _need(total_gib: float, minimum_gib: float, chunk: int = 64) -> dict[str, int]:
    return {"chunk": chunk, "total": int(total_gib * GIB), "minimum": int(minimum_gib * GIB)}


def test_on_a_gpu_not_fitting_the_first_chunk_is_a_warning_not_fitting_the_smallest_a_problem():
    assert judge_memory(_need(10, 6), 12 * GIB, "cuda").level == "OK"
    halving = judge_memory(_need(10, 6), 8 * GIB, "cuda")
    assert halving.level == "WARNING" and "will run" in halving.message and "2 runs per call" in halving.message
    impossible = judge_memory(_need(10, 6), 5 * GIB, "cuda")
    assert impossible.level == "PROBLEM" and "cannot run" in impossible.message


def test_on_the_cpu_nothing_halves_so_not_fitting_is_a_problem():
    assert judge_memory(_need(10, 6, 16), 12 * GIB, "cpu").level == "OK"
    smaller = judge_memory(_need(10, 6, 16), 8 * GIB, "cpu")
    assert smaller.level == "PROBLEM" and "--batch-size 2" in smaller.message
    assert judge_memory(_need(10, 6, 16), 5 * GIB, "cpu").level == "PROBLEM"


def test_the_exit_status_sums_the_codes_of_the_problems_only():
    memory_warning = Finding("memory", "WARNING", "halves")
    memory_problem = Finding("memory", "PROBLEM", "too small")
    device_ok, device_problem = Finding("device path", "OK", ""), Finding("device path", "PROBLEM", "NaN")
    assert DoctorReport([], [memory_warning, device_ok]).exit_status == 0
    assert DoctorReport([], [memory_warning, device_ok]).summary() == (
        "doctor: exit status 0: ready; WARNING in memory")
    assert DoctorReport([], [memory_warning, device_problem]).exit_status == EXIT_DEVICE_PATH == 1
    assert DoctorReport([], [memory_problem, device_ok]).exit_status == EXIT_MEMORY == 4
    both = DoctorReport([], [memory_problem, device_problem])
    assert both.exit_status == 5 and both.summary() == (
        "doctor: exit status 5: PROBLEM in memory (4), device path (1)")


def _meminfo_kib(field: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        name, value = line.split(":", 1)
        if name == field:
            return int(value.split()[0])
    raise AssertionError(f"{field} not in /proc/meminfo")


@pytest.mark.skipif(not Path("/proc/meminfo").is_file(), reason="Linux's /proc/meminfo")
def test_cpu_memory_is_what_a_process_can_get_memavailable_not_memfree():
    before = _meminfo_kib("MemAvailable") * 1024
    available, total = available_memory(torch.device("cpu"))
    after = _meminfo_kib("MemAvailable") * 1024
    assert total == _meminfo_kib("MemTotal") * 1024
    # Other processes allocate meanwhile: between the readings taken around the call, give or take 1 %.
    slack = total // 100
    assert min(before, after) - slack <= available <= max(before, after) + slack


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
    cpu = memory_estimate(unet, vae, text_encoder, 64, 12, torch.float32, first=16)
    assert large["recorded_qk"] > 3 * small["recorded_qk"] and large["per_run"] > 3 * small["per_run"]
    assert more["total"] > small["total"] and more["minimum"] == small["minimum"]
    assert half["recorded_qk"] * 2 == small["recorded_qk"]
    assert small["weights"] > 0 and small["minimum"] <= small["total"]
    assert small["chunk"] == 8 and cpu["chunk"] == 16  # 2K runs, at most the first chunk
