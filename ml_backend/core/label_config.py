"""What a project's label config asks of the backend: which controls get regions, labelled how.

Every ``<PolygonLabels>`` and ``<BrushLabels>`` control of the config gets its own regions, cut from
the same segmentation when their knobs agree. Optional attributes on such a control (all prefixed
``emerdiff-``) tune the project; absent ones take the environment's defaults:

=========================  ==========================================  ==========================
attribute                  meaning                                     default
=========================  ==========================================  ==========================
``emerdiff-label``         label every new segment receives            EMERDIFF_DEFAULT_LABEL if
                           (must be one of the control's labels)       the control has it, else
                                                                       the control's first label
``emerdiff-segments``      number of segments: the level of the        EMERDIFF_NUM_SEGMENTS
                           merge tree over one segmentation at the
                           project's finest K (below)
``emerdiff-min-area``      smallest segment / polygon piece, pixels    EMERDIFF_MIN_AREA
``emerdiff-tolerance``     polygon simplification, pixels              EMERDIFF_POLYGON_TOLERANCE
``emerdiff-max-vertices``  most vertices per polygon                   EMERDIFF_MAX_VERTICES
``emerdiff-preset``        ``paper`` (full method) or ``fast`` (under   EMERDIFF_PRESET
                           a quarter of its FLOPs)
``emerdiff-learn``         label segments from the project's           true
                           annotations (label learning)
``emerdiff-threshold``     least label confidence, 0-1; below it a      0.5
                           segment keeps ``emerdiff-label``
``emerdiff-merge``         merge adjacent segments given the same       false
                           learnt label into one region
=========================  ==========================================  ==========================

The image is segmented once, at the project's finest K: the largest of EMERDIFF_NUM_SEGMENTS and every
control's ``emerdiff-segments``. Each control's regions are that segmentation merged down to its own
``emerdiff-segments`` along the merge tree (``segmentor.merge_tree``), so a coarser setting needs no new run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from converters.label_config import ControlTag, LabelConfigError, parse_label_config
from converters.model_version import region_identity
from ml_backend.core.errors import ProjectConfigError
from ml_backend.core.settings import (
    MAX_MIN_AREA,
    MAX_NUM_SEGMENTS,
    MAX_TOLERANCE,
    MAX_VERTICES,
    Settings,
    parse_integer,
    parse_number,
)
from segmentor.config import DEFAULT_PRESET, PRESETS
from segmentor.labelling import DEFAULT_THRESHOLD

T = TypeVar("T")

ATTRIBUTE_PREFIX = "emerdiff-"
LABEL_ATTRIBUTE = "emerdiff-label"
SEGMENTS_ATTRIBUTE = "emerdiff-segments"
MIN_AREA_ATTRIBUTE = "emerdiff-min-area"
TOLERANCE_ATTRIBUTE = "emerdiff-tolerance"
MAX_VERTICES_ATTRIBUTE = "emerdiff-max-vertices"
PRESET_ATTRIBUTE = "emerdiff-preset"
LEARN_ATTRIBUTE = "emerdiff-learn"
THRESHOLD_ATTRIBUTE = "emerdiff-threshold"
MERGE_ATTRIBUTE = "emerdiff-merge"
KNOWN_ATTRIBUTES = (
    LABEL_ATTRIBUTE,
    SEGMENTS_ATTRIBUTE,
    MIN_AREA_ATTRIBUTE,
    TOLERANCE_ATTRIBUTE,
    MAX_VERTICES_ATTRIBUTE,
    PRESET_ATTRIBUTE,
    LEARN_ATTRIBUTE,
    THRESHOLD_ATTRIBUTE,
    MERGE_ATTRIBUTE,
)
# Control tag -> the ``kind`` of converters.labelstudio.regions_from_label_map.
REGION_KINDS = {"PolygonLabels": "polygon", "BrushLabels": "brush"}


@dataclass(frozen=True)
class SegmentationParams:
    """The per-project knobs that change the segmentation itself (the rest only change the regions)."""

    num_segments: int
    min_area: int
    preset: str = DEFAULT_PRESET  # segmentor.config.PRESETS


@dataclass(frozen=True)
class RegionTarget:
    """One control that receives regions, with everything needed to make them."""

    from_name: str
    to_name: str
    data_key: str  # the task data field holding the image URL
    kind: str  # "polygon" or "brush"
    label: str
    segmentation: SegmentationParams
    tolerance: float
    max_vertices: int
    # Label learning (ml_backend.labels.learning): the control's labels, and its emerdiff-learn/-threshold/-merge.
    labels: tuple[str, ...] = ()
    learn: bool = True
    threshold: float = DEFAULT_THRESHOLD
    merge: bool = False
    # emerdiff-segments: the merge-tree level its regions come from (segmentor.merge_tree); the
    # segmentation itself runs at the project's finest K (``segmentation.num_segments``). None: that K.
    segments: int | None = None

    def identity(self) -> dict:
        """Every field that changes this control's output, for the model version."""
        return region_identity(
            from_name=self.from_name, to_name=self.to_name, kind=self.kind, label=self.label,
            min_area=self.segmentation.min_area, segments=self.segments, tolerance=self.tolerance,
            max_vertices=self.max_vertices,
        )


@dataclass(frozen=True)
class ProjectConfig:
    label_config: str
    targets: tuple[RegionTarget, ...]

    @classmethod
    def parse(cls, label_config: object, settings: Settings) -> ProjectConfig:
        """The targets of ``label_config``; :class:`ProjectConfigError` says what is wrong and where."""
        if not isinstance(label_config, str):
            raise ProjectConfigError(f"label config must be an XML string, got {type(label_config).__name__}")
        try:
            controls = parse_label_config(label_config)
        except LabelConfigError as error:
            raise ProjectConfigError(str(error)) from error
        targets = tuple(_target(control, settings) for control in controls if control.tag in REGION_KINDS)
        if not targets:
            found = ", ".join(f"<{control.tag} name={control.name!r}>" for control in controls) or "none"
            raise ProjectConfigError(
                f"the label config has no <PolygonLabels> or <BrushLabels> control on an image "
                f"(controls found: {found}); EmerDiff can only pre-annotate those"
            )
        # One segmentation at the finest K any control (or EMERDIFF_NUM_SEGMENTS) asks for; each control
        # cuts the merge tree at its own K, so changing emerdiff-segments below that costs no new run.
        finest = max(settings.num_segments, *(target.segments for target in targets))
        targets = tuple(
            dataclasses.replace(
                target, segmentation=dataclasses.replace(target.segmentation, num_segments=finest)
            )
            for target in targets
        )
        distinct = {target.segmentation for target in targets}
        if len(distinct) > settings.max_segmentations_per_task:
            raise ProjectConfigError(
                f"the controls ask for {len(distinct)} different segmentations of every image (different "
                f"emerdiff-min-area or emerdiff-preset); MAX_SEGMENTATIONS_PER_TASK="
                f"{settings.max_segmentations_per_task}: give the controls the same values, or raise the limit"
            )
        return cls(label_config=label_config, targets=targets)


def _target(control: ControlTag, settings: Settings) -> RegionTarget:
    where = f"<{control.tag} name={control.name!r}>"
    unknown = sorted(
        key for key in control.attrs if key.startswith(ATTRIBUTE_PREFIX) and key not in KNOWN_ATTRIBUTES
    )
    if unknown:
        raise ProjectConfigError(
            f"{where}: unknown attribute(s) {', '.join(unknown)}; known: {', '.join(KNOWN_ATTRIBUTES)}"
        )
    if control.object_tag != "Image":
        raise ProjectConfigError(
            f"{where}: toName={control.to_name!r} is a <{control.object_tag}>, "
            "but EmerDiff pre-annotates <Image> objects only"
        )
    if control.data_key is None:
        raise ProjectConfigError(
            f"{where}: its object {control.to_name!r} takes no $field from the task data"
        )
    reader = _AttributeReader(control, where)
    segments = reader.integer(SEGMENTS_ATTRIBUTE, settings.num_segments, 1, MAX_NUM_SEGMENTS)
    return RegionTarget(
        from_name=control.name,
        to_name=control.to_names[0],
        data_key=control.data_key,
        kind=REGION_KINDS[control.tag],
        label=_label(control, settings, where),
        segmentation=SegmentationParams(
            num_segments=segments,
            min_area=reader.integer(MIN_AREA_ATTRIBUTE, settings.min_area, 0, MAX_MIN_AREA),
            preset=reader.choice(PRESET_ATTRIBUTE, settings.preset, tuple(PRESETS)),
        ),
        tolerance=reader.number(TOLERANCE_ATTRIBUTE, settings.polygon_tolerance, 0.0, MAX_TOLERANCE),
        max_vertices=reader.integer(MAX_VERTICES_ATTRIBUTE, settings.max_vertices, 3, MAX_VERTICES),
        labels=tuple(control.labels),
        learn=reader.boolean(LEARN_ATTRIBUTE, True),
        threshold=reader.bounded_number(THRESHOLD_ATTRIBUTE, DEFAULT_THRESHOLD, 0.0, 1.0),
        merge=reader.boolean(MERGE_ATTRIBUTE, False),
        segments=segments,
    )


def _label(control: ControlTag, settings: Settings, where: str) -> str:
    """The attribute's label, else EMERDIFF_DEFAULT_LABEL when the control has it, else the first label."""
    if not control.labels:
        raise ProjectConfigError(f"{where} has no <Label> children to label segments with")
    chosen = control.attrs.get(LABEL_ATTRIBUTE)
    if chosen is not None:
        if chosen not in control.labels:
            raise ProjectConfigError(
                f"{where}: {LABEL_ATTRIBUTE}={chosen!r} is not one of its labels {control.labels}"
            )
        return chosen
    if settings.default_label in control.labels:
        return settings.default_label
    return control.labels[0]


class _AttributeReader:
    def __init__(self, control: ControlTag, where: str) -> None:
        self._attrs = control.attrs
        self._where = where

    def integer(self, name: str, default: int, low: int, high: int | None) -> int:
        return self._parsed(name, default, lambda text: parse_integer(text, low, high))

    def number(self, name: str, default: float, low: float, high: float | None = None) -> float:
        return self._parsed(name, default, lambda text: parse_number(text, low, high))

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        def parse(text: str) -> str:
            if text not in choices:
                raise ValueError(f"must be one of {', '.join(choices)}")
            return text

        return self._parsed(name, default, parse)

    def bounded_number(self, name: str, default: float, low: float, high: float) -> float:
        def parse(text: str) -> float:
            value = parse_number(text, low)
            if value > high:
                raise ValueError(f"must be a number between {low} and {high}")
            return value

        return self._parsed(name, default, parse)

    def boolean(self, name: str, default: bool) -> bool:
        def parse(text: str) -> bool:
            if text.strip().lower() not in ("true", "false"):
                raise ValueError("must be true or false")
            return text.strip().lower() == "true"

        return self._parsed(name, default, parse)

    def _parsed(self, name: str, default: T, parse: Callable[[str], T]) -> T:
        text = self._attrs.get(name)
        if text is None:
            return default
        try:
            return parse(text)
        except ValueError as error:
            raise ProjectConfigError(f"{self._where}: {name}={text!r} {error}") from None
