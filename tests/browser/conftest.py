"""A real headless Chromium (Debian's ``chromium`` + ``chromium-driver``, driven by selenium) against the
end-to-end session's Label Studio and backend (its fixtures are re-exported here).

Chromium is installed with apt-get when missing (as root: CI images run as root); selenium-manager's own
downloads cannot work offline, so the driver is always Debian's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from tests.e2e.conftest import (  # noqa: F401  (fixtures of the shared Label Studio session)
    backend,
    document_root,
    label_studio,
    local_scenes,
    ls_client,
    model_reference,
    reference_segmentor,
    upload_scenes,
)

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


@pytest.fixture(scope="session")
def browser() -> Iterator[webdriver.Chrome]:
    ensure_chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    # Tall enough that the label rows of all three controls show below the image.
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1600,1800"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[pytest.TestReport]:
    """Each test's report on its item, so a fixture can tell a failed test (and keep its page)."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
