"""Fixtures of the backend tests: the tiny random model loaded once, apps built around it, servers."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from ml_backend.core.settings import Settings
from ml_backend.service.app import create_app
from segmentor import DiffusionModel, load_model
from tests.backend.servers import FakeLabelStudio, FakeServer
from tests.backend.support import NUM_SEGMENTS, png_bytes


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir: Path) -> DiffusionModel:
    return load_model(str(tiny_model_dir))


@pytest.fixture(scope="session")
def shared_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the tests that are not about caching, so each image is segmented once per run."""
    return tmp_path_factory.mktemp("shared-cache")


@pytest.fixture
def document_root(tmp_path: Path) -> Path:
    root = tmp_path / "documents"
    (root / "images").mkdir(parents=True)
    for seed in range(3):
        (root / "images" / f"scene{seed}.png").write_bytes(png_bytes(seed))
    return root


@pytest.fixture
def make_settings(tiny_model_dir: Path, shared_cache_dir: Path) -> Callable[..., Settings]:
    base = Settings(
        model=str(tiny_model_dir), num_segments=NUM_SEGMENTS, cache_dir=shared_cache_dir, fetch_timeout=5.0,
        # A slow machine must never turn a test's prediction into a deferred one (tests/backend/test_selection.py).
        predict_budget_seconds=3600.0,
    )

    def make(**overrides: object) -> Settings:
        return dataclasses.replace(base, **overrides)

    return make


@pytest.fixture
def make_client(
    make_settings: Callable[..., Settings], tiny_model: DiffusionModel
) -> Callable[..., FlaskClient]:
    """A test client of a fresh app around the session's model; keyword arguments override settings."""

    def make(**overrides: object) -> FlaskClient:
        return create_app(make_settings(**overrides), model=tiny_model).test_client()

    return make


@pytest.fixture
def label_studio() -> Iterator[FakeLabelStudio]:
    server = FakeLabelStudio().start()
    yield server
    server.stop()


@pytest.fixture
def file_host() -> Iterator[FakeServer]:
    server = FakeServer().start()
    yield server
    server.stop()
