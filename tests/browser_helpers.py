"""A real browser for the tests: Debian's headless Chromium driven by Selenium (``apt-get install chromium
chromium-driver``, ``selenium`` from requirements.txt), its console read back, viewports measured from screenshots."""

import io
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Optional, Sequence
from urllib.parse import urlparse

import numpy as np
import pytest
from PIL import Image

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WINDOW = (1600, 1000)
COLOUR_SPREAD = 40  # a pixel whose channels differ by more than this is coloured (CT and MR render grey)


def browser_missing() -> Optional[str]:
    """Why the browser tests cannot run here (``None`` when they can)."""
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
        return "Chromium and ChromeDriver are not installed (apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (requirements.txt)"
    return None


def require_browser() -> None:
    """Skips the calling test when :func:`browser_missing` says why; under ``REP3D_REQUIRE_BROWSER=1`` (CI) it fails."""
    missing = browser_missing()
    if missing:
        if os.environ.get("REP3D_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{missing} and REP3D_REQUIRE_BROWSER=1")
        pytest.skip(missing)


@contextmanager
def chromium() -> Iterator["selenium.webdriver.Chrome"]:  # noqa: F821
    """Headless Chromium (no sandbox: CI runs as root) with its console kept for :func:`console_errors`; ChromeDriver
    is started from the calling thread, so it and the browser share that thread's network namespace."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def console_errors(entries: Sequence[dict], ignored: Sequence[str]) -> List[str]:
    """The console's errors that come from this machine: resources from the internet are not ours (the tests run
    offline: web fonts fail), nor those whose message holds one of the ``ignored`` texts."""
    errors = []
    for entry in entries:
        if entry["level"] != "SEVERE":
            continue
        source = urlparse(entry["message"].split(" ", 1)[0])
        if source.hostname not in (None, "127.0.0.1", "localhost") or any(text in entry["message"] for text in ignored):
            continue
        errors.append(entry["message"])
    return errors


def pixels(element, centre: float = 1.0) -> np.ndarray:
    """The element as it is on screen, ``(height, width, 3)`` uint8 RGB; with ``centre`` < 1 only that middle share of
    its height and width (a viewport without the borders and the text in its corners and edges)."""
    rgb = np.asarray(Image.open(io.BytesIO(element.screenshot_as_png)).convert("RGB"))
    margins = [round(size * (1 - centre) / 2) for size in rgb.shape[:2]]
    return rgb[margins[0] : rgb.shape[0] - margins[0], margins[1] : rgb.shape[1] - margins[1]]


def coloured_fraction(rgb: np.ndarray) -> float:
    """Share of coloured pixels (a segmentation overlay on a grey image)."""
    return float(np.mean(rgb.max(axis=-1).astype(int) - rgb.min(axis=-1) > COLOUR_SPREAD))


def grey_levels(rgb: np.ndarray) -> int:
    """How many brightness levels are on screen: an image drawn shows hundreds, an empty viewport or the flat grey
    placeholder a viewer draws for frames it could not load a handful."""
    return int(np.unique(rgb.max(axis=-1)).size)
