"""Label Studio credentials through label-studio-sdk's token handling (ml_backend.images.credentials)."""

from __future__ import annotations

import pytest

from ml_backend.core.errors import ImageFetchError
from ml_backend.core.settings import Settings
from ml_backend.images.resolver import ImageResolver
from tests.backend.servers import FakeLabelStudio, fake_jwt
from tests.backend.support import png_bytes


def test_an_expired_personal_access_token_is_refused_without_an_exchange(label_studio: FakeLabelStudio) -> None:
    label_studio.uploads["1/a.png"] = png_bytes(1)
    expired = fake_jwt({"token_type": "refresh", "exp": 1_000_000_000, "user_id": 1})
    images = ImageResolver(Settings(fetch_timeout=5.0, label_studio_url=label_studio.url,
                                    label_studio_api_key=expired))  # the backend still starts
    with pytest.raises(ImageFetchError, match=r"personal access token .* is unusable .*expired"):
        images.read("/data/upload/1/a.png", 1)
    assert label_studio.seen == []
