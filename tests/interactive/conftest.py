"""Fixtures of the smart-tool tests: the tiny random model once per session, scenes in a document root."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from ml_backend.core.settings import Settings
from ml_backend.service.app import create_app
from segmentor import DiffusionModel, load_model
from segmentor.toy.scenes import write_scenes

NUM_SEGMENTS = 4


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir: Path) -> DiffusionModel:
    return load_model(str(tiny_model_dir))


@pytest.fixture(scope="session")
def scene_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("documents")
    write_scenes(root / "scenes", 1, seed=11)
    return root


@pytest.fixture
def make_client(
    tiny_model_dir: Path, tiny_model: DiffusionModel, scene_root: Path, tmp_path: Path
) -> Callable[..., FlaskClient]:
    """A fresh app (own cache) around the session's model; keyword arguments override settings."""

    def make(**overrides: object) -> FlaskClient:
        settings = Settings(
            model=str(tiny_model_dir), num_segments=NUM_SEGMENTS, min_area=1, cache_dir=tmp_path / "cache",
            data_dir=None, local_files_document_root=scene_root.resolve(),
        )
        for key, value in overrides.items():
            settings = settings.__class__(**{**settings.__dict__, key: value})
        return create_app(settings, model=tiny_model).test_client()

    return make
