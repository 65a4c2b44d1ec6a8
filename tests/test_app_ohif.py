"""OHIF, the viewer inside the monailabel package, in a real browser against the app and a real PACS (issue #27).

Orthanc holds the shared JPEG 2000 CT; the app serves it on http://127.0.0.1:8000 (the address OHIF's MONAI Label panel
starts with), both in a loopback-only network namespace (``tests/pacs_helpers.py``); headless Chromium runs in the same
namespace (``tests/browser_helpers.py``). The test walks what an annotator does: the study list shows the study; the
MONAI Label mode opens it and draws the CT (its frames come through the app's DICOMweb proxy as stored,
``apps/rep3d/lib/viewer_proxy.py``); the panel, once connected, lists the app's models; **Run** on auto-segmentation
overlays a segmentation; a label submitted to the app (``MONAILabelClient.save_label``, what Slicer's *Submit Label*
sends: OHIF's MONAI Label panel in monailabel 0.8.5 has no save action) is a SEG in Orthanc that OHIF's Segmentation
mode lists with the study and overlays on the CT, its segments named as the SEG names them. A screenshot of each step is
kept in ``$REP3D_TEST_ARTIFACTS/ohif`` (default ``test_artifacts/ohif``); an error in the browser console from this
machine fails the test.

Needs root, Orthanc (as the PACS tests) and ``apt-get install chromium chromium-driver``; ``.ci/run`` installs them
and sets ``REP3D_REQUIRE_BROWSER=1``, which turns the skip into a failure.
"""

import os
from pathlib import Path

import pydicom
import pytest
from browser_helpers import chromium, coloured_fraction, console_errors, grey_levels, pixels, require_browser
from dicomweb_client import DICOMwebClient
from pacs_helpers import CT_SERIES, amos_label_on_series, prepare_series, require_pacs, serve_pacs

APP_PORT = 8000  # the server address OHIF's MONAI Label panel starts with
PATIENT = "REP3D-OHIF"
SERVED = {"amos_ct": True}
UPSTREAM_CONSOLE_ERRORS = (
    "/assets/android-chrome-144x144.png",  # the manifest of monailabel's OHIF build names an icon the build lacks
    "/train/?check_if_running=true",  # upstream's /train/ answers 404 while no training runs; the panel asks on connect
)
DRAWN_LEVELS = 100
STEP_S = 60
INFER_S = 120


@pytest.fixture(scope="module")
def artifacts(repo_root) -> Path:
    path = Path(os.environ.get("REP3D_TEST_ARTIFACTS", repo_root / "test_artifacts")) / "ohif"
    path.mkdir(parents=True, exist_ok=True)
    for old in path.glob("*.png"):
        old.unlink()
    return path


def test_ohif_study_list_mode_models_run_and_saved_seg(tmp_path, shared_data, repo_root, artifacts):
    require_pacs()
    require_browser()
    from monailabel.client import MONAILabelClient
    from selenium.webdriver import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    ct = prepare_series(shared_data / CT_SERIES, tmp_path / "ct", PATIENT)
    study = str(pydicom.dcmread(ct[0]).StudyInstanceUID)
    with serve_pacs(tmp_path, repo_root, SERVED, ct, port=APP_PORT) as (orthanc, server), chromium() as browser:
        client = MONAILabelClient(server.url, tmpdir=str(tmp_path / "client"))
        errors = []

        def step(name: str) -> None:
            """Keeps a screenshot and the console's errors of this step."""
            browser.save_screenshot(str(artifacts / f"{name}.png"))
            errors.extend(f"{name}: {e}" for e in console_errors(browser.get_log("browser"), UPSTREAM_CONSOLE_ERRORS))

        def until(condition, timeout_s: float = STEP_S, what: str = ""):
            return WebDriverWait(browser, timeout_s, poll_frequency=0.5).until(lambda _: condition(), what)

        def options_after(section: str) -> list:
            """The options of the first list in the panel's ``section``."""
            select = f"//*[normalize-space()='{section}' and not(*)]/following::select[1]/option"
            return [option.get_attribute("value") for option in browser.find_elements(By.XPATH, select)]

        def first_viewport():
            """What the first viewport shows, its middle half (no border, no corner texts)."""
            return pixels(browser.find_elements(By.CSS_SELECTOR, "[data-cy='viewport-pane']")[0], centre=0.5)

        # 1. the study list shows the study
        browser.get(f"{server.url}/ohif/")
        row = until(lambda: browser.find_elements(By.XPATH, f"//*[text()='{PATIENT}']"), what="the study in the list")[
            0
        ]
        step("1_study_list")

        # 2. the MONAI Label mode opens it and draws the CT (JPEG 2000 frames through the app's proxy)
        row.click()
        until(lambda: browser.find_elements(By.XPATH, "//button[normalize-space()='MONAI Label']"))[0].click()
        until(lambda: "/ohif/monai-label" in browser.current_url and study in browser.current_url)
        until(lambda: browser.find_elements(By.CSS_SELECTOR, "[data-cy='viewport-pane']"))
        until(lambda: grey_levels(first_viewport()) > DRAWN_LEVELS, what="the CT drawn in the first viewport")
        image = first_viewport()
        step("2_monai_label_mode")

        # 3. the panel, connected, lists the app's models
        server_field = until(lambda: browser.find_elements(By.XPATH, f"//input[@value='{server.url}/']"))[0]
        server_field.find_element(By.XPATH, "following::button[1]").click()  # connect (the button beside the address)
        automatic = sorted(n for n, m in client.info()["models"].items() if m["type"] == "segmentation")
        until(lambda: browser.find_elements(By.XPATH, "//button[normalize-space()='Run']"), what="the panel's models")
        assert options_after("Auto-Segmentation") == automatic
        assert options_after("Active Learning") == list(client.info()["strategies"])
        step("3_panel_models")

        # 4. Run on auto-segmentation overlays a segmentation
        assert coloured_fraction(image) < 0.001
        browser.find_element(By.XPATH, "//button[normalize-space()='Run']").click()
        until(lambda: coloured_fraction(first_viewport()) > 0.05, INFER_S, "a segmentation overlaid after Run")
        assert "Result File:" in server.log_text() and ".nrrd" in server.log_text()  # OHIF asks for NRRD
        step("4_run_overlay")

        # 5. a submitted label is a SEG in Orthanc, listed with the study in OHIF's Segmentation mode
        label = amos_label_on_series(shared_data, tmp_path / "ct", tmp_path / "submitted.nii.gz")
        client.save_label(str(pydicom.dcmread(ct[0]).SeriesInstanceUID), str(label), tag="final")
        (seg,) = orthanc.series("SEG")
        assert seg["SeriesDescription"] == "MONAI Label Rep3D amos_ct"
        (stored,) = DICOMwebClient(orthanc.dicomweb).retrieve_series(study, seg["SeriesInstanceUID"])
        segment_names = [str(segment.SegmentLabel) for segment in stored.SegmentSequence]
        browser.get(f"{server.url}/ohif/")
        until(lambda: browser.find_elements(By.XPATH, f"//*[text()='{PATIENT}']"))[0].click()
        until(lambda: browser.find_elements(By.XPATH, "//button[normalize-space()='Segmentation']"))[0].click()
        thumbnail = until(
            lambda: browser.find_elements(By.XPATH, f"//*[text()='{seg['SeriesDescription']}']"),
            what="the SEG among the study's series",
        )[0]
        step("5_seg_listed")

        # 6. opened, it is overlaid on the CT with its segments named as the model's classes
        ActionChains(browser).double_click(thumbnail).perform()
        hydrate = until(
            lambda: browser.find_elements(By.CSS_SELECTOR, "[data-cy='yes-hydrate-btn']"), what="open the SEG"
        )
        browser.execute_script("arguments[0].click()", hydrate[0])
        until(
            lambda: all(browser.find_elements(By.XPATH, f"//*[text()='{name}']") for name in segment_names),
            what=f"the segments {segment_names} listed",
        )
        until(
            lambda: coloured_fraction(first_viewport()) > 0.05 and grey_levels(first_viewport()) > DRAWN_LEVELS,
            what="the SEG overlaid on the CT",
        )
        assert not browser.find_elements(By.XPATH, "//*[contains(text(), 'Something went wrong')]")
        step("6_seg_overlay")
        assert not errors, "\n".join(errors)
