"""The page of `vggnet serve` in a real headless Chromium: upload a real photo, wait for the
answer, and check that the class shown is `vggnet predict`'s.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them when missing);
skipped, with the reason, only where no browser can be found. ``VGGNET_SERVE_RUN`` serves that
run instead of the tiny one trained here, and ``VGGNET_SCREENSHOT`` keeps a copy of the
screenshot (the docs' picture is made that way).
"""

import json
import os
import shutil
import tarfile
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
webdriver = pytest.importorskip("selenium.webdriver")

from PIL import Image  # noqa: E402

from vggnet.cli import main  # noqa: E402
from vggnet.serve import BackgroundServer, ServeSettings  # noqa: E402

from conftest import CIFAR_TAR  # noqa: E402
from helpers import train_tiny_run, write_image  # noqa: E402

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")


def _browser() -> tuple[str, str]:
    binary = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    driver = shutil.which("chromedriver") or next(
        (p for p in ("/usr/lib/chromium/chromedriver",) if Path(p).is_file()), None)
    if binary is None or driver is None:
        pytest.skip("no Chromium and chromedriver found (Debian: apt-get install chromium "
                    "chromium-driver; .ci/run installs them)")
    return binary, driver


def _photo(tmp_path: Path) -> Path:
    """A real photograph from ../shared/data (a CIFAR-10 test image), else a generated one."""
    if CIFAR_TAR.is_file():
        with tarfile.open(CIFAR_TAR) as tar:
            member = tar.extractfile("test/cat/0000.jpg")
            path = tmp_path / "cat.jpg"
            path.write_bytes(member.read())
            return path
    return write_image(tmp_path / "generated.png", size=(64, 48))


def test_page_shows_the_class_that_vggnet_predict_gives(tmp_path, capsys):
    binary, driver_path = _browser()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    run = os.environ.get("VGGNET_SERVE_RUN")
    if not run:
        run = tmp_path / "run"
        train_tiny_run(run)
    photo = _photo(tmp_path)
    assert main(["predict", str(run), str(photo), "--json"]) == 0
    expected = json.loads(capsys.readouterr().out)[0]["top"][0]["class"]

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=760,1180"):
        options.add_argument(arg)
    with BackgroundServer(ServeSettings(run=str(run))) as server:
        browser = webdriver.Chrome(options=options,
                                   service=webdriver.ChromeService(executable_path=driver_path))
        try:
            browser.get(server.url + "/")
            WebDriverWait(browser, 30).until(
                lambda b: "classes" in b.find_element(By.ID, "model").text)
            browser.find_element(By.ID, "file").send_keys(str(photo))
            WebDriverWait(browser, 60).until(ec.visibility_of_element_located((By.ID, "result")))
            shown = browser.find_element(By.ID, "top1").get_attribute("data-class")
            bars = browser.find_elements(By.CSS_SELECTOR, "#top5 li")
            latency = browser.find_element(By.ID, "latency").text
            error_shown = browser.find_element(By.ID, "error").is_displayed()
            WebDriverWait(browser, 60).until(  # the Grad-CAM sheet follows the top 5
                lambda b: b.execute_script("const i = document.getElementById('explain');"
                                           "return !i.closest('[hidden]') && i.naturalWidth"))
            shot = tmp_path / "page.png"
            assert browser.save_screenshot(str(shot))
        finally:
            browser.quit()
    assert shown == expected
    assert len(bars) == min(5, len(json.loads(
        (Path(run) / "best.json").read_text())["classes"]))
    assert "round trip" in latency and not error_shown
    with Image.open(shot) as im:
        assert im.format == "PNG" and im.size[0] >= 700
    if os.environ.get("VGGNET_SCREENSHOT"):
        shutil.copy(shot, os.environ["VGGNET_SCREENSHOT"])
