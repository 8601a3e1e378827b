"""A real headless Chromium (Debian's ``chromium`` + ``chromium-driver``, driven by selenium) for the
end-to-end tests, against the same session Label Studio and backend as the other e2e tests.

Chromium is installed with apt-get when missing (as root: CI images run as root); selenium-manager's own
downloads cannot work offline, so the driver is always Debian's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
APT_TIMEOUT_S = 900


def ensure_chromium() -> None:
    """Install Debian's chromium and chromium-driver unless both are there; a clear failure otherwise."""
    if CHROMIUM.exists() and CHROMEDRIVER.exists():
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.fail(f"{CHROMIUM} / {CHROMEDRIVER} missing: install Debian's chromium and chromium-driver (as root)")
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends",
                                             "chromium", "chromium-driver"]):
        done = subprocess.run(command, capture_output=True, text=True, timeout=APT_TIMEOUT_S, env=environment)
        if done.returncode != 0:
            pytest.fail(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-2000:]}")


def start_chromium() -> webdriver.Chrome:
    """A headless Chromium (installed first when missing); the caller quits it."""
    ensure_chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    # Tall enough that the label rows of all three controls show below the image.
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1600,1800"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
