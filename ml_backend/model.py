"""The model class Label Studio talks to, shaped like upstream ``label_studio_ml.model.LabelStudioMLBase``.

Upstream builds one model object per project around shared weights; so do we: :class:`Runtime` holds
what lives as long as the process (settings, loaded model, cache, downloader, metrics) and
:class:`EmerDiffModel` is a light per-request object for one project's label config with the usual
``setup()``, ``predict(tasks, context)`` and ``fit(event, data)``.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from converters.labelstudio import InvalidRegionError, regions_from_label_map, validate_regions
from converters.model_version import prediction_version, version_string
from ml_backend.core.errors import OutputValidationError, TaskDataError, TaskError
from ml_backend.core.label_config import ProjectConfig, RegionTarget, SegmentationParams
from ml_backend.core.metrics import Metrics
from ml_backend.core.settings import Settings
from ml_backend.images.resolver import ImageResolver
from ml_backend.labels.learning import EVENTS as LEARNING_EVENTS
from ml_backend.labels.learning import (
    LabelLearning,
    SegmentLabels,
    body_project_config,
    parsed_project_config,
    project_number,
)
from ml_backend.labels.memory import FILE_NAME as LABEL_MEMORY_FILE
from ml_backend.labels.memory import LabelMemory
from ml_backend.labels.sync import LabelStudioProjects, prepare_rebuild
from ml_backend.labels.zeroshot import ZeroShot
from ml_backend.segmentation.background import BackgroundQueue
from ml_backend.segmentation.cache import CachedSegmentation, SegmentationCache
from ml_backend.segmentation.granularity import at_level
from ml_backend.segmentation.references import ContentMemory
from ml_backend.segmentation.service import SegmentationService
from ml_backend.smart_tools.prompts import ContextError, Prompt, parse_context, smart_regions, target_for
from segmentor import DiffusionModel
from segmentor.labelling import LabelClassifier, LabelGuess
from segmentor.zeroshot import ClipModel, load_clip

logger = logging.getLogger(__name__)

# Webhook events answered 201 and handed to fit(): what label learning listens to (ml_backend.labels.learning).
TRAINING_EVENTS = LEARNING_EVENTS


@dataclass
class Runtime:
    """Everything that lives as long as the process; built once by ``create_app``."""

    settings: Settings
    segmentation: SegmentationService
    images: ImageResolver
    metrics: Metrics
    learning: LabelLearning | None = None
    # Which content each image reference resolved to: cached segmentations found with no download.
    references: ContentMemory = field(default_factory=ContentMemory)
    # Segmentations of tasks a /predict had no time left for (PREDICT_BUDGET_SECONDS), into the cache.
    background: BackgroundQueue | None = None
    # Label Studio's own label configs, when its credentials are set: webhooks are checked against them.
    projects: LabelStudioProjects | None = None
    # Zero-shot labels from the label config (EMERDIFF_CLIP_MODEL): CLIP beside the diffusion model.
    zero_shot: ZeroShot | None = None

    @classmethod
    def create(cls, settings: Settings, model: DiffusionModel, clip: ClipModel | None = None) -> Runtime:
        """The runtime around ``model``; CLIP is ``clip`` or loaded from EMERDIFF_CLIP_MODEL (unset: none)."""
        if clip is None and settings.clip_model is not None:
            clip = load_clip(settings.clip_model, device=settings.device, dtype=settings.dtype)
        metrics = Metrics()
        cache = SegmentationCache(settings.cache_dir, max_bytes=settings.cache_max_bytes, metrics=metrics)
        service = SegmentationService(model, settings, cache, metrics)
        memory = LabelMemory(settings.data_dir / LABEL_MEMORY_FILE) if settings.data_dir is not None else None
        runtime = cls(
            settings=settings, segmentation=service, images=ImageResolver(settings), metrics=metrics,
            learning=LabelLearning(
                memory, feature_space=model.identity, metrics=metrics,
                jobs=BackgroundQueue(settings.learning_queue_size, metrics, "learning") if memory else None,
            ),
            projects=LabelStudioProjects(settings) if LabelStudioProjects.configured(settings) else None,
            background=BackgroundQueue(settings.background_queue_size, metrics, "segmentation"),
            zero_shot=ZeroShot(clip, settings, metrics, service.gpu_lock) if clip is not None else None,
        )
        service.segmentor(service.default_params())  # the common case never builds one during a request
        return runtime

    def segment_task(
        self, reference: str, task_id: object, target: RegionTarget, fetched: dict[str, bytes] | None = None
    ) -> CachedSegmentation:
        """A task image's segmentation for ``target``, as predictions get it (reader, segmentor, cache):
        how label learning reads the segmentations it learns from.

        A reference whose content is remembered and cached is answered with no download; ``fetched``
        (reference -> bytes) shares one download between the controls of one task.
        """
        cached = self.cached_segmentation(reference, target)
        if cached is not None:
            return cached
        image = fetched.get(reference) if fetched is not None else None
        if image is None:
            with self.metrics.timed("fetch"):
                image = self.images.read(reference, task_id)
            if fetched is not None:
                fetched[reference] = image
        image_sha256 = hashlib.sha256(image).hexdigest()
        self.references.remember(reference, image_sha256)
        return self.segmentation.segment(image, target.segmentation, image_sha256)

    def zero_shot_guesses(self, reference: str, task_id: object, target: RegionTarget, level: CachedSegmentation,
                          fetched: dict[str, bytes]) -> dict[int, LabelGuess]:
        """Each of ``level``'s segments' zero-shot label and probability; the image is read only when its CLIP
        grid is not cached (after :meth:`segment_task`, which remembers the reference's content)."""
        def image() -> bytes:
            if reference not in fetched:
                with self.metrics.timed("fetch"):
                    fetched[reference] = self.images.read(reference, task_id)
            return fetched[reference]

        image_sha256 = self.references.get(reference) or hashlib.sha256(image()).hexdigest()
        grid = self.zero_shot.grid(image_sha256, image, self.settings.max_image_pixels)
        return self.zero_shot.guesses(target, level, grid)

    def cached_segmentation(self, reference: str, target: RegionTarget) -> CachedSegmentation | None:
        """The segmentation of ``reference`` from the cache, when its content is known; never downloads."""
        image_sha256 = self.references.get(reference)
        if image_sha256 is None:
            return None
        return self.segmentation.lookup(image_sha256, target.segmentation)

    def is_cached(self, reference: str, target: RegionTarget) -> bool:
        """Whether ``reference``'s segmentation for ``target`` is known to be cached (reads no entry)."""
        image_sha256 = self.references.get(reference)
        return image_sha256 is not None and self.segmentation.is_cached(image_sha256, target.segmentation)

    def segment_later(self, reference: str, task_id: object, target: RegionTarget) -> bool:
        """Queue the segmentation in the background; False when the queue is full (or there is none)."""
        if self.background is None:
            return False
        if self.is_cached(reference, target):
            return True
        return self.background.submit(
            (reference, target.segmentation), lambda: self.segment_task(reference, task_id, target)
        )

    def webhook_project_config(self, project: int, body: dict) -> ProjectConfig:
        """The label config a webhook of ``project`` is checked against: Label Studio's own when its
        credentials are set (the body's could be anyone's; a project Label Studio lacks is refused), else
        the body's (docs/RELIABILITY.md, "Who may teach the label memory")."""
        def parse(label_config: str) -> ProjectConfig:
            return ProjectConfig.parse(label_config, self.settings)

        if self.projects is None:
            return body_project_config(project, body, parse)
        return parsed_project_config(project, self.projects.label_config(project), parse)

    def rebuild_job(self, project: int) -> Callable[[], dict]:
        """The job that rebuilds ``project``'s label memory from Label Studio (``LearningError``: why not)."""
        return prepare_rebuild(self.settings, self.learning, self.segment_task, project)

    @cached_property
    def default_version(self) -> str:
        """The version of the environment's defaults, before any project is known (for /health)."""
        return version_string(
            {"segmentation": self.segmentation.fingerprint(self.segmentation.default_params())}
        )


class EmerDiffModel:
    """Pre-annotates images of one project with EmerDiff segments as polygon and/or brush regions."""

    def __init__(self, runtime: Runtime, label_config: object = None, project_id: object = None) -> None:
        self.runtime = runtime
        self.label_config = label_config
        self.project_id = project_id

    @cached_property
    def project(self) -> ProjectConfig:
        """The parsed label config; :class:`~ml_backend.core.errors.ProjectConfigError` when it is unusable."""
        return ProjectConfig.parse(self.label_config, self.runtime.settings)

    def setup(self) -> str:
        """The project's model version; never loads weights (Label Studio allows /setup 3 s)."""
        return self.model_version

    @cached_property
    def model_version(self) -> str:
        """Readable prefix + hash of the weights, segmentation settings and region options of each control.

        Once the project's label memory holds examples, its revision joins the hash: every learnt or
        forgotten annotation makes a new version, so Label Studio predicts tasks again (the segmentation
        comes from the cache; labelling costs milliseconds). Without examples the version is as before.
        """
        segmentation = self.runtime.segmentation
        fingerprints = {
            target.from_name: segmentation.fingerprint(target.segmentation) for target in self.project.targets
        }
        regions = [target.identity() for target in self.project.targets]
        learnt = {}
        if self._labelling is not None:
            learnt["labels"] = {
                "memory": self._labelling[0],
                "controls": {t.from_name: [t.learn, t.threshold, t.merge] for t in self.project.targets},
            }
        if self.runtime.zero_shot is not None and any(target.zero_shot for target in self.project.targets):
            # Words, not their embeddings: /setup never runs the text tower.
            learnt["zero_shot"] = {**self.runtime.zero_shot.identity, "controls": {
                t.from_name: t.zero_shot_identity() for t in self.project.targets if t.zero_shot}}
        # Shared with the segmentor CLI (predictions.json), so its folder imports carry this version.
        return prediction_version(fingerprints, regions, **learnt)

    @cached_property
    def _labelling(self) -> tuple[str, LabelClassifier] | None:
        """The project's label memory revision and classifier, read once per request; None: nothing learnt."""
        if self.runtime.learning is None or not any(target.learn for target in self.project.targets):
            return None
        try:
            return self.runtime.learning.classifier(project_number(self.project_id))
        except sqlite3.Error as error:
            # A damaged or unreadable memory costs the learnt labels, never the predictions: the answer is
            # what an unlearnt project gets, under its version, and turns labelled once the memory reads again.
            logger.warning("label memory of project %s unreadable (%s); predicting without learnt labels",
                           self.project_id, error)
            self.runtime.metrics.increment("failures", "label_memory")
            return None

    def predict(self, tasks: Sequence[object], context: dict | None = None) -> list[dict]:
        """One prediction per task, in order, always; a task that fails gets an error entry.

        Without ``context`` the answer is the automatic segmentation of the whole image. With a smart
        tool's ``context.result`` (keypoints, rectangles) it is the region those prompts select from the
        same, cached segmentation (``ml_backend.smart_tools.prompts``).
        """
        try:
            version = self.model_version
        except TaskError as error:  # the project itself cannot be served: every task says why
            return [self._failure(task, error, self.runtime.default_version) for task in tasks]
        try:
            prompts = parse_context(context, self.runtime.settings.max_smart_prompts)
        except ContextError as error:
            return [self._failure(task, error, version) for task in tasks]
        if prompts:
            return [self._predict_task(task, version, prompts) for task in tasks]
        return self._predict_within_budget(tasks, version)

    def _predict_within_budget(self, tasks: Sequence[object], version: str) -> list[dict]:
        """Predictions until PREDICT_BUDGET_SECONDS is spent; the tasks left get entries without ``result``.

        Label Studio sends a whole selection in one request and waits ML_TIMEOUT_PREDICT (100 s) for it.
        Tasks whose segmentations are known to be cached go first (milliseconds each, no download); once
        the budget is spent, each task left is answered without a result (Label Studio stores nothing and
        asks again next time) and its segmentation is queued in the background, into the cache, so
        repeating the action completes the selection.
        """
        deadline = time.monotonic() + self.runtime.settings.predict_budget_seconds
        order = sorted(range(len(tasks)), key=lambda index: not self._known_cached(tasks[index]))
        results: list[dict] = [{}] * len(tasks)
        deferred = refused = 0
        for index in order:
            task = tasks[index]
            if time.monotonic() < deadline:
                results[index] = self._predict_task(task, version)
                continue
            results[index], queued = self._defer(task, version)
            deferred += 1
            refused += not queued
        if deferred:
            logger.info(
                "%d of %d tasks left without a prediction: PREDICT_BUDGET_SECONDS=%s was spent; their "
                "segmentations continue in the background (%d could not be queued: BACKGROUND_QUEUE_SIZE); "
                "retrieve predictions again to get them, or pre-annotate a whole project with "
                "`python -m ml_backend preannotate`",
                deferred, len(tasks), self.runtime.settings.predict_budget_seconds, refused,
            )
        return results

    def _known_cached(self, task: object) -> bool:
        try:
            return all(self.runtime.is_cached(reference, target) for reference, target in self._inputs(task))
        except TaskError:
            return False

    def _inputs(self, task: object) -> list[tuple[str, RegionTarget]]:
        """The (image reference, control) pairs of ``task`` that need a segmentation each."""
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            raise TaskDataError("task must be a JSON object with a 'data' object")
        inputs: dict[tuple[str, SegmentationParams], tuple[str, RegionTarget]] = {}
        for target in self.project.targets:
            inputs.setdefault((target.data_key, target.segmentation), (_image_reference(task, target), target))
        return list(inputs.values())

    def _defer(self, task: object, version: str) -> tuple[dict, bool]:
        """The entry of a task past the budget (no ``result``), its segmentations queued; False: not queued."""
        try:
            inputs = self._inputs(task)
        except TaskError as error:
            return self._failure(task, error, version), True
        queued = all(
            [self.runtime.segment_later(reference, _task_id(task), target) for reference, target in inputs]
        )
        self.runtime.metrics.increment("tasks", "deferred")
        reason = "segmentation queued" if queued else "background queue full"
        return {
            "model_version": version,
            "error": f"deferred: PREDICT_BUDGET_SECONDS spent, {reason}; retrieve predictions again",
        }, queued

    def fit(self, event: str, data: dict) -> dict:
        """Label learning: annotations teach the project's label memory (EmerDiff itself is training-free).

        Raises :class:`~ml_backend.labels.learning.LearningError` (with the HTTP status to answer) for a
        webhook that cannot be learnt from; the memory is then unchanged.
        """
        learning = self.runtime.learning
        if learning is None:
            return {"learnt": False, "reason": "label learning is off"}
        return learning.handle(
            event,
            data,
            project_config=self.runtime.webhook_project_config,
            segment=self.runtime.segment_task,
            prepare_rebuild=self.runtime.rebuild_job,
            cached=self.runtime.cached_segmentation,
            known_project=self.runtime.projects.label_config if self.runtime.projects is not None else None,
        )

    def _predict_task(self, task: object, version: str, prompts: list[Prompt] | None = None) -> dict:
        try:
            result, score = self._smart_regions(task, prompts) if prompts else self._regions(task)
        except TaskError as error:
            return self._failure(task, error, version)
        except Exception as error:  # a bug must cost one task, never the batch
            logger.exception("task %s: unexpected failure", _task_id(task))
            return self._failure(task, error, version)
        self.runtime.metrics.increment("tasks", "predicted")
        return {"result": result, "score": score, "model_version": version}

    def _smart_regions(self, task: object, prompts: list[Prompt]) -> tuple[list[dict], float]:
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            raise TaskDataError("task must be a JSON object with a 'data' object")
        target = target_for(self.project, prompts)
        segmentation = self.runtime.segment_task(_image_reference(task, target), task.get("id"), target)
        with self.runtime.metrics.timed("smart_regions"):
            regions, score = smart_regions(prompts, target, segmentation)
        try:
            validate_regions(regions, self.project.label_config)
        except InvalidRegionError as error:
            raise OutputValidationError(f"our regions failed validation: {error}") from error
        return regions, score

    def _regions(self, task: object) -> tuple[list[dict], float]:
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            raise TaskDataError("task must be a JSON object with a 'data' object")
        metrics = self.runtime.metrics
        fetched: dict[str, bytes] = {}
        segmentations: dict[tuple[str, SegmentationParams], CachedSegmentation] = {}
        regions: list[dict] = []
        scores: list[float] = []
        for target in self.project.targets:
            key = (target.data_key, target.segmentation)
            if key not in segmentations:
                segmentations[key] = self.runtime.segment_task(
                    _image_reference(task, target), task.get("id"), target, fetched
                )
            with metrics.timed("regions"):
                # The segments that become this control's regions: its level of the merge tree.
                level = at_level(segmentations[key], target.segments)
                labelled = None
                zero_shot = None
                if target.zero_shot and self.runtime.zero_shot is not None:
                    zero_shot = self.runtime.zero_shot_guesses(
                        _image_reference(task, target), task.get("id"), target, level, fetched
                    )
                if self._labelling is not None or zero_shot is not None:
                    classifier = self._labelling[1] if self._labelling is not None else None
                    labelled = self.runtime.learning.label(classifier, target, level, zero_shot)
                regions += _target_regions(target, level, labelled)
                scores += (labelled or level).scores.values()
        try:
            validate_regions(regions, self.project.label_config)
        except InvalidRegionError as error:
            raise OutputValidationError(f"our regions failed validation: {error}") from error
        return regions, float(np.mean(scores)) if scores else 0.0

    def _failure(self, task: object, error: Exception, version: str) -> dict:
        """An entry without ``result``: Label Studio (ml/models.py) stores no prediction for it.

        Label Studio 1.23 skips a response entry that lacks ``result`` (it logs it, with our ``error``), so a
        failed task keeps no empty prediction and adds no version to the project's menu; the task still
        lacks the current version, so the next retrieval asks again. The entry keeps the batch aligned.
        """
        reason = error.reason if isinstance(error, TaskError) else "internal"
        if isinstance(error, TaskError):
            logger.warning("task %s: %s: %s", _task_id(task), reason, error)
        self.runtime.metrics.increment("tasks", "failed")
        self.runtime.metrics.increment("failures", reason)
        return {"model_version": version, "error": f"{reason}: {error}"}


def _target_regions(
    target: RegionTarget, segmentation: CachedSegmentation, labelled: SegmentLabels | None = None
) -> list[dict]:
    """The control's regions; with learnt labels, each segment's label and its confidence as score."""
    source = labelled or segmentation
    regions = regions_from_label_map(
        source.label_map,
        kind=target.kind,
        label=target.label,
        labels=labelled.labels if labelled is not None else None,
        from_name=target.from_name,
        to_name=target.to_name,
        scores=source.scores,
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
