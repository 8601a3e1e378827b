"""Faults put in by hand, each with the tests that must catch it (run by ``tests/break_by_hand.py``).

Each module here holds one room's (or one piece of work's) ``FAULTS``: a list of :class:`Fault`. A fault is
a set of exact text edits to files of the tree; the runner applies them to a temporary copy, runs the named
tests there, and fails when any named test still passes (the fault went unnoticed) or an edit's text is
not found exactly once (the table went stale).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Fault:
    name: str  # what a maintainer might plausibly get wrong, in words
    edits: tuple[tuple[str, str, str], ...]  # (path from the repository root, text found exactly once, replacement)
    tests: tuple[str, ...]  # pytest node ids (file::test or file) that must fail with the fault in place


def fault(name: str, edits: list[tuple[str, str, str]], tests: list[str]) -> Fault:
    return Fault(name, tuple(edits), tuple(tests))
