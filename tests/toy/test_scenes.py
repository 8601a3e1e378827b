"""The synthetic scene generator: determinism, map/image consistency, sub-cell boundaries, folder layout."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segmentor.toy.__main__ import main
from segmentor.toy.scenes import CLASS_NAMES, Scene, SceneError, generate_scene, write_scenes

GRID = 8  # feature-grid cell of the bundled model at 64 px (up_blocks.1 is 8×8)


def _edges(instance_map: np.ndarray) -> np.ndarray:
    """Pixels on either side of an instance boundary (background counts as an instance)."""
    return cv2.morphologyEx(instance_map.astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0


def test_same_seed_gives_identical_scene() -> None:
    first, second = generate_scene(11), generate_scene(11)
    assert np.array_equal(first.image, second.image)
    assert np.array_equal(first.instance_map, second.instance_map)
    assert np.array_equal(first.class_map, second.class_map)


def test_different_seeds_give_different_scenes() -> None:
    scenes = [generate_scene(seed) for seed in range(5)]
    for index, scene in enumerate(scenes):
        for other in scenes[index + 1:]:
            assert not np.array_equal(scene.image, other.image)
            assert not np.array_equal(scene.instance_map, other.instance_map)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), size=st.sampled_from([32, 64, 96]))
def test_maps_are_well_formed(seed: int, size: int) -> None:
    scene = generate_scene(seed, size)
    assert scene.image.shape == (size, size, 3) and scene.image.dtype == np.uint8
    assert scene.instance_map.shape == scene.class_map.shape == (size, size)
    assert scene.instance_map.dtype == scene.class_map.dtype == np.int32
    assert scene.class_names == CLASS_NAMES
    # background in one map is background in the other
    assert np.array_equal(scene.instance_map == 0, scene.class_map == 0)
    assert scene.class_map.min() >= 0 and scene.class_map.max() < len(CLASS_NAMES)
    instances = np.unique(scene.instance_map[scene.instance_map > 0])
    assert 2 <= len(instances) <= 5
    assert np.array_equal(instances, np.arange(1, len(instances) + 1))  # numbered 1..n, none missing
    for instance in instances:  # one class per instance
        assert len(np.unique(scene.class_map[scene.instance_map == instance])) == 1
    assert set(scene.instance_classes) == set(instances.tolist())


@pytest.mark.parametrize("seed", range(30))
def test_maps_follow_the_image(seed: int) -> None:
    scene = generate_scene(seed)
    gray = cv2.cvtColor(scene.image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    gradient = np.hypot(cv2.Sobel(gray, cv2.CV_32F, 1, 0), cv2.Sobel(gray, cv2.CV_32F, 0, 1))
    edges = _edges(scene.instance_map)
    # the image changes where the maps say an object ends, much more than elsewhere
    assert gradient[edges].mean() > 1.5 * gradient[~edges].mean()
    pixels = scene.image.astype(np.float64)
    for instance in np.unique(scene.instance_map[scene.instance_map > 0]):
        mask = (scene.instance_map == instance).astype(np.uint8)
        inside = cv2.erode(mask, np.ones((3, 3), np.uint8)) > 0
        around = (cv2.dilate(mask, np.ones((5, 5), np.uint8)) > 0) & (mask == 0)
        if inside.any() and around.any():  # a thin sliver left by occlusion has no interior to compare
            contrast = np.linalg.norm(np.median(pixels[inside], axis=0) - np.median(pixels[around], axis=0))
            assert contrast > 20, f"instance {instance} looks like its surroundings"


def test_later_objects_occlude_earlier_ones() -> None:
    convex = [CLASS_NAMES.index(name) for name in ("disc", "box", "triangle", "ellipse")]
    occluded = 0
    for seed in range(40):
        scene = generate_scene(seed)
        for instance, class_id in scene.instance_classes.items():
            mask = (scene.instance_map == instance).astype(np.uint8)
            if class_id not in convex:
                continue
            hull = np.zeros_like(mask)
            cv2.fillPoly(hull, [cv2.convexHull(cv2.findNonZero(mask))], 1)
            hull = cv2.erode(hull, np.ones((3, 3), np.uint8))  # the hull's own rasterisation spills a pixel
            bitten = scene.instance_map[(hull > 0) & (mask == 0)]
            intruders = bitten[bitten > 0]
            if len(intruders) > 10:  # a convex shape with a bite taken out: what bit it was drawn later
                occluded += 1
                assert np.mean(intruders > instance) > 0.9
    assert occluded >= 5


@pytest.mark.parametrize("seed", range(10))
def test_boundaries_are_not_aligned_to_the_feature_grid(seed: int) -> None:
    instance_map = generate_scene(seed).instance_map
    columns = np.nonzero((instance_map[:, 1:] != instance_map[:, :-1]).any(axis=0))[0] + 1
    rows = np.nonzero((instance_map[1:] != instance_map[:-1]).any(axis=1))[0] + 1
    positions = np.concatenate([columns, rows])
    # random sub-pixel placement: most boundary positions fall inside grid cells, not on their borders
    assert np.mean(positions % GRID != 0) > 0.6


def test_scene_is_a_plain_record() -> None:
    scene = generate_scene(0)
    assert isinstance(scene, Scene)
    assert scene.instance_classes == {
        int(i): int(scene.class_map[scene.instance_map == i][0]) for i in range(1, scene.instance_map.max() + 1)
    }


def test_write_scenes_layout(tmp_path) -> None:
    paths = write_scenes(tmp_path / "scenes", count=3, seed=5, size=64)
    folder = tmp_path / "scenes"
    assert paths == sorted(folder.glob("*.png"))  # the image glob matches images only
    assert [p.name for p in paths] == ["scene_0000005.png", "scene_0000006.png", "scene_0000007.png"]
    assert sorted(p.name for p in (folder / "gt").glob("*.png")) == [p.name for p in paths]
    assert sorted(p.name for p in (folder / "gt_instances").glob("*.png")) == [p.name for p in paths]
    assert json.loads((folder / "classes.json").read_text()) == {str(i): n for i, n in enumerate(CLASS_NAMES)}
    for seed, path in zip(range(5, 8), paths, strict=True):
        scene = generate_scene(seed)
        image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        class_map = cv2.imread(str(folder / "gt" / path.name), cv2.IMREAD_UNCHANGED)
        instance_map = cv2.imread(str(folder / "gt_instances" / path.name), cv2.IMREAD_UNCHANGED)
        assert class_map.dtype == instance_map.dtype == np.uint8
        assert np.array_equal(image, scene.image)
        assert np.array_equal(class_map, scene.class_map)
        assert np.array_equal(instance_map, scene.instance_map)


def test_bad_requests_raise_scene_error(tmp_path) -> None:
    with pytest.raises(SceneError, match="at least 16"):
        generate_scene(0, size=8)
    with pytest.raises(SceneError, match="count"):
        write_scenes(tmp_path, count=0, seed=0)
    blocker = tmp_path / "file.png"
    blocker.write_bytes(b"")
    with pytest.raises(SceneError, match="not a folder"):
        write_scenes(blocker, count=1, seed=0)


def test_scenes_command_writes_the_demo_layout(tmp_path, capsys) -> None:
    out = tmp_path / "demo" / "scenes"
    assert main(["scenes", "--count", "4", "--seed", "7", "--out", str(out)]) == 0
    assert len(list(out.glob("*.png"))) == 4
    assert len(list((out / "gt").glob("*.png"))) == 4
    assert main(["scenes", "--count", "0", "--seed", "7", "--out", str(out)]) == 2
    assert "count must be at least 1" in capsys.readouterr().err
