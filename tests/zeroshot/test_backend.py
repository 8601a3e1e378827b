"""Zero-shot labels through the backend: /setup, /predict, caches, versions, and zero-shot off unchanged."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ml_backend.core.label_config import BACKGROUND_WORDS
from ml_backend.core.settings import Settings
from ml_backend.preannotate.workers import PredictionWorker
from ml_backend.service.app import create_app
from segmentor import ModelLoadError, load_model
from segmentor.doctor import clip_line
from segmentor.zeroshot import BUNDLED_CLIP_DIR
from segmentor.zeroshot.memory import clip_memory
from tests.backend.support import NUM_SEGMENTS, png_bytes
from tests.zeroshot.answers import CONFIGS, SAVED, answers
from tests.zeroshot.tiny_clip import build_tiny_clip

SCENE = "/data/local-files/?d=images/scene0.png"
CONFIG = """<View><Image name="image" value="$image"/>
  <PolygonLabels name="poly" toName="image"{attributes}>
    <Label value="Red" emerdiff-prompt="red"/><Label value="Blue" emerdiff-prompt="blue, navy"/>
    <Label value="Background"/>
  </PolygonLabels></View>"""


@pytest.fixture(scope="module")
def diffusion(tiny_model_dir):
    return load_model(str(tiny_model_dir))


@pytest.fixture
def make_app(tmp_path: Path, tiny_model_dir, tiny_clip_dir, diffusion):
    images = tmp_path / "documents" / "images"
    images.mkdir(parents=True)
    for seed in range(2):
        (images / f"scene{seed}.png").write_bytes(png_bytes(seed))
    base = Settings(model=str(tiny_model_dir), num_segments=NUM_SEGMENTS, cache_dir=tmp_path / "cache",
                    data_dir=tmp_path / "data", local_files_document_root=(tmp_path / "documents").resolve(),
                    fetch_timeout=5.0, clip_model=str(tiny_clip_dir))

    def make(**overrides: object):
        return create_app(dataclasses.replace(base, **overrides), model=diffusion).test_client()

    return make


def _predict(client, config: str = CONFIG.format(attributes=""), image: str = SCENE) -> dict:
    response = client.post("/predict", json={"tasks": [{"id": 1, "data": {"image": image}}], "label_config": config,
                                             "project": "3.1"})
    assert response.status_code == 200, response.json
    [result] = response.json["results"]
    assert "result" in result, result
    return result


def _setup(client, config: str) -> str:
    response = client.post("/setup", json={"project": "3.1", "schema": config})
    assert response.status_code == 200, response.json
    return response.json["model_version"]


def _counts(client) -> dict[str, float]:
    return client.application.extensions["emerdiff"].metrics.snapshot().get("zero_shot", {})


def _segmentations(client) -> float:
    return client.application.extensions["emerdiff"].metrics.snapshot()["cache"].get("misses", 0)


@pytest.mark.slow
def test_zero_shot_off_answers_are_byte_identical_to_the_saved_ones(tmp_path, tiny_model_dir, tiny_clip_dir):
    saved = json.loads(SAVED.read_text())
    assert answers(tmp_path / "unset", tiny_model_dir) == saved
    # CLIP loaded but every control says emerdiff-zero-shot="false": the same bytes.
    off = {name: config.replace('toName="image"', 'toName="image" emerdiff-zero-shot="false"')
           for name, config in CONFIGS.items()}
    assert answers(tmp_path / "off", tiny_model_dir, off, clip_model=str(tiny_clip_dir)) == saved


def test_first_prediction_labels_every_region_with_a_label_and_its_probability(make_app):
    client = make_app()
    result = _predict(client)
    labels = {region["value"]["polygonlabels"][0] for region in result["result"]}
    assert labels <= {"Red", "Blue", "Background"} and result["result"]
    scores = [region["score"] for region in result["result"]]
    assert all(0.0 < score <= 1.0 for score in scores)
    assert _counts(client)["grid_misses"] == 1
    assert _counts(client)["words_encoded"] == 3 + len(BACKGROUND_WORDS)  # red, blue, navy + the background's
    # Below the threshold every segment gets the background label; at 0 none falls back to it by threshold.
    everything = _predict(client, CONFIG.format(attributes=' emerdiff-zero-shot-threshold="1"'))
    assert {region["value"]["polygonlabels"][0] for region in everything["result"]} == {"Background"}
    assert _counts(client)["grid_misses"] == 1  # the same grid, from the cache


def test_cached_answers_equal_fresh_ones_and_changing_clip_never_resegments(make_app, tmp_path):
    fresh = _predict(make_app())
    again = make_app()  # a new process: grid and words from disk
    assert _predict(again) == fresh
    assert _counts(again).get("grid_misses", 0) == 0 and _counts(again).get("words_encoded", 0) == 0
    assert _counts(again)["grid_hits"] == 1 and _segmentations(again) == 0
    other = make_app(clip_model=str(build_tiny_clip(tmp_path / "other-clip", seed=1)))
    changed = _predict(other)
    assert _segmentations(other) == 0 and _counts(other)["grid_misses"] == 1  # EmerDiff from the cache
    assert changed["model_version"] != fresh["model_version"]
    assert [r["value"]["points"] for r in changed["result"]] == [r["value"]["points"] for r in fresh["result"]]


def test_setup_never_encodes_text_even_with_100_labels(make_app):
    client = make_app()
    labels = "".join(f'<Label value="Class{i}" emerdiff-prompt="thing {i}"/>' for i in range(100))
    config = f'<View><Image name="image" value="$image"/><PolygonLabels name="poly" toName="image">{labels}' \
             "</PolygonLabels></View>"
    assert _setup(client, config).startswith("emerdiff-")
    assert _counts(client).get("words_encoded", 0) == 0


def test_the_version_carries_model_mode_words_templates_and_thresholds(make_app):
    client = make_app()
    base = _setup(client, CONFIG.format(attributes=""))
    assert _setup(client, CONFIG.format(attributes="")) == base
    changed = {
        "prompt": _setup(client, CONFIG.format(attributes="").replace('"blue, navy"', '"blue"')),
        "threshold": _setup(client, CONFIG.format(attributes=' emerdiff-zero-shot-threshold="0.7"')),
        "off": _setup(client, CONFIG.format(attributes=' emerdiff-zero-shot="false"')),
        "mode": _setup(make_app(clip_mode="naclip"), CONFIG.format(attributes="")),
        "templates": _setup(make_app(clip_templates="plain"), CONFIG.format(attributes="")),
        "no clip": _setup(make_app(clip_model=None), CONFIG.format(attributes="")),
    }
    assert changed["off"] == changed["no clip"]  # zero-shot off: the version of a backend without CLIP
    assert len({base, *changed.values()}) == len(changed), changed


def test_predictions_follow_an_edited_prompt_from_the_caches(make_app):
    client = make_app()
    first = _predict(client)
    edited = _predict(client, CONFIG.format(attributes="").replace('"red"', '"crimson"'))
    assert edited["model_version"] != first["model_version"]
    assert _counts(client)["grid_misses"] == 1 and _segmentations(client) == 1
    assert _counts(client)["words_encoded"] == 4 + len(BACKGROUND_WORDS)  # only "crimson" was new


def test_an_unreadable_cached_grid_is_computed_again(make_app, tmp_path):
    fresh = _predict(make_app())
    [grid] = (tmp_path / "cache" / "zero-shot" / "grids").rglob("*.npy")
    grid.write_bytes(b"not a grid")
    client = make_app()
    assert _predict(client) == fresh and _counts(client)["grid_misses"] == 1
    assert np.load(grid).ndim == 3


def test_a_wrong_clip_fails_before_the_diffusion_model_loads(tmp_path):
    settings = Settings(model=str(tmp_path / "no-diffusion-model"), clip_model=str(tmp_path / "no-clip"),
                        cache_dir=tmp_path / "cache", data_dir=None)
    with pytest.raises(ModelLoadError, match="CLIP folder"):
        create_app(settings)


def test_the_whole_project_job_labels_as_predict_does(make_app):
    client = make_app()
    settings = client.application.extensions["emerdiff"].settings
    config = CONFIG.format(attributes="")
    worker = PredictionWorker(settings, config, project_id=3)
    task = {"id": 1, "data": {"image": SCENE}}
    assert worker.predict(task) == (1, _predict(client, config))


def test_doctor_reports_clips_weights_and_grid_memory(tiny_clip_dir, tiny_clip):
    line = clip_line(str(tiny_clip_dir), torch.float32)
    weights = sum(p.numel() for p in tiny_clip.model.parameters()) * 4
    assert "found in" in line and "(65 tokens)" in line  # 2 x 32 px at patch 8: 8 x 8 patches + CLS
    assert clip_memory(tiny_clip_dir, torch.float32)["weights"] == weights
    assert f"weights {weights / 2**20:.1f} MiB" in line


def test_doctor_finds_the_bundled_clip():
    """`python -m segmentor doctor --clip bundled` (docs/SEGMENTOR.md): the shipped CLIP, read from its config."""
    line = clip_line("bundled", torch.float32)
    assert f"found in {BUNDLED_CLIP_DIR}" in line and "memory (its config)" in line
