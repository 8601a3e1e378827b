"""The label memory (SQLite): insert, update, delete, rebuild's bookkeeping, restarts, projects kept apart."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from ml_backend.labels.memory import FILE_NAME, LabelMemory
from segmentor.labelling import LabelExample

SPACE = "weights-a"


def example(region: str, label: str, seed: int, dim: int = 8) -> LabelExample:
    embedding = np.random.default_rng(seed).normal(size=dim).astype(np.float32)
    return LabelExample(region, "poly", label, embedding, area=100 + seed)


@pytest.fixture
def memory(tmp_path: Path) -> LabelMemory:
    return LabelMemory(tmp_path / FILE_NAME)


def test_reading_an_unwritten_memory_creates_nothing(tmp_path: Path) -> None:
    memory = LabelMemory(tmp_path / "data" / FILE_NAME)
    assert memory.revision(1, SPACE) is None
    assert memory.snapshot(1, SPACE) == (None, [])
    assert memory.sources(1) == {}
    assert not (tmp_path / "data").exists()


def test_insert_then_read_back(memory: LabelMemory) -> None:
    stored = [example("a", "Cat", 1), example("b", "Dog", 2)]
    memory.replace_annotation(1, annotation=10, task=5, examples=stored, feature_space=SPACE, source="s1")
    revision, examples = memory.snapshot(1, SPACE)
    assert revision is not None and revision == memory.revision(1, SPACE)
    assert [(e.region_id, e.label, e.area) for e in examples] == [("a", "Cat", 101), ("b", "Dog", 102)]
    np.testing.assert_array_equal(examples[0].embedding, stored[0].embedding)
    assert memory.sources(1) == {10: "s1"}
    assert memory.counts(1) == {"Cat": 1, "Dog": 1}


def test_update_replaces_the_annotations_rows(memory: LabelMemory) -> None:
    memory.replace_annotation(1, 10, 5, [example("a", "Cat", 1), example("b", "Dog", 2)], SPACE, "s1")
    memory.replace_annotation(1, 11, 6, [example("c", "Cat", 3)], SPACE, "s2")
    before = memory.revision(1, SPACE)
    memory.replace_annotation(1, 10, 5, [example("a", "Bird", 1)], SPACE, "s1b")
    _, examples = memory.snapshot(1, SPACE)
    assert sorted((e.region_id, e.label) for e in examples) == [("a", "Bird"), ("c", "Cat")]
    assert memory.revision(1, SPACE) != before


def test_same_content_again_keeps_the_revision(memory: LabelMemory) -> None:
    memory.replace_annotation(1, 10, 5, [example("a", "Cat", 1)], SPACE, "s1")
    before = memory.revision(1, SPACE)
    memory.replace_annotation(1, 10, 5, [example("a", "Cat", 1)], SPACE, "s1")
    assert memory.revision(1, SPACE) == before


def test_delete_annotations_and_tasks(memory: LabelMemory) -> None:
    memory.replace_annotation(1, 10, 5, [example("a", "Cat", 1)], SPACE, "s1")
    memory.replace_annotation(1, 11, 6, [example("b", "Dog", 2)], SPACE, "s2")
    memory.replace_annotation(1, 12, 6, [example("c", "Dog", 3)], SPACE, "s3")
    assert memory.delete_annotations(1, [10, 999]) == 1
    assert [e.label for e in memory.snapshot(1, SPACE)[1]] == ["Dog", "Dog"]
    assert memory.delete_tasks(1, [6]) == 2
    assert memory.snapshot(1, SPACE) == (None, [])
    assert memory.revision(1, SPACE) is None


def test_projects_and_feature_spaces_are_kept_apart(memory: LabelMemory) -> None:
    memory.replace_annotation(1, 10, 5, [example("a", "Cat", 1)], SPACE, "s1")
    memory.replace_annotation(2, 10, 5, [example("a", "Dog", 2)], SPACE, "s1")  # same ids, other project
    memory.replace_annotation(1, 20, 7, [example("z", "Cow", 3)], "weights-b", "s9")
    assert [e.label for e in memory.snapshot(1, SPACE)[1]] == ["Cat"]
    assert [e.label for e in memory.snapshot(2, SPACE)[1]] == ["Dog"]
    assert [e.label for e in memory.snapshot(1, "weights-b")[1]] == ["Cow"]
    assert memory.delete_annotations(2, [10]) == 1
    assert [e.label for e in memory.snapshot(1, SPACE)[1]] == ["Cat"]
    assert memory.clear(1) == 2
    assert memory.snapshot(1, "weights-b") == (None, [])


def test_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / FILE_NAME
    LabelMemory(path).replace_annotation(3, 10, 5, [example("a", "Cat", 1)], SPACE, "s1")
    revision = LabelMemory(path).revision(3, SPACE)
    reopened = LabelMemory(path)  # a new process opens the same file
    assert reopened.revision(3, SPACE) == revision is not None
    assert [e.label for e in reopened.snapshot(3, SPACE)[1]] == ["Cat"]


def test_a_failed_write_leaves_the_memory_unchanged(memory: LabelMemory) -> None:
    memory.replace_annotation(1, 10, 5, [example("a", "Cat", 1)], SPACE, "s1")
    before = memory.snapshot(1, SPACE)
    broken = LabelExample("b", "poly", "Dog", np.zeros(8, np.float32), area=None)  # NOT NULL area
    with pytest.raises(Exception, match="NOT NULL"):
        memory.replace_annotation(1, 10, 5, [example("a2", "Dog", 2), broken], SPACE, "s2")
    after = memory.snapshot(1, SPACE)
    assert after[0] == before[0] and [e.label for e in after[1]] == ["Cat"]


def test_concurrent_writers_and_readers(memory: LabelMemory) -> None:
    """Webhooks writing while predictions read: every read sees whole annotations, nothing is lost."""
    errors: list[BaseException] = []
    sizes: list[int] = []

    def write(first: int) -> None:
        try:
            for annotation in range(first, first + 20):
                memory.replace_annotation(1, annotation, annotation, [example("a", "Cat", annotation),
                                                                      example("b", "Dog", annotation)], SPACE, "s")
        except BaseException as error:  # reported below
            errors.append(error)

    def read() -> None:
        try:
            for _ in range(40):
                _, examples = memory.snapshot(1, SPACE)
                sizes.append(len(examples))
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=write, args=(start,)) for start in (0, 100, 200)]
    threads += [threading.Thread(target=read) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert all(size % 2 == 0 for size in sizes)  # an annotation's two rows are seen together or not at all
    assert len(memory.snapshot(1, SPACE)[1]) == 120
