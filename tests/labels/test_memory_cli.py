"""``python -m ml_backend memory show|clear|rebuild`` on a memory the service wrote."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ml_backend.__main__ import main
from ml_backend.labels.memory import FILE_NAME, LabelMemory
from segmentor.labelling import LabelExample


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    for name in ("LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    memory = LabelMemory(tmp_path / FILE_NAME)
    for project, label in ((4, "Cat"), (5, "Dog")):
        example = LabelExample("r1", "poly", label, np.ones(4, np.float32), 10)
        memory.replace_annotation(project, 1, 1, [example], "weights", "s")
    return tmp_path


def test_show_and_clear(data_dir: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["memory", "show", "--project", "4"]) == 0
    assert json.loads(capsys.readouterr().out)["examples_per_label"] == {"Cat": 1}
    assert main(["memory", "clear", "--project", "4"]) == 0
    assert "forgot 1 annotations of project 4" in capsys.readouterr().err
    memory = LabelMemory(data_dir / FILE_NAME)
    assert memory.counts(4) == {} and memory.counts(5) == {"Dog": 1}


def test_rebuild_needs_label_studio(data_dir: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["memory", "rebuild", "--project", "4"]) == 2
    assert "LABEL_STUDIO_URL" in capsys.readouterr().err
