"""Fixtures of the pre-annotation job's tests: scenes under a document root, a stub Label Studio, the
job's environment (the tiny random model, CPU), and a helper that runs the job's command line."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from ml_backend.__main__ import main
from segmentor.toy.scenes import write_scenes
from tests.preannotate.stub_label_studio import TOKEN, StubState, running_stub

LABEL_CONFIG = (
    '<View><Image name="image" value="$image"/>'
    '<PolygonLabels name="outline" toName="image"><Label value="Object"/></PolygonLabels></View>'
)
SCENE_COUNT, SCENE_SEED = 6, 500
# Few segments keep each tiny-model segmentation to a fraction of a second.
JOB_SETTINGS = {"EMERDIFF_DEVICE": "cpu", "EMERDIFF_NUM_SEGMENTS": "3", "EMERDIFF_SEED": "0",
                "EMERDIFF_MIN_AREA": "4", "LOG_LEVEL": "WARNING"}


@pytest.fixture(scope="session")
def document_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("document-root")
    write_scenes(root / "scenes", SCENE_COUNT, SCENE_SEED)
    return root


@pytest.fixture
def state(document_root: Path) -> StubState:
    """Six tasks (ids 1..6), each pointing at a scene through local storage."""
    images = sorted((document_root / "scenes").glob("*.png"))
    return StubState(
        label_config=LABEL_CONFIG,
        tasks={index: {"image": f"/data/local-files/?d=scenes/{path.name}"} for index, path in enumerate(images, 1)},
    )


@pytest.fixture
def stub_url(state: StubState) -> Iterator[str]:
    with running_stub(state) as url:
        yield url


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One segmentation cache for every test: each scene is segmented once per session."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def ledger_path(tmp_path: Path) -> Path:
    return tmp_path / "ledger.sqlite3"


@pytest.fixture
def job_env(tiny_model_dir: Path, document_root: Path, cache_dir: Path) -> dict[str, str]:
    """The environment of the job (service variables only from here)."""
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("EMERDIFF_", "LABEL_STUDIO_")) and name not in ("CACHE_DIR", "LOG_LEVEL")}
    return env | JOB_SETTINGS | {
        "EMERDIFF_MODEL": str(tiny_model_dir),
        "LOCAL_FILES_DOCUMENT_ROOT": str(document_root),
        "CACHE_DIR": str(cache_dir),
    }


@pytest.fixture
def run_job(job_env: dict[str, str], stub_url: str, ledger_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Run ``python -m ml_backend preannotate`` in this process against the stub, with this test's
    own ledger; its exit status."""
    for name in [name for name in os.environ if name not in job_env]:
        monkeypatch.delenv(name)
    for name, value in job_env.items():
        monkeypatch.setenv(name, value)

    def run(*extra: str) -> int:
        return main(["preannotate", "--url", stub_url, "--api-key", TOKEN, "--project", "1",
                     "--backoff", "0.01", "--ledger", str(ledger_path), *extra])

    return run
