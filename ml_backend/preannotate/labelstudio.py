"""What the job asks of Label Studio, through label-studio-sdk, with one retry policy for every call.

A connection failure, a timeout, 429 or 5xx is retried with exponential backoff; when the retries run
out :class:`LabelStudioUnavailableError` stops the job (resumable). Other HTTP errors (401, 404...) are the
caller's mistake and raise :class:`LabelStudioError` at once. The SDK's own retries are switched off so
that this policy is the only one, and so that a push is never repeated blindly: see :meth:`push`.

Every request has one wall-clock deadline and follows no redirect (see
:mod:`ml_backend.core.label_studio_client`). Every answer is checked before it is used: a task list that
is not a list, an id that is not a 64-bit integer, a page that only repeats tasks listed before, a create
answered with another task's prediction raise :class:`LabelStudioError` (the job stops; nothing is
counted that Label Studio did not say it stored).
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

from ml_backend.core.label_studio_client import (
    MAX_ID,
    EndlessListingError,
    deadline_client,
    short_body,
    unique_pages,
)

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
        self.timeout = timeout
        self.client = LabelStudio(base_url=self.url, api_key=api_key, timeout=timeout, max_retries=0,
                                  httpx_client=deadline_client(timeout))

    def label_config(self, project: int) -> str:
        found = self._fields(self._call(f"project {project}", lambda: self.client.projects.get(id=project)),
                             f"project {project}")
        if not isinstance(found.get("label_config"), str):
            raise LabelStudioError(f"Label Studio at {self.url} answered project {project} without a label config: "
                                   f"{short_body(found, 120)}")
        return found["label_config"]

    def tasks(
        self, project: int, model_version: str, *, view: int | None, task_ids: Sequence[int] | None,
        page_size: int = 100,
    ) -> Iterator[TaskRecord]:
        """Every task of the project (or of ``view``, or only ``task_ids``), page by page, in id order.

        Each task once: a task listed again (tasks added or deleted while paging shift the pages) is
        skipped. The scan ends at an empty page or at the page that reaches the total; a page that brings
        no task not listed before raises (a listing that would never end).
        """
        query = None
        if task_ids is not None:
            query = json.dumps({"selectedItems": {"all": False, "included": list(task_ids)}})

        def fetch_page(page: int) -> tuple[list[TaskRecord], int | None]:
            what = f"tasks page {page}"
            pager = self._call(
                what,
                functools.partial(
                    self.client.tasks.list, project=project, view=view, query=query, fields="all", page=page,
                    page_size=page_size, resolve_uri=False,
                ),
            )
            records = [self._record(task, model_version, what) for task in self._list(pager.items, what)]
            total = getattr(pager.response, "total", None)
            return records, total if isinstance(total, int) and not isinstance(total, bool) else None

        try:
            yield from unique_pages(fetch_page, page_size, key=lambda record: record.id)
        except EndlessListingError as error:
            raise LabelStudioError(f"Label Studio at {self.url}: the task list's {error}; is --url Label Studio "
                                   "itself?") from None

    def predictions_of(self, task: int, model_version: str) -> tuple[int, ...]:
        """Ids of ``task``'s predictions of ``model_version``, oldest first."""
        what = f"predictions of task {task}"
        found = self._call(what, lambda: self.client.predictions.list(task=task))
        return self._ids_of_version(self._list(found, what), model_version, what)

    def push(self, task: int, prediction: dict) -> int:
        """Create the task's prediction and return its id; exactly once, even across retries.

        A create whose answer was lost (timeout, dropped connection, 5xx after the commit) may have
        stored the prediction: before every attempt, a prediction of this version already on the task
        is taken as the result instead of creating a second one. A create counts only when Label
        Studio's answer is a prediction of this task and version with an id.
        """
        version = prediction["model_version"]
        what = f"push to task {task}"
        for delay in [*self.backoff.delays(), None]:
            try:
                existing = self.predictions_of(task, version)
                if existing:
                    return existing[0]
                created = self._parsed(what, lambda: self.client.predictions.create(
                    task=task, result=prediction["result"], score=prediction["score"], model_version=version
                ))
            except (httpx.TransportError, ApiError) as error:
                self._retry_or_raise(what, error, delay)
                continue
            fields = self._fields(created, what)
            if fields.get("task") != task or fields.get("model_version") != version:
                raise LabelStudioError(
                    f"Label Studio at {self.url} answered the {what} with something other than the prediction "
                    f"it was sent (task {fields.get('task')!r:.40}, model_version "
                    f"{fields.get('model_version')!r:.80}): not counted as pushed"
                )
            return self._id(fields.get("id"), "the created prediction's id", what)
        raise AssertionError("unreachable: the last attempt raises")

    def delete(self, prediction: int) -> None:
        try:
            self._call(f"delete prediction {prediction}", lambda: self.client.predictions.delete(id=prediction))
        except LabelStudioError as error:
            if not isinstance(error.__cause__, ApiError) or error.__cause__.status_code != 404:
                raise  # 404: someone deleted it first, which is what was wanted

    def _call(self, what: str, request: Callable[[], T]) -> T:
        for delay in [*self.backoff.delays(), None]:
            try:
                return self._parsed(what, request)
            except (httpx.TransportError, ApiError) as error:
                self._retry_or_raise(what, error, delay)
        raise AssertionError("unreachable: the last attempt raises")

    def _parsed(self, what: str, request: Callable[[], T]) -> T:
        """``request()``; an answer the SDK cannot read (an object where a list belongs...) as ``LabelStudioError``."""
        try:
            return request()
        except (httpx.TransportError, ApiError):
            raise
        except (ValueError, TypeError, AttributeError, KeyError) as error:  # pydantic's errors are ValueErrors
            raise LabelStudioError(
                f"Label Studio at {self.url} answered {what} with something the job cannot read: "
                f"{short_body(error, 200)}"
            ) from None

    def _retry_or_raise(self, what: str, error: Exception, delay: float | None) -> None:
        status = error.status_code if isinstance(error, ApiError) else None
        if isinstance(error, ApiError) and status not in _TRANSIENT_STATUSES:
            raise LabelStudioError(self._refusal(what, error)) from error
        if isinstance(error, httpx.TimeoutException):
            problem = f"no complete answer within --timeout {self.timeout:g} s ({type(error).__name__})"
        else:
            problem = f"HTTP {status}" if status is not None else f"{type(error).__name__}: {short_body(error, 200)}"
        if delay is None:
            raise LabelStudioUnavailableError(
                f"Label Studio at {self.url} is unavailable ({what}: {problem}) after "
                f"{self.backoff.retries} retries"
            ) from error
        logger.warning("%s failed (%s); retrying in %.1f s", what, problem, delay)
        time.sleep(delay)

    def _refusal(self, what: str, error: ApiError) -> str:
        status = error.status_code
        if isinstance(status, int) and 300 <= status < 400:
            location = (error.headers or {}).get("location", "nowhere")
            return (f"Label Studio at {self.url} redirected {what} (HTTP {status} to {short_body(location, 200)}): "
                    "the job follows no redirects; pass as --url the address Label Studio answers at")
        if isinstance(status, int) and 200 <= status < 300:
            return (f"Label Studio at {self.url} answered {what} with HTTP {status} but no JSON: "
                    f"{short_body(error.body)}")
        return f"Label Studio at {self.url} refused {what}: HTTP {status}: {short_body(error.body)}"

    def _list(self, found: object, what: str) -> list:
        if found is None:
            return []
        if not isinstance(found, list):
            raise LabelStudioError(f"Label Studio at {self.url} answered {what} with {type(found).__name__} "
                                   f"where a list belongs: {short_body(found, 120)}")
        return found

    def _record(self, task: object, model_version: str, what: str) -> TaskRecord:
        fields = self._fields(task, what)
        task_id = self._id(fields.get("id"), "a task id", what)
        data = fields.get("data")
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise LabelStudioError(f"Label Studio at {self.url} answered {what} with task {task_id}'s data as "
                                   f"{type(data).__name__}, not an object")
        predictions = self._list(fields.get("predictions"), f"{what} (task {task_id}'s predictions)")
        return TaskRecord(task_id, data, self._ids_of_version(predictions, model_version, what))

    def _ids_of_version(self, predictions: list, model_version: str, what: str) -> tuple[int, ...]:
        """The ids of the predictions (SDK objects or dicts) of exactly ``model_version``, sorted."""
        ids = []
        for prediction in predictions:
            # The SDK's task model declares no prediction ``id``: it arrives as an extra field.
            fields = self._fields(prediction, what)
            if fields.get("model_version") == model_version and fields.get("id") is not None:
                ids.append(self._id(fields["id"], "a prediction id", what))
        return tuple(sorted(ids))

    def _fields(self, found: object, what: str) -> dict:
        """An SDK model or a dict as a dict (the SDK builds its models from any JSON without checking it)."""
        if isinstance(found, dict):
            return found
        dump = getattr(found, "model_dump", None)
        fields = dump(warnings=False) if callable(dump) else None  # the checks of the callers say what is wrong
        if not isinstance(fields, dict):
            raise LabelStudioError(f"Label Studio at {self.url} answered {what} with {type(found).__name__} where "
                                   f"an object belongs: {short_body(found, 120)}")
        return fields

    def _id(self, value: object, name: str, what: str) -> int:
        if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_ID:
            return value
        raise LabelStudioError(f"Label Studio at {self.url} answered {what} with {name} {value!r:.60}, "
                               f"not an integer from 1 to {MAX_ID}")

