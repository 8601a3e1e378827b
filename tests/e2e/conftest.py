"""Session fixtures of the end-to-end tests: a real Label Studio (own venv), our backend beside it, scenes.

Timings of the expensive steps are printed in pytest's summary ("e2e timings"), for the docs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from label_studio_sdk import LabelStudio

from ml_backend.demo.backend import REPO_ROOT, BackendServer, running_backend
from ml_backend.demo.label_studio import LabelStudioServer, ensure_installed, running_label_studio
from segmentor import EmerDiffConfig, EmerDiffSegmentor, load_model
from segmentor.loading import BUNDLED_MODEL_DIR
from segmentor.toy.scenes import write_scenes
from tests.e2e.browser import start_chromium

LABEL_STUDIO_VENV = REPO_ROOT / ".venv-ls"
# Few, small segments keep the run short; the same values go to the backend and the in-process segmentor.
NUM_SEGMENTS, SEED, MIN_AREA = 4, 0, 10
BACKEND_SETTINGS = {
    "EMERDIFF_DEVICE": "cpu",
    "EMERDIFF_NUM_SEGMENTS": str(NUM_SEGMENTS),
    "EMERDIFF_SEED": str(SEED),
    "EMERDIFF_MIN_AREA": str(MIN_AREA),
}
# Two scenes imported as uploads, two through local storage; distinct seeds give distinct file names.
UPLOAD_SEED, LOCAL_SEED, SCENES_PER_SOURCE = 300, 400, 2
LOCAL_FOLDER = "scenes"

TIMINGS: dict[str, float] = {}


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if TIMINGS:
        summary = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in TIMINGS.items())
        terminalreporter.write_line(f"e2e timings: {summary}")


@pytest.fixture(scope="session")
def document_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """LOCAL_FILES_DOCUMENT_ROOT of both Label Studio and the backend, as in docker-compose.yml."""
    return tmp_path_factory.mktemp("document-root")


@pytest.fixture(scope="session")
def upload_scenes(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_scenes(tmp_path_factory.mktemp("uploads"), SCENES_PER_SOURCE, UPLOAD_SEED)


@pytest.fixture(scope="session")
def local_scenes(document_root: Path) -> list[Path]:
    return write_scenes(document_root / LOCAL_FOLDER, SCENES_PER_SOURCE, LOCAL_SEED)


@pytest.fixture(scope="session")
def label_studio(
    tmp_path_factory: pytest.TempPathFactory, document_root: Path
) -> Iterator[LabelStudioServer]:
    TIMINGS["Label Studio install"] = ensure_installed(LABEL_STUDIO_VENV)
    work_dir = tmp_path_factory.mktemp("label-studio")
    with running_label_studio(LABEL_STUDIO_VENV, work_dir=work_dir, document_root=document_root) as server:
        TIMINGS["Label Studio start"] = server.start_seconds
        yield server


@pytest.fixture(scope="session")
def ls_client(label_studio: LabelStudioServer) -> LabelStudio:
    return LabelStudio(base_url=label_studio.url, api_key=label_studio.token)


@pytest.fixture(scope="session")
def model_reference(request: pytest.FixtureRequest) -> str:
    """The bundled trained model when it is in the checkout, else the tiny random test model."""
    if (BUNDLED_MODEL_DIR / "model_index.json").exists():
        return "bundled"
    return str(request.getfixturevalue("tiny_model_dir"))


@pytest.fixture(scope="session")
def backend(
    label_studio: LabelStudioServer,
    model_reference: str,
    document_root: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[BackendServer]:
    work_dir = tmp_path_factory.mktemp("backend")
    settings = BACKEND_SETTINGS | {
        "EMERDIFF_MODEL": model_reference,
        "LABEL_STUDIO_URL": label_studio.url,
        "LABEL_STUDIO_API_KEY": label_studio.token,
        "LOCAL_FILES_DOCUMENT_ROOT": str(document_root),
        "CACHE_DIR": str(work_dir / "cache"),
        "DATA_DIR": str(work_dir / "data"),  # the label memory (label learning), never the user's home
    }
    with running_backend(settings, log_path=work_dir / "backend.log") as server:
        TIMINGS["backend start"] = server.start_seconds
        yield server


@pytest.fixture(scope="session")
def reference_segmentor(model_reference: str) -> EmerDiffSegmentor:
    """The segmentor in this process, with the model and settings the backend runs with."""
    config = EmerDiffConfig(num_segments=NUM_SEGMENTS, seed=SEED, min_segment_area=MIN_AREA, device="cpu")
    return EmerDiffSegmentor(load_model(model_reference, device="cpu"), config)


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    """Debian's headless Chromium driven by selenium (tests/e2e/browser.py), one per session."""
    driver = start_chromium()
    try:
        yield driver
    finally:
        driver.quit()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[pytest.TestReport]:
    """Each test's report on its item, so a fixture can tell a failed test (and keep its page)."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
