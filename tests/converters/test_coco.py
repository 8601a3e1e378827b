"""COCO files from CocoBuilder: pycocotools loads them, annToMask matches, a self-evaluation scores AP 1.0."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from converters.coco import CocoBuilder, CocoError, has_holes
from tests.converters.shapes import HEIGHT, WIDTH, blobs, filled, iou, ordinary_shapes


def _load(builder: CocoBuilder, tmp_path: Path) -> COCO:
    path = tmp_path / "coco.json"
    builder.write(path)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        return COCO(str(path))


def _self_evaluation_ap(coco: COCO) -> float:
    """COCOeval (segm) of the ground truth against itself as results with score 1.0."""
    results = [{**ann, "score": 1.0} for ann in coco.dataset["annotations"]]
    with contextlib.redirect_stdout(io.StringIO()):
        detections = coco.loadRes(results)
        evaluation = COCOeval(coco, detections, iouType="segm")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return float(evaluation.stats[0])


def _builder_with(masks: list[np.ndarray], encoding: str) -> CocoBuilder:
    builder = CocoBuilder(["thing", "stuff"])
    image_id = builder.add_image("/data/upload/1/abc-scene.png", WIDTH, HEIGHT)
    for index, mask in enumerate(masks):
        builder.add_mask(image_id, ["thing", "stuff"][index % 2], mask, encoding=encoding)
    return builder


@pytest.mark.parametrize("encoding", ["polygon", "rle"])
@settings(max_examples=15, deadline=None)
@given(st.lists(st.one_of(ordinary_shapes(), blobs()), min_size=1, max_size=4))
def test_coco_loads_masks_match_and_self_evaluation_scores_ap_1(
    tmp_path_factory: pytest.TempPathFactory, encoding: str, masks: list[np.ndarray]
) -> None:
    coco = _load(_builder_with(masks, encoding), tmp_path_factory.mktemp("coco"))
    annotations = coco.loadAnns(coco.getAnnIds())
    assert [a["id"] for a in annotations] == list(range(1, len(masks) + 1))
    for annotation, mask in zip(annotations, masks, strict=True):
        decoded = coco.annToMask(annotation).astype(bool)
        if encoding == "rle":
            assert np.array_equal(decoded, mask)
            assert isinstance(annotation["segmentation"]["counts"], str)
        else:
            assert iou(decoded, filled(mask)) >= 0.98
        assert annotation["area"] == decoded.sum()
        ys, xs = np.nonzero(decoded)
        assert annotation["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        assert annotation["iscrowd"] == 0
    assert _self_evaluation_ap(coco) == pytest.approx(1.0)


def test_auto_encoding_keeps_holes_as_rle_and_solid_masks_as_polygons(tmp_path: Path) -> None:
    solid = np.zeros((HEIGHT, WIDTH), bool)
    solid[10:40, 10:50] = True
    ring = solid.copy()
    ring[20:30, 20:40] = False
    assert not has_holes(solid) and has_holes(ring)
    coco = _load(_builder_with([solid, ring], "auto"), tmp_path)
    first, second = coco.loadAnns([1, 2])
    assert isinstance(first["segmentation"], list) and isinstance(second["segmentation"], dict)
    assert np.array_equal(coco.annToMask(second).astype(bool), ring)


def test_document_layout_ids_from_1_and_names_as_given(tmp_path: Path) -> None:
    builder = CocoBuilder(["b", "a"])
    first = builder.add_image("upload/1/abc-scene.png", 8, 6)
    second = builder.add_image("photos/day/x.jpg", 8, 6, extra={"ls_task_id": 4})
    mask = np.zeros((6, 8), bool)
    mask[1:4, 2:6] = True
    annotation = builder.add_mask(second, "a", mask, score=0.25)
    document = json.loads(json.dumps(builder.to_dict()))
    assert (first, second, annotation) == (1, 2, 1)
    assert document["categories"] == [
        {"id": 1, "name": "b", "supercategory": ""},
        {"id": 2, "name": "a", "supercategory": ""},
    ]
    assert [i["file_name"] for i in document["images"]] == ["upload/1/abc-scene.png", "photos/day/x.jpg"]
    assert document["images"][1]["ls_task_id"] == 4
    assert document["annotations"][0]["score"] == 0.25
    assert document["annotations"][0]["category_id"] == 2


def test_explicit_category_ids() -> None:
    builder = CocoBuilder({"car": 7, "person": 1})
    assert [(c["id"], c["name"]) for c in builder.to_dict()["categories"]] == [(7, "car"), (1, "person")]
    with pytest.raises(CocoError, match="unique integers"):
        CocoBuilder({"car": 1, "bus": 1})


def test_results_are_what_load_res_reads_and_score_ap_1(tmp_path: Path) -> None:
    builder = CocoBuilder(["thing"])
    image_id = builder.add_image("a.png", 40, 30)
    builder.add_polygons(image_id, "thing", [np.array([[2.0, 1.0], [20.0, 1.0], [20.0, 20.0], [2.0, 20.0]])])
    ring = np.zeros((30, 40), bool)
    ring[5:25, 22:38] = True
    ring[10:15, 26:30] = False
    builder.add_mask(image_id, "thing", ring)
    coco = _load(builder, tmp_path)
    detections = CocoBuilder(["thing"])
    detections.add_image("a.png", 40, 30)
    for annotation in coco.dataset["annotations"]:
        detections.add_mask(image_id, "thing", coco.annToMask(annotation), score=0.5)
    results = detections.results()
    assert all(isinstance(r["segmentation"], dict) and r["score"] == 0.5 for r in results)
    with contextlib.redirect_stdout(io.StringIO()):
        loaded = coco.loadRes(json.loads(json.dumps(results)))
        evaluation = COCOeval(coco, loaded, iouType="segm")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    assert evaluation.stats[0] == pytest.approx(1.0)
    with pytest.raises(CocoError, match="annotation 1 has no score"):
        builder.results()


def test_a_drawn_box_keeps_its_own_bbox_cut_to_the_image(tmp_path: Path) -> None:
    builder = CocoBuilder(["sign"])
    image_id = builder.add_image("a.png", 20, 10)
    corners = np.array([[2.3, 1.6], [25.0, 1.6], [25.0, 7.25], [2.3, 7.25]])  # runs past the right edge
    builder.add_polygons(image_id, "sign", [corners], box=True)
    (annotation,) = _load(builder, tmp_path).loadAnns([1])
    assert annotation["bbox"] == [2.3, 1.6, 17.7, 5.65]
    assert annotation["segmentation"] == [[2.3, 1.6, 20.0, 1.6, 20.0, 7.25, 2.3, 7.25]]


def test_add_polygons_keeps_the_rings(tmp_path: Path) -> None:
    builder = CocoBuilder(["thing"])
    image_id = builder.add_image("a.png", 20, 10)
    ring = np.array([[2.0, 1.0], [12.4, 1.0], [12.4, 7.25], [2.0, 7.25]])
    builder.add_polygons(image_id, "thing", [ring])
    (annotation,) = _load(builder, tmp_path).loadAnns([1])
    assert annotation["segmentation"] == [ring.ravel().tolist()]
    assert annotation["area"] == 10 * 6 and annotation["bbox"] == [2, 1, 10, 6]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda b: b.add_mask(1, "nope", np.ones((6, 8))), "unknown category 'nope'"),
        (lambda b: b.add_mask(7, "thing", np.ones((6, 8))), "unknown image id 7"),
        (lambda b: b.add_mask(1, "thing", np.ones((5, 8))), r"mask shape \(5, 8\) does not match image 1"),
        (lambda b: b.add_mask(1, "thing", np.zeros((6, 8))), "empty mask for image 1"),
        (lambda b: b.add_mask(1, "thing", np.ones((6, 8)), encoding="png"), "encoding must be one of"),
        (lambda b: b.add_image("x.png", 0, 6), "size must be positive integers"),
    ],
)
def test_builder_errors_say_what_is_wrong(call, message: str) -> None:
    builder = CocoBuilder(["thing"])
    builder.add_image("a.png", 8, 6)
    with pytest.raises(CocoError, match=message):
        call(builder)


def test_categories_must_be_unique_names() -> None:
    with pytest.raises(CocoError, match="unique"):
        CocoBuilder(["a", "a"])
    with pytest.raises(CocoError, match="non-empty"):
        CocoBuilder([])
