"""Helpers of the label-learning tests, shared with the end-to-end test: regions by segment, relabelling."""

from __future__ import annotations

import json

import numpy as np
from flask.testing import FlaskClient

NUM_SEGMENTS = 4
SCENE_SEEDS = (301, 302, 303)
LABELS = ("Object", "Red", "Green", "Blue")


def label_config(name: str = "poly", **attributes: str) -> str:
    """A polygon project over the colour classes; ``emerdiff-*`` attributes on its control."""
    extra = "".join(f' emerdiff-{key}="{value}"' for key, value in attributes.items())
    labels = "".join(f'<Label value="{label}"/>' for label in LABELS)
    return (f'<View><Image name="image" value="$image"/>'
            f'<PolygonLabels name="{name}" toName="image"{extra}>{labels}</PolygonLabels></View>')


CONFIG = label_config()


def task(seed: int, task_id: int | None = None) -> dict:
    return {"id": task_id or seed, "data": {"image": f"/data/local-files/?d=scene{seed}.png"}}


def predict(client: FlaskClient, tasks: list[dict], config: str = CONFIG, project: str = "7.1700000000") -> list[dict]:
    response = client.post("/predict", json={"tasks": tasks, "label_config": config, "project": project})
    assert response.status_code == 200, response.json
    return response.json["results"]


def annotation_event(action: str, annotation_id: int, task_: dict, result: list[dict], project: int = 7,
                     config: str = CONFIG, **fields: object) -> dict:
    """A webhook body shaped like Label Studio 1.23.2's (annotation, task and project objects)."""
    return {
        "action": action,
        "annotation": {"id": annotation_id, "task": task_["id"], "project": project, "result": result,
                       "was_cancelled": False, "ground_truth": False, **fields},
        "task": {**task_, "project": project},
        "project": {"id": project, "label_config": config, "title": "scenes"},
    }


def learnt(client: FlaskClient, timeout: float = 120.0) -> None:
    """Wait until the background learner has applied every queued webhook (202 answers)."""
    jobs = client.application.extensions["emerdiff"].learning.jobs
    assert jobs.wait_idle(timeout), "the background learner did not finish"


def segment_of(region: dict) -> int:
    """The segment a region was cut from (region ids are ``poly-s<segment>-<piece>``)."""
    return int(region["id"].split("-")[1][1:])


def relabelled(prediction: dict, labels: dict[int, str]) -> list[dict]:
    """The prediction's regions of the given segments, as an annotator would accept them with these labels."""
    regions = []
    for region in prediction["result"]:
        if segment_of(region) in labels:
            region = json.loads(json.dumps(region))
            region["value"]["polygonlabels"] = [labels[segment_of(region)]]
            regions.append(region)
    return regions


def labels_by_segment(prediction: dict) -> dict[int, str]:
    found: dict[int, str] = {}
    for region in prediction["result"]:
        found[segment_of(region)] = region["value"]["polygonlabels"][0]
    return found


def largest_segments(prediction: dict, count: int) -> list[int]:
    """The ``count`` segments with the most polygon area (stable choice across runs)."""
    areas: dict[int, float] = {}
    for region in prediction["result"]:
        points = np.array(region["value"]["points"])
        x, y = points[:, 0], points[:, 1]
        areas[segment_of(region)] = areas.get(segment_of(region), 0.0) + 0.5 * abs(
            np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))
    return sorted(areas, key=lambda s: -areas[s])[:count]
