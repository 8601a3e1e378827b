"""The job against a Label Studio that misbehaves (issue 19's hostile corpus, the job's part): endless task
pages, trickled answers, ids beyond 64 bits, answers of the wrong shape, redirected creates, a corrupt
ledger, huge error bodies; and the key kept out of ``ps``. Each ends in one ``error:`` line and the exit
status the README gives (2: running again will not help, 75: run again to resume), never a traceback,
and nothing is counted as pushed that Label Studio did not say it stored."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from flask import Flask, jsonify

from ml_backend.__main__ import main
from ml_backend.preannotate.cli import EXIT_OK, EXIT_RESUMABLE, EXIT_UNUSABLE
from ml_backend.preannotate.labelstudio import Backoff, LabelStudioApi, LabelStudioUnavailableError
from tests.preannotate.stub_label_studio import TOKEN, StubState, serving
from tests.preannotate.test_job import ledger_rows


def error_lines(capsys: pytest.CaptureFixture) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("error: ")]


def task_pages(state: StubState) -> int:
    return sum(method == "GET" and path == "/api/tasks/" for method, path in state.log)


def test_task_pages_that_repeat_forever_end_the_scan(state: StubState, run_job, capsys) -> None:
    state.repeat_first_page = True  # the same tasks on every page, and no total
    assert run_job() == EXIT_UNUSABLE
    (line,) = error_lines(capsys)
    assert "held only items listed before" in line
    assert task_pages(state) == 2
    assert not state.creates()


def test_a_page_that_reaches_the_total_is_the_last(state: StubState, stub_url: str) -> None:
    for task in range(7, 11):
        state.tasks[task] = {"image": "x"}  # 10 tasks: two full pages of 5, and no third request
    api = LabelStudioApi(stub_url, TOKEN, Backoff(retries=0))
    assert [record.id for record in api.tasks(1, "v1", view=None, task_ids=None, page_size=5)] == list(range(1, 11))
    assert task_pages(state) == 2


def test_tasks_listed_twice_are_segmented_once(state: StubState, stub_url: str) -> None:
    state.tasks = {task: {"image": "x"} for task in range(10, 16)}
    api = LabelStudioApi(stub_url, TOKEN, Backoff(retries=0))
    records = api.tasks(1, "v1", view=None, task_ids=None, page_size=3)
    listed = [next(records).id]  # page 1: 10, 11, 12
    state.tasks[5] = {"image": "x"}  # a task sorted before them: page 2 starts again at 12
    listed += [record.id for record in records]
    assert listed == [10, 11, 12, 13, 14, 15]


def test_a_trickled_answer_meets_the_deadline(state: StubState, stub_url: str) -> None:
    state.trickle_project = 0.05  # a complete answer, one byte every 50 ms for 3 s
    api = LabelStudioApi(stub_url, TOKEN, Backoff(retries=0), timeout=0.5)
    with pytest.raises(LabelStudioUnavailableError, match=r"no complete answer within --timeout 0\.5 s"):
        api.label_config(1)


def test_the_job_names_its_deadline(state: StubState, run_job, capsys) -> None:
    state.trickle_project = 0.05
    assert run_job("--timeout", "0.5", "--retries", "1") == EXIT_RESUMABLE
    (line,) = error_lines(capsys)
    assert "no complete answer within --timeout 0.5 s" in line and "after 1 retries" in line


@pytest.mark.parametrize("task_id", [2**64, 2**63, "5.1700000000", 0, -3, None])
def test_task_ids_beyond_64_bits_or_not_integers_are_refused(state: StubState, run_job, capsys, task_id) -> None:
    state.tasks_answer = {"tasks": [{"id": task_id, "data": {"image": "x"}, "predictions": []}], "total": 1}
    assert run_job() == EXIT_UNUSABLE
    (line,) = error_lines(capsys)
    assert "not an integer from 1 to 9223372036854775807" in line
    assert not state.creates()


def test_prediction_ids_beyond_64_bits_are_refused(state: StubState, run_job, capsys) -> None:
    assert run_job("--tasks", "1") == EXIT_OK
    (prediction,) = state.predictions.values()
    prediction["id"] = 2**64
    state.tasks_answer = {"tasks": [{"id": 1, "data": state.tasks[1], "predictions": [prediction]}], "total": 1}
    capsys.readouterr()
    assert run_job("--tasks", "1") == EXIT_UNUSABLE
    assert "a prediction id 18446744073709551616" in error_lines(capsys)[0]


@pytest.mark.parametrize("arguments", [["--project", str(2**64)], ["--project", "5.1700000000"],
                                       ["--view", str(2**63)], ["--tasks", f"1,{2**64}"], ["--tasks", "1-200000"]])
def test_ids_beyond_64_bits_on_the_command_line_are_refused(run_job, capsys, arguments) -> None:
    with pytest.raises(SystemExit) as exit_:
        run_job(*arguments)
    assert exit_.value.code == EXIT_UNUSABLE
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize(("answer", "named"), [
    ({"tasks": {"id": 1}, "total": 1}, "tasks page 1 with dict where a list belongs"),
    ({"tasks": [[1, 2]], "total": 1}, "tasks page 1 with"),
    ({"tasks": [{"id": 1, "data": "image.png"}], "total": 1}, "task 1's data as str, not an object"),
    ({"tasks": [{"id": 1, "data": {}, "predictions": {"id": 3}}], "total": 1},
     "(task 1's predictions) with dict where a list belongs"),
])
def test_answers_of_the_wrong_shape_are_refused(state: StubState, run_job, capsys, answer, named) -> None:
    state.tasks_answer = answer
    assert run_job() == EXIT_UNUSABLE
    (line,) = error_lines(capsys)
    assert line.startswith("error: Label Studio") and named in line
    assert not state.creates()


def test_a_create_redirected_with_302_is_not_resent_as_a_get(state: StubState, run_job, capsys,
                                                             ledger_path: Path) -> None:
    state.redirect_creates = (302, "/api/predictions/")
    assert run_job() == EXIT_UNUSABLE
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "redirected push to task 1 (HTTP 302 to /api/predictions/)" in err
    assert "pushed now      0" in err
    assert not state.predictions
    assert ("GET", "/api/predictions/") not in state.log[-1:]  # the redirect was not followed
    assert [(row[0], row[1], row[4]) for row in ledger_rows(ledger_path)] == [(1, "pending", 0)]  # released


def test_a_create_redirected_to_another_host_is_not_counted(state: StubState, run_job, capsys) -> None:
    other = Flask("elsewhere")
    received = []

    @other.post("/api/predictions/")
    def accept():  # another host that answers like Label Studio, but is not it
        received.append(1)
        return jsonify(id=77, task=1, model_version="whatever"), 201

    with serving(other) as elsewhere:
        state.redirect_creates = (307, f"{elsewhere}/api/predictions/")
        assert run_job() == EXIT_UNUSABLE
    err = capsys.readouterr().err
    assert "pushed now      0" in err and "redirected push to task 1 (HTTP 307" in err
    assert not received and not state.predictions


def test_a_create_answered_with_another_prediction_is_not_counted(state: StubState, run_job, capsys,
                                                                  ledger_path: Path) -> None:
    state.create_answer = {"id": 5}  # 201, but not a prediction of the task and version sent
    assert run_job() == EXIT_UNUSABLE
    err = capsys.readouterr().err
    assert "not counted as pushed" in err and "pushed now      0" in err
    assert all(row[1] != "pushed" for row in ledger_rows(ledger_path))


@pytest.mark.parametrize("content", [b"this is not a database" * 100, "foreign"])
def test_a_corrupt_or_foreign_ledger_is_a_clear_error(state: StubState, run_job, capsys, ledger_path: Path,
                                                      content: bytes | str) -> None:
    if content == "foreign":
        with sqlite3.connect(ledger_path) as db:
            db.execute("CREATE TABLE tasks (id INTEGER PRIMARY KEY, title TEXT)")
    else:
        ledger_path.write_bytes(content)
    assert run_job() == EXIT_UNUSABLE
    (line,) = error_lines(capsys)
    assert f"the ledger {ledger_path} cannot be used" in line
    assert not state.creates()


def test_a_huge_error_body_is_cut(state: StubState, run_job, capsys) -> None:
    state.error_body = "<html>" + "x" * 40_000
    state.fail_next = [403]
    assert run_job() == EXIT_UNUSABLE
    (line,) = error_lines(capsys)
    assert "HTTP 403" in line and "characters)" in line and len(line) < 1000


def test_429_is_retried(state: StubState, run_job) -> None:
    state.fail_next = [429, 429]
    assert run_job("--retries", "2", "--tasks", "1") == EXIT_OK
    assert state.log[:3] == [("GET", "/api/projects/1/")] * 3
    assert len(state.predictions) == 1


def test_the_key_can_come_from_a_file(state: StubState, job_env, stub_url: str, ledger_path: Path,
                                      tmp_path: Path, run_job, capsys) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(f"{TOKEN}\n")
    arguments = ["preannotate", "--url", stub_url, "--project", "1", "--tasks", "1", "--ledger", str(ledger_path)]
    assert main([*arguments, "--api-key-file", str(key_file)]) == EXIT_OK
    assert len(state.predictions) == 1
    capsys.readouterr()
    assert main([*arguments, "--api-key-file", str(tmp_path / "missing")]) == EXIT_UNUSABLE
    assert "--api-key-file" in error_lines(capsys)[0]


@pytest.mark.parametrize("command", [["preannotate"], ["memory", "rebuild"]])
def test_the_help_says_how_to_keep_the_key_out_of_ps(command: list[str], capsys) -> None:
    with pytest.raises(SystemExit):
        main([*command, "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--api-key-file" in help_text and "`ps`" in help_text and "$LABEL_STUDIO_API_KEY" in help_text
