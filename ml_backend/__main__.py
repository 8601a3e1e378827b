"""Command line: ``python -m ml_backend <command> ...`` (offline jobs beside the HTTP service).

Each command lives in its own module that exposes ``register(commands)``: it adds its sub-parser and
sets ``run`` (a function of the parsed arguments returning the exit status) as a default. Adding a
command is one import and one ``register`` line below.
"""

from __future__ import annotations

import argparse

from ml_backend.labels import cli as label_memory_cli
from ml_backend.preannotate import cli as preannotate_cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ml_backend", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    preannotate_cli.register(commands)
    label_memory_cli.register(commands)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    raise SystemExit(main())
