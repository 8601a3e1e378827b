from __future__ import annotations

import pytest

from segmentor import DiffusionModel, load_model


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir) -> DiffusionModel:
    return load_model(str(tiny_model_dir))
