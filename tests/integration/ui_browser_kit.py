"""What the web UI's browser tests share: a real `tuneforge serve` app with the UI mounted on a free port (656K
TinyStories base, chatml), Debian's headless chromium driven by Selenium, and a Page with waits that fail with what
the page shows. Each test module gets its own server and browser (module-scoped fixtures): import them with
`server, browser = ui_browser_kit.server, ui_browser_kit.browser` in the test module.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import pytest

from tuneforge.serve.app import create_app
from tuneforge.serve.settings import ServeSettings
from tuneforge.ui.app import mount_ui

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in the test extra")
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
# the server's dataset_info.json registers one dataset, `sky_qa`, with its own column names
REGISTERED_ROWS = [{"q": "What color is the sky?", "a": "Blue."}, {"q": "What color is snow?", "a": "White."}]


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    import uvicorn

    root = tmp_path_factory.mktemp("ui")
    (root / "datasets").mkdir()
    (root / "datasets" / "sky.json").write_text(json.dumps(REGISTERED_ROWS))
    (root / "datasets" / "dataset_info.json").write_text(json.dumps({"sky_qa": {
        "file_name": "sky.json", "columns": {"prompt": "q", "response": "a"}}}))
    settings = ServeSettings(model=str(tiny_model_dir), name="tiny", template="chatml", runs_dir=None, device="cpu",
                             storage=str(root / "storage"), registry_url=f"sqlite:///{root / 'registry.db'}",
                             log_requests=True, dataset_info=str(root / "datasets"), other_bases=True)
    app = create_app(settings)
    mount_ui(app)
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{srv.servers[0].sockets[0].getsockname()[1]}"
    srv.should_exit = True
    thread.join(timeout=30)


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and DRIVER):
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,800",
                "--lang=en-US"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=DRIVER))
    yield driver
    driver.quit()


class Page:
    """The browser on the UI, with waits that fail with what the page shows."""

    def __init__(self, driver, url: str, shots: Path):
        self.driver, self.url, self.shots = driver, url, shots
        shots.mkdir(parents=True, exist_ok=True)

    def find(self, css: str):
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def all(self, css: str):
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def text(self, css: str) -> str:
        return self.find(css).text

    def until(self, check, what: str, timeout: float = 30):
        try:
            # a node re-rendered between finding and reading it is read again at the next poll
            return WebDriverWait(self.driver, timeout, poll_frequency=0.1,
                                 ignored_exceptions=(StaleElementReferenceException,)).until(lambda _: check())
        except Exception:
            self.shot("failed")
            errors = [e.text for e in self.all(".error") if e.text]
            raise AssertionError(f"waited {timeout} s for {what}; errors on the page: {errors}") from None

    def shot(self, name: str, section: str | None = None) -> None:
        if section:
            self.driver.execute_script("arguments[0].scrollIntoView({block: 'start'})", self.find(section))
        self.driver.save_screenshot(str(self.shots / f"{name}.png"))

    def open(self) -> None:
        self.driver.get(self.url + "/")
        self.until(lambda: self.find("body").get_attribute("data-ready") == "true", "the page to load")

    def overflowing(self) -> list[str]:
        """The innermost visible elements that reach past the window's right edge (what makes a phone scroll
        sideways), as tag#id.class."""
        return self.driver.execute_script("""
            const w = document.documentElement.clientWidth, out = [];
            for (const e of document.querySelectorAll('body *')) {
              const r = e.getBoundingClientRect();
              if (r.width && r.right > w + 1 && ![...e.children].some((c) => c.getBoundingClientRect().right > w + 1))
                out.push(e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') + (e.className && e.className.baseVal
                  === undefined ? '.' + String(e.className).trim().replace(/\\s+/g, '.') : '') + ' ' + Math.round(r.right));
            }
            return out.slice(0, 10);""")

    def upload(self, path: Path) -> None:
        self.find("#file-input").send_keys(str(path))

    def job_status(self) -> str:
        return self.find("#job-status").get_attribute("data-status") or ""

    def points(self) -> int:
        return int(self.find("#loss-chart").get_attribute("data-points") or 0)
