"""Rebuilding a project's label memory from Label Studio's API (label-studio-sdk): "Start Training" and the CLI.

For projects annotated before the backend was connected (no webhook saw those annotations), and to make
the memory agree with Label Studio again after the backend missed events (it was down, DATA_DIR was lost).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator

import httpx
import pydantic
from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError

from ml_backend.core.errors import TaskError
from ml_backend.core.label_config import ProjectConfig
from ml_backend.core.label_studio_client import EndlessListingError, deadline_client, short_body, unique_pages
from ml_backend.core.settings import Settings
from ml_backend.labels.learning import (
    LabelLearning,
    LabelStudioUnavailableError,
    SegmentFn,
    UnknownProjectError,
    UnlearnableError,
)

TASK_PAGE_SIZE = 100  # Label Studio's own default
# Seconds a project's label config read from Label Studio is reused (an edited config applies after this).
CONFIG_TTL_S = 60.0
CONFIGS_KEPT = 256
# Seconds one webhook waits for Label Studio's answer about its project: it runs on a request thread.
CONFIG_TIMEOUT_S = 5.0


def prepare_rebuild(settings: Settings, learning: LabelLearning | None, segment: SegmentFn,
                    project: int) -> Callable[[], dict]:
    """Check that ``project`` can be rebuilt (Label Studio knows it, we can serve its config) and return the
    job that does it; :class:`LearningError` says why not. ``segment`` is the prediction path's own."""
    if learning is None or not learning.enabled:
        raise UnlearnableError("label learning is off (DATA_DIR=off)")
    if settings.label_studio_url is None or settings.label_studio_api_key is None:
        raise UnlearnableError("rebuilding the label memory reads Label Studio's API: set LABEL_STUDIO_URL "
                               "and LABEL_STUDIO_API_KEY")
    # One deadline per request, no redirects followed (see core.label_studio_client).
    client = LabelStudio(base_url=settings.label_studio_url, api_key=settings.label_studio_api_key,
                         timeout=settings.fetch_timeout,
                         httpx_client=deadline_client(settings.fetch_timeout, settings.ca_bundle))
    label_config = project_label_config(client, settings, project)
    try:
        config = ProjectConfig.parse(label_config, settings)
    except TaskError as error:
        raise UnknownProjectError(f"project {project}: its label config cannot be served: {error}") from error

    def job() -> dict:
        return learning.rebuild(project, config, _annotated_tasks(client, settings, project), segment)

    return job


def _annotated_tasks(client: LabelStudio, settings: Settings, project: int) -> Iterator[dict]:
    """The project's annotated tasks, each once; :class:`LabelStudioUnavailableError` if the listing fails
    (before the rebuild forgets anything: a partial listing must not read as deleted annotations)."""
    where = f"Label Studio at {settings.label_studio_url}"

    def fetch_page(page: int) -> tuple[list[dict], int | None]:
        what = f"project {project}'s annotated tasks, page {page}"
        try:
            # resolve_uri=False: the image references as webhooks carry them (and as the backend resolves them).
            pager = client.tasks.list(project=project, fields="all", only_annotated=True, resolve_uri=False,
                                      page=page, page_size=TASK_PAGE_SIZE)
        except ApiError as error:
            if error.status_code == 404 and page > 1:  # Label Studio's "Invalid page.": past the last one
                return [], None
            raise LabelStudioUnavailableError(
                f"{where} answered HTTP {error.status_code} for {what}: {short_body(error.body)}") from error
        except httpx.HTTPError as error:
            raise LabelStudioUnavailableError(
                f"{where} could not be reached for {what}: {type(error).__name__}: {short_body(error, 200)}"
            ) from error
        if not isinstance(pager.items, list | None):
            raise LabelStudioUnavailableError(f"{where} answered {what} with something that is not a task list")
        tasks = [task.model_dump() if hasattr(task, "model_dump") else dict(task) for task in pager.items or []]
        total = getattr(pager.response, "total", None)
        return tasks, total if isinstance(total, int) and not isinstance(total, bool) else None

    try:
        yield from unique_pages(fetch_page, TASK_PAGE_SIZE, key=lambda task: task.get("id"))
    except EndlessListingError as error:
        raise LabelStudioUnavailableError(f"{where}: project {project}'s task list: {error}") from None


def project_label_config(client: LabelStudio, settings: Settings, project: int) -> str:
    """``project``'s label config as Label Studio has it; a :class:`LearningError` naming Label Studio's URL
    and what failed otherwise (the answer to "Start Training" is the one webhook answer Label Studio shows)."""
    where = f"Label Studio at {settings.label_studio_url}"
    try:
        label_config = client.projects.get(id=project).label_config
    except ApiError as error:
        if error.status_code == 404:
            raise UnknownProjectError(f"{where} has no project {project}") from error
        raise LabelStudioUnavailableError(
            f"{where} answered HTTP {error.status_code} for project {project} (check LABEL_STUDIO_API_KEY "
            "when 401/403)") from error
    except httpx.HTTPError as error:  # refused, unreachable, timed out, TLS
        raise LabelStudioUnavailableError(
            f"{where} could not be reached for project {project}: {type(error).__name__}: {error}") from error
    except (pydantic.ValidationError, ValueError) as error:  # answered, but not with a project
        raise LabelStudioUnavailableError(
            f"{where} answered something that is not a project for project {project}: {error!s:.200}") from error
    if not isinstance(label_config, str) or not label_config.strip():
        raise UnknownProjectError(f"{where}: project {project} has no label config yet")
    return label_config


class LabelStudioProjects:
    """Label configs of projects as Label Studio has them, kept :data:`CONFIG_TTL_S` (bounded in number).

    With Label Studio credentials configured, a webhook's labels are checked against this, never against
    the config its body carries (whoever reaches /webhook could send any), and a project Label Studio
    does not have is refused.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        timeout = min(settings.fetch_timeout, CONFIG_TIMEOUT_S)
        self._client = LabelStudio(base_url=settings.label_studio_url, api_key=settings.label_studio_api_key,
                                   timeout=timeout, httpx_client=deadline_client(timeout, settings.ca_bundle))
        # project -> (when read, its label config or the refusal of a project Label Studio lacks)
        self._configs: OrderedDict[int, tuple[float, str | UnknownProjectError]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def configured(settings: Settings) -> bool:
        return settings.label_studio_url is not None and settings.label_studio_api_key is not None

    def label_config(self, project: int) -> str:
        now = time.monotonic()
        with self._lock:
            cached = self._configs.get(project)
        if cached is not None and now - cached[0] < CONFIG_TTL_S:
            if isinstance(cached[1], UnknownProjectError):
                raise cached[1]
            return cached[1]
        try:
            label_config: str | UnknownProjectError = project_label_config(self._client, self.settings, project)
        except UnknownProjectError as error:  # kept too: made-up project ids must not each cost a call
            label_config = error
        with self._lock:
            self._configs[project] = (now, label_config)
            self._configs.move_to_end(project)
            while len(self._configs) > CONFIGS_KEPT:
                self._configs.popitem(last=False)
        if isinstance(label_config, UnknownProjectError):
            raise label_config
        return label_config
