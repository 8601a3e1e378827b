"""What the job asks of Label Studio, through label-studio-sdk, with one retry policy for every call.

A connection failure, a timeout, 429 or 5xx is retried with exponential backoff; when the retries run
out :class:`LabelStudioUnavailableError` stops the job (resumable). Other HTTP errors (401, 404...) are the
caller's mistake and raise :class:`LabelStudioError` at once. The SDK's own retries are switched off so
that this policy is the only one, and so that a push is never repeated blindly: see :meth:`push`.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import httpx
from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Statuses that mean "try again later" rather than "this request is wrong".
_TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class LabelStudioError(RuntimeError):
    """Label Studio refused a request for a reason retrying cannot fix (bad key, unknown project...)."""


class LabelStudioUnavailableError(RuntimeError):
    """Label Studio stayed unreachable or kept answering 5xx through every retry."""


@dataclass(frozen=True)
class Backoff:
    """Delays ``initial * 2**n`` seconds, capped at ``maximum``, for at most ``retries`` retries."""

    retries: int = 6
    initial: float = 1.0
    maximum: float = 30.0

    def delays(self) -> Iterator[float]:
        for attempt in range(self.retries):
            yield min(self.initial * 2**attempt, self.maximum)


@dataclass(frozen=True)
class TaskRecord:
    """A task as the job needs it: its data, and the ids of its predictions of the job's version."""

    id: int
    data: dict
    predictions: tuple[int, ...]


class LabelStudioApi:
    def __init__(self, url: str, api_key: str, backoff: Backoff, *, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self.backoff = backoff
        self.client = LabelStudio(base_url=self.url, api_key=api_key, timeout=timeout, max_retries=0)

    def label_config(self, project: int) -> str:
        return self._call(f"project {project}", lambda: self.client.projects.get(id=project)).label_config

    def tasks(
        self, project: int, model_version: str, *, view: int | None, task_ids: Sequence[int] | None,
        page_size: int = 100,
    ) -> Iterator[TaskRecord]:
        """Every task of the project (or of ``view``, or only ``task_ids``), page by page, in id order."""
        query = None
        if task_ids is not None:
            query = json.dumps({"selectedItems": {"all": False, "included": list(task_ids)}})
        page, seen = 1, 0
        while True:
            pager = self._call(
                f"tasks page {page}",
                functools.partial(
                    self.client.tasks.list, project=project, view=view, query=query, fields="all", page=page,
                    page_size=page_size, resolve_uri=False,
                ),
            )
            items = pager.items or []
            for task in items:
                yield TaskRecord(task.id, dict(task.data or {}), _ids_of_version(task.predictions, model_version))
            seen += len(items)
            total = getattr(pager.response, "total", None)
            if not items or not pager.has_next or (total is not None and seen >= total):
                return
            page += 1

    def predictions_of(self, task: int, model_version: str) -> tuple[int, ...]:
        """Ids of ``task``'s predictions of ``model_version``, oldest first."""
        found = self._call(f"predictions of task {task}", lambda: self.client.predictions.list(task=task))
        return _ids_of_version(found, model_version)

    def push(self, task: int, prediction: dict) -> int:
        """Create the task's prediction and return its id; exactly once, even across retries.

        A create whose answer was lost (timeout, dropped connection, 5xx after the commit) may have
        stored the prediction: before every attempt, a prediction of this version already on the task
        is taken as the result instead of creating a second one.
        """
        version = prediction["model_version"]
        for delay in [*self.backoff.delays(), None]:
            try:
                existing = self.predictions_of(task, version)
                if existing:
                    return existing[0]
                created = self.client.predictions.create(
                    task=task, result=prediction["result"], score=prediction["score"], model_version=version
                )
                return created.id
            except (httpx.TransportError, ApiError) as error:
                self._retry_or_raise(f"push to task {task}", error, delay)
        raise AssertionError("unreachable: the last attempt raises")

    def delete(self, prediction: int) -> None:
        self._call(f"delete prediction {prediction}", lambda: self.client.predictions.delete(id=prediction))

    def _call(self, what: str, request: Callable[[], T]) -> T:
        for delay in [*self.backoff.delays(), None]:
            try:
                return request()
            except (httpx.TransportError, ApiError) as error:
                self._retry_or_raise(what, error, delay)
        raise AssertionError("unreachable: the last attempt raises")

    def _retry_or_raise(self, what: str, error: Exception, delay: float | None) -> None:
        status = error.status_code if isinstance(error, ApiError) else None
        if status is not None and status not in _TRANSIENT_STATUSES:
            raise LabelStudioError(f"Label Studio at {self.url} refused {what}: HTTP {status}: {error.body}") from None
        problem = f"HTTP {status}" if status is not None else f"{type(error).__name__}: {error}"
        if delay is None:
            raise LabelStudioUnavailableError(
                f"Label Studio at {self.url} is unavailable ({what}: {problem}) after "
                f"{self.backoff.retries} retries"
            ) from error
        logger.warning("%s failed (%s); retrying in %.1f s", what, problem, delay)
        time.sleep(delay)


def _ids_of_version(predictions: object, model_version: str) -> tuple[int, ...]:
    """The ids of the predictions (SDK objects or dicts) of exactly ``model_version``, sorted."""
    ids = []
    for prediction in predictions or ():
        # The SDK's task model declares no prediction ``id``: it arrives as an extra field.
        fields = prediction if isinstance(prediction, dict) else prediction.model_dump()
        if fields.get("model_version") == model_version and fields.get("id") is not None:
            ids.append(int(fields["id"]))
    return tuple(sorted(ids))
