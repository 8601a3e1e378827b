"""Labels whose words CLIP nearly cannot tell apart are named in the log when they are first embedded."""

from __future__ import annotations

import logging
import threading

import pytest

from ml_backend.core.metrics import Metrics
from ml_backend.core.settings import Settings
from ml_backend.labels import zeroshot
from ml_backend.labels.zeroshot import NEAR_DUPLICATE_COSINE, ZeroShot

LOGGER = "ml_backend.labels.zeroshot"


@pytest.fixture
def zero_shot(tiny_clip, tmp_path) -> ZeroShot:
    settings = Settings(cache_dir=tmp_path / "cache", data_dir=None, clip_model="tiny")
    return ZeroShot(tiny_clip, settings, Metrics(), threading.Lock())


def _warnings(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records
            if record.name == LOGGER and record.levelno == logging.WARNING]


def test_two_labels_with_nearly_the_same_words_are_named_with_their_cosine(zero_shot, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    embedded = zero_shot.embeddings({"Car": ("car",), "Cars": ("truck", "cars"), "Auto": ("automobile",)})
    cosine = float(embedded["Car"][0] @ embedded["Cars"][1])
    assert cosine > NEAR_DUPLICATE_COSINE  # the tiny CLIP's "car" and "cars" (0.98)
    assert float(embedded["Car"][0] @ embedded["Auto"][0]) < NEAR_DUPLICATE_COSINE  # 0.76: no warning
    (message,) = _warnings(caplog)
    assert "'Car' and 'Cars'" in message and f"cosine {cosine:.3f}" in message
    assert "'car' and 'cars'" in message and "Auto" not in message


def test_the_warning_is_logged_once_not_at_every_prediction(zero_shot, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    words = {"Car": ("car",), "Cars": ("cars",)}
    zero_shot.embeddings(words)
    zero_shot.embeddings(words)
    zero_shot.embeddings({**words, "Auto": ("automobile",)})  # a new label: the old pair is not named again
    assert len(_warnings(caplog)) == 1


def test_many_close_pairs_are_named_up_to_a_limit_then_counted(zero_shot, caplog, monkeypatch):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    monkeypatch.setattr(zeroshot, "NEAR_DUPLICATES_LOGGED", 1)
    zero_shot.embeddings({"Car": ("car",), "Cars": ("cars",), "Carr": ("carr",)})  # three pairs above 0.95
    named, counted = _warnings(caplog)
    assert "nearly coincide for CLIP: cosine" in named
    assert counted.startswith("2 more pairs of zero-shot labels")
