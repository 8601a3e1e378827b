"""The fidelity harness and `bench --preset fast`: label maps compared with the full method's, cost ratios."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from segmentor import EmerDiffConfig, EmerDiffSegmentor
from segmentor.benchmark.fidelity import agreement, coarse_winners, compare
from tests.segmentor.conftest import scene_image


def test_agreement_compares_which_coarse_mask_wins(tiny_model):
    image = scene_image(0)
    segmentor = EmerDiffSegmentor(tiny_model, EmerDiffConfig(num_segments=4, step_stride=5))
    paper = segmentor.segment(image)
    assert agreement(paper, paper) == {"pixel_agreement": 1.0, "miou": 1.0}
    # Segment ids are renumbered per result; the winners map back onto the shared coarse ids.
    winners = coarse_winners(paper)
    for segment in paper.segments:
        assert set(np.unique(winners[paper.label_map == segment.id])) == set(
            np.unique(paper.coarse_labels[segment.low_res_mask]))
    halves = np.zeros((2, 8, 8), dtype=bool)
    halves[0, :, :4], halves[1, :, 4:] = True, True
    with pytest.raises(ValueError, match="different coarse masks"):
        agreement(paper, segmentor.segment(image, low_res_masks=halves))


def test_compare_reports_cost_and_agreement_of_each_candidate(tiny_model):
    # 3 steps after t_m keep it quick; the one-sided candidate then halves the modulated runs.
    report = compare(tiny_model, [scene_image(1)], EmerDiffConfig(num_segments=3, step_stride=5),
                     {"one-sided": {"difference": "one_sided"}})
    row = report["candidates"]["one-sided"]
    assert report["images"] == 1 and row["fingerprint"] != report["paper"]["fingerprint"]
    assert 0.4 < row["flop_ratio"] < 0.75
    assert row["time_ratio"] > 0
    assert 0 <= row["pixel_agreement_min"] <= row["pixel_agreement"] <= 1
    assert 0 <= row["miou_min"] <= row["miou"] <= 1


@pytest.mark.slow
def test_bench_times_the_fast_preset_beside_the_full_method(tiny_model_dir, tmp_path):
    out = tmp_path / "bench.json"
    completed = subprocess.run(
        [sys.executable, "-m", "segmentor", "bench", "--model", str(tiny_model_dir), "--preset", "fast", "--k", "4",
         "--repeats", "1", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr
    report = json.loads(out.read_text())
    # The fast preset's batched and reference implementations agree, and it is compared with the full method.
    assert report["agreement_with_reference"] >= 0.995
    # One step after t_m: the feature pass, the reference run's step and one step per modulated run.
    assert report["unet_sample_passes_per_image"] == 2 + report["vae_decodes_per_image"]
    vs_paper = report["vs_paper"]
    assert vs_paper["flop_ratio"] <= 0.25 and vs_paper["time_ratio"] > 0
    assert 0 <= vs_paper["pixel_agreement"] <= 1 and 0 <= vs_paper["miou"] <= 1
