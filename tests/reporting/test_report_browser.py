"""The demo's report in a real headless Chromium: a real small run (stage 1 on local Ray → vote → a few DPO steps →
evaluation, tiny models) through `python -m pipeline.demo`, then the page it printed, loaded from the file system.

Checks: no console errors, every `<img>` decoded (naturalWidth > 0), every section present, the item filter
works; the trained weights' model card carries the evaluation. A full-page screenshot is saved under the test's
tmp dir, and copied to `$BDPO_TEST_ARTIFACTS/report.png` when set (`make test` sets `runs/test-artifacts`).
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import pytest
from helpers.browser import full_page_screenshot, missing_browser, start_browser

from pipeline.reporting.model_card import read_front_matter
from pipeline.reporting.render import SECTIONS

pytestmark = [pytest.mark.ray, pytest.mark.train]


@pytest.fixture(scope="module")
def demo_page(small_demo) -> Path:
    reason = missing_browser()
    if reason:
        pytest.skip(f"headless Chromium unavailable: {reason}")
    assert small_demo.returncode == 0, small_demo.stdout[-3000:] + small_demo.stderr[-3000:]
    match = re.search(
        r"^  report \(open it in a browser\)\s+(\S+index\.html)$", small_demo.stdout, re.MULTILINE
    )
    assert match, f"the demo prints where its report is:\n{small_demo.stdout[-2000:]}"
    page = Path(match.group(1))
    assert page == small_demo.run_dir / "report" / "index.html" and page.is_file()
    return page


def test_the_demo_page_loads_in_chromium_with_every_image_and_section(demo_page, tmp_path):
    from selenium.webdriver.common.by import By

    driver = start_browser()
    try:
        driver.get(demo_page.as_uri())
        deadline = time.monotonic() + 30
        while not driver.execute_script(
            "return document.readyState === 'complete' && [...document.images].every(i => i.complete)"
        ):
            assert time.monotonic() < deadline, "the page did not finish loading its images in 30 s"
            time.sleep(0.2)

        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == [], errors
        widths = driver.execute_script(
            "return [...document.images].map(i => [i.getAttribute('src'), i.naturalWidth])"
        )
        assert len(widths) >= 3 * 3 + 2 * 2 * 2, "candidates, pairs and evaluation images are on the page"
        assert [src for src, w in widths if w == 0] == [], "every image decodes"
        for section in SECTIONS:
            element = driver.find_element(By.ID, section)
            assert element.is_displayed() and "yet" not in element.find_element(By.TAG_NAME, "h2").text
        assert driver.find_elements(By.CSS_SELECTOR, "#run .missing") == []
        assert driver.find_elements(By.CSS_SELECTOR, "#training svg.chart"), "training curves are drawn"
        assert driver.find_elements(By.CSS_SELECTOR, "#training svg .marker"), (
            "reference refreshes are marked"
        )

        # the items' filter runs in the page (the only script): a text no prompt contains hides them all
        items = driver.find_elements(By.CSS_SELECTOR, "#items .item")
        assert len(items) == 4  # 2 held-out prompts × 2 seeds
        driver.find_element(By.ID, "item-filter").send_keys("no prompt says this")
        assert driver.find_element(By.ID, "item-count").text == f"0 of {len(items)} items"
        assert [e for e in driver.get_log("browser") if e["level"] == "SEVERE"] == []

        driver.find_element(By.ID, "item-filter").clear()
        driver.execute_script("window.scrollTo(0, 0)")
        shot = full_page_screenshot(driver, tmp_path / "report.png")
    finally:
        driver.quit()
    assert shot.stat().st_size > 10_000
    artifacts = os.environ.get("BDPO_TEST_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(artifacts) / "report.png")


def test_the_demo_weights_carry_a_model_card_with_their_evaluation(demo_page):
    run_dir = demo_page.parent.parent
    card = (run_dir / "train" / "majority" / "final" / "README.md").read_text()
    meta = read_front_matter(card)
    assert meta["library_name"] == "diffusers" and "diffusion-dpo" in meta["tags"]
    assert "## Evaluation" in card and "| majority |" in card and "Not evaluated yet" not in card
