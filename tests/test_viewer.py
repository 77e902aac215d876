"""The /viewer page in headless Chromium (Selenium + Debian's chromium and chromium-driver): it
lists a stream that a client sends, shows its frames with overlays and its tracks in the table.

The screenshots are kept as ``artifacts/viewer-<size>.png`` (the paths are printed) for a person to look at.
"""

import itertools
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import require_path
from service_support import noise_frame, running_server

from clients import Client, FrameEvent
from data.paths import DATA_DIR
from data.video import load_clip
from frames.postprocess import find_components, sigmoid
from models.padding import run_padded
from models.registry import load_model

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = [
    pytest.mark.skipif(
        not (CHROMIUM and CHROMEDRIVER),
        reason="needs Debian's chromium and chromium-driver (./dev.sh installs them)",
    ),
    pytest.mark.timeout(240),
]
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,800",
)
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


def frame_with_a_few_detections():
    """A frame, and a threshold at which the service's untrained sd2net (seed 0) finds a few
    targets in it; sent again and again, they become confirmed tracks."""
    frame = noise_frame(120, 160, seed=5)
    torch.manual_seed(0)
    model, _ = load_model("sd2net")
    with torch.inference_mode():
        logits = run_padded(model, torch.from_numpy(frame / np.float32(255))[None, None])
    probabilities = sigmoid(logits[0, 0].numpy())
    for quantile in (0.9999, 0.9995, 0.999, 0.998, 0.995):
        threshold = float(np.quantile(probabilities, quantile))
        if 2 <= len(find_components(probabilities, threshold)) <= 8:
            return frame, threshold
    pytest.fail("no threshold gives a few components")


@pytest.fixture
def browser():
    options = Options()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def test_the_viewer_shows_a_live_stream_with_overlays_and_tracks(browser):
    frame, threshold = frame_with_a_few_detections()
    watch_a_stream(
        browser, itertools.repeat(frame), {"threshold": threshold, "warmup_sizes": ["160x120"]}
    )


def test_the_viewer_shows_a_real_labelled_clip(browser):
    """A drone-ir clip (320x256) looped as a camera would send it, with the shipped weights."""
    clip = load_clip("IR_DRONE_006", require_path(DATA_DIR, "the shared datasets"))
    frames = list(clip.frames(60))
    watch_a_stream(browser, itertools.cycle(frames), {"warmup_sizes": ["320x256"]})


def watch_a_stream(browser, frames, settings):
    """Send ``frames`` as stream roof-cam while the viewer watches it; check what it shows."""
    camera_on = threading.Event()
    camera_on.set()

    def camera():
        for frame in frames:
            if not camera_on.is_set():
                return
            yield frame

    with (
        running_server(**settings) as server,
        Client(server.base_url) as client,
    ):
        stream = client.stream("roof-cam", camera(), fps=10, when_busy="skip")
        sent = []  # what the sending client got back: the tracks the viewer must show
        sender = threading.Thread(target=lambda: sent.extend(stream), daemon=True)
        sender.start()
        try:
            browser.get(f"{server.base_url}/viewer?stream=roof-cam")
            wait = WebDriverWait(browser, 60, poll_frequency=0.2)
            track_ids = wait.until(tracks_in_table)
            wait.until(lambda d: int(canvas(d).get_attribute("data-frames")) >= 3)
            wait.until(lambda d: "roof-cam" in option_values(d))
            shown = {
                name: browser.find_element(By.ID, name).text
                for name in ("seq", "latency", "fps", "status")
            }
            pixels = canvas_pixels(browser)
            ARTIFACTS.mkdir(exist_ok=True)
            screenshot = ARTIFACTS / f"viewer-{settings['warmup_sizes'][0]}.png"
            browser.save_screenshot(str(screenshot))
            print(f"viewer screenshot: {screenshot}")
        finally:
            camera_on.clear()
            sender.join(30)

    results = [e.result for e in sent if isinstance(e, FrameEvent) and e.result is not None]
    tracks_sent = {t.track_id for r in results for t in r.targets if t.track_id is not None}
    assert track_ids and set(track_ids) <= tracks_sent
    assert shown["seq"].isdigit() and float(shown["latency"]) > 0 and float(shown["fps"]) > 0
    assert shown["status"] == "watching roof-cam"
    grey = (pixels[..., 0] == pixels[..., 1]) & (pixels[..., 1] == pixels[..., 2])
    assert pixels[..., :3].std() > 5  # the frame is drawn, not a blank canvas
    assert (~grey).sum() > 20  # coloured boxes, labels and trails over a grey thermal frame


def tracks_in_table(driver):
    """The track ids in the table, read at once (the page replaces its rows on every result)."""
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#tracks tbody tr[data-track-id]'),"
        " (row) => Number(row.dataset.trackId));"
    )


def canvas(driver):
    return driver.find_element(By.ID, "frame")


def option_values(driver):
    options = driver.find_elements(By.CSS_SELECTOR, "#streams option")
    return [option.get_attribute("value") for option in options]


def canvas_pixels(driver):
    """The canvas as an (H, W, 4) uint8 array, read through the page's own 2-D context."""
    width, height, data = driver.execute_script(
        "const c = document.getElementById('frame');"
        "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        "return [c.width, c.height, Array.from(d)];"
    )
    return np.array(data, dtype=np.uint8).reshape(height, width, 4)
