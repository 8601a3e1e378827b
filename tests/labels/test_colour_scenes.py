"""The colour variant of the synthetic scenes: an object's class is its colour family."""

from __future__ import annotations

import numpy as np
import pytest

from segmentor.toy.scenes import COLOUR_CLASS_NAMES, SceneError, generate_scene

CENTRES = np.array([[210, 50, 50], [50, 190, 60], [50, 70, 210]], float)


def test_objects_are_coloured_by_their_class() -> None:
    checked = 0
    for seed in range(20):
        scene = generate_scene(seed, 64, classes="colour")
        assert scene.class_names == COLOUR_CLASS_NAMES
        for instance, class_id in scene.instance_classes.items():
            pixels = scene.image[scene.instance_map == instance].astype(float)
            if len(pixels) < 30:
                continue
            nearest = np.linalg.norm(CENTRES - pixels.mean(axis=0), axis=1).argmin() + 1
            assert nearest == class_id, (seed, instance)
            checked += 1
    assert checked > 40


def test_shape_scenes_are_unchanged_and_classes_checked() -> None:
    default, explicit = generate_scene(7, 64), generate_scene(7, 64, classes="shape")
    np.testing.assert_array_equal(default.image, explicit.image)
    assert not np.array_equal(default.image, generate_scene(7, 64, classes="colour").image)
    with pytest.raises(SceneError, match="'shape' or 'colour'"):
        generate_scene(7, 64, classes="size")
