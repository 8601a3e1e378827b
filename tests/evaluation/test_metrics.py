"""The metrics on hand-made label maps whose scores are worked out by hand in each test."""

from __future__ import annotations

import numpy as np
import pytest

from segmentor.evaluation.metrics import (
    EvaluationError,
    SetScores,
    boundary_f1,
    dataset_miou,
    global_miou,
    paired_difference,
    per_image_miou,
    pixel_accuracy,
)
from tests.evaluation.label_maps import halves, square


def test_perfect_prediction_scores_one_everywhere():
    gt = square()
    assert per_image_miou(gt, gt) == 1.0
    assert pixel_accuracy(gt, gt) == 1.0
    assert boundary_f1(gt, gt).f1 == 1.0
    assert global_miou([gt, gt], [gt, gt]) == 1.0


def test_permuted_ids_are_perfect_per_image_but_not_globally():
    gt = np.zeros((6, 9), np.int64)
    gt[:, 3:6], gt[:, 6:] = 1, 2
    permuted = np.choose(gt, [7, 3, 5])  # 0 -> 7, 1 -> 3, 2 -> 5
    assert per_image_miou(permuted, gt) == 1.0
    assert pixel_accuracy(permuted, gt) == 1.0
    # Two images whose halves carry swapped ids: every (pred, gt) pair holds n pixels, so each IoU is
    # n / (2n + 2n - n) = 1/3 however the single global matching goes.
    first, swapped = halves(left=0, right=1), halves(left=1, right=0)
    assert global_miou([first, swapped], [first, first]) == pytest.approx(1 / 3)


def test_shifted_square_matches_hand_computed_iou():
    gt, pred = square(), square(offset_x=1)
    # Square: overlap 4x3 = 12 of a 20-pixel union -> 0.6. Background: 84 each, overlap 100 - 20 = 80,
    # union 88 -> 10/11. Pixel accuracy: (12 + 80) / 100.
    assert per_image_miou(pred, gt) == pytest.approx((0.6 + 10 / 11) / 2)
    assert pixel_accuracy(pred, gt) == pytest.approx(0.92)


def test_split_segment_keeps_only_its_best_part():
    gt = halves()
    pred = gt.copy()
    pred[5:, 5:] = 2  # the right half cut into a top (id 1) and a bottom (id 2) quarter
    # Left: IoU 1. Right (50 px) matched to one quarter (25 px): 25 / 50. The other quarter is unmatched.
    assert per_image_miou(pred, gt) == pytest.approx(0.75)
    assert pixel_accuracy(pred, gt) == pytest.approx(0.75)


def test_merged_segments_leave_one_ground_truth_segment_unmatched():
    gt = halves()
    pred = np.zeros_like(gt)
    # The single prediction matches one half with IoU 50 / 100; the other half gets nothing and counts 0.
    assert per_image_miou(pred, gt) == pytest.approx(0.25)
    assert pixel_accuracy(pred, gt) == pytest.approx(0.5)


def test_ignore_label_pixels_count_for_nothing():
    gt = halves()
    gt[:, 8:] = 255
    pred = halves()
    pred[:, 8:] = np.arange(20).reshape(10, 2) + 40  # garbage ids, only under the ignore label
    assert per_image_miou(pred, gt) == 1.0
    assert pixel_accuracy(pred, gt) == 1.0
    assert boundary_f1(pred, gt).f1 == 1.0
    # Without the ignore label the garbage costs: the 20 ignored pixels become wrong pixels of the right half.
    assert per_image_miou(pred, gt, ignore=None) < 1.0


def test_ignore_only_ground_truth_is_an_error():
    with pytest.raises(EvaluationError, match="no labelled pixels"):
        per_image_miou(np.zeros((4, 4), np.int64), np.full((4, 4), 255))


@pytest.mark.parametrize(("pred", "gt", "message"), [
    (np.zeros((4, 5), np.int64), np.zeros((4, 4), np.int64), "differ in size"),
    (np.zeros((4, 4), np.float32), np.zeros((4, 4), np.int64), "integer ids"),
    (np.zeros(16, np.int64), np.zeros(16, np.int64), "2-D"),
])
def test_bad_label_maps_get_specific_errors(pred, gt, message):
    with pytest.raises(EvaluationError, match=message):
        per_image_miou(pred, gt)


def test_boundary_within_tolerance_is_found():
    gt = halves(size=20, split=10)  # boundary pixels: columns 9 and 10
    shifted = halves(size=20, split=12)  # columns 11 and 12: 1 and 2 px away
    assert boundary_f1(shifted, gt, tolerance=2).f1 == 1.0


def test_boundary_beyond_tolerance_matches_hand_computed_f1():
    gt = halves(size=20, split=10)  # columns 9, 10
    shifted = halves(size=20, split=13)  # columns 12, 13
    # Precision: column 12 is 2 px from column 10 (found), column 13 is 3 px (missed) -> 1/2.
    # Recall: column 10 is 2 px from column 12 (found), column 9 is 3 px (missed) -> 1/2.
    score = boundary_f1(shifted, gt, tolerance=2)
    assert (score.precision, score.recall, score.f1) == pytest.approx((0.5, 0.5, 0.5))


def test_extra_boundary_lowers_precision_only():
    gt = halves(size=20, split=10)
    pred = gt.copy()
    pred[:, :4] = 5  # a second edge at columns 3 and 4, at least 5 px from the true one
    score = boundary_f1(pred, gt)
    assert (score.precision, score.recall, score.f1) == pytest.approx((0.5, 1.0, 2 / 3))


def test_boundary_with_no_edges_in_either_map_is_perfect_and_in_one_map_zero():
    flat = np.zeros((8, 8), np.int64)
    assert boundary_f1(flat, flat).f1 == 1.0
    assert boundary_f1(halves(size=8), flat).f1 == 0.0
    assert boundary_f1(flat, halves(size=8)).f1 == 0.0


def test_dataset_miou_recovers_classes_from_embeddings_despite_per_image_ids():
    gt = np.zeros((6, 6), np.int64)
    gt[3:] = 1  # top: class 0 (sky), bottom: class 1 (ground)
    preds = [gt, 1 - gt, gt]  # the second image numbers its segments the other way round
    sky, ground = [1.0, 0.0, 0.1], [0.0, 1.0, 0.1]
    embeddings = [np.array([sky, ground]), np.array([ground, sky]), np.array([sky, ground])]
    assert dataset_miou(preds, [gt] * 3, embeddings, seed=0) == 1.0
    assert global_miou(preds, [gt] * 3) < 1.0


def test_dataset_miou_with_a_wrong_embedding_matches_hand_computed_value():
    gt = np.zeros((6, 6), np.int64)
    gt[3:] = 1
    sky, ground = [1.0, 0.0], [0.0, 1.0]
    # Image B's sky segment looks like ground: clusters X = {A sky} and Y = {A ground, B sky, B ground}.
    # With n pixels per half: X-sky IoU n / (n + 2n - n) = 1/2; Y-ground IoU 2n / (3n + 2n - 2n) = 2/3.
    embeddings = [np.array([sky, ground]), np.array([ground, ground])]
    assert dataset_miou([gt, gt], [gt, gt], embeddings, seed=0) == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_dataset_miou_needs_embeddings_for_every_predicted_id():
    scores = SetScores()
    with pytest.raises(EvaluationError, match="no embedding for predicted ids"):
        scores.add(halves(), halves(), {0: np.ones(3)})
    scores.add(halves(), halves())
    with pytest.raises(EvaluationError, match="needs the segment embeddings"):
        scores.dataset_miou()


def test_set_scores_average_per_image_scores():
    scores = SetScores()
    scores.add(square(), square())
    scores.add(np.zeros((10, 10), np.int64), halves())
    assert scores.per_image_miou() == pytest.approx((1.0 + 0.25) / 2)
    assert scores.pixel_accuracy() == pytest.approx((1.0 + 0.5) / 2)
    assert scores.boundary_f1() == pytest.approx((1.0 + 0.0) / 2)


def test_paired_difference_reports_mean_standard_error_and_win_fractions():
    paired = paired_difference([0.5, 0.7, 0.2], [0.4, 0.7, 0.3])
    assert paired["mean"] == pytest.approx(0.0)
    assert paired["sem"] == pytest.approx(0.1 / np.sqrt(3))
    assert (paired["won"], paired["tied"], paired["lost"]) == pytest.approx((1 / 3, 1 / 3, 1 / 3))
    assert paired_difference([0.5], [0.25])["sem"] is None
    with pytest.raises(EvaluationError, match="equal, non-empty"):
        paired_difference([0.5], [])
