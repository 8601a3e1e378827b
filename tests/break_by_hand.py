"""Break the code by hand, one recorded fault at a time, and check that the named tests catch each one.

    python tests/break_by_hand.py [NAME-SUBSTRING ...] [--module MODULE ...] [--jobs N] [--list]

Every ``tests/faults/*.py`` module holds a ``FAULTS`` list (format in ``tests/faults/__init__.py``): a fault is a
few exact text edits and the tests that must fail with them in place. This runner copies the tree (everything but
the virtual environments, git and caches) to a temporary folder, and for each fault: applies its edits (each old
text must be found exactly once, else the fault is STALE), runs only its named tests in one pytest process, records
which failed, restores the files. A fault is caught when every named test failed (for a node id that names a file
or a parametrised test: at least one of its items failed). The run stops as soon as that holds, as ``-x`` would for
one named test. Exit status 1 when any fault goes uncaught, is stale, or times out; a markdown table per faults
module (fault | file | caught by) goes to stdout for the docs, progress to stderr.

The tree is never touched. The copy links ``.venv`` back to the real one, so tests that start the project's
tools by path still find them; pytest runs under the interpreter running this script.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Never copied: environments (linked back instead), git, caches and throwaway outputs.
SKIPPED = (".venv*", ".git", "__pycache__", ".pytest_cache", ".ruff_cache", ".hypothesis", ".mypy_cache",
           ".cache", "*.whl")  # the Docker tests' caches and wheelhouse (docker/wheelhouse): hundreds of MB
# Skipped at the top of the tree only: outputs of `make demo` and the file-only demo (ml_backend/demo/ is code).
TOP_LEVEL_SKIPPED = frozenset({"demo", ".demo", "out", "label-studio-files"})
CHILD_FLAG = "--pytest-child"  # internal: this file re-runs itself as the pytest process, with the recorder


@dataclass(frozen=True)
class Entry:
    module: str  # the faults module's file name, e.g. "segmentor.py"
    fault: object  # tests.faults.Fault (duck-typed: name, edits, tests)


@dataclass
class Outcome:
    entry: Entry
    verdict: str  # "caught" | "UNCAUGHT" | "STALE" | "TIMEOUT"
    caught_by: list[str] = field(default_factory=list)
    detail: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.verdict == "caught"


# -- loading ---------------------------------------------------------------------------------------------


def load_faults(folder: Path) -> list[Entry]:
    """Every ``FAULTS`` in ``folder/*.py`` (not ``__init__``), in file then table order."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))  # fault tables import ``tests.faults.fault``
    entries = []
    for path in sorted(folder.glob("*.py")):
        if path.name.startswith("_"):
            continue
        spec = importlib.util.spec_from_file_location(f"_break_by_hand_faults_{path.stem}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        faults = getattr(module, "FAULTS", None)
        if faults is None:
            raise SystemExit(f"{path}: no FAULTS list")
        entries += [Entry(path.name, fault) for fault in faults]
    return entries


def select(entries: Iterable[Entry], names: Sequence[str], modules: Sequence[str]) -> list[Entry]:
    def wanted(entry: Entry) -> bool:
        if modules and not any(m.removesuffix(".py") == entry.module.removesuffix(".py") for m in modules):
            return False
        return not names or any(n in entry.fault.name for n in names)

    return [entry for entry in entries if wanted(entry)]


# -- one fault -------------------------------------------------------------------------------------------


def copy_tree(source: Path, target: Path) -> Path:
    skipped = shutil.ignore_patterns(*SKIPPED)

    def ignore(folder: str, names: list[str]) -> set[str]:
        top = TOP_LEVEL_SKIPPED.intersection(names) if Path(folder) == source else set()
        return set(skipped(folder, names)) | top

    shutil.copytree(source, target, ignore=ignore, symlinks=True)
    venv = source / ".venv"
    if venv.exists():
        (target / ".venv").symlink_to(venv)
    return target


def apply_edits(root: Path, edits: Iterable[tuple[str, str, str]]) -> str | None:
    """Applies the edits in order; returns why not (the fault is stale) or None."""
    for path, old, new in edits:
        file = root / path
        if not file.is_file():
            return f"{path} does not exist"
        text = file.read_text()
        count = text.count(old)
        if count != 1:
            return f"{path} contains {old!r} {count} times, not once"
        file.write_text(text.replace(old, new))
    return None


def run_fault(entry: Entry, root: Path, python: str, timeout_s: float) -> Outcome:
    started = time.monotonic()
    outcome = _run_fault(entry, root, python, timeout_s)
    outcome.seconds = time.monotonic() - started
    return outcome


def _run_fault(entry: Entry, root: Path, python: str, timeout_s: float) -> Outcome:
    fault = entry.fault
    saved = {path: (root / path).read_text() for path, _, _ in fault.edits if (root / path).is_file()}
    try:
        stale = apply_edits(root, fault.edits)
        if stale:
            return Outcome(entry, "STALE", detail=stale)
        if not fault.tests:
            return Outcome(entry, "STALE", detail="names no test")
        with tempfile.NamedTemporaryFile("r", suffix=".json", delete=False) as handle:
            report_path = Path(handle.name)
        command = [python, str(Path(__file__).resolve()), CHILD_FLAG, str(report_path), *fault.tests]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
        try:
            proc = subprocess.run(
                command, cwd=root, env=env, capture_output=True, text=True, timeout=timeout_s, check=False
            )
        except subprocess.TimeoutExpired:
            return Outcome(entry, "TIMEOUT", detail=f"named tests ran past {timeout_s:.0f} s")
        try:
            record = json.loads(report_path.read_text() or "{}")
        except ValueError:
            record = {}
        finally:
            report_path.unlink(missing_ok=True)
        return judge(entry, record, proc)
    finally:
        for path, text in saved.items():
            (root / path).write_text(text)


def judge(entry: Entry, record: dict, proc: subprocess.CompletedProcess) -> Outcome:
    targets = list(entry.fault.tests)
    failed = set(record.get("failed", []))
    collected = set(record.get("seen", []))
    missing = [t for t in targets if t not in failed and t not in collected]
    if missing:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
        return Outcome(entry, "STALE", detail=f"named test(s) not found: {', '.join(missing)}; " + " / ".join(tail))
    passed = [t for t in targets if t not in failed]
    if passed:
        return Outcome(entry, "UNCAUGHT", caught_by=sorted(failed), detail="still passed: " + ", ".join(passed))
    return Outcome(entry, "caught", caught_by=[t for t in targets if t in failed])


def run_all(entries: list[Entry], jobs: int, timeout_s: float, source: Path, python: str) -> list[Outcome]:
    outcomes: dict[int, Outcome] = {}
    with tempfile.TemporaryDirectory(prefix="break-by-hand-") as folder:
        copies: queue.Queue[Path] = queue.Queue()
        for number in range(max(1, min(jobs, len(entries)))):
            copies.put(copy_tree(source, Path(folder) / f"tree{number}"))

        def work(index: int) -> None:
            root = copies.get()
            try:
                outcome = run_fault(entries[index], root, python, timeout_s)
            finally:
                copies.put(root)
            outcomes[index] = outcome
            shown = outcome.verdict + (f" ({outcome.detail})" if outcome.detail else "")
            print(f"[{len(outcomes)}/{len(entries)}] {entries[index].module}: {entries[index].fault.name}: "
                  f"{shown} in {outcome.seconds:.1f} s", file=sys.stderr, flush=True)

        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            list(pool.map(work, range(len(entries))))
    return [outcomes[index] for index in range(len(entries))]


# -- the table -------------------------------------------------------------------------------------------


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table(outcomes: Sequence[Outcome]) -> str:
    lines: list[str] = []
    for module in dict.fromkeys(outcome.entry.module for outcome in outcomes):
        lines += [f"#### tests/faults/{module}", "", "| fault | file | caught by |", "|---|---|---|"]
        for outcome in (o for o in outcomes if o.entry.module == module):
            files = ", ".join(dict.fromkeys(f"`{path}`" for path, _, _ in outcome.entry.fault.edits))
            if outcome.ok:
                caught = ", ".join(f"`{_short(test)}`" for test in outcome.caught_by)
            else:
                caught = f"**{outcome.verdict}**: {outcome.detail}"
            lines.append(f"| {_cell(outcome.entry.fault.name)} | {files} | {_cell(caught)} |")
        lines.append("")
    return "\n".join(lines)


def _short(node_id: str) -> str:
    path, _, name = node_id.partition("::")
    return f"{Path(path).name}::{name}" if name else path


# -- the pytest child: runs the named tests and records, per node id, whether it failed ------------------------


def _matches(item_id: str, target: str) -> bool:
    """``item_id`` is ``target`` or lies inside it (a test of a file or folder, an item of a parametrised test)."""
    return item_id == target or item_id.startswith((target + "::", target + "[", target + "/"))


class Recorder:
    """A pytest plugin: which named node ids had a failing item; stops once every one has."""

    def __init__(self, targets: list[str], report: Path) -> None:
        self.targets, self.report = targets, report
        self.failed: set[str] = set()
        self.seen: set[str] = set()

    def _fail(self, item_id: str, session) -> None:
        self.failed |= {t for t in self.targets if _matches(item_id, t) or _matches(t, item_id)}
        if session is not None and self.failed >= set(self.targets):
            session.shouldstop = "every named test failed"

    def pytest_collectreport(self, report) -> None:
        if report.failed:  # a test file that no longer imports with the fault in place: its tests failed
            self._fail(report.nodeid, None)

    def pytest_collection_modifyitems(self, items) -> None:
        self.seen |= {t for t in self.targets for item in items if _matches(item.nodeid, t)}

    def pytest_runtest_logreport(self, report) -> None:
        if report.failed:
            self._fail(report.nodeid, self._session)

    def pytest_sessionstart(self, session) -> None:
        self._session = session

    def pytest_sessionfinish(self) -> None:
        self.report.write_text(json.dumps({"failed": sorted(self.failed), "seen": sorted(self.seen)}))


def child(argv: list[str]) -> int:
    import pytest

    report, targets = Path(argv[0]), argv[1:]
    here = str(Path(__file__).resolve().parent)
    sys.path[:] = [p for p in sys.path if p != here]  # tests/segmentor must not shadow the segmentor package
    sys.path.insert(0, os.getcwd())
    recorder = Recorder(targets, report)
    return pytest.main(["-q", "-p", "no:cacheprovider", *targets], plugins=[recorder])


# -- command line ----------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == [CHILD_FLAG]:
        return child(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="run only faults whose name contains one of these")
    parser.add_argument("--module", action="append", default=[], help="only this faults module (e.g. segmentor)")
    parser.add_argument("--jobs", type=int, default=1, help="faults run at once, each in its own copy of the tree")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds one fault's tests may run")
    parser.add_argument("--list", action="store_true", help="list the selected faults and exit")
    parser.add_argument("--faults", type=Path, default=REPO / "tests" / "faults", help=argparse.SUPPRESS)
    parser.add_argument("--tree", type=Path, default=REPO, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    entries = select(load_faults(args.faults), args.names, args.module)
    if not entries:
        print("no fault matches the selection", file=sys.stderr)
        return 2
    if args.list:
        for entry in entries:
            print(f"{entry.module}: {entry.fault.name}")
        return 0
    started = time.monotonic()
    outcomes = run_all(entries, args.jobs, args.timeout, args.tree.resolve(), sys.executable)
    print(table(outcomes))
    bad = [o for o in outcomes if not o.ok]
    minutes = (time.monotonic() - started) / 60
    print(f"{len(outcomes)} faults in {minutes:.1f} min with --jobs {args.jobs}: {len(outcomes) - len(bad)} caught, "
          + (f"{len(bad)} not: " + "; ".join(f"{o.entry.fault.name} ({o.verdict})" for o in bad) if bad else "0 not"),
          file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
