"""Which words each label gets, the background label, and the attributes' checks (400s)."""

from __future__ import annotations

import pytest

from ml_backend.core.errors import ProjectConfigError
from ml_backend.core.label_config import BACKGROUND_WORDS, ProjectConfig, readable
from ml_backend.core.settings import Settings

CLIP = Settings(clip_model="bundled")


def _config(labels: str, **attributes: str) -> str:
    extra = "".join(f' {key.replace("_", "-")}="{value}"' for key, value in attributes.items())
    return (f'<View><Image name="image" value="$image"/><PolygonLabels name="poly" toName="image"{extra}>'
            f"{labels}</PolygonLabels></View>")


def _target(labels: str, settings: Settings = CLIP, **attributes: str):
    [target] = ProjectConfig.parse(_config(labels, **attributes), settings).targets
    return target


def test_words_come_from_the_prompt_then_predicted_values_then_the_readable_value():
    target = _target('<Label value="Car" emerdiff-prompt="car, Automobile ,car" predicted_values="vehicle"/>'
                     '<Label value="Person" predicted_values="person,pedestrian"/>'
                     '<Label value="TrafficLight"/><Label value="road_sign"/>')
    assert dict(target.words) == {"Car": ("car", "automobile"), "Person": ("person", "pedestrian"),
                                  "TrafficLight": ("traffic light",), "road_sign": ("road sign",)}
    assert target.zero_shot and target.background is None and target.zero_shot_fallback == "Car"


@pytest.mark.parametrize(("value", "words"), [("TrafficLight", "traffic light"), ("traffic_light", "traffic light"),
                                              ("traffic-light", "traffic light"), ("HTTPServer", "http server"),
                                              ("car", "car"), ("Car2Go", "car2 go")])
def test_readable(value, words):
    assert readable(value) == words


def test_the_background_label_gets_stuff_words_that_no_other_label_uses():
    target = _target('<Label value="Sky"/><Label value="Car"/><Label value="Background"/>')
    words = dict(target.words)
    assert target.background == "Background" and target.zero_shot_fallback == "Background"
    assert words["Background"] == tuple(word for word in BACKGROUND_WORDS if word != "sky")
    flagged = _target('<Label value="Other" emerdiff-background="true"/><Label value="Tree" predicted_values="tree"/>')
    assert flagged.background == "Other" and "tree" not in dict(flagged.words)["Other"]
    given = _target('<Label value="Background" emerdiff-prompt="table, wall"/><Label value="Cup"/>')
    assert dict(given.words)["Background"] == ("table", "wall")


def test_two_labels_sharing_a_word_are_refused_naming_both():
    with pytest.raises(ProjectConfigError, match="'Car' and 'Auto' both use the word 'car'"):
        _target('<Label value="Car"/><Label value="Auto" predicted_values="car, auto"/>')
    with pytest.raises(ProjectConfigError, match="'Background' and 'Sky'"):
        _target('<Label value="Background" emerdiff-prompt="sky"/><Label value="Sky"/>')


def test_misspelt_attributes_are_refused():
    with pytest.raises(ProjectConfigError, match="emerdiff-promt"):
        _target('<Label value="Car" emerdiff-promt="car"/>')
    with pytest.raises(ProjectConfigError, match="emerdiff-promt"):  # also with zero-shot off
        _target('<Label value="Car" emerdiff-promt="car"/>', Settings())
    with pytest.raises(ProjectConfigError, match="emerdiff-zero-shot-treshold"):
        _target('<Label value="Car"/>', emerdiff_zero_shot_treshold="0.3")
    with pytest.raises(ProjectConfigError, match="emerdiff-zero-shot-threshold='2'"):
        _target('<Label value="Car"/>', emerdiff_zero_shot_threshold="2")
    with pytest.raises(ProjectConfigError, match="emerdiff-background='yes'"):
        _target('<Label value="Car" emerdiff-background="yes"/>')
    with pytest.raises(ProjectConfigError, match="holds no words"):
        _target('<Label value="Car" emerdiff-prompt=" , "/>')
    with pytest.raises(ProjectConfigError, match="one label is the background"):
        _target('<Label value="A" emerdiff-background="true"/><Label value="B" emerdiff-background="true"/>')


def test_zero_shot_follows_the_clip_setting_and_the_control():
    assert not _target('<Label value="Car"/>', Settings()).zero_shot
    assert _target('<Label value="Car"/>', Settings()).words == ()
    assert not _target('<Label value="Car"/>', emerdiff_zero_shot="false").zero_shot
    with pytest.raises(ProjectConfigError, match="needs a CLIP model"):
        _target('<Label value="Car"/>', Settings(), emerdiff_zero_shot="true")
    target = _target('<Label value="Car"/>', emerdiff_zero_shot_threshold="0.25", emerdiff_label="Car")
    assert target.zero_shot_threshold == 0.25
    assert target.zero_shot_identity() == {"words": [["Car", ["car"]]], "threshold": 0.25, "fallback": "Car"}


def test_word_overlaps_are_not_checked_with_zero_shot_off():
    """A config that served before zero-shot keeps serving while zero-shot is off."""
    assert _target('<Label value="Car"/><Label value="car"/>', Settings()).labels == ("Car", "car")
