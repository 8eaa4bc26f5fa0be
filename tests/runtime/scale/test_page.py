"""The page of tr2m-serve in a real headless Chromium: pick an image, type a caption, see the
coloured depth with its legend, click a pixel to read metres, download the PNG16."""
from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest

from runtime.colormap import turbo_lut
from runtime.scale.client import DepthClient

CAPTION = "a bedroom"


def _browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.skip("needs chromium and chromedriver from the system packages (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (the test extra)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,900"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver))


@pytest.fixture(scope="module")
def browser():
    driver = _browser()
    yield driver
    driver.quit()


def _share_of_turbo_pixels(png: bytes) -> float:
    """The share of a screenshot's pixels whose colour is (nearly) a turbo colour or black."""
    rgb = cv2.cvtColor(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    palette = np.vstack([turbo_lut(), [[0, 0, 0]]]).astype(np.int32)
    pixels = rgb.reshape(-1, 3).astype(np.int32)[::7]
    distance = np.abs(pixels[:, None, :] - palette[None]).sum(-1).min(1)
    return float((distance <= 12).mean()), len(np.unique(pixels, axis=0))


def test_page_shows_depth_with_legend_reads_metres_and_downloads_png16(service, browser, shared_data, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    photo = shared_data / "metric3d_nyu" / "rgb" / "rgb_00050.jpg"
    browser.get(service.url + "/")
    WebDriverWait(browser, 30).until(lambda b: b.find_element(By.ID, "run").is_enabled())
    browser.find_element(By.ID, "image").send_keys(str(photo))
    caption = browser.find_element(By.ID, "caption")
    caption.clear()
    caption.send_keys(CAPTION)
    browser.find_element(By.ID, "run").click()
    WebDriverWait(browser, 90).until(lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "done")

    canvas = browser.find_element(By.ID, "depth")
    browser.save_screenshot(str(tmp_path / "page.png"))
    share, colours = _share_of_turbo_pixels(canvas.screenshot_as_png)
    assert share > 0.9 and colours > 20, (share, colours)  # the depth panel is drawn in depth colours
    ticks = [t.text for t in browser.find_elements(By.CSS_SELECTOR, "#ticks span")]
    assert len(ticks) >= 2 and all(t.endswith(" m") for t in ticks), ticks

    ActionChains(browser).move_to_element_with_offset(canvas, 20, -15).click().perform()
    readout = browser.find_element(By.ID, "readout")
    x, y = int(readout.get_attribute("data-x")), int(readout.get_attribute("data-y"))
    expected = DepthClient(service.url).depth(photo, caption=CAPTION)
    assert float(readout.get_attribute("data-metres")) == pytest.approx(float(expected[y, x]), rel=1e-5)
    assert readout.text == f"({x}, {y}): {expected[y, x]:.3f} m"

    href = browser.find_element(By.ID, "download").get_attribute("href")
    data = browser.execute_async_script(
        "const done = arguments[1]; fetch(arguments[0]).then((r) => r.arrayBuffer())"
        ".then((b) => done(Array.from(new Uint8Array(b))));", href)
    mm = cv2.imdecode(np.array(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert mm.dtype == np.uint16 and mm.shape == expected.shape
    assert abs(int(mm[y, x]) - expected[y, x] * 1000) <= 0.5 + 1e-3
