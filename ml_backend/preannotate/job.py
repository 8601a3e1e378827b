"""The whole-project run: scan the tasks, segment those still lacking this version's prediction, push.

Exactly once, across kills: a task is skipped when Label Studio already holds a prediction of the
current version, whoever made it (an earlier run, the backend through "Retrieve predictions"); a task
whose push went out but whose ledger row was never updated (killed in between) is such a task, and
the scan records it as pushed with the prediction id it finds. Right before a push, the task is checked
once more (see :meth:`LabelStudioApi.push`), which also covers predictions made while the job ran.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from tqdm import tqdm

from ml_backend.preannotate.labelstudio import (
    LabelStudioApi,
    LabelStudioError,
    LabelStudioUnavailableError,
    TaskRecord,
)
from ml_backend.preannotate.ledger import PUSHED, Ledger
from ml_backend.preannotate.workers import Pool

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobOptions:
    project: int
    view: int | None = None
    task_ids: Sequence[int] | None = None
    limit: int | None = None  # most tasks segmented in this run
    force: bool = False  # predict again tasks that already hold this version (and failed ones past the limit)
    max_attempts: int = 3  # a task that failed (or was in flight at a crash) this often is given up


@dataclass
class Summary:
    model_version: str
    tasks: int = 0  # selected in the project
    already: int = 0  # held a prediction of this version before this run's segmentation
    recovered: int = 0  # of those, pushed by an interrupted run whose ledger row had not caught up
    pushed: int = 0
    failed: int = 0
    given_up: int = 0  # skipped: failed max_attempts times before
    left: int = 0  # not reached (--limit, or Label Studio went away)
    seconds: float = 0.0
    stopped: str | None = None  # why the run stopped early, when it did
    refused: bool = False  # stopped by an answer of Label Studio that running again will not change
    failures: dict[int, str] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return self.stopped is None and self.failed == 0 and self.given_up == 0 and self.left == 0

    def lines(self) -> list[str]:
        rate = self.pushed / self.seconds if self.seconds > 0 else 0.0
        lines = [
            f"model version {self.model_version}: {self.tasks} task(s) selected",
            f"  pushed now      {self.pushed} ({rate:.2f} tasks/s over {self.seconds:.1f} s)",
            f"  already there   {self.already} (of which {self.recovered} recovered from an interrupted run)",
            f"  failed          {self.failed} (retried by the next run)",
            f"  given up        {self.given_up} (failed too often; rerun with --force to retry)",
            f"  not reached     {self.left}",
        ]
        lines += [f"  task {task}: {reason}" for task, reason in list(self.failures.items())[:20]]
        if self.stopped and not self.refused:  # a refusal is the command's `error:` line
            lines.append(f"stopped early: {self.stopped}; run the same command again to resume")
        return lines


def run_job(api: LabelStudioApi, pool: Pool, ledger: Ledger, options: JobOptions) -> Summary:
    summary = Summary(model_version=ledger.model_version)
    started = time.monotonic()
    try:
        todo = _scan(api, ledger, options, summary)
        _predict_and_push(api, pool, ledger, todo, options, summary)
    except LabelStudioUnavailableError as error:
        summary.stopped = str(error)
    except LabelStudioError as error:  # an answer the job cannot use: what was pushed so far stays counted
        summary.stopped, summary.refused = str(error), True
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (see cli): stop like an outage, resumable
        summary.stopped = "interrupted"
    summary.seconds = time.monotonic() - started
    return summary


def _scan(api: LabelStudioApi, ledger: Ledger, options: JobOptions, summary: Summary) -> list[TaskRecord]:
    """The tasks to segment, in id order; records in the ledger what Label Studio already holds."""
    entries = ledger.entries()
    todo = []
    records = api.tasks(options.project, ledger.model_version, view=options.view, task_ids=options.task_ids)
    for record in tqdm(records, desc="scanning", unit="task", file=sys.stderr, leave=False):
        summary.tasks += 1
        entry = entries.get(record.id)
        if record.predictions and not options.force:
            summary.already += 1
            if entry is None or entry.state != PUSHED or entry.prediction not in record.predictions:
                summary.recovered += entry is not None and entry.state != PUSHED
                ledger.pushed(record.id, record.predictions[0])
            continue
        # A task that failed, or was in flight when a run died, max_attempts times is not tried again.
        if entry is not None and entry.state != PUSHED and entry.attempts >= options.max_attempts and not options.force:
            summary.given_up += 1
            summary.failures[record.id] = f"given up after {entry.attempts} attempts: {entry.reason}"
            continue
        todo.append(record)
    if options.limit is not None and len(todo) > options.limit:
        summary.left = len(todo) - options.limit
        todo = todo[: options.limit]
    return todo


def _predict_and_push(
    api: LabelStudioApi, pool: Pool, ledger: Ledger, todo: list[TaskRecord], options: JobOptions,
    summary: Summary,
) -> None:
    in_flight: set[int] = set()
    stale = {record.id: record.predictions for record in todo}  # --force: this version's old predictions

    def handed_out(records: Iterable[TaskRecord]) -> Iterator[dict]:
        # The pool pulls lazily, so "pending" is written exactly when a worker gets the task.
        for record in records:
            ledger.start(record.id)
            in_flight.add(record.id)
            yield {"id": record.id, "data": record.data}

    progress = tqdm(total=len(todo), desc="pre-annotating", unit="task", file=sys.stderr, dynamic_ncols=True)
    try:
        for task_id, prediction in pool.run(handed_out(todo)):
            if "error" in prediction:
                ledger.failed(task_id, prediction["error"])
                summary.failed += 1
                summary.failures[task_id] = prediction["error"]
            else:
                for old in stale[task_id]:
                    api.delete(old)  # --force replaces; never leaves two of one version
                ledger.pushed(task_id, api.push(task_id, prediction))
                summary.pushed += 1
            in_flight.discard(task_id)
            progress.set_postfix(failed=summary.failed, refresh=False)
            progress.update()
    except BaseException:
        # Whatever stopped the run, tasks handed out but not finished were not the tasks' fault.
        for task_id in in_flight:
            ledger.released(task_id)
        summary.left += len(todo) - summary.pushed - summary.failed
        raise
    finally:
        progress.close()
