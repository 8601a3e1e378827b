"""Where the Docker tests keep their per-machine cache: in the checkout, made by whichever step needs it first.

Fast and engine-free: the failure these guard against (a FileNotFoundError for a cache folder that only
the path starting its own dockerd made) hit every Docker test at setup on a machine whose engine already ran.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.docker import engine


def test_the_cache_lies_in_the_checkouts_ignored_folder_never_in_a_home() -> None:
    env = {name: value for name, value in os.environ.items() if name != "EMERDIFF_DOCKER_CACHE"}
    printed = subprocess.run([sys.executable, "-c", "from tests.docker.engine import CACHE; print(CACHE)"],
                             cwd=engine.REPO_ROOT, env=env, capture_output=True, text=True, timeout=120, check=True)
    cache = Path(printed.stdout.strip())
    assert cache == engine.REPO_ROOT.resolve() / ".cache" / "emerdiff-docker"
    assert not cache.is_relative_to(Path.home()) and not cache.is_relative_to(engine._account_home())
    assert "/.cache/" in (engine.REPO_ROOT / ".gitignore").read_text().splitlines(), "git would see the cache"


def test_each_step_makes_the_cache_folder_it_needs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A machine that never ran the tests, whose engine was already running: no step before made the folder.
    monkeypatch.setattr(engine, "CACHE", tmp_path / "never-made" / "emerdiff-docker")
    with engine.bootstrap_folder() as root:  # the base image's first step
        assert Path(root).parent == engine.CACHE and Path(root).is_dir()
    assert engine.cache_dir().is_dir()
