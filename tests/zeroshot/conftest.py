from __future__ import annotations

import pytest

from segmentor.zeroshot import ClipModel, load_clip
from tests.zeroshot.tiny_clip import build_tiny_clip


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory):
    return build_tiny_clip(tmp_path_factory.mktemp("tiny-clip") / "clip")


@pytest.fixture(scope="session")
def tiny_clip(tiny_clip_dir) -> ClipModel:
    return load_clip(str(tiny_clip_dir), device="cpu")
