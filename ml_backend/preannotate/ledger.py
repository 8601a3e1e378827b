"""The job's memory across runs: one SQLite row per (Label Studio, project, task, model version).

States: ``pending`` (handed to a worker; a row left pending means a run died with the task in flight),
``pushed`` (with Label Studio's prediction id), ``failed`` (with the reason). ``attempts`` counts the
times a task was handed to a worker, so a task that keeps failing, or keeps killing the job, is given up
after a limit instead of blocking the project forever.

Every change is committed at once: SQLite's journal makes each commit survive ``kill -9``, so the
ledger never holds less than what happened before the last commit. What it may miss is a push whose
response never arrived; the job reconciles those with Label Studio before pushing again.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

LEDGER_FILENAME = "preannotate-ledger.sqlite3"

PENDING, PUSHED, FAILED = "pending", "pushed", "failed"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    server TEXT NOT NULL,
    project INTEGER NOT NULL,
    task INTEGER NOT NULL,
    model_version TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'pushed', 'failed')),
    prediction INTEGER,
    reason TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    updated REAL NOT NULL,
    PRIMARY KEY (server, project, task, model_version)
)
"""


class LedgerError(RuntimeError):
    """The ledger file cannot be used (not a SQLite file, or not one this job wrote)."""


@dataclass(frozen=True)
class Entry:
    state: str
    prediction: int | None
    reason: str | None
    attempts: int


class Ledger:
    """The rows of one project and model version on one Label Studio server."""

    def __init__(self, path: Path, *, server: str, project: int, model_version: str) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: autocommit, every statement is its own durable transaction.
            self._db = sqlite3.connect(path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(_SCHEMA)
            # A `tasks` table of another program passes CREATE IF NOT EXISTS: check the columns are ours.
            self._db.execute("SELECT server, project, task, model_version, state, prediction, reason, attempts, "
                             "updated FROM tasks LIMIT 0")
        except (OSError, sqlite3.DatabaseError) as error:
            if hasattr(self, "_db"):
                self._db.close()
            raise LedgerError(f"the ledger {path} cannot be used ({error}): move it away to start a new one, "
                              "or pass another --ledger") from None
        self._key = (server, project)
        self.model_version = model_version

    def close(self) -> None:
        self._db.close()

    def entries(self) -> dict[int, Entry]:
        """Task id -> its row, for this project and version."""
        rows = self._db.execute(
            "SELECT task, state, prediction, reason, attempts FROM tasks "
            "WHERE server = ? AND project = ? AND model_version = ?",
            (*self._key, self.model_version),
        )
        return {task: Entry(state, prediction, reason, attempts) for task, state, prediction, reason, attempts in rows}

    def start(self, task: int) -> None:
        """The task goes to a worker: pending, one more attempt."""
        self._db.execute(
            "INSERT INTO tasks (server, project, task, model_version, state, attempts, updated) "
            "VALUES (?, ?, ?, ?, 'pending', 1, ?) "
            "ON CONFLICT DO UPDATE SET state = 'pending', reason = NULL, attempts = attempts + 1, "
            "updated = excluded.updated",
            (*self._key, task, self.model_version, time.time()),
        )

    def pushed(self, task: int, prediction: int) -> None:
        """The task holds prediction ``prediction`` of this version in Label Studio."""
        self._db.execute(
            "INSERT INTO tasks (server, project, task, model_version, state, prediction, updated) "
            "VALUES (?, ?, ?, ?, 'pushed', ?, ?) "
            "ON CONFLICT DO UPDATE SET state = 'pushed', prediction = excluded.prediction, reason = NULL, "
            "updated = excluded.updated",
            (*self._key, task, self.model_version, prediction, time.time()),
        )

    def failed(self, task: int, reason: str) -> None:
        self._db.execute(
            "UPDATE tasks SET state = 'failed', reason = ?, updated = ? "
            "WHERE server = ? AND project = ? AND task = ? AND model_version = ?",
            (reason, time.time(), *self._key, task, self.model_version),
        )

    def released(self, task: int) -> None:
        """The run stopped before the task's turn came (Label Studio down): the attempt does not count."""
        self._db.execute(
            "UPDATE tasks SET attempts = attempts - 1, updated = ? "
            "WHERE server = ? AND project = ? AND task = ? AND model_version = ? AND state = 'pending'",
            (time.time(), *self._key, task, self.model_version),
        )
