"""Debian's headless Chromium driven by Selenium through Debian's chromedriver (no download): the browser of
``tests/test_app.py`` and of ``benchmarks/app.py --screenshot``."""

from __future__ import annotations

import shutil
from pathlib import Path

CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")


def headless_chromium(profile: Path, window_size: str = "1400,2000"):
    """A Selenium Chrome session on Debian's ``chromium`` with its own profile folder; the caller quits it."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        raise RuntimeError("the browser needs Debian's chromium and chromium-driver (apt-get install chromium "
                           "chromium-driver; .ci/run installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, f"--window-size={window_size}", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=options)
