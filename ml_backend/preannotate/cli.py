"""``python -m ml_backend preannotate``: arguments and entry point of the whole-project job."""

from __future__ import annotations

import argparse
import sys


def register(commands: argparse._SubParsersAction) -> None:
    """Add the ``preannotate`` sub-command to ``python -m ml_backend``."""
    parser = commands.add_parser(
        "preannotate", help="segment every task of a Label Studio project and push the predictions"
    )
    parser.add_argument("--url", required=True, help="Label Studio base URL")
    parser.add_argument("--api-key", required=True, help="Label Studio API key")
    parser.add_argument("--project", type=int, required=True, help="project id")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    print("preannotate: not implemented yet (issue #12)", file=sys.stderr)
    return 2
