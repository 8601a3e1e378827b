"""The break-by-hand runner itself: on a tiny fake tree and fault table, it tells caught from uncaught and stale."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import break_by_hand

FAULTS = '''
from tests.faults import fault

T = "test_calc.py::test_add"
FAULTS = [
    fault("sign flipped", [("calc/ops.py", "a + b", "a - b")], [T, "test_calc.py"]),
    fault("operands swapped", [("calc/ops.py", "a + b", "b + a")], [T]),
    fault("edit of text that is gone", [("calc/ops.py", "a * b", "a / b")], [T]),
    fault("edit of text found twice", [("calc/ops.py", "return", "yield")], [T]),
    fault("test that is gone", [("calc/ops.py", "a + b", "a - b")], ["test_calc.py::test_renamed"]),
    fault("one of two named tests misses it", [("calc/ops.py", "a + b", "a - b")], [T, "test_calc.py::test_one"]),
]
'''


@pytest.fixture
def fake(tmp_path: Path) -> tuple[Path, Path]:
    tree, faults = tmp_path / "tree", tmp_path / "faults"
    (tree / "calc").mkdir(parents=True)
    faults.mkdir()
    (tree / "calc" / "__init__.py").write_text("")
    (tree / "calc" / "ops.py").write_text("def add(a, b):\n    return a + b\n\n\ndef one():\n    return 1\n")
    (tree / "test_calc.py").write_text(
        "from calc.ops import add, one\n\n\ndef test_add():\n    assert add(2, 3) == 5\n\n\n"
        "def test_one():\n    assert one() == 1\n"
    )
    (faults / "demo.py").write_text(FAULTS)
    return tree, faults


def run(fake: tuple[Path, Path], capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, str]]:
    tree, faults = fake
    status = break_by_hand.main(["--tree", str(tree), "--faults", str(faults), *args])
    rows = [line.strip("| ").split(" | ") for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    return status, {row[0]: row[2] for row in rows[1:]}  # rows[0] is the header


def test_each_fault_is_judged_caught_uncaught_or_stale_and_the_tree_is_untouched(fake, capsys) -> None:
    before = (fake[0] / "calc" / "ops.py").read_text()
    status, verdicts = run(fake, capsys, "--jobs", "2")
    assert status == 1
    assert verdicts["sign flipped"] == "`test_calc.py::test_add`, `test_calc.py`"
    assert verdicts["operands swapped"].startswith("**UNCAUGHT**: still passed: test_calc.py::test_add")
    assert verdicts["edit of text that is gone"].startswith("**STALE**: calc/ops.py contains 'a * b' 0 times")
    assert verdicts["edit of text found twice"].startswith("**STALE**: calc/ops.py contains 'return' 2 times")
    assert verdicts["test that is gone"].startswith("**STALE**: named test(s) not found: test_calc.py::test_renamed")
    assert verdicts["one of two named tests misses it"] == "**UNCAUGHT**: still passed: test_calc.py::test_one"
    assert (fake[0] / "calc" / "ops.py").read_text() == before


def test_a_selection_of_caught_faults_passes(fake, capsys) -> None:
    status, verdicts = run(fake, capsys, "sign", "--module", "demo")
    assert status == 0
    assert list(verdicts) == ["sign flipped"]


def test_a_selection_that_matches_nothing_is_an_error_not_a_pass(fake, capsys) -> None:
    assert run(fake, capsys, "no such fault")[0] == 2
