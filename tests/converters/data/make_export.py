"""Builds ``export.json`` in a real Label Studio 1.23.2: an 80x60 project with every case the COCO converter
must get right, exported as Label Studio writes it (snapshot export with full predictions).

Cases: polygon, brush (with a hole), axis-aligned and rotated rectangles, a keypoint and a choice (not
COCO objects), predictions with scores, a ground-truth annotation beside a second annotator's, a
cancelled annotation, an annotation updated after a newer one was made (the latest by ``updated_at``
is not the highest id), a submitted empty annotation (a negative image), an unannotated task, images
sharing a base name in two folders, an uploaded image, and ``<Label category="7">``.

``python tests/converters/data/make_export.py`` starts Label Studio from ``.venv-ls``, builds the project and
rewrites ``export.json`` (normalised: ids renumbered, timestamps replaced by ones in the same order, the
random upload prefix fixed); ``tests/e2e/test_coco_e2e.py`` rebuilds it in the session's Label Studio and
checks the file is current. ``source_masks()`` are the masks the brush regions were painted from.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import requests
from label_studio_sdk import LabelStudio
from label_studio_sdk.converter.brush import mask2rle

WIDTH, HEIGHT = 80, 60
DATA = Path(__file__).resolve().parent
EXPORT_PATH = DATA / "export.json"
CONFIG_PATH = DATA / "label_config.xml"
# Local-storage images live in this folder under LOCAL_FILES_DOCUMENT_ROOT.
LOCAL_FOLDER = "coco-fixture"
UPLOADED = "street.png"
LOCAL_IMAGES = ("day/scene.png", "night/scene.png", "day/empty.png", "day/unlabelled.png")
SECOND_ANNOTATOR = "annotator2@example.com"
MODEL_VERSION = "emerdiff-fixture"

# Polygons as an annotator clicks them, in percent of the image size.
CAR_POINTS = [[10.0, 15.0], [45.5, 12.25], [50.0, 60.0], [12.5, 55.0]]
CAR_POINTS_MOVED = [[12.0, 15.0], [47.5, 12.25], [52.0, 60.0], [14.5, 55.0]]
PERSON_POINTS = [[60.0, 10.0], [80.0, 20.0], [75.625, 70.0], [58.75, 66.5], [55.0, 40.0]]
# Rectangles: x, y, width, height in percent, rotation in degrees.
SIGN_BOX = (62.5, 10.0, 25.0, 20.0, 0.0)
TRUCK_BOXES = {"ground truth": (20.0, 20.0, 40.0, 30.0, 30.0), "second": (21.0, 20.0, 40.0, 30.0, 35.0)}
PREDICTED_TRUCK = (22.0, 25.0, 35.0, 30.0, 20.0)


def _road_with_hole() -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    cv2.ellipse(mask, (40, 42), (30, 12), 0, 0, 360, 1, thickness=-1)
    cv2.ellipse(mask, (40, 42), (10, 4), 0, 0, 360, 0, thickness=-1)
    return mask.astype(bool)


def _sky_band() -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), bool)
    mask[0:14, :] = True
    mask[14:18, 20:60] = True
    return mask


def _prediction_sky() -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), bool)
    mask[0:12, 5:75] = True
    return mask


def source_masks() -> dict[str, np.ndarray]:
    """Region id → the mask its brush RLE encodes."""
    return {"bR0aD1": _road_with_hole(), "pSky01": _prediction_sky(), "sKy9x2": _sky_band()}


def write_images(document_root: Path, upload_folder: Path) -> dict[str, Path]:
    """The fixture's PNGs: ``LOCAL_IMAGES`` under ``document_root/LOCAL_FOLDER``, ``UPLOADED`` in
    ``upload_folder``; name → path."""
    rng = np.random.default_rng(13)
    paths = {}
    for name in (UPLOADED, *LOCAL_IMAGES):
        folder = upload_folder if name == UPLOADED else document_root / LOCAL_FOLDER
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8))
        paths[name] = path
    return paths


def label_config() -> str:
    return CONFIG_PATH.read_text(encoding="utf-8")


def _region(region_id: str, kind: str, value: dict, score: float | None = None) -> dict:
    names = {"polygonlabels": "poly", "brushlabels": "brush", "rectanglelabels": "box", "keypointlabels": "point"}
    region = {
        "id": region_id,
        "from_name": names[kind],
        "to_name": "image",
        "type": kind,
        "original_width": WIDTH,
        "original_height": HEIGHT,
        "image_rotation": 0,
        "value": value,
    }
    if score is not None:
        region["score"] = score
    return region


def polygon(region_id: str, points: list, label: str, score: float | None = None) -> dict:
    return _region(region_id, "polygonlabels", {"points": points, "closed": True, "polygonlabels": [label]}, score)


def brush(region_id: str, mask: np.ndarray, label: str, score: float | None = None) -> dict:
    rle = mask2rle(mask.astype(np.uint8) * 255)
    return _region(region_id, "brushlabels", {"format": "rle", "rle": rle, "brushlabels": [label]}, score)


def box(region_id: str, geometry: tuple, label: str, score: float | None = None) -> dict:
    x, y, width, height, rotation = geometry
    value = {"x": x, "y": y, "width": width, "height": height, "rotation": rotation, "rectanglelabels": [label]}
    return _region(region_id, "rectanglelabels", value, score)


def _keypoint() -> dict:
    return _region("kEy0p1", "keypointlabels", {"x": 30.0, "y": 40.0, "width": 0.8, "keypointlabels": ["Eye"]})


def _choice() -> dict:
    return {
        "id": "cH01ce",
        "from_name": "quality",
        "to_name": "image",
        "type": "choices",
        "value": {"choices": ["good"]},
    }


def _annotation(result: list, user: int, *, ground_truth: bool = False, cancelled: bool = False) -> dict:
    # Imported annotations are ground truth unless told otherwise (Label Studio 1.23.2).
    return {"result": result, "completed_by": user, "ground_truth": ground_truth, "was_cancelled": cancelled}


def _local(name: str) -> dict:
    return {"image": f"/data/local-files/?d={LOCAL_FOLDER}/{name}"}


def build_in_label_studio(url: str, token: str, document_root: Path, work_dir: Path) -> tuple[int, list[dict]]:
    """Make the fixture project in the Label Studio at ``url``; its id and snapshot JSON export (not
    normalised)."""
    client = LabelStudio(base_url=url, api_key=token)
    headers = {"Authorization": f"Token {token}"}
    paths = write_images(document_root, work_dir)
    admin = client.users.whoami().id
    second = _user(client, SECOND_ANNOTATOR)
    project = client.projects.create(title="COCO converter fixture", label_config=label_config())

    with paths[UPLOADED].open("rb") as image:
        response = requests.post(
            f"{url}/api/projects/{project.id}/import",
            headers=headers,
            files={"file": (UPLOADED, image, "image/png")},
            timeout=60,
        )
    response.raise_for_status()
    (street,) = client.tasks.list(project=project.id)
    masks = source_masks()
    client.annotations.create(
        id=street.id,
        result=[
            polygon("c4rP0l", CAR_POINTS, "Car"),
            brush("bR0aD1", masks["bR0aD1"], "Road"),
            box("s1gN01", SIGN_BOX, "Sign"),
            _keypoint(),
            _choice(),
        ],
        ground_truth=False,
    )
    client.predictions.create(
        task=street.id,
        score=0.73,
        model_version=MODEL_VERSION,
        result=[
            polygon("pP3rs0", PERSON_POINTS, "Person", score=0.9),
            brush("pSky01", masks["pSky01"], "Sky", score=0.6),
            box("pTruck", PREDICTED_TRUCK, "Truck", score=0.8),
        ],
    )
    tasks = [
        {
            "data": _local("day/scene.png"),
            "annotations": [
                _annotation(
                    [box("tRuck1", TRUCK_BOXES["ground truth"], "Truck"), polygon("p3rS0n", PERSON_POINTS, "Person")],
                    admin,
                    ground_truth=True,
                ),
                _annotation([box("tRuck2", TRUCK_BOXES["second"], "Truck")], second),
                _annotation([polygon("xCanc1", CAR_POINTS, "Car")], admin, cancelled=True),
            ],
            "predictions": [
                {"model_version": MODEL_VERSION, "score": 0.7, "result": [box("pTrk2", TRUCK_BOXES["second"], "Truck")]}
            ],
        },
        {
            "data": _local("night/scene.png"),
            "annotations": [
                _annotation([polygon("n1Car0", CAR_POINTS, "Car")], admin),
                _annotation([brush("sKy9x2", masks["sKy9x2"], "Sky")], second),
            ],
        },
        {"data": _local("day/empty.png"), "annotations": [_annotation([], admin)]},
        {"data": _local("day/unlabelled.png")},
    ]
    response = requests.post(f"{url}/api/projects/{project.id}/import", headers=headers, json=tasks, timeout=60)
    response.raise_for_status()
    # The night scene's first annotation is edited after the second was made: latest by time, not by id.
    night = next(t for t in client.tasks.list(project=project.id) if "night" in t.data["image"])
    first = min(client.annotations.list(id=night.id), key=lambda annotation: annotation.id)
    time.sleep(0.05)
    client.annotations.update(id=first.id, result=[polygon("n1Car0", CAR_POINTS_MOVED, "Car")])
    return project.id, snapshot_export(client, project.id)


def snapshot_export(client: LabelStudio, project_id: int, export_type: str = "JSON") -> list[dict] | bytes:
    """Label Studio's export of every task with full predictions (the quick GET export lists prediction ids
    only); JSON parsed, other formats as bytes."""
    snapshot = client.projects.exports.create(
        id=project_id,
        title="fixture",
        serialization_options={"predictions": {"only_id": False}},
    )
    for _ in range(120):
        if client.projects.exports.get(id=project_id, export_pk=snapshot.id).status == "completed":
            break
        time.sleep(0.5)
    data = b"".join(client.projects.exports.download(id=project_id, export_pk=snapshot.id, export_type=export_type))
    return json.loads(data) if export_type == "JSON" else data


def _user(client: LabelStudio, email: str) -> int:
    for user in client.users.list():
        if user.email == email:
            return user.id
    return client.users.create(username=email.split("@")[0], email=email).id


_TIMESTAMP_KEYS = ("created_at", "updated_at", "draft_created_at")
_UPLOAD = re.compile(r"/data/upload/\d+/[0-9a-f]{8}-")


def normalise(export: list[dict]) -> list[dict]:
    """``export`` with what changes between runs made stable: task, annotation, prediction, project and
    user ids renumbered in order of appearance, annotation and prediction timestamps replaced by ones in
    the same order (the tasks' own by one fixed time: Label Studio touches them in the background), the
    random upload prefix and unique ids fixed."""
    export = json.loads(json.dumps(export))
    numbers: dict[str, dict] = {kind: {} for kind in ("task", "annotation", "prediction", "project", "user")}

    def renumber(kind: str, value: object) -> object:
        if not isinstance(value, int):
            return value
        return numbers[kind].setdefault(value, len(numbers[kind]) + 1)

    entries = [entry for entry in _entries(export) if entry not in export]
    stamps = sorted({entry[key] for entry in entries for key in _TIMESTAMP_KEYS if entry.get(key)})
    order = {stamp: f"2026-01-01T00:{i // 60:02d}:{i % 60:02d}.000000Z" for i, stamp in enumerate(stamps, 1)}
    fixed_time = "2026-01-01T00:00:00.000000Z"
    for task in export:
        task["id"] = renumber("task", task["id"])
        for annotation in task.get("annotations", []):
            annotation["id"] = renumber("annotation", annotation["id"])
            annotation["unique_id"] = f"00000000-0000-4000-8000-{annotation['id']:012d}"
            for key in ("completed_by", "updated_by", "last_created_by"):
                annotation[key] = renumber("user", annotation.get(key))
            if annotation.get("prediction"):
                annotation["prediction"]["id"] = renumber("prediction", annotation["prediction"]["id"])
        for prediction in task.get("predictions", []):
            prediction["id"] = renumber("prediction", prediction["id"])
        for entry in _entries([task]):
            for key in _TIMESTAMP_KEYS:
                if entry.get(key):
                    entry[key] = fixed_time if entry is task else order[entry[key]]
            for key in ("task", "project"):
                if key in entry:
                    entry[key] = renumber(key, entry[key])
            if "created_ago" in entry:
                entry["created_ago"] = "0 minutes"
            if "updated_by" in entry:
                entry["updated_by"] = renumber("user", entry["updated_by"])
        task["data"] = {key: _UPLOAD.sub("/data/upload/1/00000000-", value) for key, value in task["data"].items()}
        if task.get("file_upload"):
            task["file_upload"] = re.sub(r"^[0-9a-f]{8}-", "00000000-", task["file_upload"])
    return export


def _entries(export: list[dict]) -> list[dict]:
    """Tasks, their annotations and predictions (and the prediction an annotation came from)."""
    entries = []
    for task in export:
        entries.append(task)
        for annotation in task.get("annotations", []):
            entries.append(annotation)
            if annotation.get("prediction"):
                entries.append(annotation["prediction"])
        entries.extend(task.get("predictions", []))
    return entries


def main() -> None:
    # Run as a script: the repository root is not on the path yet.
    sys.path.insert(0, str(DATA.parents[2]))
    from ml_backend.demo.label_studio import ensure_installed, running_label_studio

    venv = DATA.parents[2] / ".venv-ls"
    ensure_installed(venv)
    with tempfile.TemporaryDirectory() as tmp:
        work, root = Path(tmp) / "work", Path(tmp) / "root"
        work.mkdir()
        root.mkdir()
        with running_label_studio(venv, work_dir=work, document_root=root) as server:
            _, export = build_in_label_studio(server.url, server.token, root, work)
    EXPORT_PATH.write_text(json.dumps(normalise(export), indent=1) + "\n", encoding="utf-8")
    print(f"wrote {EXPORT_PATH}")


if __name__ == "__main__":
    main()
