"""The web page in real headless Chromium (Debian's package) driven by Playwright."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import httpx
import pytest

from tests.media import generated_videos, joined_parts

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (make test installs Debian's chromium)")
def test_define_vocab_upload_clip_see_chart(live_server: str, tmp_path: Path) -> None:
    """Each state is also saved as a screenshot (``SHOTS``, when set, keeps them) to look at."""
    from playwright.sync_api import sync_playwright

    clip = generated_videos()["clip_a.mp4"]
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("this is not a video\n" * 20)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": 1000, "height": 1100})
        page.goto(f"{live_server}/", wait_until="networkidle")  # the vocabulary list has loaded
        assert page.title() == "text4vis-serve"
        page.wait_for_function("document.getElementById('model-line').textContent.startsWith('Model: ')")
        assert page.locator("#model-line").inner_text().startswith("Model: t4v-tiny-vit/sha256:")
        assert page.locator("#random-warning").is_hidden()  # weights from a file: not --random-init
        page.click("#classify")  # nothing chosen yet: a plain-words error, no request
        expected = (
            "Choose a video or an image to classify."
            if page.locator("#vocab-select").input_value()
            else "Choose or create a vocabulary first."
        )  # other e2e tests may have left vocabularies
        assert page.locator("#error").inner_text() == expected

        page.fill("#vocab-name", "web-dups")
        page.fill("#vocab-labels", "surfing\nSurfing!\nyoga")
        page.click("#vocab-save")
        page.wait_for_function("document.getElementById('status').textContent.startsWith('Saved')")
        assert (
            page.locator("#vocab-warnings li")
            .all_inner_texts()[0]
            .startswith("Nearly the same label: “surfing” and “Surfing!”")
        )  # the lint, shown; the vocabulary is saved
        shot(page, "warnings")

        page.fill("#vocab-name", "web-sports")
        page.fill("#vocab-labels", "arm wrestling\nsurfing\nyoga\nplaying guitar")
        page.click("#vocab-save")
        page.wait_for_function("document.getElementById('status').textContent.startsWith('Saved “web-sports”')")
        assert page.locator("#vocab-warnings").is_hidden()
        assert page.locator("#vocab-select").input_value() == "web-sports"

        page.set_input_files("#file", str(clip))
        page.wait_for_selector("#preview video")  # a preview of the chosen file
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
        header = page.locator("#result-header").inner_text()
        assert header.startswith("clip_a.mp4 — vocabulary “web-sports” v1 — model t4v-tiny-vit"), header
        assert "8 frames" in header
        shot(page, "result")

        page.set_input_files("#file", str(not_video))
        page.click("#classify")
        page.wait_for_selector("#error:not([hidden])")
        assert "not a video or image the server can read" in page.locator("#error").inner_text()
        assert "Errno" not in page.locator("#error").inner_text()
        assert page.locator("#results").is_hidden()  # the previous result does not linger under the error
        shot(page, "error")

        page.click("#vocab-view")
        page.wait_for_selector("#vocab-labels-view:not([hidden]) li")
        assert page.locator("#vocab-labels-list li").all_inner_texts() == [
            "arm wrestling",
            "surfing",
            "yoga",
            "playing guitar",
        ]
        heatmap = page.locator("#vocab-heatmap").get_attribute("href")
        assert heatmap == "/vocab/web-sports/similarity?format=png"
        assert httpx.get(f"{live_server}{heatmap}", timeout=30).headers["content-type"] == "image/png"
        shot(page, "labels")
        page.once("dialog", lambda dialog: dialog.accept())  # "Delete ...?" confirmed
        page.click("#vocab-delete")
        page.wait_for_function("document.getElementById('status').textContent.startsWith('Deleted')")
        assert "web-sports" not in page.locator("#vocab-select").inner_text()

        phone = browser.new_page(viewport={"width": 390, "height": 844})
        phone.goto(f"{live_server}/", wait_until="networkidle")
        assert phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth")  # no sideways scrolling
        shot(phone, "phone")
        assert httpx.get(f"{live_server}/favicon.ico", timeout=10).status_code == 200
        browser.close()


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (make test installs Debian's chromium)")
def test_timeline_band_and_none_of_these(live_server: str, tmp_path: Path) -> None:
    """The timeline of three joined parts is drawn as it streams: one band piece per window,
    placed by its times and coloured by its top label, a legend and the events; the "none of
    these" box shows exactly when the API abstains."""
    from playwright.sync_api import sync_playwright

    joined, _ = joined_parts(tmp_path)
    labels = ["arm wrestling", "surfing", "yoga", "playing guitar"]
    httpx.put(f"{live_server}/vocab/web-timeline", json={"labels": labels}, timeout=60).raise_for_status()
    api = httpx.post(
        f"{live_server}/classify/timeline",
        files={"file": ("joined.mp4", joined.read_bytes())},
        data={"vocab": "web-timeline", "window_s": "4"},
        timeout=120,
    ).json()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": 1000, "height": 1100})
        page.goto(f"{live_server}/", wait_until="networkidle")
        page.select_option("#vocab-select", "web-timeline")
        page.set_input_files("#file", str(joined))
        page.fill("#window-s", "4")
        page.click("#timeline")
        page.wait_for_function("document.getElementById('status').textContent.startsWith('Timeline done')")
        pieces = page.locator("#timeline-band .segment")
        assert pieces.count() == 3
        placed = [
            (pieces.nth(i).evaluate("e => e.style.left"), pieces.nth(i).evaluate("e => e.style.width"))
            for i in range(3)
        ]
        assert [left for left, _ in placed] == ["0%", "33.3333%", "66.6667%"], placed
        tops = [s["predictions"][0]["label"] for s in api["segments"]]
        assert [pieces.nth(i).get_attribute("data-label") for i in range(3)] == tops
        assert pieces.nth(0).get_attribute("title").startswith(f"0:00.0–0:04.0: {tops[0]} (")
        assert page.locator("#timeline-legend li").all_inner_texts() == list(dict.fromkeys(tops))
        assert page.locator("#timeline-events li").count() == len(api["events"])
        assert page.locator("#timeline-header").inner_text().startswith("joined.mp4 — 0:12.0 — 3 windows of 4 s")
        shot(page, "timeline")

        page.check("#abstain")  # a timeline does not abstain: the page says so instead of ignoring the box
        page.click("#timeline")
        page.wait_for_function("document.getElementById('status').textContent.startsWith('Timeline done')")
        assert page.locator("#timeline-note").is_visible()

        page.set_input_files("#file", str(generated_videos()["clip_a.mp4"]))
        page.click("#classify")
        page.wait_for_selector("#results:not([hidden]) .bar")
        assert page.locator("#timeline-results").is_hidden()
        clip = generated_videos()["clip_a.mp4"].read_bytes()
        answer = httpx.post(
            f"{live_server}/classify",
            files={"file": ("clip_a.mp4", clip)},
            data={"vocab": "web-timeline", "abstain": "true"},
            timeout=60,
        ).json()
        box = page.locator("#abstained")
        assert box.is_visible() == answer["abstained"]
        if answer["abstained"]:
            assert box.inner_text().startswith(f"None of these: {answer['abstain_reason'].rstrip('.')}.")
            assert answer["background"][0]["label"] in box.inner_text()
            assert ". Nearest everyday actions: " in box.inner_text()
        shot(page, "abstained")

        # an AVI the browser cannot play: a sentence instead of a black box, then a frame the server decoded
        page.set_input_files("#file", str(generated_videos()["clip_c.avi"]))
        page.wait_for_selector("#preview-note")
        assert "cannot play clip_c.avi" in page.locator("#preview-note").inner_text()
        page.click("#classify")
        page.wait_for_selector("#preview-frame")
        assert page.locator("#preview-frame").get_attribute("src").startswith("data:image/jpeg;base64,")
        shot(page, "avi-preview")

        from PIL import Image

        Image.new("RGB", (64, 48), "red").save(tmp_path / "still.png")
        page.set_input_files("#file", str(tmp_path / "still.png"))
        page.click("#timeline")
        page.wait_for_selector("#error:not([hidden])")
        assert "still.png is an image; a timeline needs a video" in page.locator("#error").inner_text()
        browser.close()


def shot(page: object, name: str) -> None:
    """A full-page screenshot of this state, kept in $SHOTS when set (to look at)."""
    directory = os.environ.get("SHOTS")
    if directory:
        page.screenshot(path=str(Path(directory) / f"{name}.png"), full_page=True)  # type: ignore[attr-defined]


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (make test installs Debian's chromium)")
def test_api_docs_render_offline(live_server: str) -> None:
    """/docs (Swagger UI) loads every asset from this server (fastapi-offline), so it renders the
    operations with no network; before, its JavaScript came from a CDN and the page stayed blank."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page()
        requested: list[str] = []
        page.on("request", lambda request: requested.append(request.url))
        page.goto(f"{live_server}/docs")
        page.wait_for_selector(".opblock", timeout=20_000)
        assert page.locator(".opblock").count() >= 8  # every operation of the API
        assert "PUT" in page.locator(".opblock-summary-method").all_inner_texts()
        assert requested and all(url.startswith(live_server) for url in requested), requested
        browser.close()


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (make test installs Debian's chromium)")
def test_archive_tab_search_browse_label_and_csv(live_server: str, tmp_path: Path) -> None:
    """The Archive tab: the tables with the one this server reads marked, a search drawn as a grid
    of thumbnails with cosines, "more like this" from a card (the row itself first), browsing with
    a metadata filter, and the archive labelled by a vocabulary as a table sortable by label and
    probability, with the CSV it shows."""
    from playwright.sync_api import sync_playwright

    clips = generated_videos()
    for name, camera in (("clip_a.mp4", "north"), ("clip_b.mp4", "south")):
        httpx.post(
            f"{live_server}/archive/videos",
            files={"file": (f"web-{name}", clips[name].read_bytes())},
            data={"metadata": json.dumps({"camera": camera})},
            timeout=120,
        ).raise_for_status()
    httpx.put(f"{live_server}/vocab/web-archive", json={"labels": ["surfing", "yoga", "cooking"]}, timeout=60)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": 1000, "height": 1200}, accept_downloads=True)
        page.goto(f"{live_server}/", wait_until="networkidle")
        page.click("#tab-archive")
        assert page.locator("#classify-tab").is_hidden() and page.locator("#archive-tab").is_visible()
        page.wait_for_selector("#archive-tables tbody tr.current")
        assert "yes (this server's model)" in page.locator("#archive-tables tr.current").inner_text()

        page.fill("#archive-q", "surfing")
        page.press("#archive-q", "Enter")
        page.wait_for_selector("#archive-grid .card")
        cards = page.locator("#archive-grid .card")
        assert cards.count() >= 2 and "cosine" in cards.first.inner_text()
        page.wait_for_function("[...document.querySelectorAll('#archive-grid img')].every(i => i.complete)")
        assert cards.first.locator("img").evaluate("img => img.naturalWidth") == 128  # the stored thumbnail
        shot(page, "archive-search")

        page.click("#archive-browse")  # the shared server holds other tests' rows: filtered on the server
        page.wait_for_function("document.getElementById('archive-note').textContent.startsWith('videos 1–')")
        page.fill("#archive-filter", "camera=south")
        page.press("#archive-filter", "Enter")
        page.wait_for_function("document.getElementById('archive-note').textContent.endsWith('with camera=south')")
        # the same bytes may be stored already by another test as clip_b.mp4: one row, both names
        (card,) = cards.all_inner_texts()
        assert card.split("\n")[0].endswith("clip_b.mp4")
        shot(page, "archive-browse")

        cards.first.get_by_role("button", name="More like this").click()
        page.wait_for_function("document.getElementById('archive-note').textContent.includes('rows nearest')")
        page.fill("#archive-filter", "")
        assert card.split("\n")[0] in cards.first.inner_text() and "cosine 1.000" in cards.first.inner_text()

        page.select_option("#archive-vocab", "web-archive")
        page.click("#archive-label")
        page.wait_for_function("document.getElementById('status').textContent.startsWith('Labelled')")
        rows = page.locator("#archive-labels tbody tr")
        probabilities = [
            float(t.rstrip("%")) for t in page.locator("#archive-labels tbody tr td:nth-child(3)").all_inner_texts()
        ]
        assert rows.count() >= 2 and probabilities == sorted(probabilities, reverse=True)
        page.click("#archive-labels th button[data-sort=label]")
        labels = page.locator("#archive-labels tbody tr td:nth-child(2)").all_inner_texts()
        assert labels == sorted(labels)
        with page.expect_download() as download:
            page.click("#archive-csv")
        text = Path(download.value.path()).read_text()
        assert text.startswith("id,name,names,label,probability\n") and "web-clip_a.mp4" in text
        assert len(text.strip().splitlines()) == rows.count() + 1
        shot(page, "archive-labels")
        browser.close()
