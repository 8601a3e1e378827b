from __future__ import annotations

from pathlib import Path

import pytest

from ml_backend.core.settings import Settings, SettingsError
from segmentor import EmerDiffConfig
from segmentor.loading import DEFAULT_MODEL


def test_defaults_without_environment() -> None:
    settings = Settings.from_env({})
    assert settings.model == DEFAULT_MODEL
    assert settings.num_segments == EmerDiffConfig().num_segments
    assert settings.label_studio_url is None and settings.label_studio_api_key is None
    assert settings.allowed_image_hosts == () and not settings.allow_private_image_addresses
    assert not settings.basic_auth_enabled
    assert settings.port == 9090 and settings.worker_timeout > 100


def test_every_variable_is_read(tmp_path: Path) -> None:
    environ = {
        "EMERDIFF_MODEL": "bundled",
        "EMERDIFF_DEVICE": "cpu",
        "EMERDIFF_DTYPE": "float32",
        "EMERDIFF_NUM_SEGMENTS": "12",
        "EMERDIFF_SEED": "7",
        "EMERDIFF_MIN_AREA": "25",
        "EMERDIFF_POLYGON_TOLERANCE": "0.5",
        "EMERDIFF_MAX_VERTICES": "64",
        "EMERDIFF_DEFAULT_LABEL": "Cell",
        "LABEL_STUDIO_URL": "http://label-studio:8080/",
        "LABEL_STUDIO_API_KEY": "abc",
        "LOCAL_FILES_DOCUMENT_ROOT": str(tmp_path),
        "ALLOWED_IMAGE_HOSTS": "images.example.com, *.cdn.example.org",
        "ALLOW_PRIVATE_IMAGE_ADDRESSES": "yes",
        "MAX_IMAGE_BYTES": "1000",
        "MAX_IMAGE_PIXELS": "5000",
        "FETCH_TIMEOUT": "2.5",
        "CACHE_DIR": "off",
        "BASIC_AUTH_USER": "u",
        "BASIC_AUTH_PASS": "p",
        "LOG_LEVEL": "debug",
        "HOST": "127.0.0.1",
        "PORT": "9191",
        "GUNICORN_THREADS": "3",
        "GUNICORN_TIMEOUT": "200",
    }
    settings = Settings.from_env(environ)
    assert (settings.model, settings.device, settings.dtype) == ("bundled", "cpu", "float32")
    assert (settings.num_segments, settings.seed, settings.min_area) == (12, 7, 25)
    assert (settings.polygon_tolerance, settings.max_vertices, settings.default_label) == (0.5, 64, "Cell")
    assert settings.label_studio_url == "http://label-studio:8080"
    assert settings.local_files_document_root == tmp_path.resolve()
    assert settings.allowed_image_hosts == ("images.example.com", "*.cdn.example.org")
    assert settings.allow_private_image_addresses
    assert (settings.max_image_bytes, settings.max_image_pixels, settings.fetch_timeout) == (1000, 5000, 2.5)
    assert settings.cache_dir is None
    assert settings.basic_auth_enabled and settings.log_level == "DEBUG"
    assert (settings.host, settings.port, settings.threads, settings.worker_timeout) == (
        "127.0.0.1",
        9191,
        3,
        200,
    )


def test_secrets_stay_out_of_repr() -> None:
    settings = Settings.from_env(
        {"LABEL_STUDIO_API_KEY": "secret-key", "BASIC_AUTH_USER": "u", "BASIC_AUTH_PASS": "secret-pass"}
    )
    assert "secret" not in repr(settings)


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("EMERDIFF_NUM_SEGMENTS", "many", "must be an integer between 1 and 100"),
        ("EMERDIFF_NUM_SEGMENTS", "0", "must be an integer between 1 and 100"),
        ("EMERDIFF_SEED", "-1", "must be an integer"),
        ("EMERDIFF_MIN_AREA", "1.5", "must be an integer"),
        ("EMERDIFF_POLYGON_TOLERANCE", "-1", "finite number between 0.0 and 1000.0"),
        ("EMERDIFF_POLYGON_TOLERANCE", "nan", "finite number between 0.0 and 1000.0"),
        ("EMERDIFF_DTYPE", "int8", "must be one of"),
        ("LABEL_STUDIO_URL", "label-studio:8080", "http:// or https:// URL"),
        ("LOCAL_FILES_DOCUMENT_ROOT", "/no/such/folder", "not an existing folder"),
        ("LOCAL_FILES_DOCUMENT_ROOT", "/", "file-system root"),
        ("ALLOWED_IMAGE_HOSTS", "https://images.example.com", "not a host name"),
        ("ALLOWED_IMAGE_HOSTS", "images.*.com", "not a host name"),
        ("ALLOW_PRIVATE_IMAGE_ADDRESSES", "maybe", "true or false"),
        ("MAX_IMAGE_BYTES", "0", "must be an integer >= 1"),
        ("FETCH_TIMEOUT", "inf", "finite number"),
        ("LOG_LEVEL", "LOUD", "must be one of"),
        ("PORT", "70000", "between 1 and 65535"),
        ("GUNICORN_TIMEOUT", "60", ">= 101"),
    ],
)
def test_invalid_value_names_the_variable(name: str, value: str, expected: str) -> None:
    with pytest.raises(SettingsError, match=expected) as caught:
        Settings.from_env({name: value})
    assert str(caught.value).startswith(f"{name}=")


def test_basic_auth_needs_both_parts() -> None:
    with pytest.raises(SettingsError, match="BASIC_AUTH_USER and BASIC_AUTH_PASS"):
        Settings.from_env({"BASIC_AUTH_USER": "admin"})
