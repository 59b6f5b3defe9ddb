"""Headless Chromium (Debian's `chromium` + `chromium-driver`) driven by selenium, for the report's page tests.

Only the system browser is used: browsers that download themselves cannot work offline. `make test` installs the
Debian packages when they are missing (Makefile `browser`); where they cannot be installed, `browser_or_skip`
says exactly what is missing.

Also a command, for the README's screenshot: `python tests/helpers/browser.py PAGE.html OUT.png [--height 1800]`.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMEDRIVER = "/usr/bin/chromedriver"


def missing_browser() -> str | None:
    """Why the browser cannot start here, or None when it can."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    if not any(Path(p).is_file() for p in CHROMIUM) and shutil.which("chromium") is None:
        return "no Chromium: apt-get install -y chromium chromium-driver (`make browser`)"
    if not Path(CHROMEDRIVER).is_file():
        return f"no {CHROMEDRIVER}: apt-get install -y chromium-driver (`make browser`)"
    return None


def start_browser(width: int = 1280, height: int = 1000):
    """A headless Chromium with its console log readable (`driver.get_log("browser")`)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", "--allow-file-access-from-files"):  # fmt: skip
        options.add_argument(arg)
    options.binary_location = next((p for p in CHROMIUM if Path(p).is_file()), shutil.which("chromium") or "")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def full_page_screenshot(driver, out: Path, max_height: int = 16000) -> Path:
    """The whole page (up to `max_height` pixels) as one PNG."""
    width = driver.execute_script("return document.documentElement.scrollWidth")
    height = min(driver.execute_script("return document.documentElement.scrollHeight"), max_height)
    driver.set_window_size(max(width, 1280), height)
    out.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(out))
    return out


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Screenshot a page with headless Chromium.")
    parser.add_argument("page", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--height", type=int, default=16000, help="crop the page at this many pixels")
    args = parser.parse_args(argv)
    reason = missing_browser()
    if reason:
        parser.error(reason)
    driver = start_browser()
    try:
        driver.get(args.page.resolve().as_uri())
        full_page_screenshot(driver, args.out, args.height)
    finally:
        driver.quit()
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
