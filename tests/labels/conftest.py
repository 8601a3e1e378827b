"""Fixtures of the label-learning tests: the bundled model, colour scenes on disk, apps around them."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from ml_backend.core.settings import Settings
from ml_backend.service.app import create_app
from segmentor import DiffusionModel, load_model
from segmentor.toy.scenes import generate_scene
from tests.labels.support import NUM_SEGMENTS, SCENE_SEEDS


@pytest.fixture(scope="session")
def bundled_model() -> DiffusionModel:
    return load_model("bundled", device="cpu")


@pytest.fixture(scope="session")
def document_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Colour scenes (classes = colour families, which the bundled model's features carry) as PNG files."""
    import cv2

    root = tmp_path_factory.mktemp("documents")
    for seed in SCENE_SEEDS:
        scene = generate_scene(seed, 64, classes="colour")
        cv2.imwrite(str(root / f"scene{seed}.png"), cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR))
    return root


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One segmentation cache for the session: each scene is segmented once."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def make_app(bundled_model: DiffusionModel, document_root: Path, cache_dir: Path,
             tmp_path: Path) -> Callable[..., FlaskClient]:
    """A test client of a fresh service (a new process, as far as the service can tell)."""

    def make(**overrides: object) -> FlaskClient:
        settings = Settings(model="bundled", device="cpu", num_segments=NUM_SEGMENTS, cache_dir=cache_dir,
                            data_dir=tmp_path / "data", local_files_document_root=document_root.resolve())
        return create_app(dataclasses.replace(settings, **overrides), model=bundled_model).test_client()

    return make
