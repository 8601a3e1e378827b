"""Label learning: annotations in (webhooks, rebuilds), labelled segments out (predictions).

Label Studio 1.23.2 creates a webhook ``<backend>/webhook`` with ``send_for_all_actions`` as soon as an ML
backend is connected to a project, so every annotation event reaches us with its payload:
``ANNOTATION_CREATED`` / ``ANNOTATION_UPDATED`` (``annotation``, ``task``, ``project`` objects),
``ANNOTATIONS_CREATED`` (lists, bulk imports), ``ANNOTATIONS_DELETED`` (``annotations``: ids only) and
``TASKS_DELETED``. "Start Training" (and, with "Start model training on annotation submission", every
N-th saved annotation) posts ``START_TRAINING`` with the ``project``: we then rebuild the project's memory
from every annotation, through Label Studio's API, in a background thread (Label Studio waits on it).

Learning an annotation: the task's segmentation (from the cache when the task was predicted, else
computed once, then cached for its prediction), every labelled mask region rasterised at the image size,
the feature grid pooled under it (``segmentor.labelling``), the rows stored in place of the annotation's
old ones. Bad input (malformed payload, project we cannot serve, label not in the config, unreadable
image) is logged with its reason, answered 4xx, and never touches the memory.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from converters.label_config import ControlTag, LabelConfigError, parse_label_config
from converters.labelstudio import InvalidRegionError, check_region
from ml_backend.core.errors import TaskError
from ml_backend.core.label_config import ProjectConfig, RegionTarget
from ml_backend.core.label_studio_client import MAX_ID
from ml_backend.core.metrics import Metrics
from ml_backend.labels.memory import LabelMemory, MemoryBusyError
from ml_backend.labels.zeroshot import one_rule
from ml_backend.segmentation.background import BackgroundQueue
from ml_backend.segmentation.cache import CachedSegmentation
from segmentor.labelling import (
    LabelClassifier,
    LabelExample,
    LabelGuess,
    RegionLabelError,
    examples_from_regions,
    label_segments,
    merge_same_label,
    segment_embeddings,
)

logger = logging.getLogger(__name__)

LEARN_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_CREATED")
FORGET_EVENTS = ("ANNOTATIONS_DELETED", "ANNOTATION_DELETED", "TASKS_DELETED")
REBUILD_EVENT = "START_TRAINING"
EVENTS = (*LEARN_EVENTS, *FORGET_EVENTS, REBUILD_EVENT)
# Controls whose regions teach labels: every mask-like control on an image that some learning target uses.
TEACHING_TAGS = ("PolygonLabels", "BrushLabels", "RectangleLabels")
# A queued webhook finding the memory locked by another process tries this often, this far apart.
JOB_ATTEMPTS = 10
JOB_RETRY_S = 3.0
_ASCII_DIGITS = re.compile(r"[0-9]{1,19}")  # str.isdigit() also passes "²", which int() refuses


class LearningError(Exception):
    """A webhook we cannot learn from; ``status`` is the HTTP answer, the message the logged reason."""

    status = 400
    reason = "malformed"


class UnknownProjectError(LearningError):
    status = 404
    reason = "unknown_project"


class UnlearnableError(LearningError):
    status = 422
    reason = "unlearnable"


class MemoryDamagedError(LearningError):
    """The label memory's file cannot be written (not a database, disk full...): an operator must act."""

    status = 503
    reason = "label_memory"


class LearningQueueFullError(LearningError):
    """The background learner has LEARNING_QUEUE_SIZE webhooks waiting: this one is not learnt."""

    status = 503
    reason = "learning_queue_full"


class _NotCachedError(Exception):
    """Applying a webhook now would download or segment an image: it goes to the background learner."""


class LabelStudioUnavailableError(LearningError):
    """Label Studio, asked about the project, could not be reached or answered an error: retry later."""

    status = 502
    reason = "label_studio"


class MemoryUnavailableError(LearningError):
    """The label memory cannot be written now (another process holds its lock): retry later."""

    status = 503
    reason = "label_memory_busy"


@dataclass(frozen=True)
class SegmentLabels:
    """A control's segments after labelling: the (maybe merged) label map and each segment's label/score."""

    label_map: np.ndarray
    labels: dict[int, str]
    scores: dict[int, float]


# segment(image reference, task id, target) -> the segmentation of that task's image for that control.
SegmentFn = Callable[[str, object, RegionTarget], CachedSegmentation]
# cached(image reference, target) -> its segmentation when the cache has it (never downloads nor segments).
CachedFn = Callable[[str, RegionTarget], CachedSegmentation | None]
# project_config(project id, the webhook body) -> the project's parsed label config (LearningError: why not).
ProjectConfigFn = Callable[[int, dict], ProjectConfig]


class LabelLearning:
    """The project memories of one service, and the two ways through them (learn, label)."""

    def __init__(self, memory: LabelMemory | None, feature_space: str, jobs: BackgroundQueue | None = None,
                 metrics: Metrics | None = None) -> None:
        self.memory = memory
        self.feature_space = feature_space
        # Webhooks whose images are not segmented yet are learnt here, one at a time, in arrival order.
        self.jobs = jobs
        self._metrics = metrics
        # Held while a request decides between applying now and queuing, and while it applies: it applies
        # only when no job waits or runs, and nothing is queued meanwhile, so the memory changes in the order
        # the webhooks arrived without the (single) worker ever taking it (it may segment for minutes).
        self._apply_lock = threading.Lock()
        self._job_numbers = itertools.count()
        self._classifiers: dict[int, tuple[str, LabelClassifier]] = {}
        self._classifiers_lock = threading.Lock()
        self._rebuilds: dict[int, threading.Thread] = {}
        self._rebuilds_lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.memory is not None

    # --- predictions -------------------------------------------------------------------------------

    def classifier(self, project: int | None) -> tuple[str, LabelClassifier] | None:
        """The revision of ``project``'s memory and a classifier of it; None: nothing learnt, behave as before.

        The classifier is built once per revision (reading the revision alone is a small query); the
        revision goes into the model version, so both always describe the same examples.
        """
        if self.memory is None or project is None:
            return None
        revision = self.memory.revision(project, self.feature_space)
        if revision is None:
            return None
        with self._classifiers_lock:
            cached = self._classifiers.get(project)
        if cached is not None and cached[0] == revision:
            return cached
        revision, examples = self.memory.snapshot(project, self.feature_space)
        if revision is None:
            return None
        built = (revision, LabelClassifier(examples))
        with self._classifiers_lock:
            self._classifiers[project] = built
        return built

    def label(self, classifier: LabelClassifier | None, target: RegionTarget, segmentation: CachedSegmentation,
              zero_shot: Mapping[int, LabelGuess] | None = None) -> SegmentLabels | None:
        """Learnt labels for ``target``'s segments; None when nothing learnt applies to this control.

        With ``zero_shot`` (each segment's zero-shot guess) the one rule (``zeroshot.one_rule``) decides.
        """
        guesses = self._learnt(classifier, target, segmentation)
        if zero_shot is not None:
            guesses = one_rule(guesses, zero_shot, classifier.labels if classifier is not None else (), target)
        if guesses is None:
            return None
        labels = {segment: guess.label for segment, guess in guesses.items()}
        scores = {segment: guess.confidence for segment, guess in guesses.items()}
        label_map = segmentation.label_map
        if target.merge:
            label_map, members = merge_same_label(label_map, labels)
            labels, scores = _merged(members, labels, guesses, label_map)
        return SegmentLabels(label_map, labels, scores)

    @staticmethod
    def _learnt(classifier: LabelClassifier | None, target: RegionTarget,
                segmentation: CachedSegmentation) -> dict[int, LabelGuess] | None:
        if classifier is None or not target.learn or segmentation.features is None:
            return None
        if not set(classifier.labels) & set(target.labels):
            return None
        embeddings = segment_embeddings(segmentation.features, segmentation.label_map)
        return label_segments(classifier, embeddings, target.labels, target.label, target.threshold)

    # --- webhooks ----------------------------------------------------------------------------------

    def handle(self, action: str, body: dict, project_config: ProjectConfigFn, segment: SegmentFn,
               prepare_rebuild: Callable[[int], Callable[[], object]],
               cached: CachedFn | None = None, known_project: Callable[[int], object] | None = None) -> dict:
        """Apply one webhook; :class:`LearningError` (with its HTTP status) when it cannot be learnt from.

        Everything that can be checked without the image is checked here, before anything changes:
        ids, the project (``project_config`` says whose label config applies), every region of a
        teaching control. Then, when no job waits and every image's segmentation is in the cache
        (``cached``: never downloads nor segments), it is applied now and the answer says what was
        learnt; otherwise it is queued for the background learner (``{"queued": ...}``), or refused with
        :class:`LearningQueueFullError` when the queue is full. ``prepare_rebuild(project)`` checks a
        rebuild can run (raising :class:`LearningError` if not) and returns the job, which runs in the
        background. ``known_project(project)`` raises :class:`LearningError` for a project a delete must
        not touch (one Label Studio does not have).
        """
        if self.memory is None:
            return {"learnt": False, "reason": "label learning is off (DATA_DIR=off)"}
        project = _project_id(body)
        if action == REBUILD_EVENT:
            return {"rebuild": self.start_rebuild(project, prepare_rebuild(project))}
        if action in FORGET_EVENTS:
            forget = self._forgetting(action, body, project)
            if known_project is not None:  # Label Studio, when it can be asked, must have the project
                known_project(project)
            return self._apply(f"{action} of project {project}", lambda _: forget())
        annotations, tasks = _annotations_and_tasks(body)
        config = project_config(project, body)
        controls = _teaching_controls(config)
        checked = [_checked_annotation(annotation, tasks, config, controls) for annotation in annotations]

        def learn_all(segment_with: SegmentFn) -> dict:
            return {"annotations": [self.learn(project, config, annotation, task, segment_with)
                                    for annotation, task in checked]}

        def cached_only(reference: str, task_id: object, target: RegionTarget) -> CachedSegmentation:
            found = cached(reference, target) if cached is not None else None
            if found is None:
                raise _NotCachedError(reference)
            return found

        ids = ", ".join(str(annotation.get("id")) for annotation, _ in checked)
        return self._apply(f"{action} of annotation(s) {ids} of project {project}", learn_all,
                           cached_only if cached is not None else segment, segment)

    def _apply(self, what: str, apply: Callable[[SegmentFn | None], dict], now: SegmentFn | None = None,
               later: SegmentFn | None = None) -> dict:
        """``apply`` in this request when nothing waits and it needs no new segmentation, else queued."""
        if self.jobs is None:
            return apply(later)
        with self._apply_lock:
            if self.jobs.pending() == 0:
                try:
                    return apply(now)
                except _NotCachedError:
                    pass  # an image to download and segment: not on a request thread
                except MemoryUnavailableError as error:  # Label Studio would not resend it: the learner retries
                    logger.warning("%s: %s; queued for the background learner, which retries", what, error)
            number = next(self._job_numbers)
            if not self.jobs.submit(number, lambda: self._run_job(what, apply, later)):
                message = (f"{what}: the learning queue is full (LEARNING_QUEUE_SIZE={self.jobs.capacity}); "
                           "NOT learnt: Label Studio does not resend webhooks, run \"Start Training\" (or "
                           "`python -m ml_backend memory rebuild`) once the backend is less busy")
                logger.error(message)
                raise LearningQueueFullError(message)
            return {"queued": True, "pending": self.jobs.pending()}

    def _run_job(self, what: str, apply: Callable[[SegmentFn | None], dict], segment: SegmentFn | None) -> None:
        """A queued webhook, retried while another process holds the memory's write lock; a failure is
        logged (and counted) with its reason."""
        try:
            for attempt in range(JOB_ATTEMPTS):
                try:
                    result = apply(segment)
                    logger.info("learnt in the background: %s: %s", what, result)
                    return
                except MemoryUnavailableError as error:
                    if attempt + 1 == JOB_ATTEMPTS:
                        raise
                    logger.warning("%s: %s; retrying in %s s", what, error, JOB_RETRY_S)
                    time.sleep(JOB_RETRY_S)
        except LearningError as error:
            self._count(error.reason)
            logger.warning("webhook %s not learnt: %s: %s (memory unchanged for it)", what, error.reason, error)

    def _count(self, reason: str) -> None:
        if self._metrics is not None:
            self._metrics.increment("webhook_failures", reason)

    def learn(self, project: int, config: ProjectConfig, annotation: dict, task: dict | None,
              segment: SegmentFn, source: str | None = None) -> dict:
        """Store what one annotation teaches (cancelled: forget it); the stored examples per label."""
        annotation_id = _integer(annotation.get("id"), "annotation.id")
        if annotation.get("was_cancelled"):
            removed = self._write(self.memory.delete_annotations, project, [annotation_id])
            return {"id": annotation_id, "cancelled": True, "forgotten": bool(removed)}
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            raise LearningError(f"annotation {annotation_id}: the payload has no task with a 'data' object")
        task_id = _integer(task.get("id"), "task.id")
        result = annotation.get("result")
        if not isinstance(result, list):
            raise LearningError(f"annotation {annotation_id}: 'result' must be a list of regions")
        examples = self.examples(config, task, result, segment)
        stored = self._write(self.memory.replace_annotation, project, annotation_id, task_id, examples,
                             self.feature_space, source if source is not None else annotation_source(annotation, task),
                             _updated_at(annotation))
        if not stored:
            logger.warning("project %s: annotation %s of task %s not learnt: a newer version (updated_at) is "
                           "already stored", project, annotation_id, task_id)
            return {"id": annotation_id, "task": task_id, "stale": True}
        counts: dict[str, int] = {}
        for example in examples:
            counts[example.label] = counts.get(example.label, 0) + 1
        logger.info("project %s: learnt annotation %s of task %s: %s", project, annotation_id, task_id,
                    counts or "no labelled regions")
        return {"id": annotation_id, "task": task_id, "examples": counts}

    def _write(self, write: Callable[..., object], *arguments: object) -> object:
        try:
            return write(*arguments)
        except MemoryBusyError as error:
            raise MemoryUnavailableError(str(error)) from error
        except sqlite3.Error as error:  # not a database any more, disk full, permissions...
            raise MemoryDamagedError(f"the label memory {self.memory.path} cannot be written ({error}): free the "
                                     "disk or delete the file (it is made again at the next write), then run "
                                     "\"Start Training\" to learn the project's annotations again") from error

    def examples(self, config: ProjectConfig, task: dict, result: Sequence[dict],
                 segment: SegmentFn) -> list[LabelExample]:
        """The examples of an annotation's regions; nothing is stored here (the evaluation reuses it)."""
        examples: list[LabelExample] = []
        for data_key, (target, labels_of) in _teaching_controls(config).items():
            regions = [r for r in result if isinstance(r, dict) and r.get("from_name") in labels_of]
            if not regions:
                continue
            reference = task["data"].get(data_key)
            if not isinstance(reference, str) or not reference.strip():
                raise UnlearnableError(f"task {task.get('id')}: no image URL in data field {data_key!r}")
            try:
                segmentation = segment(reference, task.get("id"), target)
            except TaskError as error:
                raise UnlearnableError(f"task {task.get('id')}: {error.reason}: {error}") from error
            if segmentation.features is None:
                raise UnlearnableError(f"task {task.get('id')}: its cached segmentation has no feature grid "
                                       "(written by an older version): delete CACHE_DIR's entry")
            try:
                examples += examples_from_regions(regions, segmentation.features, labels_of,
                                                  segmentation.label_map.shape)
            except (RegionLabelError, InvalidRegionError, ArithmeticError) as error:
                # ArithmeticError: numbers a JSON body can carry but no float holds (10**400)
                raise UnlearnableError(f"task {task.get('id')}: {error}") from error
        return examples

    def _forgetting(self, action: str, body: dict, project: int) -> Callable[[], dict]:
        """The checked forgetting of a delete event, to run now or queued."""
        if action == "TASKS_DELETED":
            tasks = _id_list(body.get("tasks"), "tasks")
            return lambda: {"forgotten": self._write(self.memory.delete_tasks, project, tasks)}
        key = "annotations" if action == "ANNOTATIONS_DELETED" else "annotation"
        ids = _id_list(body.get(key) if key == "annotations" else [body.get(key)], key)
        return lambda: {"forgotten": self._write(self.memory.delete_annotations, project, ids)}

    # --- rebuilds ----------------------------------------------------------------------------------

    def start_rebuild(self, project: int, job: Callable[[], object]) -> str:
        """Run ``job`` (a rebuild of ``project``) in a background thread unless one is running for it.

        Label Studio posts START_TRAINING from the request that saves an annotation when "Start model
        training on annotation submission" is on: answering at once keeps the annotator from waiting.
        """
        with self._rebuilds_lock:
            running = self._rebuilds.get(project)
            if running is not None and running.is_alive():
                return "already running"

            def run() -> None:
                try:
                    job()
                except Exception:  # a background job has no caller to raise to: log it
                    logger.exception("project %s: rebuilding the label memory failed", project)

            thread = threading.Thread(target=run, name=f"label-memory-rebuild-{project}", daemon=True)
            self._rebuilds[project] = thread
            thread.start()
        return "started"

    def rebuild(self, project: int, config: ProjectConfig, tasks: Iterable[dict], segment: SegmentFn) -> dict:
        """Make the memory of ``project`` hold exactly the annotations of ``tasks`` (Label Studio's, via its API).

        Annotations learnt from the same result and image before are skipped; ones Label Studio no longer
        has are forgotten; one that fails is logged and counted, the others still learnt.
        """
        known = self.memory.sources(project)
        seen: set[int] = set()
        report = {"learnt": 0, "unchanged": 0, "cancelled": 0, "failed": 0, "forgotten": 0}
        for task in tasks:
            for annotation in task.get("annotations") or []:
                try:
                    annotation_id = _integer(annotation.get("id"), "annotation.id")
                    seen.add(annotation_id)
                    source = annotation_source(annotation, task)
                    if known.get(annotation_id) == source and not annotation.get("was_cancelled"):
                        report["unchanged"] += 1
                        continue
                    outcome = self.learn(project, config, annotation, task, segment, source)
                    report["cancelled" if outcome.get("cancelled") else "learnt"] += 1
                except LearningError as error:
                    report["failed"] += 1
                    logger.warning("project %s: rebuild skips an annotation of task %s: %s: %s",
                                   project, task.get("id"), error.reason, error)
        report["forgotten"] = self.memory.delete_annotations(project, set(known) - seen)
        logger.info("project %s: label memory rebuilt: %s", project, report)
        return report


def annotation_source(annotation: dict, task: dict) -> str:
    """Digest of what an annotation is learnt from (its regions and its task's data)."""
    payload = json.dumps([annotation.get("result"), task.get("data")], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def project_number(project: object) -> int | None:
    """Label Studio's project id from ``/predict``'s and ``/setup``'s ``"<id>.<created timestamp>"``.

    None for anything else, including ids no SQLite integer holds and digits other than ASCII ones.
    """
    if isinstance(project, str):
        head = project.split(".", 1)[0]
        project = int(head) if _ASCII_DIGITS.fullmatch(head) else None
    if isinstance(project, int) and not isinstance(project, bool) and 0 <= project <= MAX_ID:
        return project
    return None


def _merged(members: dict[int, list[int]], labels: dict[int, str], guesses: dict[int, LabelGuess],
            label_map: np.ndarray) -> tuple[dict[int, str], dict[int, float]]:
    """Label and score of each merged segment: its members' label, their area-weighted confidence."""
    areas = np.bincount(label_map.ravel())
    merged_labels, merged_scores = {}, {}
    for survivor, group in members.items():
        known = [member for member in group if member in guesses]
        if not known:
            continue
        merged_labels[survivor] = labels[known[0]]
        weights = [max(int(areas[member]) if member < len(areas) else 0, 1) for member in known]
        merged_scores[survivor] = float(np.average([guesses[m].confidence for m in known], weights=weights))
    return merged_labels, merged_scores


def _teaching_controls(config: ProjectConfig) -> dict[str, tuple[RegionTarget, dict[str, tuple[str, ...]]]]:
    """Per image field with a learning target: that target (whose segmentation gives the features) and
    the labels of every control on that image whose regions teach."""
    learning = {}
    for target in config.targets:
        if target.learn and target.data_key not in learning:
            learning[target.data_key] = target
    controls = parse_label_config(config.label_config)
    return {
        data_key: (target, {c.name: tuple(c.labels) for c in controls
                            if c.tag in TEACHING_TAGS and c.data_key == data_key})
        for data_key, target in learning.items()
    }


def _project_id(body: dict) -> int:
    project = body.get("project")
    if isinstance(project, dict):
        project = project.get("id")
    number = project_number(project)
    if number is None:
        raise LearningError(f"'project' must be the project object (with an integer 'id'), got {project!r:.80}")
    return number


def body_project_config(project: int, body: dict, parse: Callable[[str], ProjectConfig]) -> ProjectConfig:
    """The label config the webhook body carries (``project.label_config``), parsed: whoever can post to
    /webhook decides it, so this is used only when Label Studio cannot be asked (no credentials)."""
    label_config = body["project"].get("label_config") if isinstance(body.get("project"), dict) else None
    if not isinstance(label_config, str) or not label_config.strip():
        raise LearningError("'project.label_config' is missing: enable 'send payload' on the webhook")
    return parsed_project_config(project, label_config, parse)


def parsed_project_config(project: int, label_config: str, parse: Callable[[str], ProjectConfig]) -> ProjectConfig:
    try:
        return parse(label_config)
    except (TaskError, LabelConfigError) as error:
        raise UnknownProjectError(f"project {project}: its label config cannot be served: {error}") from error


def _annotations_and_tasks(body: dict) -> tuple[list[dict], dict[int, dict]]:
    annotations, tasks = body.get("annotation"), body.get("task")
    annotations = annotations if isinstance(annotations, list) else [annotations]
    tasks = tasks if isinstance(tasks, list) else [tasks]
    if not annotations or not all(isinstance(a, dict) for a in annotations):
        raise LearningError("'annotation' must be an annotation object (or a list of them)")
    by_id = {task["id"]: task for task in tasks if isinstance(task, dict) and isinstance(task.get("id"), int)}
    return annotations, by_id


def _checked_annotation(annotation: dict, tasks: dict[int, dict], config: ProjectConfig,
                        controls: dict[str, tuple[RegionTarget, dict[str, tuple[str, ...]]]]) -> tuple[dict, dict]:
    """The annotation and its task, once everything that needs no image is known good (else LearningError).

    A malformed region is refused here, before anything is stored: skipping it would store the annotation
    without it (or with nothing), silently replacing what it taught before.
    """
    annotation_id = _integer(annotation.get("id"), "annotation.id")
    task_id = _annotation_task(annotation)
    task = tasks.get(task_id) if task_id is not None else None
    if task is None and len(tasks) == 1 and task_id is None:
        task = next(iter(tasks.values()))
    if annotation.get("was_cancelled"):
        return annotation, task
    if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
        raise LearningError(f"annotation {annotation_id}: the payload has no task with a 'data' object")
    _integer(task.get("id"), "task.id")
    result = annotation.get("result")
    if not isinstance(result, list):
        raise LearningError(f"annotation {annotation_id}: 'result' must be a list of regions")
    teaching = {name: labels for _, labels_of in controls.values() for name, labels in labels_of.items()}
    tags = {control.name: control for control in parse_label_config(config.label_config)}
    for index, region in enumerate(result):
        _check_region(annotation_id, index, region, teaching, tags)
    _updated_at(annotation)
    return annotation, task


def _check_region(annotation_id: int, index: int, region: object, teaching: dict[str, tuple[str, ...]],
                  tags: dict[str, ControlTag]) -> None:
    where = f"annotation {annotation_id}: result[{index}]"
    if not isinstance(region, dict):
        raise LearningError(f"{where} must be a region object, got {type(region).__name__}")
    if region.get("type") == "relation":  # links two regions; carries no from_name / value
        return
    from_name = region.get("from_name")
    if not isinstance(from_name, str) or not isinstance(region.get("value"), dict):
        raise LearningError(f"{where} must have a 'from_name' string and a 'value' object (got "
                            f"from_name={from_name!r:.40})")
    if from_name not in teaching:
        return  # another control's result (choices, text, keypoints...): not ours to learn from
    value = region["value"]
    names = value.get(region.get("type")) if isinstance(region.get("type"), str) else None
    if not isinstance(names, list) or len(names) != 1 or not isinstance(names[0], str):
        raise LearningError(f"{where}: value.{region.get('type')} must hold exactly one label, got {names!r:.80}")
    if names[0] not in teaching[from_name]:
        raise UnlearnableError(f"{where}: label {names[0]!r} is not in control {from_name!r} "
                               f"(labels: {list(teaching[from_name])})")
    try:
        check_region(region, tags)
    except (InvalidRegionError, ArithmeticError) as error:  # ArithmeticError: 10**400 is no float
        raise LearningError(f"{where}: {error}") from error


def _updated_at(annotation: dict) -> float | None:
    """Label Studio's ``updated_at`` as epoch seconds; None when absent (a malformed one is refused)."""
    value = annotation.get("updated_at")
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00")) if isinstance(value, str) else None
    except ValueError:
        moment = None
    if moment is None:
        raise LearningError(f"annotation {annotation.get('id')!r:.40}: 'updated_at' must be an ISO 8601 time, "
                            f"got {value!r:.40}")
    return moment.timestamp() if moment.tzinfo is not None else moment.replace(tzinfo=UTC).timestamp()


def _annotation_task(annotation: dict) -> int | None:
    task = annotation.get("task")
    if isinstance(task, dict):
        task = task.get("id")
    return None if task is None else _integer(task, "annotation.task")


def _id_list(items: object, name: str) -> list[int]:
    if not isinstance(items, list) or not items:
        raise LearningError(f"'{name}' must be a non-empty list of objects with an integer 'id'")
    return [_integer(item.get("id") if isinstance(item, dict) else None, f"{name}[].id") for item in items]


def _integer(value: object, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise LearningError(f"'{name}' must be an integer, got {value!r:.40}")
    if not 0 <= value <= MAX_ID:
        raise LearningError(f"'{name}' must be an id between 0 and {MAX_ID}, got {value!r:.40}")
    return value
