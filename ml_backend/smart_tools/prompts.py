"""Smart tools: a keypoint or rectangle prompt answered from the cached segmentation and its merge tree.

With a model's "interactive preannotations" on, Label Studio posts the annotator's smart regions as
``params.context.result``: every smart region of one tool and label drawn so far on the image, in drawing
order (``KeyPointLabels``/``RectangleLabels`` with ``smart="true"``; points and boxes in percent, a point's
``is_positive`` false when drawn with Alt, as upstream's SAM backends read it). We replay them in order:

- a positive point selects the segment under it (at the control's ``emerdiff-segments`` level), a
  further positive point adds the segment under it;
- a positive point on a segment already selected climbs one level of the merge tree: the selection
  grows to the node that segment merges into (part -> object), swallowing what it covers;
- a negative point removes the segment under it (and only it) from the selection;
- a rectangle selects every segment with more than half of its area inside it.

The answer is one region of the selected segments' union, in the project's first ``PolygonLabels`` /
``BrushLabels`` control that has the prompt's label, carrying that label (polygons: one per connected
piece). Points outside the image and points on pixels no segment owns select nothing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from converters.labelstudio import InvalidRegionError, brush_region, polygon_regions, region_to_mask
from converters.polygons import mask_to_polygons
from converters.values import is_finite_number
from ml_backend.core.errors import TaskError
from ml_backend.core.label_config import ProjectConfig, RegionTarget
from ml_backend.segmentation.cache import CachedSegmentation
from ml_backend.segmentation.granularity import merge_tree
from segmentor.merge_tree import MergeTree

KEYPOINT, RECTANGLE = "keypointlabels", "rectanglelabels"
# A rectangle takes a segment when more than this share of the segment's pixels lie inside it.
MOSTLY_INSIDE = 0.5
# Pixels of margin kept around the selection when tracing its polygons on a crop of the image.
_CROP_MARGIN = 2


class ContextError(TaskError):
    """The interactive context is malformed or names a label no region control of the project has."""

    reason = "context"


@dataclass(frozen=True)
class Prompt:
    """One smart region of the context: a point (``width``/``height`` 0) or a rectangle, in percent."""

    kind: str  # KEYPOINT or RECTANGLE
    label: str
    to_name: str | None
    x: float
    y: float
    width: float = 0.0
    height: float = 0.0
    rotation: float = 0.0
    positive: bool = True


def parse_context(context: object, max_prompts: int | None = None) -> list[Prompt] | None:
    """The prompts of ``context``; None when there are none (the automatic, whole-image prediction).

    :class:`ContextError` names the first entry that is not a keypoint or rectangle Label Studio sends, or
    says that there are more than ``max_prompts`` (MAX_SMART_PROMPTS: each prompt costs a pass over the image).
    """
    if context is None:
        return None
    if not isinstance(context, dict):
        raise ContextError(f"context must be a JSON object, got {type(context).__name__}")
    result = context.get("result")
    if result is None or result == []:
        return None
    if not isinstance(result, list):
        raise ContextError(f"context.result must be a list of regions, got {type(result).__name__}")
    if max_prompts is not None and len(result) > max_prompts:
        raise ContextError(f"context.result has {len(result)} smart-tool prompts, more than MAX_SMART_PROMPTS="
                           f"{max_prompts} (remove some, or raise the limit)")
    prompts = [_prompt(index, entry) for index, entry in enumerate(result)]
    labels = {prompt.label for prompt in prompts}
    if len(labels) > 1:
        raise ContextError(f"context.result mixes labels {sorted(labels)}; one smart tool sends one label")
    return prompts


def _prompt(index: int, entry: object) -> Prompt:
    where = f"context.result[{index}]"
    if not isinstance(entry, dict):
        raise ContextError(f"{where} must be a JSON object, got {type(entry).__name__}")
    kind = entry.get("type")
    if kind not in (KEYPOINT, RECTANGLE):
        raise ContextError(f"{where}: type {kind!r} is not a smart prompt ({KEYPOINT!r} or {RECTANGLE!r})")
    value = entry.get("value")
    if not isinstance(value, dict):
        raise ContextError(f"{where}: 'value' must be a JSON object")
    labels = value.get(kind)
    if not isinstance(labels, list) or not labels or not isinstance(labels[0], str):
        raise ContextError(f"{where}: value.{kind} must be a non-empty list of label strings, got {labels!r:.80}")
    numbers_needed = ("x", "y", "width", "height") if kind == RECTANGLE else ("x", "y")
    coordinates = {}
    for key in (*numbers_needed, "rotation"):
        number = value.get(key, 0.0 if key == "rotation" else None)
        if not is_finite_number(number):
            raise ContextError(f"{where}: value.{key} must be a finite number (percent), got {number!r:.40}")
        coordinates[key] = float(number)
    to_name = entry.get("to_name")
    if to_name is not None and not isinstance(to_name, str):
        raise ContextError(f"{where}: to_name must be a string, got {to_name!r:.40}")
    positive = entry.get("is_positive", True)
    if not isinstance(positive, bool | int):
        raise ContextError(f"{where}: is_positive must be true/false or 1/0, got {positive!r:.40}")
    return Prompt(kind=kind, label=labels[0], to_name=to_name, positive=bool(positive), **coordinates)


def target_for(project: ProjectConfig, prompts: list[Prompt]) -> RegionTarget:
    """The first region control on the prompts' image that has their label (as upstream's SAM examples)."""
    label, to_name = prompts[0].label, prompts[0].to_name
    candidates = [target for target in project.targets if to_name in (None, target.to_name)]
    for target in candidates:
        if label in target.labels:
            return target
    known = sorted({known for target in candidates for known in target.labels})
    raise ContextError(
        f"label {label!r} of the smart tool is not a label of any PolygonLabels/BrushLabels control "
        f"on {to_name or 'the image'!r} (labels: {known}); add it there to get regions for it"
    )


def select(prompts: list[Prompt], label_map: np.ndarray, tree: MergeTree | None, level: int | None) -> set[int]:
    """The leaf segments (ids of ``label_map``) the prompts select, replayed in order."""
    num_leaves = int(label_map.max()) + 1 if label_map.size else 0
    selection = _Selection(tree, num_leaves, level)
    height, width = label_map.shape
    for prompt in prompts:
        if prompt.kind == RECTANGLE:
            for leaf in _leaves_mostly_inside(prompt, label_map, selection):
                selection.add(selection.unit(leaf))
            continue
        pixel = _pixel(prompt, width, height)
        if pixel is None:
            continue
        leaf = int(label_map[pixel[1], pixel[0]])
        if leaf < 0:  # a pixel no segment owns
            continue
        covering = selection.covering(leaf)
        if not prompt.positive:
            if covering is not None:
                selection.remove(leaf, covering)
        elif covering is None:
            selection.add(selection.unit(leaf))
        else:
            selection.climb(covering)
    return selection.leaves()


class _Selection:
    """Disjoint nodes of the merge tree (without a tree: leaves only)."""

    def __init__(self, tree: MergeTree | None, num_leaves: int, level: int | None) -> None:
        self.tree = tree
        self.nodes: set[int] = set()
        # Nodes below this id exist at the control's level (n - level merges done).
        self._level_end = num_leaves if level is None else 2 * num_leaves - min(max(level, 1), num_leaves)

    def unit(self, leaf: int) -> int:
        """The segment of the control's level that holds ``leaf``."""
        if self.tree is None or leaf >= self.tree.num_leaves:
            return leaf
        return max(node for node in self.tree.ancestors(leaf) if node < self._level_end)

    def covering(self, leaf: int) -> int | None:
        chain = self.tree.ancestors(leaf) if self.tree is not None and leaf < self.tree.num_leaves else [leaf]
        return next((node for node in chain if node in self.nodes), None)

    def add(self, node: int) -> None:
        if self.tree is None:
            self.nodes.add(node)
            return
        if any(ancestor in self.nodes for ancestor in self.tree.ancestors(node)):
            return  # already inside the selection
        self.nodes = {kept for kept in self.nodes if node not in self.tree.ancestors(kept)}
        self.nodes.add(node)

    def climb(self, node: int) -> None:
        parent = self.tree.parent(node) if self.tree is not None else None
        if parent is not None:
            self.add(parent)

    def remove(self, leaf: int, covering: int) -> None:
        """Drop the level segment holding ``leaf`` from the selected node ``covering``, keep the rest."""
        self.nodes.discard(covering)
        if self.tree is None or covering == leaf:
            return
        target = self.unit(leaf)
        if target >= covering:  # the whole selected node is that segment (or inside it)
            return
        # Walk down from ``covering`` towards ``target``: every sibling passed on the way stays selected.
        path = self.tree.ancestors(target)  # target, its parent, ..., covering, ...
        for step in range(path.index(covering), 0, -1):
            upper, lower = path[step], path[step - 1]
            self.nodes.update(int(child) for child in self.tree.merges[upper - self.tree.num_leaves] if child != lower)

    def leaves(self) -> set[int]:
        if self.tree is None:
            return set(self.nodes)
        return {leaf for node in self.nodes for leaf in self.tree.leaves(node)}


def _pixel(prompt: Prompt, width: int, height: int) -> tuple[int, int] | None:
    """The pixel (column, row) under a point, None outside the image (100 % is the last pixel's edge)."""
    if not (0.0 <= prompt.x <= 100.0 and 0.0 <= prompt.y <= 100.0):
        return None
    column = min(int(prompt.x * width / 100.0), width - 1)
    row = min(int(prompt.y * height / 100.0), height - 1)
    return column, row


def _leaves_mostly_inside(prompt: Prompt, label_map: np.ndarray, selection: _Selection) -> list[int]:
    """Leaves whose level segment has more than MOSTLY_INSIDE of its pixels inside the rectangle."""
    height, width = label_map.shape
    region = {
        "type": RECTANGLE,
        "original_width": width,
        "original_height": height,
        "value": {"x": prompt.x, "y": prompt.y, "width": prompt.width, "height": prompt.height,
                  "rotation": prompt.rotation, RECTANGLE: [prompt.label]},
    }
    try:
        inside = region_to_mask(region)
    except InvalidRegionError as error:
        raise ContextError(f"smart rectangle: {error}") from error
    owned = label_map >= 0
    leaves = np.arange(int(label_map.max()) + 1)
    units = np.array([selection.unit(int(leaf)) for leaf in leaves])
    _, unit_index = np.unique(units, return_inverse=True)
    per_pixel = unit_index[label_map[owned]]
    area = np.bincount(per_pixel, minlength=unit_index.max() + 1)
    area_inside = np.bincount(per_pixel, weights=inside[owned], minlength=len(area))
    taken = np.flatnonzero(area_inside > MOSTLY_INSIDE * np.maximum(area, 1))
    return [int(leaf) for leaf in leaves if unit_index[leaf] in taken]


def smart_regions(
    prompts: list[Prompt], target: RegionTarget, segmentation: CachedSegmentation
) -> tuple[list[dict], float]:
    """The region(s) of what ``prompts`` select, in ``target``'s kind and with their label; and the score."""
    label_map = segmentation.label_map
    chosen = select(prompts, label_map, merge_tree(segmentation), target.segments)
    if not chosen:
        return [], 0.0
    mask = np.isin(label_map, sorted(chosen))
    areas = np.bincount(label_map[mask].ravel())
    scores = [segmentation.scores.get(leaf, 0.0) for leaf in range(len(areas))]
    score = float(np.average(scores, weights=areas)) if areas.sum() else 0.0
    region_id = f"{target.from_name}-smart-{_digest(prompts[0].label, chosen)}"
    label = prompts[0].label
    if target.kind == "brush":
        region = brush_region(
            mask, label=label, from_name=target.from_name, to_name=target.to_name, score=score,
            region_id=region_id,
        )
        return [region], score
    height, width = label_map.shape
    return polygon_regions(
        _polygons(mask, target), width=width, height=height, label=label, from_name=target.from_name,
        to_name=target.to_name, score=score, id_prefix=f"{region_id}-",
    ), score


def _polygons(mask: np.ndarray, target: RegionTarget) -> list[np.ndarray]:
    """The mask's polygons, traced on its bounding box only (a small object costs a small trace)."""
    rows, columns = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    top, left = max(rows[0] - _CROP_MARGIN, 0), max(columns[0] - _CROP_MARGIN, 0)
    bottom, right = rows[-1] + 1 + _CROP_MARGIN, columns[-1] + 1 + _CROP_MARGIN
    polygons = mask_to_polygons(
        mask[top:bottom, left:right], tolerance=target.tolerance, min_area=target.segmentation.min_area,
        max_vertices=target.max_vertices,
    )
    return [polygon + np.array([left, top]) for polygon in polygons]


def _digest(label: str, leaves: set[int]) -> str:
    """Same selection, same id: Label Studio replaces a suggestion by its id."""
    return hashlib.sha256(f"{label}:{sorted(leaves)}".encode()).hexdigest()[:10]
