"""The segmentation cache: on disk, across app instances, never segmenting the same job twice."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from flask.testing import FlaskClient

from ml_backend.core.settings import SettingsError
from ml_backend.segmentation.cache import SIZE_FILE, SIZE_LOCK, CachedSegmentation, SegmentationCache
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
    stored = sorted(
        path.suffix for path in cache_dir.rglob("*") if path.is_file() and path.name not in (SIZE_FILE, SIZE_LOCK)
    )
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


SHA, FINGERPRINT = "ab" * 32, "0123456789ab"


def entry_paths(root: Path) -> tuple[Path, Path]:
    folder = root / FINGERPRINT / SHA[:2]
    return folder / f"{SHA}.npz", folder / f"{SHA}.json"


def sample(seed: int = 0) -> CachedSegmentation:
    rng = np.random.default_rng(seed)
    return CachedSegmentation(
        label_map=rng.integers(0, 3, (30, 40)).astype(np.int32),
        scores={0: 0.5, 1: 0.25, 2: 1.0},
        features=rng.normal(size=(4, 5, 8)).astype(np.float32),
        low_res_labels=rng.integers(-1, 3, (4, 5)).astype(np.int32),
        merges=np.array([[0, 1], [3, 2]], dtype=np.int32),
    )


def test_cache_round_trip_keeps_every_field(tmp_path: Path) -> None:
    cache = SegmentationCache(tmp_path)
    stored = sample()
    assert cache.get(SHA, FINGERPRINT) is None
    cache.put(SHA, FINGERPRINT, stored)
    loaded = cache.get(SHA, FINGERPRINT)
    assert np.array_equal(loaded.label_map, stored.label_map) and loaded.label_map.dtype == np.int32
    assert loaded.scores == stored.scores
    assert np.allclose(loaded.features, stored.features, atol=1e-2) and loaded.features.dtype == np.float32
    assert np.array_equal(loaded.low_res_labels, stored.low_res_labels)
    assert np.array_equal(loaded.merges, stored.merges)
    assert loaded.mean_score == pytest.approx(0.5833333)


def flip_a_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


def replace_arrays(path: Path) -> None:
    """A well-formed .npz of other arrays: only the checksum tells it apart."""
    np.savez_compressed(path, label_map=np.zeros((30, 40), np.int32))


CORRUPTIONS = {
    "truncated arrays": lambda npz, json: npz.write_bytes(npz.read_bytes()[:100]),
    "bit-flipped arrays": lambda npz, json: flip_a_bit(npz),
    "arrays replaced": lambda npz, json: replace_arrays(npz),
    "arrays missing": lambda npz, json: npz.unlink(),
    "empty arrays": lambda npz, json: npz.write_bytes(b""),
    "garbage record": lambda npz, json: json.write_text("{not json"),
    "record without checksum": lambda npz, json: json.write_text('{"scores": {"0": 1.0}}'),
    "record of another shape": lambda npz, json: json.write_text("[1, 2, 3]"),
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_corrupt_entry_is_evicted_and_rewritten(tmp_path: Path, corruption: str) -> None:
    from ml_backend.core.metrics import Metrics

    metrics = Metrics()
    cache = SegmentationCache(tmp_path, metrics=metrics)
    cache.put(SHA, FINGERPRINT, sample())
    npz, record = entry_paths(tmp_path)
    CORRUPTIONS[corruption](npz, record)
    assert cache.get(SHA, FINGERPRINT) is None
    assert not npz.exists() and not record.exists()  # evicted, not left to fail again
    assert metrics.snapshot()["cache"] == {"corrupt": 1}
    cache.put(SHA, FINGERPRINT, sample())
    assert np.array_equal(cache.get(SHA, FINGERPRINT).label_map, sample().label_map)


def test_corrupt_entry_heals_through_the_app(
    make_cached_client: Callable[..., FlaskClient], cache_dir: Path
) -> None:
    first = predict(make_cached_client(), [task(1, SCENE)])
    [npz] = cache_dir.rglob("*.npz")
    flip_a_bit(npz)
    client = make_cached_client()
    assert predict(client, [task(1, SCENE)]) == first
    assert metrics_of(client)["cache"] == {"corrupt": 1, "misses": 1}
    client = make_cached_client()
    predict(client, [task(1, SCENE)])
    assert metrics_of(client)["cache"] == {"hits": 1}


def test_size_bound_evicts_the_least_recently_used(tmp_path: Path) -> None:
    import os

    cache = SegmentationCache(tmp_path)
    keys = [f"{index:02x}" * 32 for index in range(4)]
    for age, key in enumerate(keys):
        cache.put(key, FINGERPRINT, sample(age))
        json_path = tmp_path / FINGERPRINT / key[:2] / f"{key}.json"
        os.utime(json_path, (1000.0 + age, 1000.0 + age))  # put in this order, a second apart
    entry_bytes = sum(path.stat().st_size for path in tmp_path.rglob("*") if path.is_file()) // 4
    assert cache.get(keys[0], FINGERPRINT) is not None  # the oldest becomes the most recently used
    bounded = SegmentationCache(tmp_path, max_bytes=int(entry_bytes * 3.5))
    bounded.put("ff" * 32, FINGERPRINT, sample(9))
    present = {key for key in [*keys, "ff" * 32] if bounded.get(key, FINGERPRINT) is not None}
    assert present == {keys[0], keys[3], "ff" * 32}  # keys[1] and keys[2] were the least recently used


def test_stale_temporary_files_are_removed_at_start(tmp_path: Path) -> None:
    import os

    cache = SegmentationCache(tmp_path)
    cache.put(SHA, FINGERPRINT, sample())
    npz, _ = entry_paths(tmp_path)
    stale = npz.parent / f".{npz.name}.killed.tmp"
    fresh = npz.parent / f".{npz.name}.writing.tmp"
    stale.write_bytes(b"half an entry")
    fresh.write_bytes(b"being written")
    os.utime(stale, (1000.0, 1000.0))
    SegmentationCache(tmp_path)
    assert not stale.exists() and fresh.exists()  # a live write of another process is left alone
    assert SegmentationCache(tmp_path).get(SHA, FINGERPRINT) is not None


def test_full_disk_costs_the_cache_entry_not_the_prediction(
    make_cached_client: Callable[..., FlaskClient], cache_dir: Path
) -> None:
    import resource

    client = make_cached_client(data_dir=None)  # only the cache writes (label learning off)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    # Writes past 64 bytes fail as on a full disk (EFBIG; Python ignores SIGXFSZ).
    resource.setrlimit(resource.RLIMIT_FSIZE, (64, hard))
    try:
        [result] = predict(client, [task(1, SCENE)])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert result["result"] and "error" not in result
    # No partial entry, no temporary (the size bound's running total and its lock are no entry).
    assert not [path for path in cache_dir.rglob("*") if path.is_file() and path.name not in (SIZE_FILE, SIZE_LOCK)]


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
