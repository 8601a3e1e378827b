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
``emerdiff-zero-shot``     label segments from the label names with     true when EMERDIFF_CLIP_MODEL
                           CLIP (zero-shot labels)                      is set, else false
``emerdiff-zero-shot-      least zero-shot probability, 0-1; below it   0.5
threshold``                a segment gets the background label, else
                           ``emerdiff-label``
=========================  ==========================================  ==========================

With zero-shot on, each ``<Label>`` says which words CLIP compares segments with
(:func:`label_words`): ``emerdiff-prompt="car, automobile"``, else ``predicted_values`` (the ML-backend
convention), else its value made readable (``TrafficLight`` -> "traffic light"). One label may be the
background: ``emerdiff-background="true"``, or the value ``Background``; its default words are stuff words.

The image is segmented once, at the project's finest K: the largest of EMERDIFF_NUM_SEGMENTS and every
control's ``emerdiff-segments``. Each control's regions are that segmentation merged down to its own
``emerdiff-segments`` along the merge tree (``segmentor.merge_tree``), so a coarser setting needs no new run.
"""

from __future__ import annotations

import dataclasses
import re
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
ZERO_SHOT_ATTRIBUTE = "emerdiff-zero-shot"
ZERO_SHOT_THRESHOLD_ATTRIBUTE = "emerdiff-zero-shot-threshold"
# On <Label>: its words for zero-shot labels, and the background flag.
PROMPT_ATTRIBUTE = "emerdiff-prompt"
BACKGROUND_ATTRIBUTE = "emerdiff-background"
KNOWN_LABEL_ATTRIBUTES = (PROMPT_ATTRIBUTE, BACKGROUND_ATTRIBUTE)
# The ML-backend ecosystem's <Label> attribute naming a model's class names (label-studio-ml build_label_map).
PREDICTED_VALUES_ATTRIBUTE = "predicted_values"
# Label values that are the background without a flag.
BACKGROUND_VALUES = ("background",)
# Default words of the background label: stuff that fills scenes (SCLIP's and MaskCLIP's background lists),
# after the word itself (the bundled CLIP's captions say "background"). Words another label uses are dropped.
BACKGROUND_WORDS = ("background", "sky", "wall", "tree", "grass", "road", "building", "floor", "ground", "ceiling")
# Provisional default: a segment whose best label is less likely than this falls back (measured in QUALITY.md).
DEFAULT_ZERO_SHOT_THRESHOLD = 0.5
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
    ZERO_SHOT_ATTRIBUTE,
    ZERO_SHOT_THRESHOLD_ATTRIBUTE,
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
    # Zero-shot labels (ml_backend.labels.zeroshot): on/off, the threshold, each label's words (config order),
    # and the background label (None: below the threshold a segment gets ``label``).
    zero_shot: bool = False
    zero_shot_threshold: float = DEFAULT_ZERO_SHOT_THRESHOLD
    words: tuple[tuple[str, tuple[str, ...]], ...] = ()
    background: str | None = None

    @property
    def zero_shot_fallback(self) -> str:
        """The label of a segment below the zero-shot threshold."""
        return self.background if self.background is not None else self.label

    def zero_shot_identity(self) -> dict:
        """Every field of this control that changes its zero-shot labels, for the model version."""
        return {"words": [[label, list(words)] for label, words in self.words],
                "threshold": self.zero_shot_threshold, "fallback": self.zero_shot_fallback}

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
    zero_shot = _zero_shot(control, settings, reader, where)
    words, background = label_words(control, where) if zero_shot else ((), None)
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
        zero_shot=zero_shot,
        zero_shot_threshold=reader.bounded_number(
            ZERO_SHOT_THRESHOLD_ATTRIBUTE, DEFAULT_ZERO_SHOT_THRESHOLD, 0.0, 1.0
        ),
        words=words,
        background=background,
    )


def _zero_shot(control: ControlTag, settings: Settings, reader: _AttributeReader, where: str) -> bool:
    """emerdiff-zero-shot, default on when a CLIP model is configured; asking for it without one is refused."""
    for label, attrs in control.label_attrs.items():
        unknown = sorted(k for k in attrs if k.startswith(ATTRIBUTE_PREFIX) and k not in KNOWN_LABEL_ATTRIBUTES)
        if unknown:
            raise ProjectConfigError(f"{where}: <Label value={label!r}>: unknown attribute(s) {', '.join(unknown)}; "
                                     f"known: {', '.join(KNOWN_LABEL_ATTRIBUTES)}")
    available = settings.clip_model is not None
    wanted = reader.boolean(ZERO_SHOT_ATTRIBUTE, available)
    if wanted and not available:
        raise ProjectConfigError(f"{where}: {ZERO_SHOT_ATTRIBUTE}=\"true\" needs a CLIP model: the backend runs "
                                 "without one (set EMERDIFF_CLIP_MODEL, e.g. to `bundled` or a CLIP hub id)")
    return wanted


def label_words(control: ControlTag, where: str) -> tuple[tuple[tuple[str, tuple[str, ...]], ...], str | None]:
    """Each label's words for zero-shot labels, and the background label (None if the control has none).

    Words: ``emerdiff-prompt`` (comma-separated), else ``predicted_values``, else the value made readable.
    No two labels may share a word (:class:`ProjectConfigError` names both); the background's default words
    leave out any word another label uses.
    """
    flagged = []
    for label in control.labels:
        flag = control.label_attrs.get(label, {}).get(BACKGROUND_ATTRIBUTE)
        if flag is not None and flag.strip().lower() not in ("true", "false"):
            raise ProjectConfigError(f"{where}: <Label value={label!r}>: {BACKGROUND_ATTRIBUTE}={flag!r} must be "
                                     "true or false")
        if flag is not None and flag.strip().lower() == "true":
            flagged.append(label)
    if len(flagged) > 1:
        raise ProjectConfigError(f"{where}: {BACKGROUND_ATTRIBUTE}=\"true\" on several labels ({flagged}); "
                                 "one label is the background")
    named = [label for label in control.labels if label.strip().lower() in BACKGROUND_VALUES]
    background = flagged[0] if flagged else (named[0] if named else None)
    given = {label: _given_words(label, control.label_attrs.get(label, {}), where) for label in control.labels}
    owner: dict[str, str] = {}
    for label, words in given.items():
        if label == background and words is None:
            continue
        for word in words or (readable(label),):
            if owner.setdefault(word, label) != label:
                raise ProjectConfigError(
                    f"{where}: labels {owner[word]!r} and {label!r} both use the word {word!r} for zero-shot labels; "
                    f"give them different words ({PROMPT_ATTRIBUTE}=\"...\" on one of them)"
                )
    words = []
    for label, label_words in given.items():
        if label_words is None:
            if label == background:
                label_words = tuple(word for word in BACKGROUND_WORDS if word not in owner) or (readable(label),)
            else:
                label_words = (readable(label),)
        words.append((label, label_words))
    return tuple(words), background


def _given_words(label: str, attrs: dict[str, str], where: str) -> tuple[str, ...] | None:
    """The words a <Label>'s attributes give (emerdiff-prompt, else predicted_values); None: none given."""
    for name in (PROMPT_ATTRIBUTE, PREDICTED_VALUES_ATTRIBUTE):
        text = attrs.get(name)
        if text is None:
            continue
        words = tuple(dict.fromkeys(" ".join(word.split()).lower() for word in text.split(",") if word.strip()))
        if not words:
            raise ProjectConfigError(f"{where}: <Label value={label!r}>: {name}={text!r} holds no words; "
                                     "give comma-separated words, e.g. \"car, automobile\"")
        return words
    return None


def readable(value: str) -> str:
    """A label value as words: ``TrafficLight``, ``traffic_light``, ``traffic-light`` -> ``traffic light``."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", " ", value)
    return " ".join(re.sub(r"[_\-./]+", " ", spaced).split()).lower() or value


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
