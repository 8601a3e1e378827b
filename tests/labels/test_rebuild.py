"""Rebuilding a project's label memory through Label Studio's API (``memory rebuild``, "Start Training"),
quickly: a stub Label Studio (tests/preannotate's, serving annotated tasks and presigned cloud images),
the bundled model, real SQLite. Annotations edited while the backend was down are learnt again, deleted
ones forgotten, unchanged ones skipped; a cloud-storage image (s3://) is read through Label Studio's
presign endpoint, and one that cannot be read fails alone."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from ml_backend.__main__ import main
from ml_backend.labels.memory import FILE_NAME, LabelMemory
from tests.labels.support import CONFIG, NUM_SEGMENTS, largest_segments, predict, relabelled, task
from tests.preannotate.stub_label_studio import TOKEN, StubState, running_stub

PROJECT = 1  # the stub's project
CLOUD_URI = "s3://bucket/scenes/scene303.png"


def annotation(annotation_id: int, prediction: dict, labels: dict[int, str], **fields: object) -> dict:
    """An annotation as Label Studio's task list carries it: predicted regions accepted with these labels."""
    return {"id": annotation_id, "result": relabelled(prediction, labels), "was_cancelled": False,
            "ground_truth": False, "project": PROJECT, **fields}


@pytest.fixture
def predictions(make_app: Callable[..., FlaskClient]) -> dict[int, dict]:
    """Scene seed -> the backend's prediction for it (its regions are what annotators accept)."""
    seeds = (301, 302, 303)
    return dict(zip(seeds, predict(make_app(), [task(seed) for seed in seeds]), strict=True))


@pytest.fixture
def state(document_root: Path) -> StubState:
    """Three tasks: two on local files, one on S3 (presigned by the stub, which holds its bytes)."""
    return StubState(
        label_config=CONFIG,
        tasks={1: task(301)["data"], 2: task(302)["data"], 3: {"image": CLOUD_URI}},
        cloud_objects={CLOUD_URI: (document_root / "scene303.png").read_bytes()},
    )


@pytest.fixture
def stub_url(state: StubState) -> Iterator[str]:
    with running_stub(state) as url:
        yield url


@pytest.fixture
def rebuild(stub_url: str, document_root: Path, cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """``python -m ml_backend memory rebuild`` against the stub, in this process; its JSON report."""
    for name in [name for name in os.environ if name.startswith(("EMERDIFF_", "LABEL_STUDIO_"))]:
        monkeypatch.delenv(name)
    settings = {"EMERDIFF_MODEL": "bundled", "EMERDIFF_DEVICE": "cpu", "EMERDIFF_NUM_SEGMENTS": str(NUM_SEGMENTS),
                "CACHE_DIR": str(cache_dir), "DATA_DIR": str(tmp_path / "rebuilt"),
                "LOCAL_FILES_DOCUMENT_ROOT": str(document_root.resolve()), "LABEL_STUDIO_API_KEY": TOKEN}
    for name, value in settings.items():
        monkeypatch.setenv(name, value)

    def run(capsys: pytest.CaptureFixture, expected_status: int = 0) -> dict:
        capsys.readouterr()
        assert main(["memory", "rebuild", "--project", str(PROJECT), "--url", stub_url]) == expected_status
        report = json.loads(capsys.readouterr().out)
        assert report.pop("project") == PROJECT
        return report

    return run


def memory(tmp_path: Path) -> LabelMemory:
    return LabelMemory(tmp_path / "rebuilt" / FILE_NAME)


def test_rebuild_learns_edits_forgets_deletions_and_skips_the_unchanged(
    state: StubState, predictions: dict[int, dict], rebuild, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    red, blue = largest_segments(predictions[301], 2)
    (green,) = largest_segments(predictions[302], 1)
    (other,) = largest_segments(predictions[303], 1)
    state.annotations = {1: [annotation(101, predictions[301], {red: "Red", blue: "Blue"})],
                         2: [annotation(102, predictions[302], {green: "Green"})],
                         3: [annotation(103, predictions[303], {other: "Blue"})]}
    assert rebuild(capsys) == {"learnt": 3, "unchanged": 0, "cancelled": 0, "failed": 0, "forgotten": 0}
    assert set(memory(tmp_path).sources(PROJECT)) == {101, 102, 103}
    first = memory(tmp_path).counts(PROJECT)
    assert set(first) == {"Red", "Blue", "Green"}
    # The cloud image was read through Label Studio's presign endpoint (then the storage it redirected to).
    assert ("GET", "/tasks/3/presign/") in state.log
    assert any(path.startswith("/fake-storage/") for _, path in state.log)

    # While the backend was down: 101 relabelled, 102 deleted, 103 untouched.
    state.annotations[1] = [annotation(101, predictions[301], {red: "Green"})]
    del state.annotations[2]
    assert rebuild(capsys) == {"learnt": 1, "unchanged": 1, "cancelled": 0, "failed": 0, "forgotten": 1}
    assert set(memory(tmp_path).sources(PROJECT)) == {101, 103}
    second = memory(tmp_path).counts(PROJECT)
    assert second["Green"] == first["Red"]  # the red segment's examples, relabelled; 102's green ones gone
    assert set(second) == {"Green", "Blue"} and second["Blue"] < first["Blue"]

    # Nothing changed since: nothing learnt again.
    assert rebuild(capsys) == {"learnt": 0, "unchanged": 2, "cancelled": 0, "failed": 0, "forgotten": 0}
    # And the memory is the one a rebuild from nothing makes.
    memory(tmp_path).clear(PROJECT)
    assert rebuild(capsys) == {"learnt": 2, "unchanged": 0, "cancelled": 0, "failed": 0, "forgotten": 0}
    assert memory(tmp_path).counts(PROJECT) == second


def test_a_task_whose_image_changed_is_learnt_again(
    state: StubState, predictions: dict[int, dict], rebuild, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (red,) = largest_segments(predictions[301], 1)
    state.annotations = {1: [annotation(101, predictions[301], {red: "Red"})]}
    assert rebuild(capsys)["learnt"] == 1
    state.tasks[1] = task(302)["data"]  # the same regions, now on another image
    assert rebuild(capsys) == {"learnt": 1, "unchanged": 0, "cancelled": 0, "failed": 0, "forgotten": 0}


def test_a_cancelled_annotation_teaches_nothing(
    state: StubState, predictions: dict[int, dict], rebuild, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (red,) = largest_segments(predictions[301], 1)
    state.annotations = {1: [annotation(101, predictions[301], {red: "Red"}, was_cancelled=True)]}
    assert rebuild(capsys) == {"learnt": 0, "unchanged": 0, "cancelled": 1, "failed": 0, "forgotten": 0}
    assert memory(tmp_path).counts(PROJECT) == {}


def test_a_cloud_image_that_cannot_be_presigned_fails_alone(
    state: StubState, predictions: dict[int, dict], rebuild, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (red,) = largest_segments(predictions[301], 1)
    (other,) = largest_segments(predictions[303], 1)
    state.cloud_objects.clear()  # the presign endpoint answers 404
    state.annotations = {1: [annotation(101, predictions[301], {red: "Red"})],
                         3: [annotation(103, predictions[303], {other: "Blue"})]}
    assert rebuild(capsys, expected_status=1) == {"learnt": 1, "unchanged": 0, "cancelled": 0, "failed": 1,
                                                  "forgotten": 0}
    assert set(memory(tmp_path).sources(PROJECT)) == {101}


def test_an_unknown_project_or_key_is_a_clear_error(state: StubState, rebuild, stub_url: str,
                                                    capsys: pytest.CaptureFixture,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(["memory", "rebuild", "--project", "2", "--url", stub_url]) == 2
    assert "no project 2" in capsys.readouterr().err
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "wrong")
    assert main(["memory", "rebuild", "--project", str(PROJECT), "--url", stub_url]) == 2
    err = capsys.readouterr().err
    assert "HTTP 401" in err and "Traceback" not in err


@pytest.mark.parametrize("failure", ["endless pages", "page 2 answers 503"])
def test_a_listing_that_fails_forgets_nothing(state: StubState, predictions: dict[int, dict], rebuild, stub_url: str,
                                              tmp_path: Path, capsys: pytest.CaptureFixture,
                                              monkeypatch: pytest.MonkeyPatch, failure: str) -> None:
    """A partial listing must not read as deleted annotations: the rebuild stops before forgetting."""
    (red,) = largest_segments(predictions[301], 1)
    (green,) = largest_segments(predictions[302], 1)
    state.annotations = {1: [annotation(101, predictions[301], {red: "Red"})],
                         2: [annotation(102, predictions[302], {green: "Green"})]}
    assert rebuild(capsys)["learnt"] == 2
    del state.annotations[1]  # deleted while the backend was down...
    if failure == "endless pages":
        state.repeat_first_page = True  # ...and Label Studio answers page 1 to every page, without a total
    else:
        monkeypatch.setattr("ml_backend.labels.sync.TASK_PAGE_SIZE", 1)  # ...and the second page fails
        state.annotations[3] = [annotation(103, predictions[303], {green: "Green"})]
        state.fail_task_pages = {2: 503}
    capsys.readouterr()
    assert main(["memory", "rebuild", "--project", str(PROJECT), "--url", stub_url]) == 75
    err = capsys.readouterr().err
    assert "Traceback" not in err and "run the same command again" in err
    assert set(memory(tmp_path).sources(PROJECT)) == {101, 102}  # 101 not forgotten on a partial listing


def test_start_training_rebuilds_in_the_background(state: StubState, predictions: dict[int, dict], stub_url: str,
                                                   make_app: Callable[..., FlaskClient], tmp_path: Path) -> None:
    """Label Studio's "Start Training" button: answered at once, the project rebuilt behind it (cloud image too)."""
    (red,) = largest_segments(predictions[301], 1)
    (other,) = largest_segments(predictions[303], 1)
    state.annotations = {1: [annotation(101, predictions[301], {red: "Red"})],
                         3: [annotation(103, predictions[303], {other: "Blue"})]}
    client = make_app(label_studio_url=stub_url, label_studio_api_key=TOKEN)
    response = client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": PROJECT}})
    assert response.status_code < 300, response.json
    learnt = LabelMemory(tmp_path / "data" / FILE_NAME)
    for _ in range(1200):  # a bound, not a timing: the background rebuild ends in seconds
        if set(learnt.sources(PROJECT)) == {101, 103}:
            break
        time.sleep(0.1)
    assert set(learnt.sources(PROJECT)) == {101, 103}
    assert ("GET", "/tasks/3/presign/") in state.log
