"""Fixtures shared by every test folder: a tiny random SD-layout model built offline, once per run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Nothing in the tests may reach a model hub; this makes a stray hub id fail at once instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A diffusers folder holding a random SD-layout model (64 px native, 8x8 ``up_blocks.1``), seed 0."""
    from segmentor.toy.architecture import TINY_TEST_SPEC, build_model_folder

    return build_model_folder(TINY_TEST_SPEC, tmp_path_factory.mktemp("tiny-model"), seed=0)
