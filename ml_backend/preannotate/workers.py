"""Where tasks are segmented: in this process, or in Ray actors (one per GPU) fed by the driver.

Both run :class:`PredictionWorker`, which goes through the backend's own ``Runtime`` and
``EmerDiffModel.predict``: the job's predictions are the ones Label Studio would get from the service
with the same settings, down to the ``model_version``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Iterator
from typing import Protocol

from ml_backend.core.settings import Settings
from ml_backend.model import EmerDiffModel, Runtime
from segmentor import load_model


class PredictionWorker:
    """The loaded model and one project's label config; predicts one task at a time."""

    def __init__(self, settings: Settings, label_config: str, project_id: int) -> None:
        model = load_model(settings.model, device=settings.device, dtype=settings.dtype)
        # An offline job has no request timeout to keep: PREDICT_BUDGET_SECONDS never defers its tasks.
        settings = dataclasses.replace(settings, predict_budget_seconds=math.inf)
        self._model = EmerDiffModel(
            Runtime.create(settings, model), label_config=label_config, project_id=project_id
        )

    def model_version(self) -> str:
        return self._model.model_version

    def predict(self, task: dict) -> tuple[int, dict]:
        """(task id, the backend's prediction entry for it: regions, or an ``error`` entry)."""
        (prediction,) = self._model.predict([task])
        return task["id"], prediction


class Pool(Protocol):
    """Runs tasks and yields (task id, prediction) as each completes, in any order."""

    description: str

    def model_version(self) -> str: ...

    def run(self, tasks: Iterable[dict]) -> Iterator[tuple[int, dict]]: ...

    def close(self) -> None: ...


class LocalPool:
    """One worker in this process: tasks run in order, each result is yielded before the next starts."""

    def __init__(self, settings: Settings, label_config: str, project_id: int) -> None:
        self._worker = PredictionWorker(settings, label_config, project_id)
        self.description = "this process"

    def model_version(self) -> str:
        return self._worker.model_version()

    def run(self, tasks: Iterable[dict]) -> Iterator[tuple[int, dict]]:
        for task in tasks:
            yield self._worker.predict(task)

    def close(self) -> None:
        pass


class RayPool:
    """``actors`` Ray actors, each holding its own model; the driver keeps every actor busy.

    On a cluster with GPUs each actor reserves one (``num_gpus=1``; Ray sets ``CUDA_VISIBLE_DEVICES``
    so the model lands on that GPU); without GPUs each reserves ``cpus_per_actor`` CPUs.
    """

    # Tasks queued per actor: one running and one waiting, so an actor never idles between tasks.
    IN_FLIGHT_PER_ACTOR = 2

    def __init__(
        self, settings: Settings, label_config: str, project_id: int, *, address: str | None,
        actors: int | None, cpus_per_actor: int = 1,
    ) -> None:
        import ray  # only the --ray path needs Ray loaded

        self._ray = ray
        if not ray.is_initialized():
            # A cluster of our own (address None) needs no dashboard; a joined one keeps its own.
            ray.init(address=address, log_to_driver=False, configure_logging=False,
                     include_dashboard=False if address is None else None)
        gpus = int(ray.cluster_resources().get("GPU", 0))
        count = actors or gpus or 1
        resources = {"num_gpus": 1} if gpus else {"num_cpus": cpus_per_actor}
        remote_worker = ray.remote(**resources)(PredictionWorker)
        self._actors = [remote_worker.remote(settings, label_config, project_id) for _ in range(count)]
        self.description = f"{count} Ray actor(s), each with {resources}"

    def model_version(self) -> str:
        versions = set(self._ray.get([actor.model_version.remote() for actor in self._actors]))
        if len(versions) != 1:
            raise RuntimeError(f"Ray actors disagree on the model version: {sorted(versions)}")
        return versions.pop()

    def run(self, tasks: Iterable[dict]) -> Iterator[tuple[int, dict]]:
        from ray.util import ActorPool

        pool = ActorPool(self._actors)
        pending = iter(tasks)
        for task in _take(pending, len(self._actors) * self.IN_FLIGHT_PER_ACTOR):
            pool.submit(lambda actor, item: actor.predict.remote(item), task)
        while pool.has_next():
            yield pool.get_next_unordered()
            for task in _take(pending, 1):
                pool.submit(lambda actor, item: actor.predict.remote(item), task)

    def close(self) -> None:
        for actor in self._actors:
            self._ray.kill(actor)


def _take(iterator: Iterator[dict], count: int) -> list[dict]:
    taken = []
    for item in iterator:
        taken.append(item)
        if len(taken) == count:
            break
    return taken
