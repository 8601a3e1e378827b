"""Smart tools through a real Label Studio: the editor's interactive-annotating call reaches our backend
with the smart keypoints / rectangle, and the answer is the segment(s) they select.

Expected regions come from the in-process segmentor's label map (same model and settings as the
backend), computed independently of the backend's selection code.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from label_studio_sdk import LabelStudio
from scipy import ndimage

from converters import region_to_mask, validate_regions
from ml_backend.demo.backend import BackendServer
from ml_backend.demo.label_studio import LabelStudioServer
from segmentor import EmerDiffSegmentor, Segmentation, load_image
from tests.e2e.conftest import TIMINGS
from tests.e2e.interactive_project import (
    KEYPOINT_CONTROL,
    OUTPUT_CONTROL,
    RECTANGLE_CONTROL,
    InteractiveProject,
    create_interactive_project,
)
from tests.e2e.workflow import Workflow

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

LABEL = "Disc"


@pytest.fixture(scope="module")
def project(
    ls_client: LabelStudio, label_studio: LabelStudioServer, backend: BackendServer, upload_scenes: list[Path]
) -> InteractiveProject:
    workflow = Workflow(ls_client, label_studio.url, label_studio.token)
    return create_interactive_project(workflow, backend.url, upload_scenes[:1])


@pytest.fixture(scope="module")
def reference(project: InteractiveProject, reference_segmentor: EmerDiffSegmentor) -> tuple[int, Segmentation]:
    (task_id, path), *_ = project.tasks.items()
    return task_id, reference_segmentor.segment(load_image(path))


def keypoint(x: float, y: float, positive: bool = True) -> dict:
    """A smart keypoint as the editor serialises it (percent; ``is_positive`` false when drawn with Alt)."""
    return {
        "id": f"p{x:.0f}-{y:.0f}-{int(positive)}", "from_name": KEYPOINT_CONTROL, "to_name": "image",
        "type": "keypointlabels", "origin": "manual", "is_positive": positive,
        "value": {"x": x, "y": y, "width": 0.6, "keypointlabels": [LABEL]},
    }


def pixel_centre_percent(segmentation: Segmentation, segment_id: int) -> tuple[float, float, tuple[int, int]]:
    """A pixel well inside the segment (farthest from its border) in percent, and that pixel."""
    inside = ndimage.distance_transform_edt(segmentation.label_map == segment_id)
    row, column = np.unravel_index(np.argmax(inside), inside.shape)
    height, width = segmentation.label_map.shape
    return (column + 0.5) * 100 / width, (row + 0.5) * 100 / height, (row, column)


def test_a_smart_keypoint_gets_the_segment_under_it(
    project: InteractiveProject, reference: tuple[int, Segmentation]
) -> None:
    task_id, segmentation = reference
    largest = max(segmentation.segments, key=lambda segment: segment.area)
    x, y, (row, column) = pixel_centre_percent(segmentation, largest.id)
    started = time.monotonic()
    answer = project.ask(task_id, [keypoint(x, y)])
    TIMINGS["first smart click (segments the image)"] = time.monotonic() - started
    assert "errors" not in answer, answer
    regions = answer["data"]["result"]
    validate_regions(regions, project.config)
    (region,) = regions
    assert region["from_name"] == OUTPUT_CONTROL and region["value"]["brushlabels"] == [LABEL]
    assert np.array_equal(region_to_mask(region), segmentation.label_map == segmentation.label_map[row, column])

    started = time.monotonic()
    again = project.ask(task_id, [keypoint(x, y), keypoint(x, y, positive=False)])
    TIMINGS["smart click on the cached image"] = time.monotonic() - started
    assert again["data"]["result"] == [], "a negative point on the only selected segment removes it"


def test_a_smart_rectangle_gets_the_segments_mostly_inside_it(
    project: InteractiveProject, reference: tuple[int, Segmentation]
) -> None:
    task_id, segmentation = reference
    height, width = segmentation.label_map.shape
    box = {"x": 0.0, "y": 0.0, "width": 60.0, "height": 70.0}
    answer = project.ask(task_id, [{
        "id": "box1", "from_name": RECTANGLE_CONTROL, "to_name": "image", "type": "rectanglelabels",
        "origin": "manual", "value": {**box, "rotation": 0, "rectanglelabels": [LABEL]},
    }])
    # Pixels whose centre lies inside the box (pycocotools' rule, as Label Studio's rectangles rasterise).
    columns, rows = (np.arange(width) + 0.5) * 100 / width, (np.arange(height) + 0.5) * 100 / height
    inside = np.outer(rows <= box["height"], columns <= box["width"])
    expected = np.zeros((height, width), bool)
    for segment in segmentation.segments:
        mask = segmentation.label_map == segment.id
        if (mask & inside).sum() > 0.5 * mask.sum():
            expected |= mask
    regions = answer["data"]["result"]
    if not expected.any():
        assert regions == []
        return
    (region,) = regions
    assert np.array_equal(region_to_mask(region), expected)
