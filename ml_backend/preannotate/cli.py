"""``python -m ml_backend preannotate``: pre-annotate a whole Label Studio project, resumably.

Settings (model, segments, seed, cache, image policy...) come from the same environment variables as
the service, so the job's predictions and ``model_version`` are the service's.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sqlite3
import sys
from pathlib import Path

from ml_backend.core.errors import ProjectConfigError
from ml_backend.core.label_config import ProjectConfig
from ml_backend.core.label_studio_client import add_label_studio_options, api_key_from, id_argument
from ml_backend.core.settings import Settings, SettingsError
from ml_backend.preannotate.job import JobOptions, run_job
from ml_backend.preannotate.labelstudio import (
    Backoff,
    LabelStudioApi,
    LabelStudioError,
    LabelStudioUnavailableError,
)
from ml_backend.preannotate.ledger import LEDGER_FILENAME, Ledger, LedgerError
from ml_backend.preannotate.workers import LocalPool, Pool, RayPool

# Exit statuses: 0 every selected task holds a prediction (or --limit stopped it), 1 some tasks failed,
# 2 nothing could start (arguments, settings, label config, credentials), 75 Label Studio went away
# (EX_TEMPFAIL: run the same command again to resume).
EXIT_OK, EXIT_TASKS_FAILED, EXIT_UNUSABLE, EXIT_RESUMABLE = 0, 1, 2, 75
# --tasks selects at most this many ids: Label Studio gets them in one query string.
MAX_SELECTED_TASKS = 100_000


def register(commands: argparse._SubParsersAction) -> None:
    """Add the ``preannotate`` sub-command to ``python -m ml_backend``."""
    parser = commands.add_parser(
        "preannotate",
        help="segment every task of a Label Studio project and push the predictions (resumable)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_label_studio_options(parser)
    parser.add_argument("--project", type=id_argument, required=True, help="project id")
    parser.add_argument("--tasks", type=_task_ids, help="only these task ids, e.g. 4,7,10-20")
    parser.add_argument("--view", type=id_argument, help="only the tasks of this Data Manager tab (view id)")
    parser.add_argument("--limit", type=_positive, help="segment at most this many tasks in this run")
    parser.add_argument("--force", action="store_true",
                        help="predict again tasks that hold this version's prediction (replacing it), "
                             "and tasks given up after repeated failures")
    parser.add_argument("--max-attempts", type=_positive, default=3,
                        help="attempts per task across runs before it is given up (default: %(default)s)")
    parser.add_argument("--ledger", type=Path,
                        help=f"the SQLite ledger (default: CACHE_DIR/{LEDGER_FILENAME})")
    parser.add_argument("--retries", type=int, default=6,
                        help="retries of a request while Label Studio is down or answers 5xx (default: %(default)s)")
    parser.add_argument("--backoff", type=float, default=1.0,
                        help="first retry delay in seconds, doubled each time up to 30 (default: %(default)s)")
    parser.add_argument("--timeout", type=_seconds, default=60.0,
                        help="wall-clock deadline of each request to Label Studio, from connecting to the "
                             "answer's last byte; a request past it is retried (default: %(default)s)")
    parser.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                        help="segment in Ray actors: 'local' (default) starts a cluster on this machine, "
                             "'auto' or HOST:PORT or ray://HOST:10001 joins an existing one")
    parser.add_argument("--actors", type=_positive,
                        help="Ray actors (default: one per GPU of the cluster, else 1)")
    parser.add_argument("--cpus-per-actor", type=_positive, default=1,
                        help="CPUs each actor reserves when the cluster has no GPU (default: %(default)s)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except (SettingsError, LabelStudioError, LedgerError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_UNUSABLE
    except LabelStudioUnavailableError as error:
        print(f"error: {error}; nothing was changed, run the same command again later", file=sys.stderr)
        return EXIT_RESUMABLE
    except sqlite3.Error as error:  # the ledger failed mid-run (locked by another run, disk full...)
        print(f"error: the ledger: {error}; run the same command again to resume", file=sys.stderr)
        return EXIT_RESUMABLE


def _run(args: argparse.Namespace) -> int:
    # `docker stop` and Kubernetes send SIGTERM: stop as after Ctrl-C, releasing tasks in flight.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        api_key = api_key_from(args)
    except ValueError as error:
        raise SettingsError(str(error)) from None
    if not args.url or not api_key:
        raise SettingsError("--url and a key (--api-key-file, $LABEL_STUDIO_API_KEY or --api-key; or "
                            "LABEL_STUDIO_URL) are required")
    settings = dataclasses.replace(Settings.from_env(), label_studio_url=args.url.rstrip("/"),
                                   label_studio_api_key=api_key)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    logging.getLogger("ml_backend").setLevel(settings.log_level)
    ledger_path = args.ledger or (settings.cache_dir / LEDGER_FILENAME if settings.cache_dir else None)
    if ledger_path is None:
        raise SettingsError("CACHE_DIR=off leaves the ledger nowhere to live: pass --ledger PATH")

    api = LabelStudioApi(settings.label_studio_url, api_key, Backoff(args.retries, args.backoff),
                         timeout=args.timeout)
    label_config = api.label_config(args.project)
    try:
        # The same parser the service runs, before any model is loaded or task read.
        ProjectConfig.parse(label_config, settings)
    except ProjectConfigError as error:
        print(f"error: project {args.project}'s label config cannot be served: {error}", file=sys.stderr)
        return EXIT_UNUSABLE

    pool = _pool(args, settings, label_config)
    try:
        ledger = Ledger(ledger_path, server=api.url, project=args.project, model_version=pool.model_version())
        try:
            options = JobOptions(project=args.project, view=args.view, task_ids=args.tasks, limit=args.limit,
                                 force=args.force, max_attempts=args.max_attempts)
            summary = run_job(api, pool, ledger, options)
        finally:
            ledger.close()
    finally:
        pool.close()
    print(f"project {args.project} at {api.url}, segmented in {pool.description}, ledger {ledger_path}",
          file=sys.stderr)
    for line in summary.lines():
        print(line, file=sys.stderr)
    if summary.refused:
        print(f"error: {summary.stopped}", file=sys.stderr)
        return EXIT_UNUSABLE
    if summary.stopped:
        return EXIT_RESUMABLE
    return EXIT_TASKS_FAILED if summary.failed or summary.given_up else EXIT_OK


def _pool(args: argparse.Namespace, settings: Settings, label_config: str) -> Pool:
    if args.ray is None:
        return LocalPool(settings, label_config, args.project)
    address = None if args.ray == "local" else args.ray
    return RayPool(settings, label_config, args.project, address=address, actors=args.actors,
                   cpus_per_actor=args.cpus_per_actor)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def _task_ids(text: str) -> list[int]:
    """``4,7,10-20`` -> [4, 7, 10, ..., 20]."""
    ids: list[int] = []
    try:
        for part in filter(None, (piece.strip() for piece in text.split(","))):
            low, _, high = part.partition("-")
            first, last = id_argument(low), id_argument(high or low)
            if len(ids) + max(last - first + 1, 0) > MAX_SELECTED_TASKS:
                raise argparse.ArgumentTypeError(f"more than {MAX_SELECTED_TASKS} task ids: use --view instead")
            ids += range(first, last + 1)
    except (ValueError, argparse.ArgumentTypeError) as error:
        detail = f" ({error})" if isinstance(error, argparse.ArgumentTypeError) else ""
        raise argparse.ArgumentTypeError(f"{text[:80]!r}: expected ids and ranges like 4,7,10-20{detail}") from None
    if not ids:
        raise argparse.ArgumentTypeError("no task ids given")
    return ids
