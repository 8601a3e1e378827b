"""The model class Label Studio talks to, shaped like upstream ``label_studio_ml.model.LabelStudioMLBase``.

Upstream builds one model object per project around shared weights; so do we: :class:`Runtime` holds
what lives as long as the process (settings, loaded model, cache, downloader, metrics) and
:class:`EmerDiffModel` is a light per-request object for one project's label config with the usual
``setup()``, ``predict(tasks, context)`` and ``fit(event, data)``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from converters.labelstudio import InvalidRegionError, regions_from_label_map, validate_regions
from ml_backend.cache import CachedSegmentation, SegmentationCache
from ml_backend.errors import OutputValidationError, TaskDataError, TaskError
from ml_backend.images import ImageResolver
from ml_backend.label_config import ProjectConfig, RegionTarget, SegmentationParams
from ml_backend.metrics import Metrics
from ml_backend.segmentation import SegmentationService
from ml_backend.settings import Settings
from segmentor import DiffusionModel

logger = logging.getLogger(__name__)

VERSION_PREFIX = "emerdiff"
ERROR_VERSION_SUFFIX = "-error"
# Bump when the way regions are made changes without any setting changing, so Label Studio re-predicts.
OUTPUT_REVISION = 1
TRAINING_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATION_DELETED", "START_TRAINING")


@dataclass
class Runtime:
    """Everything that lives as long as the process; built once by ``create_app``."""

    settings: Settings
    segmentation: SegmentationService
    images: ImageResolver
    metrics: Metrics

    @classmethod
    def create(cls, settings: Settings, model: DiffusionModel) -> Runtime:
        metrics = Metrics()
        service = SegmentationService(model, settings, SegmentationCache(settings.cache_dir), metrics)
        runtime = cls(
            settings=settings, segmentation=service, images=ImageResolver(settings), metrics=metrics
        )
        service.segmentor(service.default_params())  # the common case never builds one during a request
        return runtime

    @cached_property
    def default_version(self) -> str:
        """The version of the environment's defaults, before any project is known (for /health)."""
        return version_string(
            {"segmentation": self.segmentation.fingerprint(self.segmentation.default_params())}
        )


def version_string(identity: dict) -> str:
    """``emerdiff-<12 hex>``: a readable prefix and a short hash of everything that changes the output."""
    payload = json.dumps({"revision": OUTPUT_REVISION, **identity}, sort_keys=True)
    return f"{VERSION_PREFIX}-{hashlib.sha256(payload.encode()).hexdigest()[:12]}"


class EmerDiffModel:
    """Pre-annotates images of one project with EmerDiff segments as polygon and/or brush regions."""

    def __init__(self, runtime: Runtime, label_config: object = None, project_id: object = None) -> None:
        self.runtime = runtime
        self.label_config = label_config
        self.project_id = project_id

    @cached_property
    def project(self) -> ProjectConfig:
        """The parsed label config; :class:`~ml_backend.errors.ProjectConfigError` when it is unusable."""
        return ProjectConfig.parse(self.label_config, self.runtime.settings)

    def setup(self) -> str:
        """The project's model version; never loads weights (Label Studio allows /setup 3 s)."""
        return self.model_version

    @cached_property
    def model_version(self) -> str:
        """Readable prefix + hash of the weights, segmentation settings and region options of each control."""
        segmentation = self.runtime.segmentation
        return version_string(
            {
                "segmentations": {
                    target.from_name: segmentation.fingerprint(target.segmentation)
                    for target in self.project.targets
                },
                "regions": [target.identity() for target in self.project.targets],
            }
        )

    def predict(self, tasks: Sequence[object], context: dict | None = None) -> list[dict]:
        """One prediction per task, in order, always; a task that fails gets an error entry.

        ``context`` (interactive smart tools: keypoints, rectangles) is not used: the answer is the
        automatic segmentation of the whole image, from which the annotator picks regions.
        """
        try:
            version = self.model_version
        except TaskError as error:  # the project itself cannot be served: every task says why
            return [self._failure(task, error, self.runtime.default_version) for task in tasks]
        return [self._predict_task(task, version) for task in tasks]

    def fit(self, event: str, data: dict) -> dict:
        """Nothing to learn: EmerDiff is training-free, annotations never change its output."""
        logger.debug("webhook %s received; EmerDiff is training-free, nothing to fit", event)
        return {"trained": False, "reason": "EmerDiff is training-free; annotations do not change it"}

    def _predict_task(self, task: object, version: str) -> dict:
        try:
            result, score = self._regions(task)
        except TaskError as error:
            return self._failure(task, error, version)
        except Exception as error:  # a bug must cost one task, never the batch
            logger.exception("task %s: unexpected failure", _task_id(task))
            return self._failure(task, error, version)
        self.runtime.metrics.increment("tasks", "predicted")
        return {"result": result, "score": score, "model_version": version}

    def _regions(self, task: object) -> tuple[list[dict], float]:
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            raise TaskDataError("task must be a JSON object with a 'data' object")
        metrics = self.runtime.metrics
        images: dict[str, bytes] = {}
        segmentations: dict[tuple[str, SegmentationParams], CachedSegmentation] = {}
        regions: list[dict] = []
        for target in self.project.targets:
            key = (target.data_key, target.segmentation)
            if key not in segmentations:
                if target.data_key not in images:
                    with metrics.timed("fetch"):
                        images[target.data_key] = self.runtime.images.read(
                            _image_reference(task, target), task.get("id")
                        )
                segmentations[key] = self.runtime.segmentation.segment(
                    images[target.data_key], target.segmentation
                )
            with metrics.timed("regions"):
                regions += _target_regions(target, segmentations[key])
        try:
            validate_regions(regions, self.project.label_config)
        except InvalidRegionError as error:
            raise OutputValidationError(f"our regions failed validation: {error}") from error
        scores = [score for segmentation in segmentations.values() for score in segmentation.scores.values()]
        return regions, float(np.mean(scores)) if scores else 0.0

    def _failure(self, task: object, error: Exception, version: str) -> dict:
        """An empty prediction under a distinct version, so Label Studio asks again next time."""
        reason = error.reason if isinstance(error, TaskError) else "internal"
        if isinstance(error, TaskError):
            logger.warning("task %s: %s: %s", _task_id(task), reason, error)
        self.runtime.metrics.increment("tasks", "failed")
        self.runtime.metrics.increment("failures", reason)
        return {
            "result": [],
            "score": 0.0,
            "model_version": version + ERROR_VERSION_SUFFIX,
            "error": f"{reason}: {error}",
        }


def _target_regions(target: RegionTarget, segmentation: CachedSegmentation) -> list[dict]:
    regions = regions_from_label_map(
        segmentation.label_map,
        kind=target.kind,
        label=target.label,
        from_name=target.from_name,
        to_name=target.to_name,
        scores=segmentation.scores,
        tolerance=target.tolerance,
        min_area=target.segmentation.min_area,
        max_vertices=target.max_vertices,
    )
    for region in regions:
        # Region ids are per segment; prefixing the control keeps them unique across controls.
        region["id"] = f"{target.from_name}-{region['id']}"
    return regions


def _image_reference(task: dict, target: RegionTarget) -> str:
    reference = task["data"].get(target.data_key)
    if not isinstance(reference, str) or not reference.strip():
        raise TaskDataError(
            f"task data has no image URL in field {target.data_key!r} "
            f"(needed by control {target.from_name!r})"
        )
    return reference


def _task_id(task: object) -> object:
    return task.get("id") if isinstance(task, dict) else None
