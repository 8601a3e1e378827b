"""Checks the entrypoint runs before gunicorn starts: one line naming the problem and exit 64, or exit 0.

What is checked here would otherwise fail late, after the model has loaded (minutes with a hub model), or
deep inside a download: every setting (ml_backend/core/settings.py, the same parser the service uses), the
folders the service writes to (written to for real, so read-only volumes and foreign owners are caught,
not just modes), and a model or a CLIP (EMERDIFF_CLIP_MODEL) given as a local folder. Needs the repository
root (the image's /app) on PYTHONPATH, as docker/entrypoint.sh runs it.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from ml_backend.core.settings import Settings, SettingsError
from segmentor.zeroshot.loading import BUNDLED_CLIP_DIR

EX_USAGE = 64  # sysexits.h: the configuration is wrong, starting again will not help


class ConfigError(Exception):
    """A configuration the service cannot start with; the message says which variable and why."""


def writable_folders(settings: Settings, environ: Mapping[str, str]) -> Iterator[tuple[str, Path]]:
    """``(variable, folder)`` of every folder the service will write to ("off" folders are not)."""
    if settings.cache_dir is not None:
        yield "CACHE_DIR", settings.cache_dir
    if settings.data_dir is not None:
        yield "DATA_DIR", settings.data_dir
    # A hub model is downloaded into HF_HOME on first start.
    if environ.get("HF_HOME"):
        yield "HF_HOME", Path(environ["HF_HOME"])


def check_writable(name: str, folder: Path) -> None:
    """Create ``folder`` if needed and write a file in it; ConfigError says who cannot and what to do."""
    user = f"uid {os.getuid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise ConfigError(
            f"{name}={folder} is not writable by {user}: {error.strerror or error}. Mount a volume the "
            f"service's user can write (e.g. chown -R {os.getuid()} on the host folder), or set {name}=off "
            "where the setting allows it"
        ) from error


def check_model(model: str) -> None:
    """A model given as a path must be a folder; a hub id is checked when it is downloaded."""
    if model.startswith(("/", "./", "../", "~")) and not Path(model).expanduser().is_dir():
        raise ConfigError(f"EMERDIFF_MODEL={model}: no such folder (mount the diffusers folder there)")


def check_clip(reference: str | None) -> None:
    """EMERDIFF_CLIP_MODEL as check_model reads EMERDIFF_MODEL: ``bundled`` must be in the image, a path a folder.

    A hub id is checked when CLIP loads (seconds, before the diffusion model: it must be in the cache).
    """
    if reference is None:
        return
    if reference == "bundled":
        if not (BUNDLED_CLIP_DIR / "config.json").is_file():
            raise ConfigError(f"EMERDIFF_CLIP_MODEL=bundled: the bundled CLIP is missing from {BUNDLED_CLIP_DIR}; "
                              "name a CLIP folder or a cached hub id instead")
    elif reference.startswith(("/", "./", "../", "~")) and not Path(reference).expanduser().is_dir():
        raise ConfigError(f"EMERDIFF_CLIP_MODEL={reference}: no such folder (mount the CLIP folder there: "
                          "CLIPModel.save_pretrained plus its tokenizer files)")


def preflight(environ: Mapping[str, str]) -> Settings:
    """Every check, in the order a user would fix them; ConfigError on the first failure."""
    try:
        settings = Settings.from_env(environ)
    except SettingsError as error:
        raise ConfigError(str(error)) from error
    for name, folder in writable_folders(settings, environ):
        check_writable(name, folder)
    check_model(settings.model)
    check_clip(settings.clip_model)
    return settings


def main() -> int:
    try:
        preflight(os.environ)
    except ConfigError as error:
        print(f"entrypoint: {error}", file=sys.stderr)
        return EX_USAGE
    return 0


if __name__ == "__main__":
    sys.exit(main())
