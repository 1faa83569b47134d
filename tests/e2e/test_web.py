"""The web page in real headless Chromium (Debian's package) driven by Playwright."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.media import generated_videos

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (make test installs Debian's chromium)")
def test_define_vocab_upload_clip_see_chart(live_server: str, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    clip = generated_videos()["clip_a.mp4"]
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("this is not a video\n" * 20)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": 1000, "height": 1100})
        page.goto(f"{live_server}/", wait_until="networkidle")  # the vocabulary list has loaded
        assert page.title() == "text4vis-serve"
        page.click("#classify")  # nothing chosen yet: a plain-words error, no request
        expected = ("Choose a video or an image to classify." if page.locator("#vocab-select").input_value()
                    else "Choose or create a vocabulary first.")  # other e2e tests may have left vocabularies
        assert page.locator("#error").inner_text() == expected

        page.fill("#vocab-name", "web-sports")
        page.fill("#vocab-labels", "arm wrestling\nsurfing\nyoga\nplaying guitar")
        page.click("#vocab-save")
        page.wait_for_function("document.getElementById('status').textContent.startsWith('Saved')")
        assert page.locator("#vocab-select").input_value() == "web-sports"

        page.set_input_files("#file", str(clip))
        page.fill("#top-k", "3")
        page.click("#classify")
        page.wait_for_selector("#results:not([hidden]) .bar")
        bars = page.locator(".bar")
        assert bars.count() == 3
        widths = [float(bars.nth(i).get_attribute("data-probability") or 0) for i in range(3)]
        assert widths == sorted(widths, reverse=True) and 0 < widths[0] <= 1
        assert page.locator("#thumbs img").count() == 8
        page.wait_for_function("[...document.querySelectorAll('#thumbs img')].every(i => i.complete)")  # decoded
        assert page.locator("#thumbs img").first.evaluate("img => img.naturalWidth") == 96
        page.screenshot(path=str(tmp_path / "page.png"), full_page=True)

        page.set_input_files("#file", str(not_video))
        page.click("#classify")
        page.wait_for_selector("#error:not([hidden])")
        assert "not a video or image the server can read" in page.locator("#error").inner_text()
        browser.close()
