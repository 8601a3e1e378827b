"""The per-project label memory: one row per annotated region (label, pooled embedding, area), in SQLite.

File: ``DATA_DIR/label_memory.sqlite3``. Writes go through one lock in the process and SQLite's own
write lock across processes (``BEGIN IMMEDIATE``; WAL mode so predictions read while a webhook writes).
An annotation is the unit of change: storing it replaces all its rows in one transaction, deleting it
removes them. Rows remember the feature space (the weights' identity) they were pooled in: features of
other weights are not comparable, so a new model starts with an empty memory rather than a wrong one.

Every write checks the schema first (one small query): a memory file deleted or replaced by an empty one
while the service runs is made again at the next write, instead of failing every write until a restart.
A write waits at most :data:`BUSY_TIMEOUT_S` for another process's write lock, then raises
:class:`MemoryBusyError` (retryable): a stuck writer elsewhere must not hold our threads.
An annotation remembers the ``updated_at`` it was learnt from: an older version arriving after a newer
one (a replayed or reordered ``ANNOTATION_UPDATED``) is not stored.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from segmentor.labelling import LabelExample

FILE_NAME = "label_memory.sqlite3"
# Seconds a write waits for SQLite's write lock held by another process (another worker, the memory CLI,
# a backup): our own writers queue on a lock in the process first, so this only bounds foreign holders.
BUSY_TIMEOUT_S = 2.0
_SCHEMA = """
CREATE TABLE IF NOT EXISTS annotations (
    project INTEGER NOT NULL,
    annotation INTEGER NOT NULL,
    task INTEGER NOT NULL,
    source TEXT NOT NULL,          -- digest of what was learnt from: result + image, for rebuilds to skip
    updated_at REAL,               -- Label Studio's updated_at (epoch seconds) of what was learnt; NULL: unknown
    PRIMARY KEY (project, annotation)
);
CREATE TABLE IF NOT EXISTS examples (
    project INTEGER NOT NULL,
    annotation INTEGER NOT NULL,
    region TEXT NOT NULL,
    from_name TEXT NOT NULL,
    label TEXT NOT NULL,
    feature_space TEXT NOT NULL,
    area INTEGER NOT NULL,
    embedding BLOB NOT NULL,       -- float32, little-endian
    FOREIGN KEY (project, annotation) REFERENCES annotations (project, annotation) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS examples_by_project ON examples (project, feature_space);
"""


class MemoryBusyError(RuntimeError):
    """Another process held the memory's write lock past :data:`BUSY_TIMEOUT_S`; nothing was written."""


class LabelMemory:
    """Thread-safe store of label examples per Label Studio project (by project id)."""

    def __init__(self, path: Path, busy_timeout: float = BUSY_TIMEOUT_S) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self._write_lock = threading.Lock()

    def _ensure_schema(self, connection: sqlite3.Connection) -> None:
        """Create the tables when the file lacks them: first write, or the file was deleted or replaced.

        Checked on every write (the file may vanish between two writes; a new process must not be needed).
        """
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if {"annotations", "examples"} <= tables:
            columns = {row[1] for row in connection.execute("PRAGMA table_info(annotations)")}
            if "updated_at" not in columns:  # a memory written before updated_at was kept
                connection.execute("ALTER TABLE annotations ADD COLUMN updated_at REAL")
            return
        connection.execute("PRAGMA journal_mode=WAL")
        connection.executescript(_SCHEMA)

    @contextlib.contextmanager
    def _connect(self, create: bool = False) -> Iterator[sqlite3.Connection]:
        # A connection per operation: sqlite3 connections must not cross threads, and opening one is cheap.
        # Readers open the file read-only, so reading a memory that was never written creates nothing.
        mode = "rwc" if create else "ro"
        uri = f"{self.path.resolve().as_uri()}?mode={mode}"
        connection = sqlite3.connect(uri, uri=True, timeout=self.busy_timeout, isolation_level=None)
        try:
            connection.execute("PRAGMA foreign_keys=ON")
            yield connection
        finally:
            connection.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._write_lock:
            # The folder too may have been deleted (DATA_DIR wiped): a file needs its folder.
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect(create=True) as connection:
                try:
                    self._ensure_schema(connection)
                    connection.execute("BEGIN IMMEDIATE")
                except sqlite3.OperationalError as error:
                    if "locked" in str(error) or "busy" in str(error):
                        raise MemoryBusyError(
                            f"the label memory {self.path} is locked by another process (waited "
                            f"{self.busy_timeout:g} s): {error}") from error
                    raise
                try:
                    yield connection
                except BaseException:
                    connection.execute("ROLLBACK")
                    raise
                connection.execute("COMMIT")

    def replace_annotation(
        self,
        project: int,
        annotation: int,
        task: int,
        examples: Sequence[LabelExample],
        feature_space: str,
        source: str = "",
        updated_at: float | None = None,
    ) -> bool:
        """Store ``examples`` as everything annotation ``annotation`` teaches (its old rows go).

        False (nothing changed) when the stored version is newer than ``updated_at``: a replayed or
        reordered older update must not win over a newer one.
        """
        with self._transaction() as connection:
            stored = connection.execute("SELECT updated_at FROM annotations WHERE project = ? AND annotation = ?",
                                        (project, annotation)).fetchone()
            if stored is not None and stored[0] is not None and updated_at is not None and updated_at < stored[0]:
                return False
            connection.execute("DELETE FROM annotations WHERE project = ? AND annotation = ?", (project, annotation))
            connection.execute("INSERT INTO annotations (project, annotation, task, source, updated_at) "
                               "VALUES (?, ?, ?, ?, ?)", (project, annotation, task, source, updated_at))
            connection.executemany(
                "INSERT INTO examples VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(project, annotation, e.region_id, e.from_name, e.label, feature_space, e.area,
                  np.asarray(e.embedding, "<f4").tobytes()) for e in examples],
            )
        return True

    def delete_annotations(self, project: int, annotations: Iterable[int]) -> int:
        """Forget these annotations of ``project``; the number that were stored."""
        if not self.path.exists():  # nothing was ever learnt: forgetting must not create the file
            return 0
        with self._transaction() as connection:
            return sum(
                connection.execute(
                    "DELETE FROM annotations WHERE project = ? AND annotation = ?", (project, annotation)
                ).rowcount
                for annotation in annotations
            )

    def delete_tasks(self, project: int, tasks: Iterable[int]) -> int:
        """Forget every annotation of these tasks of ``project``; the number of annotations forgotten."""
        if not self.path.exists():  # nothing was ever learnt: forgetting must not create the file
            return 0
        with self._transaction() as connection:
            return sum(
                connection.execute("DELETE FROM annotations WHERE project = ? AND task = ?", (project, task)).rowcount
                for task in tasks
            )

    def clear(self, project: int) -> int:
        """Forget everything of ``project``; the number of annotations forgotten."""
        if not self.path.exists():  # nothing was ever learnt: forgetting must not create the file
            return 0
        with self._transaction() as connection:
            return connection.execute("DELETE FROM annotations WHERE project = ?", (project,)).rowcount

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection | None]:
        """A read-only connection, or None while the memory does not exist yet (or is being created)."""
        if not self.path.exists():
            yield None
            return
        try:
            with self._connect() as connection:
                yield connection
        except sqlite3.OperationalError as error:
            if "no such table" not in str(error):  # the file exists, its schema not yet: nothing learnt
                raise

    def _query(self, sql: str, parameters: tuple) -> list[tuple]:
        rows: list[tuple] = []
        with self._reading() as connection:
            if connection is not None:
                rows = connection.execute(sql, parameters).fetchall()
        return rows

    def sources(self, project: int) -> dict[int, str]:
        """Annotation id -> the source digest it was learnt from."""
        return dict(self._query("SELECT annotation, source FROM annotations WHERE project = ?", (project,)))

    def snapshot(self, project: int, feature_space: str) -> tuple[str | None, list[LabelExample]]:
        """The project's revision and its examples in ``feature_space``, read in one transaction."""
        revision, rows = None, []
        with self._reading() as connection:
            if connection is None:
                return None, []
            connection.execute("BEGIN")
            revision = _revision(connection, project, feature_space)
            rows = connection.execute(
                "SELECT region, from_name, label, area, embedding FROM examples "
                "WHERE project = ? AND feature_space = ? ORDER BY annotation, rowid",
                (project, feature_space),
            ).fetchall()
            connection.execute("COMMIT")
        examples = [LabelExample(region, from_name, label, np.frombuffer(blob, "<f4").copy(), area)
                    for region, from_name, label, area, blob in rows]
        return revision, examples

    def revision(self, project: int, feature_space: str) -> str | None:
        """A digest of what ``project`` has learnt in ``feature_space``; None when nothing.

        Made of the annotations' ids and source digests (an annotation's examples are a function of its
        source), so it is cheap, changes when an annotation is learnt from something new or forgotten,
        and stays when a rebuild stores the same again: it goes into the model version.
        """
        revision = None
        with self._reading() as connection:
            if connection is not None:
                revision = _revision(connection, project, feature_space)
        return revision

    def counts(self, project: int) -> dict[str, int]:
        """Stored examples per label (all feature spaces), for the CLI and logs."""
        return dict(self._query(
            "SELECT label, COUNT(*) FROM examples WHERE project = ? GROUP BY label ORDER BY label", (project,)))


def _revision(connection: sqlite3.Connection, project: int, feature_space: str) -> str | None:
    rows = connection.execute(
        "SELECT annotation, source FROM annotations AS a WHERE project = ? AND EXISTS (SELECT 1 FROM examples "
        "WHERE project = a.project AND annotation = a.annotation AND feature_space = ?) ORDER BY annotation",
        (project, feature_space),
    ).fetchall()
    if not rows:
        return None
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:12]
