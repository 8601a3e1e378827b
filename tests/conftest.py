"""Fixtures shared by every test folder: a hermetic home for every test, and a tiny random SD-layout model.

A hermetic suite: no test reads or writes the real home of whoever runs it (their label memory, their
segmentation cache, their Hugging Face cache). Every variable that names such a place (:data:`HOME_VARIABLES`)
points into a temporary home: one for the whole session from the moment this file loads (so that what a
library computes at import, and what session fixtures start, lands there), and a fresh one for each test
(so that no test sees what an earlier test, or an earlier run, left behind). Subprocesses a test starts
(gunicorn, the CLI, Label Studio, Chromium) inherit the environment, and with it the temporary home.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# Nothing in the tests may reach a model hub; this makes a stray hub id fail at once instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

# Each variable and where it points inside a temporary home. HOME and the XDG base folders move every default
# "~/..." at once (ours: CACHE_DIR, DATA_DIR; pip's, Chromium's, Label Studio's, torch's); the others are set
# too because a value the user exported (say DATA_DIR=their real folder) would otherwise win over HOME.
HOME_VARIABLES = {
    "HOME": ".",
    "XDG_CACHE_HOME": ".cache",
    "XDG_DATA_HOME": ".local/share",
    "XDG_CONFIG_HOME": ".config",
    "XDG_STATE_HOME": ".local/state",
    "CACHE_DIR": ".cache/emerdiff-ml-backend",
    "DATA_DIR": ".local/share/emerdiff-ml-backend",
    "HF_HOME": ".cache/huggingface",
    "HF_HUB_CACHE": ".cache/huggingface/hub",
    "TORCH_HOME": ".cache/torch",
}
# Older names that would override HF_HOME/HF_HUB_CACHE with a real folder; removed.
STALE_VARIABLES = ("HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE", "HF_DATASETS_CACHE", "DIFFUSERS_CACHE")

SESSION_HOME_PREFIX = "emerdiff-tests-home-"
_session_home: Path | None = None
_saved_environment: dict[str, str | None] = {}


def home_environment(home: Path) -> dict[str, str]:
    """The value of each of :data:`HOME_VARIABLES` for a temporary ``home``."""
    return {name: str((home / relative).resolve()) for name, relative in HOME_VARIABLES.items()}


def _point_home_at(home: Path) -> None:
    for name, value in home_environment(home).items():
        _saved_environment.setdefault(name, os.environ.get(name))
        os.environ[name] = value
    for name in STALE_VARIABLES:
        _saved_environment.setdefault(name, os.environ.get(name))
        os.environ.pop(name, None)


# At import, not in a fixture: pytest loads this file before it imports any test module, so even defaults
# computed at import (huggingface_hub reads HF_HOME then) point into the session's home.
_session_home = Path(tempfile.mkdtemp(prefix=SESSION_HOME_PREFIX))
_point_home_at(_session_home)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Give the environment back and remove the session's home."""
    for name, value in _saved_environment.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    if _session_home is not None:
        shutil.rmtree(_session_home, ignore_errors=True)


@pytest.fixture(autouse=True)
def hermetic_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """This test's own empty home: every variable of :data:`HOME_VARIABLES` points into it.

    Its own folder, not ``tmp_path``: tests that list ``tmp_path`` find only what they put there.
    """
    home = tmp_path_factory.mktemp("home")
    for name, value in home_environment(home).items():
        monkeypatch.setenv(name, value)
    for name in STALE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    yield home


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A diffusers folder holding a random SD-layout model (64 px native, 8x8 ``up_blocks.1``), seed 0."""
    from segmentor.toy.architecture import TINY_TEST_SPEC, build_model_folder

    return build_model_folder(TINY_TEST_SPEC, tmp_path_factory.mktemp("tiny-model"), seed=0)
