"""A real browser for the model browser's e2e tests: Debian's chromium through chromium-driver (Selenium).

The browser can reach 127.0.0.1 only: `--host-resolver-rules` makes every other host name fail to
resolve, and `outside_requests` reads every request the page made from the DevTools performance log, so
a test also fails on a request that names an IP address (which skips the resolver).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ALLOWED_HOST = "127.0.0.1"
LOCAL_SCHEMES = frozenset({"data", "blob", "about", "chrome", "devtools"})
WAIT_S = 30.0  # any DOM condition; a whole generation on a busy 2-core machine takes a few seconds
T = TypeVar("T")

# Every host but 127.0.0.1 fails to resolve (~NOTFOUND): nothing can leave, and fails at once.
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",  # CI runs as root
    "--disable-dev-shm-usage",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-sync",
    "--window-size=1280,900",
    f"--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE {ALLOWED_HOST}",
)


def browser_missing() -> str | None:
    """None when the browser tests can run here, else why not."""
    try:
        import selenium  # noqa: F401, PLC0415  (a dev extra)
    except ImportError:
        return "selenium is not installed: pip install -e '.[dev]'"
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not path.is_file() or not os.access(path, os.X_OK):
            return f"{path} is missing: Debian's {package} (make system-deps, as root) runs the browser tests"
    return None


class Browser:
    """One headless chromium; `page(url)` opens a page, `wait` waits on a DOM condition."""

    def __init__(self) -> None:
        from selenium import webdriver  # noqa: PLC0415
        from selenium.webdriver.chrome.service import Service  # noqa: PLC0415

        os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager: never look for a driver online
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in CHROMIUM_FLAGS:
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
        self.driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
        self.driver.set_page_load_timeout(WAIT_S)
        self.urls: list[str] = []  # every request the pages made
        self.console: list[dict[str, Any]] = []
        self.width = 1280

    def quit(self) -> None:
        self.driver.quit()

    def set_width(self, width: int, height: int = 900) -> None:
        """The CSS viewport exactly `width` px wide (a phone below 600)."""
        self.width = width
        metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600}
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)

    def page(self, url: str) -> None:
        self.driver.get(url)

    def wait(self, condition: Callable[[Any], T | None], message: str, timeout: float = WAIT_S) -> T:
        """Poll `condition(driver)` until it is truthy (an explicit wait, never a sleep)."""
        from selenium.webdriver.support.ui import WebDriverWait  # noqa: PLC0415

        result = WebDriverWait(self.driver, timeout, poll_frequency=0.05).until(condition, message)
        assert result is not None  # until() returns only a truthy value
        return result

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def collect_logs(self) -> None:
        """Move the browser's logs here (reading them empties the driver's buffer)."""
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message.get("method") == "Network.requestWillBeSent":
                self.urls.append(message["params"]["request"]["url"])
        self.console.extend(self.driver.get_log("browser"))

    def outside_requests(self) -> list[str]:
        """Requests (and console messages naming a request) for anything but 127.0.0.1."""
        self.collect_logs()
        outside = [url for url in self.urls if not _local(url)]
        for entry in self.console:
            text = entry.get("message", "")
            if "ERR_NAME_NOT_RESOLVED" in text or any(not _local(word) for word in _urls_in(text)):
                outside.append(text)
        return outside

    def script_errors(self) -> list[str]:
        """Uncaught exceptions and CSP violations in the page (network 4xx are the API answering)."""
        self.collect_logs()
        return [
            e["message"]
            for e in self.console
            if e.get("level") == "SEVERE"
            and (e.get("source") == "javascript" or "Content Security" in e["message"])
        ]

    def forget_logs(self) -> None:
        self.collect_logs()
        self.urls.clear()
        self.console.clear()

    def screenshot(self, path: Path) -> Path:
        """The whole page (not only the viewport) as a PNG."""
        height = int(self.js("return document.documentElement.scrollHeight"))
        clip = {"x": 0, "y": 0, "width": self.width, "height": height, "scale": 1}
        shot = self.driver.execute_cdp_cmd(
            "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path


def _local(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in LOCAL_SCHEMES or parts.hostname == ALLOWED_HOST


def _urls_in(text: str) -> list[str]:
    return [word.strip("'\"()<>,;") for word in text.split() if "://" in word]


@contextmanager
def browser() -> Iterator[Browser]:
    if shutil.which(str(CHROMIUM)) is None:
        raise RuntimeError(browser_missing() or "no chromium")
    running = Browser()
    try:
        yield running
    finally:
        running.quit()
