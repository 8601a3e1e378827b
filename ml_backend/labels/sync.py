"""Rebuilding a project's label memory from Label Studio's API (label-studio-sdk): "Start Training" and the CLI.

For projects annotated before the backend was connected (no webhook saw those annotations), and to make
the memory agree with Label Studio again after the backend missed events (it was down, DATA_DIR was lost).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError

from ml_backend.core.errors import TaskError
from ml_backend.core.label_config import ProjectConfig
from ml_backend.core.settings import Settings
from ml_backend.labels.learning import LabelLearning, SegmentFn, UnknownProjectError, UnlearnableError


def prepare_rebuild(settings: Settings, learning: LabelLearning | None, segment: SegmentFn,
                    project: int) -> Callable[[], dict]:
    """Check that ``project`` can be rebuilt (Label Studio knows it, we can serve its config) and return the
    job that does it; :class:`LearningError` says why not. ``segment`` is the prediction path's own."""
    if learning is None or not learning.enabled:
        raise UnlearnableError("label learning is off (DATA_DIR=off)")
    if settings.label_studio_url is None or settings.label_studio_api_key is None:
        raise UnlearnableError("rebuilding the label memory reads Label Studio's API: set LABEL_STUDIO_URL "
                               "and LABEL_STUDIO_API_KEY")
    client = LabelStudio(base_url=settings.label_studio_url, api_key=settings.label_studio_api_key,
                         timeout=settings.fetch_timeout)
    try:
        label_config = client.projects.get(id=project).label_config
    except ApiError as error:
        if error.status_code == 404:
            raise UnknownProjectError(f"Label Studio has no project {project}") from error
        raise UnlearnableError(f"Label Studio answered {error.status_code} for project {project}") from error
    try:
        config = ProjectConfig.parse(label_config, settings)
    except TaskError as error:
        raise UnknownProjectError(f"project {project}: its label config cannot be served: {error}") from error

    def job() -> dict:
        return learning.rebuild(project, config, _annotated_tasks(client, project), segment)

    return job


def _annotated_tasks(client: LabelStudio, project: int) -> Iterator[dict]:
    # resolve_uri=False: the image references as the webhooks carry them (and as the backend resolves them).
    for task in client.tasks.list(project=project, fields="all", only_annotated=True, resolve_uri=False):
        yield task.model_dump() if hasattr(task, "model_dump") else dict(task)

