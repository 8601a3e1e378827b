"""The pre-annotation job against a stub Label Studio: paging, skipping, exactly-once pushes across
lost responses and interrupted runs, retries and backoff, --force, failures, unservable configs."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from ml_backend.preannotate.cli import EXIT_OK, EXIT_RESUMABLE, EXIT_TASKS_FAILED, EXIT_UNUSABLE
from ml_backend.preannotate.labelstudio import Backoff, LabelStudioApi
from tests.preannotate.stub_label_studio import TOKEN, StubState


def versions(state: StubState) -> set[str]:
    return {prediction["model_version"] for prediction in state.predictions.values()}


def per_task(state: StubState, version: str) -> dict[int, int]:
    """Task id -> how many predictions of ``version`` it holds."""
    return {task: len(state.predictions_of(task, version)) for task in state.tasks}


def ledger_rows(ledger_path: Path) -> list[tuple]:
    with sqlite3.connect(ledger_path) as db:
        return db.execute("SELECT task, state, prediction, reason, attempts FROM tasks ORDER BY task").fetchall()


def test_pages_through_every_task_in_order(state: StubState, stub_url: str) -> None:
    for task in range(7, 24):
        state.tasks[task] = {"image": "x"}
    state.add_prediction(5, "v1")
    state.add_prediction(5, "v2")
    api = LabelStudioApi(stub_url, TOKEN, Backoff(retries=0))
    records = list(api.tasks(1, "v1", view=None, task_ids=None, page_size=5))
    assert [record.id for record in records] == list(range(1, 24))
    assert sum(method == "GET" and path == "/api/tasks/" for method, path in state.log) == 5
    assert [record.predictions for record in records if record.predictions] == [(1000,)]


def test_predicts_every_task_once_then_skips_them(state: StubState, run_job, ledger_path) -> None:
    assert run_job() == EXIT_OK
    (version,) = versions(state)
    assert version.startswith("emerdiff-")
    assert per_task(state, version) == dict.fromkeys(state.tasks, 1)
    assert all(prediction["result"] for prediction in state.predictions.values())
    assert [row[1] for row in ledger_rows(ledger_path)] == ["pushed"] * len(state.tasks)
    creates = len(state.creates())

    assert run_job() == EXIT_OK
    assert len(state.creates()) == creates  # nothing pushed again
    assert per_task(state, version) == dict.fromkeys(state.tasks, 1)


def test_skips_tasks_holding_this_version_whoever_made_them(state: StubState, run_job, ledger_path) -> None:
    assert run_job("--tasks", "1") == EXIT_OK
    (version,) = versions(state)
    # Task 2 got this version from elsewhere (the backend); task 3 holds another version and an error.
    state.add_prediction(2, version)
    state.add_prediction(3, "emerdiff-000000000000")
    state.add_prediction(3, version + "-error")
    assert run_job() == EXIT_OK
    assert per_task(state, version) == dict.fromkeys(state.tasks, 1)
    assert len(state.creates()) == len(state.tasks) - 1


def test_limit_then_resume(state: StubState, run_job) -> None:
    assert run_job("--limit", "2") == EXIT_OK
    (version,) = versions(state)
    assert per_task(state, version) == {1: 1, 2: 1, 3: 0, 4: 0, 5: 0, 6: 0}
    assert run_job() == EXIT_OK
    assert per_task(state, version) == dict.fromkeys(state.tasks, 1)


def test_push_whose_answer_was_lost_is_not_repeated(state: StubState, run_job) -> None:
    state.lose_next_create_responses = 2  # stored, then 500: the retry must find it, not create another
    assert run_job() == EXIT_OK
    (version,) = versions(state)
    assert per_task(state, version) == dict.fromkeys(state.tasks, 1)


def test_push_recorded_in_label_studio_but_not_in_the_ledger_is_recovered(
    state: StubState, run_job, ledger_path
) -> None:
    """The state a kill leaves between "pushed" and "ledger updated": the ledger says pending."""
    assert run_job("--tasks", "1") == EXIT_OK
    (version,) = versions(state)
    with sqlite3.connect(ledger_path) as db:
        db.execute("UPDATE tasks SET state = 'pending', prediction = NULL WHERE task = 1")
    assert run_job() == EXIT_OK
    assert per_task(state, version) == dict.fromkeys(state.tasks, 1)
    rows = {row[0]: row for row in ledger_rows(ledger_path)}
    assert rows[1][1:3] == ("pushed", state.predictions_of(1, version)[0]["id"])


def test_transient_errors_are_retried_with_backoff(state: StubState, run_job) -> None:
    state.fail_next = [503, 502, 500]
    assert run_job("--retries", "3") == EXIT_OK
    (version,) = versions(state)
    assert per_task(state, version) == dict.fromkeys(state.tasks, 1)
    assert state.log[:4] == [("GET", "/api/projects/1/")] * 4


def test_label_studio_down_stops_cleanly_and_resumes(state: StubState, run_job, ledger_path) -> None:
    assert run_job("--limit", "2") == EXIT_OK
    (version,) = versions(state)
    state.fail_next = [503] * 3  # down at the start, through every retry
    assert run_job("--retries", "2") == EXIT_RESUMABLE
    state.refuse_creates = 503  # then down for pushes only: task 3 is segmented, its push never lands
    assert run_job("--retries", "2") == EXIT_RESUMABLE
    assert per_task(state, version) == {1: 1, 2: 1, 3: 0, 4: 0, 5: 0, 6: 0}
    assert [row[4] for row in ledger_rows(ledger_path)] == [1, 1, 0]  # the stop cost task 3 no attempt
    state.refuse_creates = None
    assert run_job() == EXIT_OK
    assert per_task(state, version) == dict.fromkeys(state.tasks, 1)


def test_backoff_doubles_up_to_its_cap() -> None:
    assert list(Backoff(retries=6, initial=1.0, maximum=10.0).delays()) == [1, 2, 4, 8, 10, 10]


def test_force_replaces_this_versions_prediction(state: StubState, run_job) -> None:
    assert run_job() == EXIT_OK
    (version,) = versions(state)
    before = {p["task"]: p["id"] for p in state.predictions.values()}
    assert run_job("--force", "--tasks", "2-3") == EXIT_OK
    after = {p["task"]: p["id"] for p in state.predictions.values()}
    assert per_task(state, version) == dict.fromkeys(state.tasks, 1)
    assert {task for task in state.tasks if before[task] != after[task]} == {2, 3}


def test_failed_tasks_are_retried_then_given_up(state: StubState, run_job, ledger_path) -> None:
    state.tasks[7] = {"image": "/data/local-files/?d=scenes/missing.png"}
    assert run_job("--max-attempts", "2") == EXIT_TASKS_FAILED
    failed = [row for row in ledger_rows(ledger_path) if row[1] == "failed"]
    assert [(row[0], row[4]) for row in failed] == [(7, 1)]
    assert "image_fetch" in failed[0][3]
    assert run_job("--max-attempts", "2") == EXIT_TASKS_FAILED
    assert run_job("--max-attempts", "2") == EXIT_TASKS_FAILED  # given up: not tried a third time
    assert [row[4] for row in ledger_rows(ledger_path) if row[0] == 7] == [2]
    assert not state.predictions_of(7)
    state.tasks[7] = dict(state.tasks[1])
    assert run_job("--max-attempts", "2", "--force", "--tasks", "7") == EXIT_OK
    assert len(state.predictions_of(7)) == 1


def test_unservable_label_config_fails_before_any_work(
    state: StubState, run_job, capsys: pytest.CaptureFixture
) -> None:
    state.label_config = '<View><Image name="image" value="$image"/><Choices name="c" toName="image">' \
                         '<Choice value="a"/></Choices></View>'
    assert run_job() == EXIT_UNUSABLE
    assert "label config cannot be served" in capsys.readouterr().err
    assert state.log == [("GET", "/api/projects/1/")]


def test_wrong_key_or_project_is_a_clear_error(state: StubState, run_job, capsys) -> None:
    assert run_job("--project", "2") == EXIT_UNUSABLE
    assert "HTTP 404" in capsys.readouterr().err


def summary_line(err: str, name: str) -> str:
    (line,) = [line.strip() for line in err.splitlines() if line.strip().startswith(name)]
    return line


def test_max_attempts_one_gives_up_after_the_first_failure(state: StubState, run_job, ledger_path, capsys) -> None:
    state.tasks = {7: {"image": "/data/local-files/?d=scenes/missing.png"}}
    assert run_job("--max-attempts", "1") == EXIT_TASKS_FAILED
    assert summary_line(capsys.readouterr().err, "failed") == "failed          1 (retried by the next run)"
    assert run_job("--max-attempts", "1") == EXIT_TASKS_FAILED
    err = capsys.readouterr().err
    assert summary_line(err, "given up").startswith("given up        1 ")
    assert summary_line(err, "failed").startswith("failed          0 ")
    assert [row[4] for row in ledger_rows(ledger_path)] == [1]  # exactly at the limit: not tried again


def test_limit_of_exactly_the_tasks_left_reaches_them_all(state: StubState, run_job, capsys) -> None:
    assert run_job("--limit", "5") == EXIT_OK
    assert summary_line(capsys.readouterr().err, "not reached") == "not reached     1"
    assert run_job("--limit", "1") == EXIT_OK
    err = capsys.readouterr().err
    assert summary_line(err, "not reached") == "not reached     0"
    assert summary_line(err, "already there").startswith("already there   5 ")
    assert len(state.predictions) == len(state.tasks)


def test_a_recovered_push_is_reported_as_such(state: StubState, run_job, ledger_path, capsys) -> None:
    assert run_job("--tasks", "1-2") == EXIT_OK
    with sqlite3.connect(ledger_path) as db:
        db.execute("UPDATE tasks SET state = 'pending', prediction = NULL WHERE task = 1")
    capsys.readouterr()
    assert run_job("--tasks", "1-2") == EXIT_OK
    err = capsys.readouterr().err
    assert summary_line(err, "already there") == "already there   2 (of which 1 recovered from an interrupted run)"
    assert summary_line(err, "pushed now").startswith("pushed now      0 ")
