"""A hermetic suite: tests never read or write the home folders of whoever runs them (tests/conftest.py).

The probes below use every default a user's home would hold (``Settings()``, the CLI and the served
backend with no CACHE_DIR/DATA_DIR) and check where it lands. The last test runs them, and a test that
once read a developer's real label memory, in a pytest of its own whose HOME is a made-up "real" home
that a backend run by hand already filled (and whose shell exports CACHE_DIR, DATA_DIR and HF_HOME into
it, as a user's might); afterwards every file and folder of that home is as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import requests

from ml_backend.core.settings import Settings
from ml_backend.demo.backend import running_backend
from ml_backend.labels.memory import FILE_NAME, LabelMemory
from segmentor.labelling import LabelExample
from tests.backend.support import POLYGON_CONFIG, png_bytes
from tests.conftest import HOME_VARIABLES, SESSION_HOME_PREFIX

REPO_ROOT = Path(__file__).resolve().parents[1]
ACCOUNT_HOME = Path(pwd.getpwuid(os.getuid()).pw_dir).resolve()
# The webhook test that once failed on a developer's machine: its project and task are in the seeded memory.
SEEDED_PROJECT, SEEDED_ANNOTATION, SEEDED_TASK = 1, 5, 3
PROBES = [
    "tests/test_hermetic.py::test_each_test_gets_an_empty_home_of_its_own",
    "tests/test_hermetic.py::test_default_settings_and_label_memory_stay_in_the_tests_home",
    "tests/test_hermetic.py::test_the_cli_with_default_folders_uses_the_tests_home",
    "tests/test_hermetic.py::test_the_served_backend_with_default_folders_writes_into_the_tests_home",
    "tests/backend/test_routes.py::test_webhook_training_events_get_201",
]


def _under(path: Path, folder: Path) -> bool:
    return Path(path).resolve().is_relative_to(folder.resolve())


def _example(label: str) -> LabelExample:
    return LabelExample("r1", "polygon", label, np.ones(4, np.float32), 10)


def test_each_test_gets_an_empty_home_of_its_own(hermetic_home: Path) -> None:
    assert list(hermetic_home.iterdir()) == []
    assert Path.home().resolve() == hermetic_home.resolve()
    for name in ("XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME", "CACHE_DIR", "DATA_DIR", "HF_HOME",
                 "HF_HUB_CACHE", "TORCH_HOME"):
        assert _under(Path(os.environ[name]), hermetic_home), name
    # What a library fixed at import (huggingface_hub reads HF_HOME then) lies in the session's temporary home.
    from huggingface_hub import constants

    assert SESSION_HOME_PREFIX in constants.HF_HUB_CACHE and not _under(Path(constants.HF_HUB_CACHE), ACCOUNT_HOME)


def test_default_settings_and_label_memory_stay_in_the_tests_home(
    hermetic_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = Settings()  # the dataclass defaults: read from HOME when built
    assert built.cache_dir == hermetic_home.resolve() / ".cache" / "emerdiff-ml-backend"
    assert built.data_dir == hermetic_home.resolve() / ".local" / "share" / "emerdiff-ml-backend"
    assert Settings.from_env().data_dir == built.data_dir  # DATA_DIR as the fixture exports it
    for name in ("CACHE_DIR", "DATA_DIR"):
        monkeypatch.delenv(name)
    from_home = Settings.from_env()
    assert (from_home.cache_dir, from_home.data_dir) == (built.cache_dir, built.data_dir)
    memory = LabelMemory(built.data_dir / FILE_NAME)
    memory.replace_annotation(SEEDED_PROJECT, SEEDED_ANNOTATION, SEEDED_TASK, [_example("Cat")], "weights", "s")
    assert (hermetic_home / ".local" / "share" / "emerdiff-ml-backend" / FILE_NAME).is_file()


def test_the_cli_with_default_folders_uses_the_tests_home(hermetic_home: Path) -> None:
    data_dir = Settings().data_dir
    LabelMemory(data_dir / FILE_NAME).replace_annotation(1, 1, 1, [_example("Dog")], "weights", "s")
    env = {name: value for name, value in os.environ.items() if name not in ("CACHE_DIR", "DATA_DIR")}
    shown = subprocess.run([sys.executable, "-m", "ml_backend", "memory", "show", "--project", "1"], cwd=REPO_ROOT,
                           env=env, capture_output=True, text=True, timeout=300, check=False)
    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)
    assert _under(Path(report["memory"]), hermetic_home)
    assert report["examples_per_label"] == {"Dog": 1}


@pytest.mark.e2e
@pytest.mark.slow
def test_the_served_backend_with_default_folders_writes_into_the_tests_home(
    hermetic_home: Path, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("CACHE_DIR", "DATA_DIR"):
        monkeypatch.delenv(name)
    (tmp_path / "documents").mkdir()
    (tmp_path / "documents" / "scene.png").write_bytes(png_bytes(seed=5))
    settings = {"EMERDIFF_MODEL": str(tiny_model_dir), "EMERDIFF_DEVICE": "cpu", "EMERDIFF_NUM_SEGMENTS": "4",
                "LOCAL_FILES_DOCUMENT_ROOT": str(tmp_path / "documents")}
    with running_backend(settings, log_path=tmp_path / "backend.log") as backend:
        task = {"id": 1, "data": {"image": "/data/local-files/?d=scene.png"}, "project": 1}
        answer = requests.post(f"{backend.url}/predict", json={"tasks": [task], "label_config": POLYGON_CONFIG},
                               timeout=300)
        assert answer.status_code == 200, answer.text
        assert answer.json()["results"][0]["result"]
        forgotten = requests.post(f"{backend.url}/webhook", timeout=60, json={
            "action": "TASKS_DELETED", "project": {"id": 1}, "tasks": [{"id": 3}]})
        assert forgotten.status_code == 201 and forgotten.json()["result"]["forgotten"] == 0
    cache = hermetic_home / ".cache" / "emerdiff-ml-backend"
    assert any(path.is_file() for path in cache.rglob("*")), "the segmentation was not cached in the default place"


def _seed_a_used_home(home: Path) -> dict[str, str]:
    """A home a backend run by hand already used: its label memory (holding what the webhook test's events
    would forget), a cached segmentation, a Hugging Face cache; and the variables its shell exports."""
    data_dir = home / ".local" / "share" / "emerdiff-ml-backend"
    memory = LabelMemory(data_dir / FILE_NAME)
    memory.replace_annotation(SEEDED_PROJECT, SEEDED_ANNOTATION, SEEDED_TASK, [_example("Cat")], "weights", "s")
    cache = home / ".cache" / "emerdiff-ml-backend"
    (cache / "ab").mkdir(parents=True)
    (cache / "ab" / "entry.npz").write_bytes(b"a cached segmentation")
    (home / ".cache" / "huggingface" / "hub").mkdir(parents=True)
    (home / ".config").mkdir()
    return {"CACHE_DIR": str(cache), "DATA_DIR": str(data_dir), "HF_HOME": str(home / ".cache" / "huggingface")}


def _snapshot(home: Path) -> dict[str, tuple]:
    """Every entry under ``home``: kind, size, modification time, and a digest of each file's bytes."""
    entries: dict[str, tuple] = {".": ("dir", home.stat().st_mtime_ns)}
    for path in sorted(home.rglob("*")):
        status = path.lstat()
        if path.is_dir():
            entries[str(path.relative_to(home))] = ("dir", status.st_mtime_ns)
        else:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            entries[str(path.relative_to(home))] = ("file", status.st_size, status.st_mtime_ns, digest)
    return entries


@pytest.mark.e2e
@pytest.mark.slow
def test_a_run_of_the_suite_leaves_a_used_home_untouched(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    exported = _seed_a_used_home(home)
    before = _snapshot(home)
    env = {name: value for name, value in os.environ.items() if name not in HOME_VARIABLES}
    env |= {"HOME": str(home), "OMP_NUM_THREADS": "1", **exported}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp", str(tmp_path / "basetemp"),
         *PROBES],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert f"{len(PROBES) + 2} passed" in done.stdout, done.stdout[-2000:]
    assert _snapshot(home) == before
