"""`python -m segmentor segment|bench|flops` end to end on the tiny model, run as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from converters.labelstudio import region_to_mask, validate_regions
from tests.segmentor.conftest import scene_image


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "segmentor", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600, check=False)


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for index, shape in enumerate([(64, 64), (48, 90)]):
        cv2.imwrite(str(folder / f"scene{index}.png"), scene_image(index, *shape)[:, :, ::-1])
    (folder / "broken.png").write_bytes(b"not a png at all")
    return folder


@pytest.mark.slow
def test_segment_writes_label_maps_overlays_coco_and_tasks(tiny_model_dir, image_folder, tmp_path):
    out = tmp_path / "out"
    images = sorted(image_folder.glob("*.png"))
    completed = _run("segment", *map(str, images), "--model", str(tiny_model_dir), "--out", str(out), "--k", "4",
                     "--image-url-prefix", "/data/local-files/?d=", "--document-root", str(tmp_path))
    # One broken file fails alone: the others are written and the exit status says something failed.
    assert completed.returncode == 1, completed.stderr
    assert "broken.png: FAILED" in completed.stderr and "not an image file" in completed.stderr
    assert "scene0.png: " in completed.stderr and " segments, " in completed.stderr

    labels = cv2.imread(str(out / "scene1.labels.png"), cv2.IMREAD_UNCHANGED)
    assert labels.shape == (48, 90) and labels.dtype == np.uint8
    assert cv2.imread(str(out / "scene1.overlay.png")).shape == (48, 90, 3)

    coco = COCO(str(out / "coco.json"))
    assert [img["file_name"] for img in coco.dataset["images"]] == ["scene0.png", "scene1.png"]
    for image in coco.dataset["images"]:
        label_map = cv2.imread(str(out / image["file_name"].replace(".png", ".labels.png")), cv2.IMREAD_UNCHANGED)
        annotations = coco.loadAnns(coco.getAnnIds(imgIds=image["id"]))
        assert len(annotations) == len(np.unique(label_map))
        assert sum(a["area"] for a in annotations) == label_map.size

    tasks = json.loads((out / "predictions.json").read_text())
    config = (out / "label_config.xml").read_text()
    assert [t["data"]["image"] for t in tasks] == ["/data/local-files/?d=images/scene0.png",
                                                   "/data/local-files/?d=images/scene1.png"]
    for task, name in zip(tasks, ["scene0", "scene1"], strict=True):
        prediction = task["predictions"][0]
        assert prediction["model_version"].startswith("emerdiff-")
        validate_regions(prediction["result"], config)
        label_map = cv2.imread(str(out / f"{name}.labels.png"), cv2.IMREAD_UNCHANGED)
        covered = np.zeros(label_map.shape, dtype=bool)
        for region in prediction["result"]:
            covered |= region_to_mask(region)
        assert covered.mean() > 0.9


def test_colliding_stems_are_refused(tiny_model_dir, tmp_path):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        cv2.imwrite(str(tmp_path / sub / "same.png"), scene_image(0))
    completed = _run("segment", str(tmp_path / "a" / "same.png"), str(tmp_path / "b" / "same.png"),
                     "--model", str(tiny_model_dir), "--out", str(tmp_path / "out"))
    assert completed.returncode != 0 and "would write the same outputs" in completed.stderr


def test_missing_model_is_a_one_line_error(tmp_path):
    completed = _run("segment", str(tmp_path / "x.png"), "--model", str(tmp_path / "nope"), "--out", str(tmp_path))
    assert completed.returncode == 2
    assert completed.stderr.strip().startswith("error: model folder") and "Traceback" not in completed.stderr


@pytest.mark.slow
def test_bench_reports_ratios_and_agreement(tiny_model_dir, tmp_path):
    report_path = tmp_path / "bench.json"
    completed = _run("bench", "--model", str(tiny_model_dir), "--k", "4", "--repeats", "1", "--out", str(report_path))
    assert completed.returncode == 0, completed.stderr
    report = json.loads(report_path.read_text())
    for key in ("speedup_vs_reference", "overhead_vs_floor", "agreement_with_reference", "stages_batched"):
        assert key in report
    assert report["agreement_with_reference"] >= 0.995
    assert report["unet_sample_passes_per_image"] == 1 + 15 * (1 + report["vae_decodes_per_image"])
    assert report["flops"]["per_image"] > report["flops"]["unet_pass"] > 0


def test_flops_counts_the_passes_of_k_masks(tiny_model_dir):
    completed = _run("flops", "--model", str(tiny_model_dir), "--k", "3")
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout)
    assert report["counters"] == {"unet_sample_passes": 1 + 15 * 7, "vae_decodes": 6, "vae_encodes": 1}
    # Counted on the real code path: more than the bare passes (blur, difference maps), less than the
    # passes with every Q/K projection (the modulated runs reuse the reference run's).
    bare = report["calls"]["unet_pass"] * 106 + report["calls"]["vae_decode"] * 6
    assert 0.9 * bare < report["flops"]["total"] < 1.1 * bare + report["flops"]["encode"]
    assert report["paper"]["flops"] == report["flops"] and report["ratio_to_paper"] == 1.0
