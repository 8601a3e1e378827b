"""The bounded background queue: order, bound, dedupe by key, failures counted and survived."""

from __future__ import annotations

import threading

import pytest

from ml_backend.core.metrics import Metrics
from ml_backend.segmentation.background import BackgroundQueue

WAIT = 30.0  # a generous bound for a test to notice a hang, never a timing assertion


@pytest.fixture()
def metrics() -> Metrics:
    return Metrics()


def _blocked(queue: BackgroundQueue, key: str = "blocker") -> tuple[threading.Event, threading.Event]:
    """Occupy the worker with a job that runs until released."""
    started, release = threading.Event(), threading.Event()

    def job() -> None:
        started.set()
        release.wait(WAIT)

    assert queue.submit(key, job)
    assert started.wait(WAIT)
    return started, release


def test_jobs_run_one_at_a_time_in_submission_order(metrics: Metrics) -> None:
    queue = BackgroundQueue(capacity=10, metrics=metrics, name="t")
    ran: list[int] = []
    running = [0]
    overlap = []

    def job(n: int) -> None:
        running[0] += 1
        overlap.append(running[0])
        ran.append(n)
        running[0] -= 1

    for n in range(5):
        assert queue.submit(n, lambda n=n: job(n))
    assert queue.wait_idle(WAIT)
    assert ran == [0, 1, 2, 3, 4]
    assert max(overlap) == 1
    assert queue.pending() == 0
    assert metrics.count("background", "t_done") == 5
    queue.close()


def test_full_queue_refuses_and_frees_after_work(metrics: Metrics) -> None:
    queue = BackgroundQueue(capacity=2, metrics=metrics, name="t")
    _, release = _blocked(queue)
    ran: list[str] = []
    assert queue.submit("a", lambda: ran.append("a"))
    assert queue.submit("b", lambda: ran.append("b"))
    assert queue.pending() == 3  # two waiting, one running
    assert not queue.submit("c", lambda: ran.append("c"))
    assert metrics.count("background", "t_refused") == 1
    release.set()
    assert queue.wait_idle(WAIT)
    assert ran == ["a", "b"]
    assert queue.submit("c", lambda: ran.append("c"))
    assert queue.wait_idle(WAIT)
    assert ran == ["a", "b", "c"]
    queue.close()


def test_same_key_waiting_or_running_is_not_queued_twice(metrics: Metrics) -> None:
    queue = BackgroundQueue(capacity=1, metrics=metrics, name="t")
    _, release = _blocked(queue, key="img")
    # The running key: accepted (already in hand), not queued again, and takes no place.
    assert queue.submit("img", lambda: pytest.fail("a running key must not run twice"))
    calls: list[str] = []
    assert queue.submit("other", lambda: calls.append("other"))
    # The waiting key: accepted even though the queue is full.
    assert queue.submit("other", lambda: calls.append("second"))
    assert metrics.count("background", "t_deduplicated") == 2
    release.set()
    assert queue.wait_idle(WAIT)
    assert calls == ["other"]
    queue.close()


def test_a_failing_job_is_counted_and_the_worker_goes_on(
    metrics: Metrics, caplog: pytest.LogCaptureFixture
) -> None:
    queue = BackgroundQueue(capacity=5, metrics=metrics, name="t")
    ran: list[str] = []

    def boom() -> None:
        raise RuntimeError("broken image")

    assert queue.submit("bad", boom)
    assert queue.submit("good", lambda: ran.append("good"))
    assert queue.wait_idle(WAIT)
    assert ran == ["good"]
    assert metrics.count("background", "t_failed") == 1
    assert metrics.count("background", "t_done") == 1
    assert "broken image" in caplog.text
    # The failed key is free again: a retry is queued and runs.
    assert queue.submit("bad", lambda: ran.append("retry"))
    assert queue.wait_idle(WAIT)
    assert ran == ["good", "retry"]
    queue.close()


def test_wait_idle_reports_a_timeout(metrics: Metrics) -> None:
    queue = BackgroundQueue(capacity=1, metrics=metrics, name="t")
    _, release = _blocked(queue)
    assert not queue.wait_idle(0.05)
    release.set()
    assert queue.wait_idle(WAIT)
    queue.close()


def test_close_drops_waiting_jobs_and_refuses_new_ones(metrics: Metrics) -> None:
    queue = BackgroundQueue(capacity=5, metrics=metrics, name="t")
    _, release = _blocked(queue)
    ran: list[str] = []
    assert queue.submit("a", lambda: ran.append("a"))
    queue.close()
    assert not queue.submit("b", lambda: ran.append("b"))
    release.set()
    assert queue.wait_idle(WAIT)
    assert ran == []


def test_capacity_must_be_positive(metrics: Metrics) -> None:
    with pytest.raises(ValueError, match="capacity"):
        BackgroundQueue(capacity=0, metrics=metrics, name="t")
