"""The segmentation cache: on disk, across app instances, never segmenting the same job twice."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from flask.testing import FlaskClient

from ml_backend.cache import CachedSegmentation, SegmentationCache
from ml_backend.settings import SettingsError
from tests.backend.support import BOTH_CONFIG, POLYGON_CONFIG, metrics_of, predict, task

SCENE = "/data/local-files/?d=images/scene0.png"


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def make_cached_client(
    make_client: Callable[..., FlaskClient], document_root: Path, cache_dir: Path
) -> Callable[..., FlaskClient]:
    def make(**overrides: object) -> FlaskClient:
        return make_client(
            local_files_document_root=document_root.resolve(), cache_dir=cache_dir, **overrides
        )

    return make


def test_second_request_is_a_hit_without_unet_passes(make_cached_client: Callable[..., FlaskClient]) -> None:
    client = make_cached_client()
    first = predict(client, [task(1, SCENE)])
    after_first = metrics_of(client)
    assert after_first["cache"] == {"misses": 1}
    assert after_first["segmentor"]["unet_sample_passes"] > 0

    second = predict(client, [task(2, SCENE)])
    after_second = metrics_of(client)
    assert after_second["cache"] == {"hits": 1, "misses": 1}
    assert after_second["segmentor"] == after_first["segmentor"]
    assert second == first


def test_new_app_on_the_same_cache_dir_hits(
    make_cached_client: Callable[..., FlaskClient], cache_dir: Path
) -> None:
    first = predict(make_cached_client(), [task(1, SCENE)], BOTH_CONFIG)
    stored = sorted(path.suffix for path in cache_dir.rglob("*") if path.is_file())
    assert stored == [".json", ".npz"]  # one entry, no temporary files left behind

    restarted = make_cached_client()
    assert predict(restarted, [task(1, SCENE)], BOTH_CONFIG) == first
    metrics = metrics_of(restarted)
    assert metrics["cache"] == {"hits": 1}
    assert metrics["segmentor"] == {}  # no segmentation, no U-Net pass in this process


def test_same_image_under_another_url_hits(
    make_cached_client: Callable[..., FlaskClient], document_root: Path
) -> None:
    (document_root / "copy.png").write_bytes((document_root / "images" / "scene0.png").read_bytes())
    client = make_cached_client()
    predict(client, [task(1, SCENE), task(2, "/data/local-files/?d=copy.png")])
    assert metrics_of(client)["cache"] == {"hits": 1, "misses": 1}


def test_other_segmentation_settings_miss(make_cached_client: Callable[..., FlaskClient]) -> None:
    client = make_cached_client()
    predict(client, [task(1, SCENE)])
    # Polygon-only knobs reuse the segmentation; the smallest segment area makes a new one.
    predict(
        client,
        [task(1, SCENE)],
        POLYGON_CONFIG.replace('toName="image"', 'toName="image" emerdiff-tolerance="0"'),
    )
    assert metrics_of(client)["cache"] == {"hits": 1, "misses": 1}
    predict(
        client,
        [task(1, SCENE)],
        POLYGON_CONFIG.replace('toName="image"', 'toName="image" emerdiff-min-area="30"'),
    )
    assert metrics_of(client)["cache"] == {"hits": 1, "misses": 2}


def test_cache_round_trip_and_unreadable_entry(tmp_path: Path) -> None:
    cache = SegmentationCache(tmp_path)
    sha, fingerprint = "ab" * 32, "0123456789ab"
    label_map = np.arange(12, dtype=np.int32).reshape(3, 4) % 3
    assert cache.get(sha, fingerprint) is None
    cache.put(sha, fingerprint, CachedSegmentation(label_map, {0: 0.5, 1: 0.25, 2: 1.0}))
    loaded = cache.get(sha, fingerprint)
    assert np.array_equal(loaded.label_map, label_map) and loaded.label_map.dtype == np.int32
    assert loaded.scores == {0: 0.5, 1: 0.25, 2: 1.0}
    assert loaded.mean_score == pytest.approx(0.5833333)

    (tmp_path / fingerprint / sha[:2] / f"{sha}.npz").write_bytes(b"truncated")
    assert cache.get(sha, fingerprint) is None


def test_unwritable_cache_dir_is_a_start_up_error(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    with pytest.raises(SettingsError, match=r"CACHE_DIR=.*a-file.*not a writable folder"):
        SegmentationCache(tmp_path / "a-file" / "cache")


def test_disabled_cache_and_foreign_keys(tmp_path: Path) -> None:
    disabled = SegmentationCache(None)
    disabled.put("ab" * 32, "0123456789ab", CachedSegmentation(np.zeros((2, 2), np.int32), {0: 1.0}))
    assert disabled.get("ab" * 32, "0123456789ab") is None
    with pytest.raises(ValueError, match="hex digests"):
        SegmentationCache(tmp_path).get("../../etc", "0123456789ab")


def test_concurrent_requests_for_one_image_segment_it_once(
    make_cached_client: Callable[..., FlaskClient],
) -> None:
    client = make_cached_client(predict_queue_size=3)
    with ThreadPoolExecutor(max_workers=3) as pool:
        answers = list(pool.map(lambda task_id: predict(client, [task(task_id, SCENE)]), range(3)))
    assert answers[0] == answers[1] == answers[2]
    metrics = metrics_of(client)
    assert metrics["cache"] == {"hits": 2, "misses": 1}
    assert metrics["segmentor"]["segmentations"] == 1
