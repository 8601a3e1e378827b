"""The demo's project in Label Studio: created once, found again by its title on every later run.

Images come through Label Studio's local storage (the backend reads the same folder from disk, so no image is
uploaded or copied twice); connecting the backend and retrieving predictions are idempotent: Label Studio skips
tasks that already hold a prediction of the backend's current model version.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import quoteattr

import cv2
import numpy as np
from label_studio_sdk import LabelStudio

from segmentor.toy.scenes import COLOUR_CLASS_NAMES, generate_scene

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
SELECT_ALL = {"all": True, "excluded": []}
# The synthetic scenes are drawn at the bundled models' native 64 px and shown 4x larger (nearest neighbour),
# so the browser shows crisp shapes and the segmentor works at its own size either way.
SCENE_SIZE, SCENE_ZOOM, SCENE_SEED = 64, 4, 500
# Each label painted in the colour it names (Label Studio would pick unrelated ones), the background in grey.
SCENE_COLOURS = {"Red": "#e53935", "Green": "#43a047", "Blue": "#1e88e5", "Background": "#9e9e9e"}


@dataclass(frozen=True)
class DemoImages:
    folder: Path  # served by Label Studio's local storage and read by the backend from disk
    root: Path  # LOCAL_FILES_DOCUMENT_ROOT of both: the folder's parent (Label Studio refuses the root itself)
    labels: tuple[tuple[str, str], ...]  # (label value, zero-shot words)
    colours: dict[str, str]  # label value -> the colour Label Studio paints its regions in (its `background`)
    background: str | None  # the label that takes segments no other label's words fit
    title: str


def synthetic_scenes(folder: Path, count: int) -> DemoImages:
    """``count`` colour scenes (each object's class is its colour) in ``folder``; kept when already written."""
    folder.mkdir(parents=True, exist_ok=True)
    for seed in range(SCENE_SEED, SCENE_SEED + count):
        path = folder / f"scene_{seed:04d}.png"
        if not path.exists():
            image = generate_scene(seed, SCENE_SIZE, classes="colour").image
            image = np.repeat(np.repeat(image, SCENE_ZOOM, axis=0), SCENE_ZOOM, axis=1)
            cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    labels = tuple((name.capitalize(), name) for name in COLOUR_CLASS_NAMES if name != "background")
    return DemoImages(folder, folder.parent, (*labels, ("Background", "background")), SCENE_COLOURS, "Background",
                      "EmerDiff demo: colour scenes")


def own_images(folder: Path, labels: Sequence[str]) -> DemoImages:
    """The user's folder of images; ``labels`` name what is in them (their words feed zero-shot labels)."""
    if not folder.is_dir():
        raise SystemExit(f"error: DEMO_IMAGES={folder}: not a folder")
    if not any(path.suffix.lower() in IMAGE_SUFFIXES for path in folder.iterdir()):
        raise SystemExit(f"error: DEMO_IMAGES={folder}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    chosen = tuple((label.strip(), label.strip().lower()) for label in labels if label.strip())
    chosen = chosen or (("Object", "object"),)
    folder = folder.resolve()
    return DemoImages(folder, folder.parent, chosen, {}, None, f"EmerDiff demo: {folder.name}")


def label_config(images: DemoImages) -> str:
    """One BrushLabels control (exact masks; touching segments of one label merged) over the demo's labels, each
    label's zero-shot words as ``emerdiff-prompt``."""
    labels = "".join(
        f'<Label value={quoteattr(value)} emerdiff-prompt={quoteattr(words)}'
        + (f" background={quoteattr(images.colours[value])}" if value in images.colours else "")
        + (' emerdiff-background="true"' if value == images.background else "")
        + "/>"
        for value, words in images.labels
    )
    return (
        '<View><Image name="image" value="$image" zoom="true"/>'
        f'<BrushLabels name="regions" toName="image" emerdiff-merge="true">{labels}</BrushLabels></View>'
    )


def ensure_project(client: LabelStudio, images: DemoImages) -> int:
    """The demo project's id: the one titled ``images.title``, else a new one with the folder's images as tasks."""
    for project in client.projects.list():
        if project.title == images.title:
            return project.id
    project = client.projects.create(title=images.title, label_config=label_config(images),
                                     description="Pre-annotated by the EmerDiff ML backend (make demo)")
    pattern = "|".join(re.escape(suffix) for suffix in IMAGE_SUFFIXES)
    storage = client.import_storage.local.create(
        project=project.id, path=str(images.folder), regex_filter=rf".*({pattern})$", use_blob_urls=True,
        title="demo images",
    )
    client.import_storage.local.sync(id=storage.id)
    return project.id


def ensure_backend(client: LabelStudio, project: int, url: str) -> None:
    """Connect the backend at ``url`` to the project, unless it is connected already (a port may have changed)."""
    connected = list(client.ml.list(project=project))
    if any(backend.url.rstrip("/") == url for backend in connected):
        return
    for stale in connected:  # an earlier run's backend on another port
        client.ml.delete(id=stale.id)
    client.ml.create(project=project, url=url, title="EmerDiff", is_interactive=True)


def retrieve_predictions(client: LabelStudio, project: int) -> None:
    """The Data Manager's "Retrieve Predictions" on every task (tasks holding this version are skipped)."""
    client.actions.create(id="retrieve_tasks_predictions", project=project, selected_items=SELECT_ALL)


def predicted_tasks(client: LabelStudio, project: int) -> tuple[list[int], int]:
    """The ids of the project's tasks, and how many of them hold at least one prediction."""
    tasks = list(client.tasks.list(project=project, fields="all"))
    return [task.id for task in tasks], sum(1 for task in tasks if task.predictions)
