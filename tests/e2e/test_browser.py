"""Label Studio's own editor in a real headless Chromium: a pre-annotated task shows our regions in its
region list; a click with the smart keypoint tool brings back a new region from the backend.

Screenshots of both go into the test's output folder (``tmp_path``); on a failure the page's HTML too.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from label_studio_sdk import LabelStudio
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from ml_backend.demo.backend import BackendServer
from ml_backend.demo.label_studio import ADMIN_EMAIL, ADMIN_PASSWORD, LabelStudioServer
from tests.e2e.interactive_project import InteractiveProject, create_interactive_project
from tests.e2e.workflow import LABELS, Workflow

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# The editor loads a few MB of JavaScript; the first smart click also segments the image.
EDITOR_TIMEOUT_S, ANSWER_TIMEOUT_S = 60, 120
SMART_LABEL = LABELS[1]
# The editor's state, as its region list shows it: each region's type and labels.
REGIONS_SCRIPT = """
const annotation = window.Htx && window.Htx.annotationStore && window.Htx.annotationStore.selected;
if (!annotation) return null;
return annotation.regions.map(region => ({type: region.type, label: region.labelName, dynamic: !!region.dynamic}));
"""


@pytest.fixture(scope="module")
def project(
    ls_client: LabelStudio, label_studio: LabelStudioServer, backend: BackendServer, upload_scenes: list[Path]
) -> InteractiveProject:
    workflow = Workflow(ls_client, label_studio.url, label_studio.token)
    project = create_interactive_project(workflow, backend.url, upload_scenes[:1])
    workflow.retrieve_predictions(project.project_id)  # the automatic pre-annotation of the task
    return project


@pytest.fixture(scope="module")
def editor(browser: webdriver.Chrome, label_studio: LabelStudioServer) -> webdriver.Chrome:
    """The browser, logged in as the test Label Studio's admin."""
    browser.get(f"{label_studio.url}/user/login/")
    browser.find_element(By.NAME, "email").send_keys(ADMIN_EMAIL)
    browser.find_element(By.NAME, "password").send_keys(ADMIN_PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit], form input[type=submit]").click()
    WebDriverWait(browser, EDITOR_TIMEOUT_S).until(lambda driver: "/user/login" not in driver.current_url)
    return browser


@pytest.fixture
def evidence(editor: webdriver.Chrome, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable]:
    """``evidence(name)`` saves a screenshot; a failing test also leaves the page's HTML and one last shot."""

    def shoot(name: str) -> Path:
        path = tmp_path / f"{name}.png"
        editor.save_screenshot(str(path))
        print(f"screenshot: {path}")
        return path

    yield shoot
    if getattr(request.node, "rep_call", None) is None or request.node.rep_call.failed:
        (tmp_path / "page.html").write_text(editor.page_source, encoding="utf-8")
        shoot("failure")


def open_task(driver: webdriver.Chrome, url: str, project: InteractiveProject) -> list[dict]:
    (task_id,) = project.tasks
    driver.get(f"{url}/projects/{project.project_id}/data?tab=0&task={task_id}")
    return WebDriverWait(driver, EDITOR_TIMEOUT_S).until(lambda d: d.execute_script(REGIONS_SCRIPT) or None)


def region_list_items(driver: webdriver.Chrome) -> list:
    return driver.find_elements(By.CSS_SELECTOR, ".lsf-outliner-item")


def test_a_preannotated_task_shows_its_regions_in_the_region_list(
    editor: webdriver.Chrome, label_studio: LabelStudioServer, project: InteractiveProject, evidence: Callable
) -> None:
    regions = open_task(editor, label_studio.url, project)
    assert regions and {region["type"] for region in regions} == {"brushregion"}
    items = WebDriverWait(editor, EDITOR_TIMEOUT_S).until(lambda d: region_list_items(d) or None)
    evidence("preannotated-task")
    assert len(items) == len(regions)
    assert all(LABELS[0] in item.text for item in items), [item.text for item in items]


def test_a_click_with_the_smart_keypoint_adds_the_backends_region(
    editor: webdriver.Chrome,
    label_studio: LabelStudioServer,
    project: InteractiveProject,
    upload_scenes: list[Path],
    evidence: Callable,
) -> None:
    # A task without pre-annotation, and the editor told not to fetch one: a click on an image covered by
    # regions would select a region instead of placing a point.
    client = project.workflow.client
    client.projects.update(
        id=project.project_id, show_collab_predictions=False, evaluate_predictions_automatically=False
    )
    assert project.workflow.upload_images(project.project_id, upload_scenes[1:2]) == 1
    task_id = max(task.id for task in client.tasks.list(project=project.project_id))
    editor.get(f"{label_studio.url}/projects/{project.project_id}/data?tab=0&task={task_id}")
    WebDriverWait(editor, EDITOR_TIMEOUT_S).until(lambda d: d.execute_script(REGIONS_SCRIPT) == [])
    _switch_on(editor, "bottombar-auto-annotation-toggle")
    _switch_on(editor, "bottombar-auto-accept-toggle")
    # The Auto-Detect group lists the smart tools (the brush's own smart mode first): take the keypoint,
    # then its label (the second label row: the KeyPointLabels control), then click the image's centre.
    smart_keypoint = editor.find_element(By.CSS_SELECTOR, ".lsf-toolbar__smart [aria-label='key-point-tool']")
    editor.execute_script("arguments[0].click();", smart_keypoint)
    time.sleep(1)
    labels = [element for element in editor.find_elements(By.CSS_SELECTOR, ".lsf-label")
              if element.text.split()[0] == SMART_LABEL]
    editor.execute_script("arguments[0].click();", labels[1])
    stage = editor.find_element(By.CSS_SELECTOR, ".konvajs-content")
    ActionChains(editor).move_to_element_with_offset(stage, 0, 0).click().perform()
    evidence("smart-click")
    try:
        after = WebDriverWait(editor, ANSWER_TIMEOUT_S).until(
            lambda d: (regions := d.execute_script(REGIONS_SCRIPT)) and _answered(regions, []) and regions
        )
    finally:
        time.sleep(1)  # let the canvas paint the answer for the screenshot
        evidence("smart-answer")
    assert {"type": "brushregion", "label": SMART_LABEL, "dynamic": False} in after
    items = WebDriverWait(editor, EDITOR_TIMEOUT_S).until(lambda d: region_list_items(d) or None)
    assert any(SMART_LABEL in item.text for item in items), [item.text for item in items]


def _answered(regions: list[dict], before: list[dict]) -> bool:
    """The backend's brush region arrived (the smart keypoint itself is a region too, while it lasts)."""
    return any(region["type"] == "brushregion" and region["label"] == SMART_LABEL for region in regions[len(before):])


def _switch_on(driver: webdriver.Chrome, test_id: str) -> None:
    try:
        toggle = WebDriverWait(driver, EDITOR_TIMEOUT_S).until(
            lambda d: d.find_element(By.CSS_SELECTOR, f"[data-testid='{test_id}']")
        )
    except TimeoutException:
        pytest.fail(f"the editor shows no {test_id}: is the model connected with interactive pre-annotations?")
    checkbox = toggle if toggle.tag_name == "input" else toggle.find_element(By.CSS_SELECTOR, "input")
    if not checkbox.is_selected():
        driver.execute_script("arguments[0].click();", checkbox)
