"""Fixtures of the converter tests: the Label Studio project fixture (label config, export, source masks,
its image files)."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

DATA = Path(__file__).with_name("data")


def load_export_builder() -> ModuleType:
    """``data/make_export.py`` as a module (it is a script, not a package module)."""
    spec = importlib.util.spec_from_file_location("make_export", DATA / "make_export.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def export_builder() -> ModuleType:
    """``tests/converters/data/make_export.py``: ``build_export()``, ``source_masks()``, the polygons."""
    return load_export_builder()


@pytest.fixture(scope="session")
def label_config() -> str:
    return (DATA / "label_config.xml").read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def export_path() -> Path:
    return DATA / "export.json"


@pytest.fixture
def export(export_path: Path) -> list[dict]:
    """A fresh copy per test, so tests may break it."""
    return json.loads(export_path.read_text(encoding="utf-8"))


@dataclass(frozen=True)
class FixtureImages:
    """The fixture's image files where the export points: Label Studio's document root and media folder."""

    document_root: Path
    media_root: Path


@pytest.fixture(scope="session")
def fixture_images(export_builder: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> FixtureImages:
    folder = tmp_path_factory.mktemp("fixture-images")
    document_root, media_root = folder / "files", folder / "media"
    paths = export_builder.write_images(document_root, folder / "uploaded")
    # The export names the upload with Label Studio's random prefix, fixed by normalise().
    upload = media_root / "upload" / "1" / f"00000000-{export_builder.UPLOADED}"
    upload.parent.mkdir(parents=True)
    paths[export_builder.UPLOADED].rename(upload)
    return FixtureImages(document_root, media_root)
