"""The preset through the backend: EMERDIFF_PRESET, the per-project ``emerdiff-preset``, model versions."""

from __future__ import annotations

import pytest

from ml_backend.core.errors import ProjectConfigError
from ml_backend.core.label_config import ProjectConfig
from ml_backend.core.settings import Settings, SettingsError
from ml_backend.model import EmerDiffModel, Runtime


def _label_config(attributes: str = "") -> str:
    return ('<View><Image name="image" value="$image"/>'
            f'<PolygonLabels name="poly" toName="image" {attributes}><Label value="Object"/></PolygonLabels></View>')


def test_environment_picks_the_default_preset_and_rejects_unknown_ones():
    assert Settings.from_env({}).preset == "paper"
    assert Settings.from_env({"EMERDIFF_PRESET": "fast"}).preset == "fast"
    with pytest.raises(SettingsError, match=r"EMERDIFF_PRESET='turbo'.*paper, fast"):
        Settings.from_env({"EMERDIFF_PRESET": "turbo"})


def test_project_attribute_overrides_the_environment():
    [target] = ProjectConfig.parse(_label_config('emerdiff-preset="fast"'), Settings()).targets
    assert target.segmentation.preset == "fast"
    [target] = ProjectConfig.parse(_label_config(), Settings(preset="fast")).targets
    assert target.segmentation.preset == "fast"
    with pytest.raises(ProjectConfigError, match="emerdiff-preset='turbo' must be one of paper, fast"):
        ProjectConfig.parse(_label_config('emerdiff-preset="turbo"'), Settings())


def test_presets_get_their_own_segmentor_and_model_version(tiny_model_dir, tmp_path):
    from segmentor import load_model

    runtime = Runtime.create(Settings(model=str(tiny_model_dir), num_segments=3, cache_dir=tmp_path),
                             load_model(str(tiny_model_dir)))
    paper = EmerDiffModel(runtime, label_config=_label_config(), project_id=1)
    fast = EmerDiffModel(runtime, label_config=_label_config('emerdiff-preset="fast"'), project_id=2)
    assert paper.model_version != fast.model_version
    configs = {model.project.targets[0].segmentation.preset:
               runtime.segmentation.segmentor(model.project.targets[0].segmentation).config
               for model in (paper, fast)}
    assert (configs["paper"].step_stride, configs["paper"].difference) == (1, "symmetric")
    assert configs["fast"].step_stride == 15
    assert configs["fast"].num_segments == configs["paper"].num_segments == 3
