from __future__ import annotations

import pytest

from ml_backend.core.errors import ProjectConfigError
from ml_backend.core.label_config import ProjectConfig, SegmentationParams
from ml_backend.core.settings import Settings
from tests.backend.support import BOTH_CONFIG, BRUSH_CONFIG, POLYGON_CONFIG

SETTINGS = Settings(num_segments=6, min_area=5, polygon_tolerance=1.5, max_vertices=80)


def config_with(attributes: str, labels: tuple[str, ...] = ("Cat", "Dog")) -> str:
    children = "".join(f'<Label value="{label}"/>' for label in labels)
    return (
        f'<View><Image name="img" value="$photo"/>'
        f'<PolygonLabels name="outline" toName="img" {attributes}>{children}</PolygonLabels></View>'
    )


def test_polygon_config_takes_environment_defaults() -> None:
    [target] = ProjectConfig.parse(POLYGON_CONFIG, SETTINGS).targets
    assert (target.from_name, target.to_name, target.data_key, target.kind) == (
        "poly",
        "image",
        "image",
        "polygon",
    )
    assert target.segmentation == SegmentationParams(num_segments=6, min_area=5)
    assert (target.tolerance, target.max_vertices) == (1.5, 80)


def test_each_control_of_both_kinds_is_a_target() -> None:
    targets = ProjectConfig.parse(BOTH_CONFIG, SETTINGS).targets
    assert [(t.from_name, t.kind, t.label) for t in targets] == [
        ("poly", "polygon", "Background"),
        ("brush", "brush", "Thing"),
    ]
    assert [t.kind for t in ProjectConfig.parse(BRUSH_CONFIG, SETTINGS).targets] == ["brush"]


def test_label_attribute_wins_over_default_label() -> None:
    settings = Settings(default_label="Cat")
    [target] = ProjectConfig.parse(config_with('emerdiff-label="Dog"'), settings).targets
    assert target.label == "Dog"


def test_default_label_used_when_the_control_has_it() -> None:
    [target] = ProjectConfig.parse(config_with(""), Settings(default_label="Dog")).targets
    assert target.label == "Dog"


def test_first_label_when_default_label_is_not_in_the_control() -> None:
    [target] = ProjectConfig.parse(config_with(""), Settings(default_label="Zebra")).targets
    assert target.label == "Cat"


def test_label_attribute_outside_the_config_is_refused() -> None:
    with pytest.raises(ProjectConfigError, match=r"emerdiff-label='Zebra' is not one of its labels"):
        ProjectConfig.parse(config_with('emerdiff-label="Zebra"'), SETTINGS)


def test_knob_attributes_override_environment() -> None:
    config = config_with(
        'emerdiff-segments="9" emerdiff-min-area="40" emerdiff-tolerance="0" emerdiff-max-vertices="12"'
    )
    [target] = ProjectConfig.parse(config, SETTINGS).targets
    assert target.segmentation == SegmentationParams(num_segments=9, min_area=40)
    assert (target.tolerance, target.max_vertices) == (0.0, 12)


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        ('emerdiff-segments="lots"', r"emerdiff-segments='lots' must be an integer between 1 and 100"),
        ('emerdiff-segments="0"', "must be an integer between 1 and 100"),
        ('emerdiff-min-area="-3"', "emerdiff-min-area='-3' must be an integer between 0 and 100000000"),
        ('emerdiff-tolerance="1e308"', "must be a finite number between 0.0 and 1000.0"),
        ('emerdiff-tolerance="fine"', "emerdiff-tolerance='fine' must be a finite number"),
        ('emerdiff-max-vertices="2"', "must be an integer between 3 and 100000"),
        ('emerdiff-segmnts="5"', "unknown attribute.*emerdiff-segmnts"),
    ],
)
def test_bad_attribute_is_named_with_its_control(attributes: str, expected: str) -> None:
    with pytest.raises(ProjectConfigError, match=expected) as caught:
        ProjectConfig.parse(config_with(attributes), SETTINGS)
    assert "<PolygonLabels name='outline'>" in str(caught.value)


def test_config_without_mask_controls_is_refused() -> None:
    config = (
        '<View><Image name="img" value="$photo"/>'
        '<RectangleLabels name="box" toName="img"><Label value="Cat"/></RectangleLabels></View>'
    )
    with pytest.raises(ProjectConfigError, match=r"no <PolygonLabels> or <BrushLabels>.*RectangleLabels"):
        ProjectConfig.parse(config, SETTINGS)


@pytest.mark.parametrize("config", ["", "<View><Image", 42])
def test_malformed_config_is_refused(config: object) -> None:
    with pytest.raises(ProjectConfigError):
        ProjectConfig.parse(config, SETTINGS)


def test_control_without_labels_is_refused() -> None:
    with pytest.raises(ProjectConfigError, match="no <Label> children"):
        ProjectConfig.parse(config_with("", labels=()), SETTINGS)
