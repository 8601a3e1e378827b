"""`make demo` as a person uses it: run it, wait for the URL it prints, log in with a real browser, open a task
and find its labelled regions; Ctrl-C stops everything; a second run reuses the project and its predictions.

The screenshot of the task goes to ``$DEMO_SCREENSHOT`` when set (``docs/images/demo.png`` is made so, see
docs/DEMO.md), else into the test's folder.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from label_studio_sdk import LabelStudio
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from ml_backend.demo.backend import REPO_ROOT
from ml_backend.demo.label_studio import ADMIN_EMAIL, ADMIN_PASSWORD
from ml_backend.demo.processes import free_port
from segmentor.toy.scenes import COLOUR_CLASS_NAMES

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# A first run creates Label Studio's database and segments every scene, on a loaded 2-core machine.
READY_TIMEOUT_S, STOP_TIMEOUT_S, EDITOR_TIMEOUT_S = 900, 90, 90
DEMO_LABELS = {name.capitalize() for name in COLOUR_CLASS_NAMES}
REGIONS_SCRIPT = """
const annotation = window.Htx && window.Htx.annotationStore && window.Htx.annotationStore.selected;
if (!annotation) return null;
return annotation.regions.map(region => ({type: region.type, label: region.labelName}));
"""


@dataclass
class DemoRun:
    process: subprocess.Popen
    output: list[str]
    url: str
    first_task: str
    ready_line: str


def start_demo(env: dict[str, str]) -> DemoRun:
    """`make demo` in its own process group (as a terminal runs it), read until it says it is ready."""
    process = subprocess.Popen(["make", "demo"], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    output: list[str] = []
    deadline = time.monotonic() + READY_TIMEOUT_S
    url = first_task = ready = None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        output.append(line)
        if line.startswith("The demo is ready"):
            ready = line.strip()
        if match := re.match(r"\s+Open\s+(http://\S+)", line):
            url = match.group(1)
        if match := re.search(r"\(or open (http://\S+)\)", line):
            first_task = match.group(1)
        if line.startswith("Ctrl-C stops"):
            return DemoRun(process, output, url, first_task, ready)
    stop_demo(process)
    pytest.fail(f"make demo did not become ready; its output:\n{''.join(output)[-6000:]}")


def stop_demo(process: subprocess.Popen) -> str:
    """Ctrl-C, as a terminal sends it: SIGINT to the whole foreground group; the rest of the output."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
    try:
        rest, _ = process.communicate(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        rest, _ = process.communicate()
        pytest.fail(f"make demo did not stop within {STOP_TIMEOUT_S} s of Ctrl-C:\n{rest[-3000:]}")
    return rest


def processes_using(marker: str) -> list[str]:
    """Command lines of live processes whose command line or environment mentions ``marker``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = (proc / "environ").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline or marker in environ:
            found.append(f"{proc.name}: {cmdline[:200]}")
    return found


def port_open(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def demo_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    env = {name: value for name, value in os.environ.items() if not name.startswith(("EMERDIFF_", "DEMO_"))}
    env.update(DEMO_DIR=str(tmp_path / "demo"), DEMO_PORT=str(free_port()), DEMO_BACKEND_PORT=str(free_port()))
    yield env
    assert processes_using(env["DEMO_DIR"]) == [], "make demo left processes behind"


def test_make_demo_opens_a_preannotated_labelled_project_and_stops_on_ctrl_c(
    demo_env: dict[str, str], browser: webdriver.Chrome, tmp_path: Path
) -> None:
    first = start_demo(demo_env)
    try:
        assert first.url == f"http://127.0.0.1:{demo_env['DEMO_PORT']}" and first.first_task
        browser.get(f"{first.url}/user/login/")
        browser.find_element(By.NAME, "email").send_keys(ADMIN_EMAIL)
        browser.find_element(By.NAME, "password").send_keys(ADMIN_PASSWORD)
        browser.find_element(By.CSS_SELECTOR, "form button[type=submit], form input[type=submit]").click()
        WebDriverWait(browser, EDITOR_TIMEOUT_S).until(lambda driver: "/user/login" not in driver.current_url)
        browser.get(first.first_task)
        regions = WebDriverWait(browser, EDITOR_TIMEOUT_S).until(lambda d: d.execute_script(REGIONS_SCRIPT) or None)
        items = WebDriverWait(browser, EDITOR_TIMEOUT_S).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, ".lsf-outliner-item") or None)
        time.sleep(2)  # let the canvas paint the masks
        browser.save_screenshot(os.environ.get("DEMO_SCREENSHOT") or str(tmp_path / "demo.png"))
        assert {region["type"] for region in regions} == {"brushregion"}
        assert {region["label"] for region in regions} <= DEMO_LABELS
        # Zero-shot labels: the regions are labelled by the label names, not all given one label.
        assert len({region["label"] for region in regions}) >= 2, regions
        assert len(items) == len(regions)
    finally:
        rest = stop_demo(first.process)
    assert "demo: stopped." in rest
    assert not port_open(int(demo_env["DEMO_PORT"])) and not port_open(int(demo_env["DEMO_BACKEND_PORT"]))
    assert processes_using(demo_env["DEMO_DIR"]) == []

    second = start_demo(demo_env)
    try:
        token = json.loads((Path(demo_env["DEMO_DIR"]) / "state.json").read_text())["token"]
        client = LabelStudio(base_url=second.url, api_key=token)
        projects = [project for project in client.projects.list() if project.title.startswith("EmerDiff demo")]
        assert len(projects) == 1
        tasks = list(client.tasks.list(project=projects[0].id, fields="all"))
        assert tasks and all(len(task.predictions) == 1 for task in tasks)
        print(f"first run: {first.ready_line}; second run: {second.ready_line}")
    finally:
        assert "demo: stopped." in stop_demo(second.process)
