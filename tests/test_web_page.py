"""The web page in a real browser: Debian's chromium (headless, driven by selenium through
chromium-driver; `make system-deps` installs both) opens the page served on 127.0.0.1, uploads an
image, and shows the caption POST /caption gives for the same file; a screenshot is saved."""

import shutil
import time
from pathlib import Path

import httpx
import pytest

from app_server import background_server
from captioning.captioner import Captioner
from captioning.web.app import create_app
from captioning.web.batching import Batching
from conftest import blank_png, in_domain_image

pytestmark = pytest.mark.slow  # trains a tiny model once per session

CHROMIUM, DRIVER = Path("/usr/bin/chromium"), shutil.which("chromedriver")


@pytest.fixture
def browser(tmp_path):
    if not CHROMIUM.exists() or not DRIVER:
        pytest.skip("Debian's chromium and chromium-driver are not installed (make system-deps, as root)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=900,1100", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(condition, deadline_s: float = 60, what: str = "condition"):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.1)  # polling the page, bounded by the deadline
    raise TimeoutError(what)


def upload_and_read(browser, url: str, image: Path) -> str:
    from selenium.webdriver.common.by import By

    browser.get(url)
    wait_for(lambda: "·" in browser.find_element(By.ID, "model").text, what="model information")
    browser.find_element(By.ID, "file").send_keys(str(image))
    caption = browser.find_element(By.ID, "caption")
    wait_for(lambda: caption.get_attribute("data-state") == "done" or browser.find_element(By.ID, "error").text,
             what="a caption")
    assert browser.find_element(By.ID, "error").text == ""
    return caption.text


def post_image(url: str, image: Path) -> dict:
    """POST /caption's answer for an image: what the page must show for it."""
    return httpx.post(f"{url}/caption", content=image.read_bytes(),
                      headers={"content-type": "application/octet-stream"}, timeout=60).json()


def test_page_uploads_an_image_and_shows_its_caption(browser, trained_repo, sample_images, tmp_path):
    from selenium.webdriver.common.by import By

    with background_server(create_app(Captioner(trained_repo / "models"), {"source": "models"})) as url:
        answer = post_image(url, sample_images[3])
        shown = upload_and_read(browser, url, sample_images[3])
        assert shown == (answer["caption"] or "(empty caption)")  # a 2-epoch model may end at once
        # The confidence word is there exactly when the answer has one (this model's own calibration).
        word = browser.find_element(By.ID, "confidence")
        assert word.is_displayed() == bool(answer["confidence"])
        assert word.text == (f"confidence: {answer['confidence']}" if answer["confidence"] else "")
        # Which model and what it learnt from, in one line (GET /health's model.summary).
        assert browser.find_element(By.ID, "about").text == \
            "merge_bilstm over randomly initialised ResNet50 features, trained on shapes"
        assert "beam 3" in browser.find_element(By.ID, "model").text
        assert browser.find_element(By.ID, "attention").is_displayed() is False  # no attention in this model
        browser.save_screenshot(str(tmp_path / "page.png"))
        # A bad file: the page says why, in one line, and the next upload works again.
        bad = tmp_path / "notes.jpg"
        bad.write_text("not an image")
        browser.find_element(By.ID, "file").send_keys(str(bad))
        error = wait_for(lambda: browser.find_element(By.ID, "error").text, what="an error message")
        assert "notes.jpg" in error and "not an image" in error
    assert (tmp_path / "page.png").stat().st_size > 10_000


def test_a_dropped_blank_image_shows_the_unsure_note_and_no_confidence(browser, trained_repo, confident_models,
                                                                       tmp_path):
    """Dropped onto the page (a drop event on the drop zone), a blank image is captioned with the note
    beside it and no confidence; a training image is captioned without the note, with the confidence
    word POST /caption gives it (a model whose confidence is shown)."""
    from selenium.webdriver.common.by import By

    blank, seen = blank_png(tmp_path / "blank.png"), in_domain_image(trained_repo)
    with background_server(create_app(Captioner(confident_models), batching=Batching(max_batch=2))) as url:
        expected = {image: post_image(url, image)["confidence"] for image in (blank, seen)}
        assert expected[blank] is None and expected[seen] in ("low", "medium", "high")
        browser.get(url)
        wait_for(lambda: "·" in browser.find_element(By.ID, "model").text, what="model information")
        # A real drop: the file goes through a hidden input into a DataTransfer dispatched on the drop zone.
        browser.execute_script(
            "const i = document.createElement('input'); i.type = 'file'; i.id = 'dropped'; i.hidden = true;"
            "i.onchange = () => { const t = new DataTransfer(); t.items.add(i.files[0]);"
            "  document.getElementById('drop').dispatchEvent(new DragEvent('drop', {dataTransfer: t, bubbles: true})); };"
            "document.body.append(i);")
        browser.find_element(By.ID, "dropped").send_keys(str(blank))
        caption = browser.find_element(By.ID, "caption")
        wait_for(lambda: caption.get_attribute("data-state") == "done", what="a caption")
        note = browser.find_element(By.ID, "unsure")
        assert note.is_displayed() and "this image looks unlike the photos this model learned from" in note.text
        assert not browser.find_element(By.ID, "confidence").is_displayed()
        browser.save_screenshot(str(tmp_path / "unsure.png"))
        shown = upload_and_read(browser, url, seen)  # a training image
        assert shown and not browser.find_element(By.ID, "unsure").is_displayed()
        word = browser.find_element(By.ID, "confidence")
        assert word.is_displayed() and word.text == f"confidence: {expected[seen]}"
        browser.save_screenshot(str(tmp_path / "confidence.png"))
    assert (tmp_path / "unsure.png").stat().st_size > 10_000


def test_page_draws_each_words_attention(browser, attention_repo, sample_images, tmp_path):
    from selenium.webdriver.common.by import By

    # One request at a time: compile batch shapes 1 and 2 only at start-up.
    with background_server(create_app(Captioner(attention_repo / "models"), batching=Batching(max_batch=2))) as url:
        answer = httpx.post(f"{url}/caption", content=sample_images[5].read_bytes(),
                            headers={"content-type": "image/jpeg"}, timeout=60).json()
        shown = upload_and_read(browser, url, sample_images[5])
        assert shown == (answer["caption"] or "(empty caption)")
        figures = browser.find_elements(By.CSS_SELECTOR, "#maps figure")
        assert [f.find_element(By.TAG_NAME, "figcaption").text for f in figures] == answer["words"]
        if figures:
            # The canvas really holds the image, dimmed by attention: not a blank rectangle.
            pixels = browser.execute_script(
                "const c = document.querySelector('#maps canvas').getContext('2d');"
                "return Array.from(c.getImageData(0, 0, 224, 224).data.filter((_, i) => i % 4 === 0));")
            assert len(set(pixels)) > 10
        browser.save_screenshot(str(tmp_path / "attention.png"))
    assert (tmp_path / "attention.png").stat().st_size > 10_000
