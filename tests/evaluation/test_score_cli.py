"""The score command on folders of PNG label maps, through its argparse entry points."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from segmentor.evaluation.cli import add_score_arguments, run_score
from tests.evaluation.label_maps import halves, square


def _score(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    add_score_arguments(parser)
    return run_score(parser.parse_args(list(argv)))


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    """Two images: a shifted square (8-bit PNGs) and a merged prediction of two halves (16-bit ids)."""
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    pred.mkdir()
    gt.mkdir()
    cv2.imwrite(str(gt / "square.png"), square().astype(np.uint8))
    cv2.imwrite(str(pred / "square.png"), square(offset_x=1).astype(np.uint8))
    cv2.imwrite(str(gt / "halves.png"), (halves(left=1000, right=40000)).astype(np.uint16))
    cv2.imwrite(str(pred / "halves.png"), np.full((10, 10), 7, np.uint16))
    return pred, gt


def test_score_writes_the_hand_computed_report(folders, tmp_path):
    pred, gt = folders
    out = tmp_path / "report" / "score.json"
    assert _score("--pred", str(pred), "--gt", str(gt), "--out", str(out)) == 0
    report = json.loads(out.read_text())
    assert report["images"] == 2
    # square: (0.6 + 10/11) / 2 (test_metrics); halves merged into one segment: 0.25.
    assert report["per_image_miou"] == pytest.approx(((0.6 + 10 / 11) / 2 + 0.25) / 2)
    assert report["pixel_accuracy"] == pytest.approx((0.92 + 0.5) / 2)
    assert 0.0 <= report["boundary_f1"] <= 1.0
    assert 0.0 <= report["global_miou"] <= 1.0
    assert [image["name"] for image in report["per_image"]] == ["halves", "square"]


def test_score_leaves_out_the_ignore_label(folders, tmp_path):
    pred, gt = folders
    label = halves()
    label[:, 5:] = 9  # right half "unlabelled" under --ignore 9: the merged prediction is then perfect
    cv2.imwrite(str(gt / "halves.png"), label.astype(np.uint8))
    out = tmp_path / "score.json"
    assert _score("--pred", str(pred), "--gt", str(gt), "--ignore", "9", "--out", str(out)) == 0
    per_image = {image["name"]: image for image in json.loads(out.read_text())["per_image"]}
    assert per_image["halves"]["miou"] == 1.0


@pytest.mark.parametrize(("damage", "message"), [
    (lambda pred, gt: (pred / "square.png").unlink(), "1 in ground truth .* only: square"),
    (lambda pred, gt: cv2.imwrite(str(pred / "extra.png"), np.zeros((10, 10), np.uint8)),
     "1 in predictions .* only: extra"),
    (lambda pred, gt: cv2.imwrite(str(pred / "square.png"), np.zeros((12, 10), np.uint8)),
     r"square.png is 10x12 but .*square.png is 10x10"),
    (lambda pred, gt: cv2.imwrite(str(pred / "square.png"), np.zeros((10, 10, 3), np.uint8)),
     "square.png: label maps must be single-channel"),
    (lambda pred, gt: cv2.imwrite(str(gt / "square.png"), np.full((10, 10), 255, np.uint8)),
     "square.png: ground truth has no labelled pixels"),
])
def test_score_errors_name_the_file(folders, tmp_path, capsys, damage, message):
    pred, gt = folders
    damage(pred, gt)
    out = tmp_path / "score.json"
    assert _score("--pred", str(pred), "--gt", str(gt), "--out", str(out)) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ")
    assert re.search(message, error), error
    assert not out.exists()


def test_score_names_a_missing_folder(folders, tmp_path, capsys):
    _, gt = folders
    assert _score("--pred", str(tmp_path / "missing"), "--gt", str(gt), "--out", str(tmp_path / "s.json")) == 2
    assert "does not exist" in capsys.readouterr().err
