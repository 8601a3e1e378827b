"""The control tags of a Label Studio label config, parsed once with the SDK's ``LabelInterface``."""

from __future__ import annotations

from dataclasses import dataclass, field

from label_studio_sdk.label_interface import LabelInterface


class LabelConfigError(ValueError):
    """The label config is not XML Label Studio can use."""


@dataclass(frozen=True)
class ControlTag:
    """One control tag (``<PolygonLabels>``, ``<BrushLabels>``, ``<Choices>``...) of a label config.

    ``to_name`` is the ``toName`` attribute as written (comma-separated when the control labels several
    objects); ``attrs`` holds every XML attribute of the tag, so per-project knobs written as custom
    attributes (``<BrushLabels name="b" toName="image" emerdiff_k="20">``) can be read from it.
    ``data_key`` is the task data field the labelled object shows (``image`` for ``value="$image"``).
    ``label_attrs`` holds each label's XML attributes (``<Label value="car" category="3"/>``).
    """

    name: str
    tag: str
    to_name: str
    labels: list[str]
    attrs: dict[str, str]
    data_key: str | None = field(default=None)
    label_attrs: dict[str, dict[str, str]] = field(default_factory=dict)
    object_tag: str | None = field(default=None)  # tag of the object it labels: "Image", "Text"...

    @property
    def to_names(self) -> tuple[str, ...]:
        return tuple(name.strip() for name in self.to_name.split(","))

    @property
    def result_type(self) -> str:
        """The ``type`` of this control's results (``PolygonLabels`` → ``polygonlabels``)."""
        return self.tag.lower()


def parse_label_config(label_config: str) -> list[ControlTag]:
    """Control tags of ``label_config`` in document order; :class:`LabelConfigError` when it is malformed."""
    if not isinstance(label_config, str) or not label_config.strip():
        raise LabelConfigError(f"label config must be a non-empty XML string, got {label_config!r:.80}")
    try:
        interface = LabelInterface(label_config)
    except Exception as error:  # the SDK raises its own (non-ValueError) classes for malformed XML
        raise LabelConfigError(f"label config is not valid Label Studio XML: {error}") from error
    controls = []
    for control in interface.controls:
        attrs = {key: str(value) for key, value in control.attr.items()}
        first_object = control.objects[0] if control.objects else None
        value = getattr(first_object, "value", None) or ""
        controls.append(
            ControlTag(
                name=control.name,
                tag=control.tag,
                to_name=attrs.get("toName", ",".join(control.to_name)),
                labels=list(control.labels or []),
                attrs=attrs,
                data_key=value[1:] if value.startswith("$") else None,
                object_tag=getattr(first_object, "tag", None),
                label_attrs={
                    label: {key: str(v) for key, v in tag.attr.items()}
                    for label, tag in (getattr(control, "labels_attrs", None) or {}).items()
                },
            )
        )
    return controls
