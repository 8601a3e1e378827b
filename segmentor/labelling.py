"""Labels for segments, learnt from annotated regions: pooling, the classifier, merging same-label neighbours.

Pure numpy / OpenCV, shared by the ML backend's label memory (``ml_backend.labels.memory``) and the
evaluation (``segmentor.evaluation.labels``), so what is measured is what the backend does:

1. an annotated region (polygon, brush, rectangle) is rasterised at the image size
   (``converters.labelstudio.region_to_mask``) and the U-Net feature grid is averaged under it, each grid
   cell weighted by the fraction of it the region covers (:func:`pool_features`);
2. a new segment's embedding is pooled the same way under its full-resolution mask
   (:func:`segment_embeddings`), so examples and queries are made alike;
3. :class:`LabelClassifier` gives each embedding the label of the nearest class prototype (or of its
   nearest examples) on L2-normalised embeddings, with a confidence in [0, 1].
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from converters.labelstudio import InvalidRegionError, region_to_mask

METHODS = ("prototype", "knn")
# Measured on the colour scenes (docs/QUALITY.md, "Labels that learn"): k-NN labels more pixels and regions
# right than prototypes (class-mean accuracy alike) and its confidence sorts right from wrong: at 0.6 it
# labels ~80 % of segments, ~88 % of them right, after 50 annotated images.
DEFAULT_METHOD = "knn"
DEFAULT_THRESHOLD = 0.6
# Softmax temperature on cosine similarities [ours, measured]: normalised U-Net features of different
# objects are still similar (cosines of 0.7-0.9); 0.02 lets a segment annotated before win over several
# merely similar examples, and keeps the accuracy of 0.05.
TEMPERATURE = 0.02
KNN_NEIGHBOURS = 5


@dataclass(frozen=True)
class LabelExample:
    """One annotated region reduced to what learning needs."""

    region_id: str
    from_name: str
    label: str
    embedding: np.ndarray  # float32 (C,)
    area: int  # pixels of the region at the image size


@dataclass(frozen=True)
class LabelGuess:
    label: str
    confidence: float  # in [0, 1]


class RegionLabelError(ValueError):
    """An annotated region that cannot be learnt from; the message names the region and why."""


def pool_features(features: np.ndarray, mask: np.ndarray) -> np.ndarray | None:
    """Mean feature under ``mask`` (H, W) on the (h, w, C) grid, cells weighted by the area they share.

    ``None`` when the mask is empty. The grid spans the whole image (the working image is the original
    resized), so area-resizing the mask to the grid gives each cell's covered fraction.
    """
    if not mask.any():
        return None
    height, width = features.shape[:2]
    weights = cv2.resize(mask.astype(np.float32), (width, height), interpolation=cv2.INTER_AREA)
    total = float(weights.sum())
    if total <= 0.0:  # a speck smaller than what INTER_AREA keeps: take the cell under its centre
        ys, xs = np.nonzero(mask)
        row = min(int(ys.mean() * height / mask.shape[0]), height - 1)
        col = min(int(xs.mean() * width / mask.shape[1]), width - 1)
        return features[row, col].astype(np.float32)
    return (np.tensordot(weights, features, axes=([0, 1], [0, 1])) / total).astype(np.float32)


def segment_embeddings(features: np.ndarray, label_map: np.ndarray) -> dict[int, np.ndarray]:
    """Segment id -> its pooled embedding (:func:`pool_features` under its full-resolution mask)."""
    embeddings = {}
    for segment_id in np.unique(label_map):
        pooled = pool_features(features, label_map == segment_id)
        if pooled is not None:
            embeddings[int(segment_id)] = pooled
    return embeddings


def examples_from_regions(
    regions: Iterable[dict], features: np.ndarray, labels_of: Mapping[str, Sequence[str]],
    image_size: tuple[int, int],
) -> list[LabelExample]:
    """An example per labelled mask region of an annotation; :class:`RegionLabelError` for a bad one.

    ``labels_of`` maps each control that learns to its labels: regions of other controls (choices,
    text, keypoints...) are skipped; a region whose label is not in its control's labels is an error,
    so one bad region leaves the whole annotation unlearnt rather than half of it. ``image_size`` is the
    (height, width) of the segmented image: a region drawn on another size is refused before it is
    rasterised (webhook bodies are untrusted; a made-up size must not allocate gigabytes).
    """
    examples = []
    for region in regions:
        if not isinstance(region, dict):
            raise RegionLabelError(f"region must be a JSON object, got {type(region).__name__}")
        from_name, region_type = region.get("from_name"), region.get("type")
        if from_name not in labels_of or not isinstance(region.get("value"), dict):
            continue
        region_id = str(region.get("id"))
        names = region["value"].get(region_type)
        if not isinstance(names, list) or len(names) != 1 or not isinstance(names[0], str):
            raise RegionLabelError(f"region {region_id!r}: value.{region_type} must hold exactly one label, "
                                   f"got {names!r:.80}")
        if names[0] not in labels_of[from_name]:
            raise RegionLabelError(f"region {region_id!r}: label {names[0]!r} is not in control {from_name!r} "
                                   f"(labels: {list(labels_of[from_name])})")
        size = (region.get("original_height"), region.get("original_width"))
        if size != tuple(image_size):
            raise RegionLabelError(f"region {region_id!r}: drawn on a {size[1]}x{size[0]} image, but the task's "
                                   f"image is {image_size[1]}x{image_size[0]}")
        try:
            mask = region_to_mask(region)
        except (InvalidRegionError, KeyError, TypeError, ValueError) as error:
            raise RegionLabelError(f"region {region_id!r}: {error}") from error
        embedding = pool_features(features, mask)
        if embedding is not None:
            examples.append(LabelExample(region_id, from_name, names[0], embedding, int(mask.sum())))
    return examples


def normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)


class LabelClassifier:
    """Nearest class prototype (``prototype``) or similarity-weighted k nearest examples (``knn``).

    Confidence: ``prototype`` — softmax over the cosine similarities to each label's prototype (mean of
    its normalised examples) at :data:`TEMPERATURE`; ``knn`` — the top label's share of the
    ``exp(similarity / TEMPERATURE)`` weights of the k nearest examples. With one label learnt the
    confidence is its similarity share against nothing, i.e. 1: teach at least two labels.
    """

    def __init__(self, examples: Sequence[LabelExample], method: str = DEFAULT_METHOD) -> None:
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        self.method = method
        self.labels = tuple(sorted({example.label for example in examples}))
        self._example_labels = np.array([self.labels.index(e.label) for e in examples], dtype=np.int64)
        self._examples = (normalise(np.stack([e.embedding for e in examples])) if examples
                          else np.zeros((0, 0), np.float32))
        if method == "prototype" and examples:
            self._prototypes = normalise(np.stack([self._examples[self._example_labels == k].mean(axis=0)
                                                   for k in range(len(self.labels))]))

    def __len__(self) -> int:
        return len(self._examples)

    def predict(self, embeddings: np.ndarray, allowed: Sequence[str] | None = None) -> list[LabelGuess | None]:
        """A guess per row of ``embeddings`` among the learnt labels in ``allowed`` (None: no such label)."""
        embeddings = np.atleast_2d(np.asarray(embeddings, dtype=np.float32))
        keep = [k for k, label in enumerate(self.labels) if allowed is None or label in allowed]
        if not keep or not len(embeddings):
            return [None] * len(embeddings)
        queries = normalise(embeddings)
        score = self._prototype_scores if self.method == "prototype" else self._knn_scores
        scores = score(queries, keep)
        best = scores.argmax(axis=1)
        return [LabelGuess(self.labels[keep[b]], float(row[b])) for b, row in zip(best, scores, strict=True)]

    def _prototype_scores(self, queries: np.ndarray, keep: list[int]) -> np.ndarray:
        similarities = queries @ self._prototypes[keep].T
        return _softmax(similarities / TEMPERATURE)

    def _knn_scores(self, queries: np.ndarray, keep: list[int]) -> np.ndarray:
        usable = np.isin(self._example_labels, keep)
        examples, owners = self._examples[usable], self._example_labels[usable]
        similarities = queries @ examples.T
        k = min(KNN_NEIGHBOURS, len(examples))
        nearest = np.argpartition(-similarities, k - 1, axis=1)[:, :k]
        near_sims = np.take_along_axis(similarities, nearest, axis=1)
        weights = np.exp((near_sims - near_sims.max(axis=1, keepdims=True)) / TEMPERATURE)
        votes = np.zeros((len(queries), len(keep)))
        columns = np.searchsorted(np.array(keep), owners[nearest])
        np.add.at(votes, (np.arange(len(queries))[:, None], columns), weights)
        return votes / votes.sum(axis=1, keepdims=True)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def label_segments(
    classifier: LabelClassifier,
    embeddings: Mapping[int, np.ndarray],
    allowed: Sequence[str],
    default: str,
    threshold: float,
) -> dict[int, LabelGuess]:
    """Segment id -> its label and confidence; below ``threshold`` the segment keeps ``default``.

    A segment that keeps the default label still carries the confidence of the best guess it lost to,
    so its region's score says how unsure the labelling is.
    """
    ids = sorted(embeddings)
    guesses = classifier.predict(np.stack([embeddings[i] for i in ids]) if ids else np.zeros((0, 1)), allowed)
    labelled = {}
    for segment_id, guess in zip(ids, guesses, strict=True):
        if guess is None:
            continue
        label = guess.label if guess.confidence >= threshold else default
        labelled[segment_id] = LabelGuess(label, guess.confidence)
    return labelled


def merge_same_label(label_map: np.ndarray, labels: Mapping[int, str]) -> tuple[np.ndarray, dict[int, list[int]]]:
    """Join 4-adjacent segments that carry the same label; the merged map and each survivor's members.

    A merged segment takes the smallest id of its members. Segments missing from ``labels`` stay alone.
    """
    ids = [int(i) for i in np.unique(label_map)]
    parent = {i: i for i in ids}

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    pairs = np.concatenate([
        np.stack([label_map[:, :-1].ravel(), label_map[:, 1:].ravel()], axis=1),
        np.stack([label_map[:-1, :].ravel(), label_map[1:, :].ravel()], axis=1),
    ])
    pairs = np.unique(pairs[pairs[:, 0] != pairs[:, 1]], axis=0)
    for first, second in pairs.tolist():
        if first in labels and labels.get(first) == labels.get(second):
            a, b = root(first), root(second)
            parent[max(a, b)] = min(a, b)
    lookup = np.arange(max(ids) + 1, dtype=np.int32)
    members: dict[int, list[int]] = {}
    for i in ids:
        lookup[i] = root(i)
        members.setdefault(root(i), []).append(i)
    return lookup[label_map], members
