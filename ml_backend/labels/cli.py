"""``python -m ml_backend memory {rebuild,show,clear} --project N``: the label memory from the command line.

Settings come from the service's environment variables (``EMERDIFF_MODEL``, ``DATA_DIR``, ``CACHE_DIR``,
``LABEL_STUDIO_URL``, ``LABEL_STUDIO_API_KEY``, the image policy...), so a rebuild writes the memory the
service reads, with the service's model and segmentations (cached ones are reused).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys

from ml_backend.core.label_studio_client import add_label_studio_options, api_key_from, id_argument
from ml_backend.core.settings import Settings, SettingsError
from ml_backend.labels.learning import LearningError
from ml_backend.labels.memory import FILE_NAME, LabelMemory, MemoryBusyError

# 0 every annotation learnt, 1 some failed, 2 nothing could start, 75 Label Studio failed mid-way: run again.
EXIT_OK, EXIT_FAILED, EXIT_UNUSABLE, EXIT_RESUMABLE = 0, 1, 2, 75


def register(commands: argparse._SubParsersAction) -> None:
    """Add the ``memory`` sub-command to ``python -m ml_backend``."""
    parser = commands.add_parser("memory", help="rebuild, show or clear a project's label memory",
                                 description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = parser.add_subparsers(dest="memory_action", required=True)
    rebuild = actions.add_parser("rebuild", help="learn every annotation of the project from Label Studio's API "
                                                 "(unchanged ones are skipped, deleted ones forgotten)")
    add_label_studio_options(rebuild)
    show = actions.add_parser("show", help="print the examples stored per label")
    clear = actions.add_parser("clear", help="forget everything the project taught")
    for action in (rebuild, show, clear):
        action.add_argument("--project", type=id_argument, required=True, help="Label Studio project id")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings.from_env()
    except SettingsError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_UNUSABLE
    if settings.data_dir is None:
        print("error: DATA_DIR=off: label learning is off, there is no memory", file=sys.stderr)
        return EXIT_UNUSABLE
    memory = LabelMemory(settings.data_dir / FILE_NAME)
    if args.memory_action == "show":
        print(json.dumps({"project": args.project, "memory": str(memory.path),
                          "examples_per_label": memory.counts(args.project)}, indent=2))
        return EXIT_OK
    if args.memory_action == "clear":
        try:
            forgotten = memory.clear(args.project)
        except MemoryBusyError as error:  # the service (or another tool) is writing right now
            print(f"error: {error}; try again", file=sys.stderr)
            return EXIT_FAILED
        print(f"forgot {forgotten} annotations of project {args.project}", file=sys.stderr)
        return EXIT_OK
    try:
        api_key = api_key_from(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_UNUSABLE
    return _rebuild(dataclasses.replace(settings, label_studio_url=args.url, label_studio_api_key=api_key),
                    args.project)


def _rebuild(settings: Settings, project: int) -> int:
    from ml_backend.model import Runtime
    from segmentor import ModelLoadError, load_model

    if not settings.label_studio_url or not settings.label_studio_api_key:
        print("error: a rebuild reads Label Studio's API: pass --url and --api-key (or set LABEL_STUDIO_URL and "
              "LABEL_STUDIO_API_KEY)", file=sys.stderr)
        return EXIT_UNUSABLE
    try:
        model = load_model(settings.model, device=settings.device, dtype=settings.dtype)
        job = Runtime.create(settings, model).rebuild_job(project)
    except (LearningError, ModelLoadError, SettingsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_UNUSABLE
    try:
        report = job()
    except LearningError as error:  # Label Studio failed while listing: nothing was forgotten
        print(f"error: {error}; run the same command again", file=sys.stderr)
        return EXIT_RESUMABLE
    print(json.dumps({"project": project, **report}, indent=2))
    return EXIT_FAILED if report["failed"] else EXIT_OK
