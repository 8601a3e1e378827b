"""The loaded diffusion model behind a lock: segmentors per parameter set, the disk cache in front.

One process holds one model (one gunicorn worker per GPU). Segmentations run one at a time under
``gpu_lock`` — the segmentor is not thread-safe and the GPU gains nothing from interleaving — while the
other request threads keep answering /health, /setup and /metrics.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
from collections import OrderedDict

import numpy as np

from ml_backend.core.errors import ImageDecodeError, SegmentationError
from ml_backend.core.label_config import SegmentationParams
from ml_backend.core.metrics import Metrics
from ml_backend.core.settings import Settings
from ml_backend.segmentation.cache import CachedSegmentation, SegmentationCache, stored_features
from ml_backend.segmentation.granularity import merge_tree
from segmentor import DiffusionModel, EmerDiffConfig, EmerDiffSegmentor, ImageError, Segmentation, load_image

logger = logging.getLogger(__name__)

# Segmentors kept for parameter sets other than the default (each holds a prompt embedding, no weights).
MAX_SEGMENTORS = 8


class SegmentationService:
    def __init__(
        self, model: DiffusionModel, settings: Settings, cache: SegmentationCache, metrics: Metrics
    ) -> None:
        self.model = model
        self.cache = cache
        self.metrics = metrics
        self.max_image_pixels = settings.max_image_pixels
        self.base_config = EmerDiffConfig.preset(
            settings.preset,
            num_segments=settings.num_segments,
            seed=settings.seed,
            min_segment_area=settings.min_area,
            device=settings.device,
            dtype=settings.dtype,
        )
        self.default_preset = settings.preset
        self.gpu_lock = threading.Lock()
        # Least recently used first; the default parameters' segmentor is never evicted.
        self._segmentors: OrderedDict[SegmentationParams, EmerDiffSegmentor] = OrderedDict()
        self._registry_lock = threading.Lock()

    def default_params(self) -> SegmentationParams:
        return SegmentationParams(
            num_segments=self.base_config.num_segments,
            min_area=self.base_config.min_segment_area,
            preset=self.default_preset,
        )

    def segmentor(self, params: SegmentationParams) -> EmerDiffSegmentor:
        """The segmentor for ``params``, built on first use and kept (the MAX_SEGMENTORS most recent).

        Built outside ``gpu_lock`` so /setup never waits for a running segmentation: construction runs
        only the text encoder (for the empty prompt), which ``segment`` never touches.
        """
        with self._registry_lock:
            segmentor = self._segmentors.get(params)
            if segmentor is None:
                config = dataclasses.replace(
                    self.base_config.with_preset(params.preset),
                    num_segments=params.num_segments,
                    min_segment_area=params.min_area,
                )
                segmentor = self._segmentors[params] = EmerDiffSegmentor(self.model, config)
                self._evict_idle_segmentors()
            self._segmentors.move_to_end(params)
            return segmentor

    def _evict_idle_segmentors(self) -> None:
        """Projects come and go, each with its own knobs: keep the registry from growing forever."""
        default = self.default_params()
        while len(self._segmentors) > MAX_SEGMENTORS:
            oldest = next(params for params in self._segmentors if params != default)
            del self._segmentors[oldest]
            self.metrics.increment("segmentor", "evicted_segmentors")

    def fingerprint(self, params: SegmentationParams) -> str:
        """Identifies the weights and every setting that changes the segmentation."""
        return self.segmentor(params).fingerprint()

    def lookup(self, image_sha256: str, params: SegmentationParams) -> CachedSegmentation | None:
        """The cached segmentation of the image with this content, or None (nothing is computed)."""
        cached = self.cache.get(image_sha256, self.fingerprint(params))
        if cached is not None:
            self.metrics.increment("cache", "hits")
        return cached

    def is_cached(self, image_sha256: str, params: SegmentationParams) -> bool:
        """Whether the cache holds this segmentation (a file check: nothing is read)."""
        return self.cache.contains(image_sha256, self.fingerprint(params))

    def segment(
        self, image_bytes: bytes, params: SegmentationParams, image_sha256: str | None = None
    ) -> CachedSegmentation:
        """The segmentation of an image file's bytes, from the cache when this exact job was done before."""
        image_sha256 = image_sha256 or hashlib.sha256(image_bytes).hexdigest()
        segmentor = self.segmentor(params)
        fingerprint = segmentor.fingerprint()
        cached = self.cache.get(image_sha256, fingerprint)
        if cached is not None:
            self.metrics.increment("cache", "hits")
            return cached
        with self.gpu_lock:
            # Another thread may have segmented the same image while this one waited.
            cached = self.cache.get(image_sha256, fingerprint)
            if cached is not None:
                self.metrics.increment("cache", "hits")
                return cached
            self.metrics.increment("cache", "misses")
            # Decoded under the lock: one image's pixels (at most MAX_IMAGE_PIXELS) in memory at a time,
            # however many request threads hold downloaded files.
            try:
                image = load_image(image_bytes, max_pixels=self.max_image_pixels)
            except ImageError as error:
                raise ImageDecodeError(str(error)) from error
            with self.metrics.timed("segment"):
                result = self._run(segmentor, image)
            cached = _with_merge_tree(
                CachedSegmentation(
                    label_map=result.label_map,
                    scores={segment.id: segment.score for segment in result.segments},
                    features=stored_features(result.features),
                    low_res_labels=result.low_res_labels,
                )
            )
            self.cache.put(image_sha256, fingerprint, cached)
        self.metrics.increment("segmentor", "segmentations")
        for name, count in result.counters.items():
            self.metrics.increment("segmentor", name, count)
        return cached

    def _run(self, segmentor: EmerDiffSegmentor, image: np.ndarray) -> Segmentation:
        try:
            return segmentor.segment(image)
        except ImageError as error:
            raise ImageDecodeError(str(error)) from error
        except Exception as error:  # the service must outlive any failure of one image (e.g. out of memory)
            logger.exception("segmentation of a %sx%s image failed", image.shape[1], image.shape[0])
            raise SegmentationError(f"segmentation failed: {type(error).__name__}: {error}") from error


def _with_merge_tree(segmentation: CachedSegmentation) -> CachedSegmentation:
    """The record with its merge tree (milliseconds), cached with it: every coarser K costs no new run."""
    tree = merge_tree(segmentation)
    return segmentation if tree is None else dataclasses.replace(segmentation, merges=tree.merges)
