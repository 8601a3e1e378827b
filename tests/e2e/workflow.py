"""The annotator's workflow in Label Studio, driven through its API (label-studio-sdk and plain REST).

Project -> import images (uploads and local storage) -> connect the ML backend -> retrieve predictions
-> accept them as annotations -> export.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import quoteattr

import requests
from label_studio_sdk import LabelStudio

from ml_backend.demo.project import SELECT_ALL, retrieve_predictions
from segmentor.toy.scenes import CLASS_NAMES

# A generic first label (what the backend gives new segments by default), then the scene classes.
LABELS = ("Object", *(name.capitalize() for name in CLASS_NAMES))
CONTROLS = {"polygon": ("PolygonLabels", "outline"), "brush": ("BrushLabels", "paint")}


def label_config(kind: str, **emerdiff_attributes: str) -> str:
    """An image project with one ``kind`` control over ``LABELS``; ``emerdiff-*`` attributes on it."""
    tag, name = CONTROLS[kind]
    attributes = "".join(
        f" emerdiff-{key.replace('_', '-')}={quoteattr(value)}" for key, value in emerdiff_attributes.items()
    )
    labels = "".join(f'<Label value="{label}"/>' for label in LABELS)
    return (
        f'<View><Image name="image" value="$image"/>'
        f'<{tag} name="{name}" toName="image"{attributes}>{labels}</{tag}></View>'
    )


@dataclass(frozen=True)
class Workflow:
    client: LabelStudio
    url: str
    token: str

    @property
    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Token {self.token}"}

    def upload_images(self, project_id: int, paths: Sequence[Path]) -> int:
        """Import image files as uploads (the SDK's import takes JSON only); the number of tasks made."""
        files = {
            f"file{index}": (path.name, path.read_bytes(), "image/png") for index, path in enumerate(paths)
        }
        response = requests.post(
            f"{self.url}/api/projects/{project_id}/import", headers=self._auth, files=files, timeout=60
        )
        response.raise_for_status()
        return response.json()["task_count"]

    def sync_local_folder(self, project_id: int, folder: Path) -> int:
        """Connect ``folder`` (under the document root) as local storage, one task per PNG; tasks made."""
        storage = self.client.import_storage.local.create(
            project=project_id, path=str(folder), regex_filter=r".*\.png", use_blob_urls=True, title="scenes"
        )
        return self.client.import_storage.local.sync(id=storage.id).last_sync_count

    def retrieve_predictions(self, project_id: int) -> None:
        """The Data Manager's "Retrieve Predictions" on every task: one synchronous /predict call."""
        retrieve_predictions(self.client, project_id)

    def accept_predictions(self, project_id: int) -> None:
        """The Data Manager's "Create Annotations From Predictions" on every task."""
        self.client.actions.create(
            id="predictions_to_annotations", project=project_id, selected_items=SELECT_ALL
        )

    def export(self, project_id: int, export_type: str) -> bytes:
        """``GET /api/projects/<id>/export?exportType=...`` of every task, as Label Studio sends it."""
        response = requests.get(
            f"{self.url}/api/projects/{project_id}/export",
            headers=self._auth,
            timeout=120,
            params={"exportType": export_type, "download_all_tasks": "true"},
        )
        response.raise_for_status()
        return response.content

    def export_formats(self, project_id: int) -> dict[str, bool]:
        """Export format name -> whether Label Studio offers it for this project's label config."""
        return {
            item["name"]: not item.get("disabled", False)
            for item in self.client.projects.exports.list_formats(project_id)
        }


def json_member(archive: bytes, suffix: str = ".json") -> dict:
    """The one JSON file of a zip export (Label Studio zips its COCO exports with an images/ folder)."""
    with zipfile.ZipFile(io.BytesIO(archive)) as zipped:
        (name,) = [name for name in zipped.namelist() if name.endswith(suffix)]
        return json.loads(zipped.read(name))
