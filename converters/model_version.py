"""The ``model_version`` string of EmerDiff predictions, shared by the ML backend and the segmentor CLI.

Label Studio asks a backend again only for tasks lacking a prediction of its current version, so the
folder workflow (``python -m segmentor segment`` -> predictions.json -> import) must write the very
version the backend reports for the same weights, settings and label config. Both compute it here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence

VERSION_PREFIX = "emerdiff"
# Bump when the way regions are made changes without any setting changing, so Label Studio re-predicts.
# 2: polygon points keep 6 decimals of percent (4 moved vertices by up to 3e-5 px, flipping edge pixels).
OUTPUT_REVISION = 2


def version_string(identity: Mapping[str, object]) -> str:
    """``emerdiff-<12 hex>``: a readable prefix and a short hash of everything that changes the output."""
    payload = json.dumps({"revision": OUTPUT_REVISION, **identity}, sort_keys=True)
    return f"{VERSION_PREFIX}-{hashlib.sha256(payload.encode()).hexdigest()[:12]}"


def region_identity(
    *, from_name: str, to_name: str, kind: str, label: str, min_area: int, segments: int | None,
    tolerance: float, max_vertices: int,
) -> dict:
    """Every option of one control that changes its regions (polygon options only for polygons)."""
    fields = {
        "from_name": from_name, "to_name": to_name, "kind": kind, "label": label, "min_area": min_area,
        "segments": segments,
    }
    if kind == "polygon":
        fields |= {"tolerance": tolerance, "max_vertices": max_vertices}
    return fields


def prediction_version(
    fingerprints: Mapping[str, str], regions: Sequence[Mapping[str, object]], **more: object
) -> str:
    """The version of predictions made by segmentations ``fingerprints`` (control name -> segmentor
    fingerprint) cut into ``regions`` (one :func:`region_identity` per control); ``more`` adds what
    else changed them (the backend's learnt labels), absent from a plain segmentation."""
    return version_string({"segmentations": dict(fingerprints), "regions": list(regions), **more})
