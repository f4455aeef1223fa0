"""Debian's chromium, headless, driven through its chromedriver, for a test."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager

from selenium import webdriver
from selenium.webdriver.chrome.service import Service


@contextmanager
def chromium() -> Iterator[webdriver.Chrome]:
    """A headless chromium until the block ends (``make test`` installs it)."""
    binary = shutil.which("chromium")
    driver_path = shutil.which("chromedriver")
    assert binary is not None, "chromium is not installed (make test installs it)"
    assert driver_path is not None, "chromedriver is not installed (make test installs it)"
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()
